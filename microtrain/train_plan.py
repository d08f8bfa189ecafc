"""The training step as a plan: which tensors need gradients, what backward must save, and every buffer
of one step (forward, loss, partial backward in reverse order, update) with its lifetime and category.

No kernels here: the plan can be printed, checked and budgeted without running anything, and the same
Plan is what `microtrain.train.TrainStep` binds into one arena (so the reported peak is the memory the
step really uses). Scopes (TFLM's convention extended to training): the inputs live from scope 0; forward
op i runs at scope i + 1; the loss at L = n + 1; the backward of op i at L + n - i (reverse order); without
operator reordering, all updates run at one final scope U.

Numerics per mode (DESIGN.md §2): `int8` — int8 forward (bit-exact with TFLite Micro), fp32 backward in
real units, 1-bit masks of the requantization clamps (tiny-training's STE), QAS-scaled updates of int8
weights / int32 biases; `fp32` — fp32 weights (dequantized once), fp32 forward and backward, ReLU6 masks.
The classifier head is fp32 in both modes (tiny-training's default `mcu_head_type: fp`) and always trained.
"""

from dataclasses import dataclass

import numpy as np

from microtrain.errors import ConfigError
from microtrain.graph import CONV_KINDS
from microtrain.planner import PlanBuilder

MODES = ("int8", "fp32")
OPTIMIZERS = ("sgd", "adam")
BACKENDS = ("blas", "reference")  # how the host runs the step's convs (TrainOptions.backend)


