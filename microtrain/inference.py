"""int8 inference planned in one arena, bit-exact with TFLite Micro.

Plan, then run (TFLM's Prepare/Eval split): `plan_inference` declares every buffer with its lifetime
(TFLM's scheme: the input lives from scope 0, op i runs at scope i + 1, the graph output lives to the
end); the greedy planner gives offsets; `Inference` binds every kernel's arguments to arena views once,
so `run` only copies the input in and calls kernels: no NumPy allocation.

Tail (persistent) buffers: per-channel multipliers and shifts, as TFLM keeps them in the arena's tail
(op data from AllocatePersistentBuffer). Weights and biases stay outside the arena: they are "flash".

Two backends, identical outputs bit for bit (tests check both against TFLM):
  - "reference": every op runs its loop kernel, the code the C twins mirror (docs/porting.md);
  - "blas" (default): standard and 1x1 convs and the classifier run as float32 matrix products in NumPy's
    BLAS (a standard conv over its im2col patches), exact because every partial sum is an integer below 2^24
    (kernels/gemm_io.py checks that bound per layer and keeps the loop kernel where it fails); depthwise
    convs and residual adds run host kernels (kernels/depthwise_host.py, add_host.py; same bits). Host only:
    its float32 operands, requantization constants and ADD lookup tables are host memory outside the planned
    arena (`host_bytes`); the arena and its peak are the same for both backends.

Batch split (host only, microtrain/batch_split.py): with `split` groups > 1 a run hands each group of images to
its own thread, which runs the whole network on them serially in a group engine of its own (an Inference of that
group's batch, with its own arena: host memory, counted in `host_bytes`; the constants are shared). The output is
the same bits (integer arithmetic per image); the logits are copied into this engine's arena, whose plan stays the
memory a sequential device needs. By default one group per Numba thread where batch_split.available(); other
tensors of this arena (`view`) are then not written, so preserve_all=True runs sequentially.
"""

from functools import partial

import numpy as np

from microtrain import batch_split
from microtrain.arena import Arena, read_only
from microtrain.errors import InputError
from microtrain.planner import PlanBuilder
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers
from microtrain.kernels.conv2d import conv2d_s8
from microtrain.kernels.depthwise import depthwise_conv_s8
from microtrain.kernels.depthwise_host import bind_depthwise_s8
from microtrain.kernels.pointwise import pointwise_conv_s8
from microtrain.kernels.add import add_s8
from microtrain.kernels.add_host import bind_add_s8
from microtrain.kernels.mask import NO_MASK  # inference writes no 1-bit training masks
from microtrain.kernels.pool import global_mean_s8
from microtrain.kernels.fully_connected import fully_connected_s8
from microtrain.kernels.gemm_io import (exact_in_f32, im2col_f32, requant_f64_params, requantize_acc_f32_s8,
                                        weight_reach, widen_s8_f32)

