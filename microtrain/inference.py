"""int8 inference planned in one arena, bit-exact with TFLite Micro.

Plan, then run (TFLM's Prepare/Eval split): `plan_inference` declares every buffer with its lifetime
(TFLM's scheme: the input lives from scope 0, op i runs at scope i + 1, the graph output lives to the
end); the greedy planner gives offsets; `Inference` binds every kernel's arguments to arena views once,
so `run` only copies the input in and calls kernels: no NumPy allocation.

Tail (persistent) buffers: per-channel multipliers and shifts, as TFLM keeps them in the arena's tail
(op data from AllocatePersistentBuffer). Weights and biases stay outside the arena: they are "flash".
"""

import numpy as np

from microtrain.arena import Arena, read_only
from microtrain.errors import InputError
from microtrain.planner import PlanBuilder
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers
from microtrain.kernels.conv2d import conv2d_s8
from microtrain.kernels.depthwise import depthwise_conv_s8
from microtrain.kernels.pointwise import pointwise_conv_s8
from microtrain.kernels.add import add_s8
from microtrain.kernels.mask import NO_MASK  # inference writes no 1-bit training masks
from microtrain.kernels.pool import global_mean_s8
from microtrain.kernels.fully_connected import fully_connected_s8


def tensor_shape(graph, name, batch):
    return (batch,) + tuple(graph.shapes[name])


def plan_inference(graph, batch=1, preserve_all=False):
    """The inference Plan of `graph` at `batch`: head = int8 activations, tail = requant params.

    preserve_all=True keeps every tensor for the whole run (TFLM's kPreserveAllTensors / linear
    planner): used to compare intermediate tensors layer by layer with another runtime.
    """
    pb = PlanBuilder()
    n = len(graph.ops)
    first, last = {graph.input_name: 0}, {graph.input_name: 0}
    for i, op in enumerate(graph.ops):
        scope = i + 1
        for t in op.inputs:
            last[t] = max(last[t], scope)
        first[op.output] = scope
        last[op.output] = scope
    last[graph.output] = n  # graph outputs stay to the end
    for t in first:
        nbytes = int(np.prod(tensor_shape(graph, t, batch)))
        f, l = (0, n) if preserve_all else (first[t], last[t])
        pb.request(t, nbytes, f, l, category="input" if t == graph.input_name else
                   ("output" if t == graph.output else "activation"))
    for op in graph.ops:
        if op.has_weights:
            pb.request(f"{op.name}/mult", 4 * op.cout, 0, n, category="quant_params", region="tail")
            pb.request(f"{op.name}/shift", 4 * op.cout, 0, n, category="quant_params", region="tail")
    plan = pb.build(planner="linear" if preserve_all else "greedy")
    plan.check()
    return plan


class Inference:
    """Whole-model int8 inference inside one arena of exactly `plan.peak` bytes.

    x (N, H, W, C) int8 in the model's input quantization -> logits (N, classes) int8.
    """

    def __init__(self, model, batch=1, preserve_all=False, arena_buffer=None):
        self.model = model
        self.graph = model.graph
        self.batch = batch
        self.plan = plan_inference(self.graph, batch, preserve_all)
        self.arena = Arena(self.plan, buffer=arena_buffer)
        self._steps = [self._bind(op) for op in self.graph.ops]

    def view(self, tensor):
        return self.arena.view(tensor, tensor_shape(self.graph, tensor, self.batch), np.int8)

    def _bind(self, op):
        """(kernel, args) for one op, every array a view into the arena or a flash weight."""
        m = self.model
        y = self.view(op.output)
        yq = m.quant[op.output]
        if op.has_weights:
            p = m.params[op.name]
            xq = m.quant[op.inputs[0]]
            mult = self.arena.view(f"{op.name}/mult", (op.cout,), np.int32)
            shift = self.arena.view(f"{op.name}/shift", (op.cout,), np.int32)
            mult[:], shift[:] = conv_multipliers(xq[0], p["w_scales"], yq[0])
            # the kernel only reads these: bound read-only like a training step's (one Numba specialisation)
            mult = self.arena.read_only_view(f"{op.name}/mult", (op.cout,), np.int32)
            shift = self.arena.read_only_view(f"{op.name}/shift", (op.cout,), np.int32)
            lo, hi = activation_range_s8(op.act, yq[0], yq[1])
            x = self.view(op.inputs[0])
            common = (read_only(p["weight"]), read_only(p["bias"]), mult, shift, xq[1], yq[1], lo, hi)
            if op.kind == "conv2d":
                return conv2d_s8, (y, NO_MASK, x) + common + (op.stride, op.pad)
            if op.kind == "depthwise":
                return depthwise_conv_s8, (y, NO_MASK, x) + common + (op.stride, op.pad)
            if op.kind == "pointwise":
                return pointwise_conv_s8, (y, NO_MASK, x) + common
            return fully_connected_s8, (y, x) + common
        if op.kind == "add":
            aq, bq = m.quant[op.inputs[0]], m.quant[op.inputs[1]]
            (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(aq[0], bq[0], yq[0])
            return add_s8, (y, NO_MASK, self.view(op.inputs[0]), self.view(op.inputs[1]), aq[1], am, ash,
                            bq[1], bm, bsh, yq[1], ym, ysh, -128, 127)
        if op.kind == "mean":
            return global_mean_s8, (y, self.view(op.inputs[0]), -128, 127)
        raise ValueError(f"no int8 kernel for op kind {op.kind}")

    def check_input(self, x):
        want = tensor_shape(self.graph, self.graph.input_name, self.batch)
        if not isinstance(x, np.ndarray) or x.dtype != np.int8:
            raise InputError(f"input must be an int8 array in the model's input quantization "
                             f"(scale {self.model.input_quant()[0]:.6g}, zero point {self.model.input_quant()[1]}), "
                             f"got {getattr(x, 'dtype', type(x))}; use microtrain.preprocess to quantize images")
        if x.shape != want:
            raise InputError(f"input shape {x.shape} does not match the model's {want} (N, H, W, C)")

    def run(self, x):
        """Run the network on x (N, H, W, C) int8. Returns the arena view of the logits (N, classes):
        it is overwritten by the next run, copy it to keep it."""
        self.check_input(x)
        self.view(self.graph.input_name)[...] = x
        for fn, args in self._steps:
            fn(*args)
        return self.view(self.graph.output)