@dataclass(frozen=True)
class TrainOptions:
    """How one training step runs. Each memory-saving trick is a flag so its saving can be measured."""

    mode: str = "int8"
    optimizer: str = "sgd"
    lr: float = 0.01
    batch: int = 1
    save_kept_channels: bool = True  # save only the kept input channels of weight-updated layers (MIT)
    bit_masks: bool = True  # 1-bit clamp masks instead of saved activations (fp32 mode; int8 always uses them)
    reorder: bool = True  # apply each layer's update right after its gradients, then free them (MIT)
    inplace: bool = True  # mask application and the residual branch's gradient in place (aliases)
    head: str = "linear"  # "linear": W f + b; "cosine": W (f / |f|) + b (ProtoNet-style head, P>M>F)
    # "blas": standard and 1x1 convs run as float32 GEMMs in NumPy's BLAS on the host (int8 forward bit-exact,
    # fp32 sums in sgemm's order); "reference": every op runs its loop kernel, the code firmware's C twins mirror
    # bit for bit (export_c needs it). Same plan, same arena, same bytes (microtrain.train_gemm).
    backend: str = "blas"

    def validate(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not np.isfinite(lr) or lr <= 0:
            raise ConfigError(f"learning rate {lr!r} must be a finite positive number")
        if isinstance(self.batch, bool) or not isinstance(self.batch, (int, np.integer)) or self.batch < 1:
            raise ConfigError(f"batch {self.batch!r} must be a positive integer")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.head not in ("linear", "cosine"):
            raise ConfigError(f"head {self.head!r}: use linear or cosine")
        if self.mode == "int8" and not self.bit_masks:
            raise ConfigError("bit_masks=False is only defined in fp32 mode: in int8 mode whether a value was "
                              "clamped by requantization cannot be recovered from the int8 output, so the forward "
                              "kernel always emits the 1-bit mask")
        return self


def has_clamp(op, mode):
    """Does the backward through op's output pass a clamp mask? int8: every requantized output (conv, add)
    saturates to its activation range; fp32: only ReLU6 / ReLU."""
    if op.kind in CONV_KINDS or op.kind == "add":
        return True if mode == "int8" else op.act is not None
    return False


def mask_shape(n, h, w, c):
    """Row-aligned 1-bit mask: each (n, y) row of W x C elements starts on a byte (kernels/mask.py)."""
    return (n * h, (w * c + 7) // 8)


class StepAnalysis:
    """What a (graph, sparse config, options) step needs, before any byte is planned."""

    def __init__(self, graph, cfg, opts):
        self.graph, self.cfg, self.opts = graph, cfg, opts
        self.ops = graph.ops
        self.n = len(self.ops)
        self.head = graph.classifier
        by_name = {op.name: op for op in graph.ops}
        self.updates = {}  # op name -> LayerUpdate
        for lu in cfg.layers:
            self.updates[graph.convs[lu.conv_index].name] = lu
        # requires_grad: produced by an op with trainable parameters or with an input that requires it.
        req = {graph.input_name: False}
        for op in self.ops:
            if op is self.head:
                req[op.output] = True
                continue
            req[op.output] = (op.name in self.updates) or any(req[t] for t in op.inputs)
        self.requires_grad = req
        self.backward_ops = [op for op in reversed(self.ops) if op is self.head or req[op.output]]
        self.consumers = {}
        for op in self.ops:
            for t in op.inputs:
                self.consumers.setdefault(t, []).append(op)
        self.by_name = by_name

    # scopes -----------------------------------------------------------------------------------
    def fwd_scope(self, op):
        return self.ops.index(op) + 1

    @property
    def loss_scope(self):
        return self.n + 1

    def bwd_scope(self, op):
        return self.loss_scope + self.n - self.ops.index(op)

    @property
    def update_scope(self):
        return self.loss_scope + self.n + 1

    # per-op needs -----------------------------------------------------------------------------
    def weight_update(self, op):
        lu = self.updates.get(op.name)
        return lu if (lu is not None and lu.weight) else None

    def bias_update(self, op):
        lu = self.updates.get(op.name)
        return lu if (lu is not None and lu.bias) else None

    def compact_input(self, op):
        """Kept input channels the weight gradient reads (compacted), or None (it reads the full input).

        With save_kept_channels they are gathered during the forward pass and only they are saved (MIT);
        without it the full input activation is saved and the same gather runs at backward time into a
        scratch buffer, so both settings compute identical gradients and differ only in memory.
        """
        lu = self.weight_update(op)
        if lu is None or lu.keep is None:
            return None
        if lu.axis == "input" or op.kind == "depthwise":
            return tuple(lu.keep)
        return None

    def dw_shape(self, op):
        """Shape of the weight gradient this step computes for op (compact kept slice)."""
        lu = self.weight_update(op)
        cin = op.cin
        keep_in = lu.keep if (lu.keep is not None and (lu.axis == "input" or op.kind == "depthwise")) else None
        keep_out = lu.keep if (lu.keep is not None and lu.axis == "output" and op.kind != "depthwise") else None
        k_in = len(keep_in) if keep_in is not None else cin
        k_out = len(keep_out) if keep_out is not None else op.cout
        if op.kind == "conv2d":
            return (k_out, op.kernel, op.kernel, k_in)
        if op.kind == "depthwise":
            return (op.kernel, op.kernel, k_in)
        return (k_out, k_in)

    def clamp_from_output(self, op, saved_until):
        """fp32 mode: does the backward through op's clamp read the saved fp32 output (0 < y < 6 decides)
        instead of a 1-bit mask? Yes without bit masks, and also with them whenever the output is saved
        anyway (the next layer's weight gradient reads it): a mask would then duplicate information.
        int8 mode always needs the mask (requantization clamps are not visible in int8 outputs)."""
        if self.opts.mode != "fp32" or not has_clamp(op, "fp32"):
            return False
        return (not self.opts.bit_masks) or (op.output in saved_until)

    def input_needs_grad(self, op):
        return any(self.requires_grad[t] for t in op.inputs)


def _nbytes(shape, dtype):
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def plan_training_step(graph, cfg, opts):
    """The Plan of one training step: (Plan, StepAnalysis, buffer specs name -> (shape, dtype))."""
    opts.validate()
    a = StepAnalysis(graph, cfg, opts)
    N = opts.batch
    act_dtype = np.int8 if opts.mode == "int8" else np.float32
    f32 = np.float32
    pb = PlanBuilder()
    specs = {}

    def req(name, shape, dtype, first, last, category, region="head", alias_of=None):
        specs[name] = (tuple(int(d) for d in shape), np.dtype(dtype))
        pb.request(name, _nbytes(shape, dtype), first, last, category, region=region, alias_of=alias_of)

    def shape(t):
        return (N,) + tuple(graph.shapes[t])

    # ---- forward activations: from the producer's scope to the last forward reader, extended when
    # backward reads the full tensor (weight gradient without compaction, fp32 masks without bit masks)
    first = {graph.input_name: 0}
    last = {graph.input_name: 0}
    for op in a.ops:
        s = a.fwd_scope(op)
        first[op.output] = s
        last[op.output] = s
        for t in op.inputs:
            last[t] = max(last[t], s)
    saved_until = {}
    for op in a.backward_ops:
        if op is a.head:
            continue
        if a.weight_update(op) is not None and (a.compact_input(op) is None or not opts.save_kept_channels):
            t = op.inputs[0]
            saved_until[t] = max(saved_until.get(t, 0), a.bwd_scope(op))
    for op in a.backward_ops:
        if op is not a.head and a.clamp_from_output(op, saved_until):
            saved_until[op.output] = max(saved_until.get(op.output, 0), a.bwd_scope(op))
    a.mask_ops = {op.name for op in a.backward_ops
                  if op is not a.head and has_clamp(op, opts.mode) and not a.clamp_from_output(op, saved_until)}
    head = a.head
    feat = head.inputs[0]  # pooled features (N, C)
    if opts.mode == "fp32" and opts.head == "linear":  # the fp32 pool output is the head's weight-gradient input
        saved_until[feat] = max(saved_until.get(feat, 0), a.bwd_scope(head))
    for t in first:
        if t == head.output:
            continue  # logits are fp32, planned with the head below
        l = max(last[t], saved_until.get(t, 0))
        cat = "input" if t == graph.input_name else ("saved" if t in saved_until else "activation")
        req(f"act:{t}", shape(t), act_dtype, first[t], l, cat)
    req("labels", (N,), np.int32, 0, a.loss_scope, "input")

    # ---- saved for backward: compact kept input channels, 1-bit masks
    for op in a.backward_ops:
        if op is head:
            continue
        keep = a.compact_input(op)
        if keep is not None:
            h, w, _ = graph.shapes[op.inputs[0]]
            if opts.save_kept_channels:
                req(f"saved:{op.name}", (N, h, w, len(keep)), act_dtype, a.fwd_scope(op), a.bwd_scope(op), "saved")
            else:  # gathered from the saved full input at backward time
                req(f"saved:{op.name}", (N, h, w, len(keep)), act_dtype, a.bwd_scope(op), a.bwd_scope(op), "scratch")
        if op.name in a.mask_ops:
            h, w, c = graph.shapes[op.output]
            req(f"mask:{op.name}", mask_shape(N, h, w, c), np.uint8, a.fwd_scope(op), a.bwd_scope(op), "saved")

    # ---- head (fp32): features, logits, loss gradient
    C, K = head.cin, head.cout
    hs, hb = a.fwd_scope(head), a.bwd_scope(head)
    cosine = opts.head == "cosine"
    if opts.mode == "int8":  # dequantized pooled features; the head's input unless normalised
        req("head:feat", (N, C), f32, hs, hs if cosine else hb, "activation" if cosine else "saved")
    if cosine:  # normalised features and their norms, read by the head's backward
        req("head:fn", (N, C), f32, hs, hb, "saved")
        req("head:norm", (N,), f32, hs, hb, "saved")
        if a.requires_grad[feat]:
            req("grad:head:fn", (N, C), f32, hb, hb, "act_grad")
    req("head:logits", (N, K), f32, hs, a.loss_scope, "activation")
    req("grad:logits", (N, K), f32, a.loss_scope, hb, "act_grad")

    # ---- activation gradients (float32 real units). grad:t is written by the backward of t's last consumer
    # that has work and read until the backward of t's producer.
    upd_last = a.update_scope if not opts.reorder else None
    for op in a.backward_ops:
        b = a.bwd_scope(op)
        if op is head:
            if a.requires_grad[feat]:
                req(f"grad:{feat}", (N, C), f32, b, a.bwd_scope(graph.producer(feat)), "act_grad")
            continue
        g_in = f"grad:{op.output}"
        if has_clamp(op, opts.mode) and not opts.inplace:
            req(f"gradm:{op.name}", shape(op.output), f32, b, b, "act_grad")  # masked copy of the gradient
        if op.kind == "add":
            sc, br = op.inputs
            if a.requires_grad[br]:
                if opts.inplace:
                    req(f"grad:{br}", shape(br), f32, b, a.bwd_scope(graph.producer(br)), "act_grad",
                        alias_of=g_in)
                else:
                    req(f"grad:{br}", shape(br), f32, b, a.bwd_scope(graph.producer(br)), "act_grad")
            if a.requires_grad[sc]:
                req(f"grad:{sc}", shape(sc), f32, b, a.bwd_scope(graph.producer(sc)), "act_grad")
            continue
        x = op.inputs[0]
        if op.kind == "mean":
            if a.requires_grad[x]:
                req(f"grad:{x}", shape(x), f32, b, a.bwd_scope(graph.producer(x)), "act_grad")
            continue
        # conv-like
        if a.requires_grad[x]:
            if f"grad:{x}" in specs:  # shortcut gradient started by a residual add: accumulate via a temp
                req(f"tmp:{op.name}", shape(x), f32, b, b, "scratch")
            else:
                req(f"grad:{x}", shape(x), f32, b, a.bwd_scope(graph.producer(x)), "act_grad")
        lu_w, lu_b = a.weight_update(op), a.bias_update(op)
        gl = upd_last if upd_last is not None else b
        if lu_w is not None:
            req(f"dw:{op.name}", a.dw_shape(op), f32, b, gl, "weight_grad")
        if lu_b is not None:
            req(f"db:{op.name}", (op.cout,), f32, b, gl, "weight_grad")
    gl = upd_last if upd_last is not None else hb
    req("dw:head", (K, C), f32, hb, gl, "weight_grad")
    req("db:head", (K,), f32, hb, gl, "weight_grad")

    # ---- tail: trainable copies and optimizer state, for the whole adaptation
    w_dtype = np.int8 if opts.mode == "int8" else f32
    b_dtype = np.int32 if opts.mode == "int8" else f32
    for op in graph.convs:
        if a.weight_update(op) is not None:
            req(f"train:w:{op.name}", op.weight_shape(), w_dtype, 0, a.update_scope, "trainable", region="tail")
            if opts.optimizer == "adam":
                req(f"adam:m:w:{op.name}", a.dw_shape(op), f32, 0, a.update_scope, "optimizer", region="tail")
                req(f"adam:v:w:{op.name}", a.dw_shape(op), f32, 0, a.update_scope, "optimizer", region="tail")
        if a.bias_update(op) is not None:
            req(f"train:b:{op.name}", (op.cout,), b_dtype, 0, a.update_scope, "trainable", region="tail")
            if opts.optimizer == "adam":
                req(f"adam:m:b:{op.name}", (op.cout,), f32, 0, a.update_scope, "optimizer", region="tail")
                req(f"adam:v:b:{op.name}", (op.cout,), f32, 0, a.update_scope, "optimizer", region="tail")
    req("train:w:head", (K, C), f32, 0, a.update_scope, "trainable", region="tail")
    req("train:b:head", (K,), f32, 0, a.update_scope, "trainable", region="tail")
    if opts.optimizer == "adam":
        for p, shp in (("w", (K, C)), ("b", (K,))):
            req(f"adam:m:{p}:head", shp, f32, 0, a.update_scope, "optimizer", region="tail")
            req(f"adam:v:{p}:head", shp, f32, 0, a.update_scope, "optimizer", region="tail")

    plan = pb.build()
    return plan, a, specs