BACKENDS = ("blas", "reference")


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

    backend: "blas" or "reference" (module docstring). host_bytes: the float32 GEMM operands and weights, the
    requantization constants and the ADD lookup tables the "blas" backend keeps outside the arena (0 for
    "reference"), and the group engines' arenas when the batch is split.

    split: groups of images run concurrently (module docstring, "Batch split"); None: for "blas",
    batch_split.auto_groups (one per Numba thread where available, else 1), for "reference" 1; 1: sequential.
    A run while this thread's Numba width is 1 (numba.set_num_threads(1) after construction) runs
    sequentially, on one core as asked.
    """

    def __init__(self, model, batch=1, preserve_all=False, arena_buffer=None, backend="blas", split=None,
                 _constants=None, _scratch=None):
        if backend not in BACKENDS:
            raise InputError(f"unknown inference backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.model = model
        self.graph = model.graph
        self.batch = batch
        self.backend = backend
        self.plan = plan_inference(self.graph, batch, preserve_all)
        self.arena = Arena(self.plan, buffer=arena_buffer)
        self._gemm_ops = self._gemm_layers() if backend == "blas" else {}
        # one left operand and one result buffer shared by every GEMM layer (ops run one after another)
        rows_in = max((p * ci for p, ci, _ in self._gemm_ops.values()), default=0)
        rows_out = max((p * co for p, _, co in self._gemm_ops.values()), default=0)
        # a group engine gets its images' share of its parent's (rows_in and rows_out are batch * per-image)
        self._xf, self._acc = _scratch if _scratch is not None else (np.empty(rows_in, np.float32),
                                                                     np.empty(rows_out, np.float32))
        if self._xf.size < rows_in or self._acc.size < rows_out:
            raise ValueError(f"GEMM scratch too small: {self._xf.size}, {self._acc.size} float32 elements for "
                             f"{rows_in}, {rows_out}")
        # op name -> (K, Co) f32 weight; "rq:" + op name -> (4, Co) f64 requantization constants; ADD parameters ->
        # (65536,) int16 lookup table (add_host.bind_add_s8). A group engine shares its parent's (read-only).
        self._wt, self._add_tables = _constants if _constants is not None else ({}, {})
        self._steps = [self._bind(op) for op in self.graph.ops]
        self._groups = self._group_engines(split, preserve_all)
        self.split = max(1, len(self._groups))
        if _constants is None:  # a group engine's share is its parent's
            self.host_bytes = (self._xf.nbytes + self._acc.nbytes + sum(w.nbytes for w in self._wt.values())
                               + sum(t.nbytes for t in self._add_tables.values())
                               + sum(part.arena.buffer.nbytes for _, part in self._groups))
        else:
            self.host_bytes = 0

    def _group_engines(self, split, preserve_all):
        """[((n0, n1), Inference of batch n1 - n0)] of a split run, or [] (sequential)."""
        # the host speed-up is the "blas" backend's; "reference" runs as firmware does unless asked
        groups = batch_split.resolve_groups(self.batch, split, default=self.backend == "blas")
        if groups == 1 or preserve_all:
            return []
        xi, ai = self._xf.size // self.batch, self._acc.size // self.batch  # float32 elements per image
        # each group's GEMM scratch is its images' share of this engine's: disjoint, whatever layer each is at
        return [((n0, n1), Inference(self.model, n1 - n0, backend=self.backend, split=1,
                                     _constants=(self._wt, self._add_tables),
                                     _scratch=(self._xf[n0 * xi:n1 * xi], self._acc[n0 * ai:n1 * ai])))
                for n0, n1 in batch_split.group_bounds(self.batch, groups)]

    def view(self, tensor):
        return self.arena.view(tensor, tensor_shape(self.graph, tensor, self.batch), np.int8)

    def _gemm_layers(self):
        """{op name: (rows P, K, Co)} of the convs and classifiers whose sums are exact in float32: P output
        pixels (or samples), K = KH * KW * Ci terms per sum."""
        out = {}
        for op in self.graph.ops:
            if op.kind in ("conv2d", "pointwise", "fc"):
                w = self.model.params[op.name]["weight"]
                w2 = w.reshape(w.shape[0], -1)  # (Co, K): OHWI flattened in (ky, kx, ci) order
                if exact_in_f32(w2, self.model.quant[op.inputs[0]][1]):
                    shape = tensor_shape(self.graph, op.output, self.batch)
                    out[op.name] = (int(np.prod(shape[:-1])), w2.shape[1], w2.shape[0])
        return out

    def _bind_gemm(self, op, y, x, bias, mult, shift, x_zp, y_zp, lo, hi):
        """The "blas" backend's step for a conv / classifier: widen (or im2col), sgemm, requantize."""
        P, k, co = self._gemm_ops[op.name]
        w = self.model.params[op.name]["weight"].reshape(co, k)
        if op.name not in self._wt:  # (a group engine finds its parent's)
            self._wt[op.name] = read_only(np.ascontiguousarray(w.T, dtype=np.float32))  # (K, Co), exact
            self._wt[f"rq:{op.name}"] = read_only(requant_f64_params(mult, shift, weight_reach(w, x_zp)))  # (4, Co)
        wt, rq = self._wt[op.name], self._wt[f"rq:{op.name}"]
        xf = self._xf[:P * k].reshape(P, k)
        acc = self._acc[:P * co].reshape(P, co)
        tail = (xf, wt, acc, bias, rq, mult, shift, x_zp, y_zp, lo, hi)
        if op.kind == "conv2d":
            return _gemm_conv_s8, (y.reshape(P, co), read_only(x)) + tail + (op.kernel, op.stride, op.pad)
        return _gemm_s8, (y.reshape(P, co), read_only(x.reshape(P, k))) + tail

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
            if op.name in self._gemm_ops:
                return self._bind_gemm(op, y, x, read_only(p["bias"]), mult, shift, xq[1], yq[1], lo, hi)
            common = (read_only(p["weight"]), read_only(p["bias"]), mult, shift, xq[1], yq[1], lo, hi)
            if op.kind == "conv2d":
                return conv2d_s8, (y, NO_MASK, x) + common + (op.stride, op.pad)
            if op.kind == "depthwise" and self.backend == "blas":
                return bind_depthwise_s8(self._wt, f"rq:{op.name}", y, NO_MASK, x, *common, op.stride, op.pad,
                                         False)
            if op.kind == "depthwise":
                return depthwise_conv_s8, (y, NO_MASK, x) + common + (op.stride, op.pad)
            if op.kind == "pointwise":
                return pointwise_conv_s8, (y, NO_MASK, x) + common
            return fully_connected_s8, (y, x) + common
        if op.kind == "add":
            aq, bq = m.quant[op.inputs[0]], m.quant[op.inputs[1]]
            (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(aq[0], bq[0], yq[0])
            a, b = self.view(op.inputs[0]), self.view(op.inputs[1])
            params = (aq[1], am, ash, bq[1], bm, bsh, yq[1], ym, ysh, -128, 127)
            if self.backend == "blas":
                return bind_add_s8(self._add_tables, y, NO_MASK, a, b, params)
            return add_s8, (y, NO_MASK, a, b) + params
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
        out = self.view(self.graph.output)
        if batch_split.runs_split(self._groups):
            batch_split.run_groups([partial(_run_group, part, x[n0:n1], out[n0:n1]) for (n0, n1), part in self._groups])
            return out
        self.view(self.graph.input_name)[...] = x
        for fn, args in self._steps:
            fn(*args)
        return out


def _run_group(part, x, out):
    """One group of a split run (on its own thread): the group engine's own (sequential, split=1) run on its images,
    its logits into out (this group's rows of the parent's output)."""
    out[...] = part.run(x)


def _gemm_s8(y, x, xf, wt, acc, bias, rq, mult, shift, x_zp, y_zp, lo, hi):
    """One int8 1x1 conv / classifier as an exact float32 GEMM (kernels/gemm_io.py): y (P, Co) s8 from
    x (P, Ci) s8; xf (P, Ci), acc (P, Co) f32 host scratch; wt (Ci, Co) f32. Allocates nothing: matmul writes
    into acc; rq = gemm_io.requant_f64_params(mult, shift)."""
    widen_s8_f32(xf, x, x_zp)
    np.matmul(xf, wt, out=acc)
    requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, y_zp, lo, hi)


def _gemm_conv_s8(y, x, cols, wt, acc, bias, rq, mult, shift, x_zp, y_zp, lo, hi, k, stride, pad):
    """One int8 KxK conv as im2col + an exact float32 GEMM: y (P, Co) s8 from x (N, H, W, Ci) s8; cols (P, K*K*Ci),
    acc (P, Co) f32 host scratch; wt (K*K*Ci, Co) f32."""
    im2col_f32(cols, x, x_zp, k, k, stride, pad)
    np.matmul(cols, wt, out=acc)
    requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, y_zp, lo, hi)
