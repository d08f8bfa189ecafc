"""One sparse training step, run inside one arena of exactly the training plan's peak bytes.

`TrainStep(model, cfg, n_classes, opts)` plans the step (microtrain.train_plan), binds every kernel's
arguments to arena views and flash arrays once, and `run(x, labels)` executes forward -> loss -> partial
backward (reverse order, stopping at the earliest updated layer) -> updates, allocating nothing.

Frozen weights stay read-only ("flash"); trainable weight/bias copies, the fp32 head and optimizer state
live in the arena's tail for the whole adaptation. Precomputed per-channel constants (requantization
multipliers and shifts, QAS coefficients, kept-channel index lists) are flash too (firmware stores them
as const arrays; TinyEngine does the same with its scales).

Batch split (host only, "blas" backend, int8 mode; microtrain/batch_split.py): an int8 step of `split` groups of
images (by default batch_split.STEP_GROUPS = 2 for any batch of two or more) runs forward and backward per group,
each group in a group step (a TrainStep of that group's batch with an arena of its own: host memory, in
`host_bytes`; its GEMM scratch is its images' share of this step's, its constants this step's), the groups on their
own threads where they can run concurrently, else one after another. A step:
  1. forward: the trainable parameters are copied into each group step (they change every step; bytes, not
     activations); each group runs the whole forward on its images; every buffer of the forward alive at its end
     (saved activations, 1-bit masks, features, logits) is copied back into this step's arena. The forward is
     integer arithmetic and per-row float work per image: the same bits as an unsplit step's;
  2. the loss over the whole batch, here (the same bits: it reads the same logits);
  3. backward: each group step gets its rows of the loss gradient and runs its backward on its images. A group step
     is planned with operator reordering off, so every weight and bias gradient it computes stays in its arena;
  4. each gradient is summed over the groups in group order, every sum is checked finite before any update, and
     the updates run here, in this step's order, from this step's gradient buffers.
Why: the backward of an unsplit step runs kernel by kernel, each split over the threads, and barely uses a second
core (MCUNet's 49kb step at batch 25: 6.3 ms on two threads, 6.7 with Numba's kernels on one; bench/README.md);
per group, it runs whole on one core, as the forward does.
The price is the arithmetic: a weight or bias gradient is a float32 sum over the batch, and here it is summed per
group, then over the groups. So the trained parameters differ from an unsplit step's (split=1) at float32 rounding,
and the group count is fixed (not the machine's thread count): a step gives the same bits on 1 or 2 threads, with
any threading layer, whether its groups run concurrently or in turn. The arena and its plan are unchanged (what a
sequential device needs; firmware reproduces the "reference" backend). fp32 steps run unsplit.
"""

import dataclasses
from functools import partial

import numpy as np

from microtrain import batch_split
from microtrain.arena import Arena, read_only
from microtrain.errors import InputError, NumericError
from microtrain.kernels import update as upd
from microtrain.kernels.add import add_s8, add_f32
from microtrain.kernels.clamp_backward import clamp_f32_backward
from microtrain.kernels.bias_backward import bias_f32_backward, bias_f32_backward_2d
from microtrain.kernels.conv2d import conv2d_f32, conv2d_s8
from microtrain.kernels.conv2d_backward import conv2d_f32_backward_input, conv2d_f32_backward_weight
from microtrain.kernels.depthwise import depthwise_conv_f32, depthwise_conv_s8
from microtrain.kernels.depthwise_backward import (depthwise_conv_f32_backward_input,
                                                   depthwise_conv_f32_backward_weight)
from microtrain.kernels.elementwise_backward import (accumulate_f32, mask_pack_f32, mask_unpack_backward_f32,
                                                     scale_channels_f32, scale_f32)
from microtrain.kernels.fully_connected import fully_connected_f32
from microtrain.kernels.fully_connected_backward import (fully_connected_f32_backward_input,
                                                         fully_connected_f32_backward_weight)
from microtrain.kernels.gather import gather_channels
from microtrain.kernels.loss import softmax_cross_entropy_f32
from microtrain.kernels.mask import NO_MASK
from microtrain.kernels.normalize import l2_normalize_rows_f32, l2_normalize_rows_f32_backward
from microtrain.kernels.pointwise import pointwise_conv_f32, pointwise_conv_s8
from microtrain.kernels.pointwise_backward import pointwise_conv_f32_backward_input, pointwise_conv_f32_backward_weight
from microtrain.kernels.pool import global_mean_f32, global_mean_s8
from microtrain.kernels.pool_backward import global_mean_f32_backward
from microtrain.kernels.quantize import dequantize_s8
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers
from microtrain.model import Model
from microtrain.train_gemm import HostGemm
from microtrain.train_plan import has_clamp, plan_training_step

F32 = np.float32


def dequantized_weights(model, op):
    """fp32 (weight, bias) of a conv/fc op: w_real = w_int * s_w[c], b_real = b_int * s_x * s_w[c]."""
    p = model.params[op.name]
    s_w = p["w_scales"].astype(np.float64)
    s_x = float(np.float32(model.quant[op.inputs[0]][0]))
    if op.kind == "depthwise":
        w = p["weight"].astype(np.float64) * s_w[None, None, :]
    elif op.kind == "conv2d":
        w = p["weight"].astype(np.float64) * s_w[:, None, None, None]
    else:
        w = p["weight"].astype(np.float64) * s_w[:, None]
    b = p["bias"].astype(np.float64) * s_x * s_w
    return w.astype(F32), b.astype(F32)


class TrainStep:
    """A planned, bound training step. See the module docstring.

    model: the int8 Model (its classifier is replaced by an fp32 head of n_classes);
    cfg: a SparseConfig for model.graph; opts: TrainOptions;
    head: optional (W (K, C) float32, b (K,) float32) initial head (default zeros).
    split: image groups whose forward and backward run per group, their gradients summed over the groups (module
    docstring, "Batch split"); None: batch_split.STEP_GROUPS (at most the batch) where the step can split (int8
    mode, "blas" backend), else 1. Part of the step's arithmetic: split=1 and split=2 train to parameters that
    differ at float32 rounding; the thread count never changes the bits.
    """

    def __init__(self, model, cfg, n_classes, opts, head=None, arena_buffer=None, split=None, _host=None):
        from microtrain.graph import with_classes

        opts.validate()
        graph = with_classes(model.graph, n_classes)
        cfg.validate(graph)
        self.model, self.graph, self.cfg, self.opts = model, graph, cfg, opts
        self.n_classes = n_classes
        self.plan, self.analysis, self.specs = plan_training_step(graph, cfg, opts)
        self.arena = Arena(self.plan, buffer=arena_buffer)
        self.t = 0  # optimizer step count (Adam bias correction)
        self.flash = {}  # name -> read-only array outside the arena
        self._init_tail(head)
        self._forward, self._backward, self._updates = [], [], []
        # the "blas" backend's host buffers (microtrain.train_gemm); None: every op runs its loop kernel
        # (a group step of a batch split shares its parent's buffers and constants: _host, HostGemm's share)
        self._gemm = HostGemm(graph, opts.batch, share=_host) if opts.backend == "blas" else None
        self._bind()
        self._groups, self._handover = self._group_steps(split)
        self._split_backward, self._split_updates = self._bind_split_backward()
        self.split = max(1, len(self._groups))
        # fp32 trainable parameters are checked for NaN/inf before every step (int8/int32 ones cannot be)
        self._float_params = [self.v(n) for n in self.specs if n.startswith("train:") and self.specs[n][1] == F32]

    # ---- arena and flash ----------------------------------------------------------------------
    def v(self, name):
        shape, dtype = self.specs[name]
        return self.arena.view(name, shape, dtype)

    def _flash(self, name, array):
        a = np.ascontiguousarray(array)
        a.setflags(write=False)
        self.flash[name] = a
        return a

    def flash_bytes(self):
        """Read-only bytes outside the arena ("flash"): every backbone conv's weights and biases as the mode
        stores them (int8/int32, or fp32 dequantized once in fp32 mode; the trainable layers' initial
        values included, firmware copies them into SRAM at start), plus every precomputed constant bound
        into the step (requantization multipliers/shifts, QAS coefficients, kept-channel index lists)."""
        item_w, item_b = (1, 4) if self.opts.mode == "int8" else (4, 4)
        weights = sum(int(np.prod(op.weight_shape())) * item_w + op.cout * item_b for op in self.graph.convs)
        consts = sum(a.nbytes for k, a in self.flash.items() if not k.startswith(("w:", "b:")))
        return int(weights + consts)

    @property
    def host_bytes(self):
        """Host memory outside the arena and flash that the "blas" backend uses (0 for "reference"): the GEMMs'
        buffers and constants, and with a batch split the group steps' arenas and weight buffers."""
        if self._gemm is None:
            return 0
        return self._gemm.host_bytes + sum(part.arena.buffer.nbytes + part.host_bytes
                                           for _, part, _, _ in self._groups)

    def _group_steps(self, split):
        """The batch split (module docstring): ([((n0, n1), group TrainStep)], the buffers handed over after the
        forward); no groups for an unsplit step."""
        opts = self.opts
        groups = batch_split.resolve_step_groups(opts.batch, split)
        if groups == 1 or opts.mode != "int8" or self._gemm is None:
            return [], ()
        # every buffer the forward writes that is alive at its last op (the head): what the loss, the backward and
        # features() read. They are alive together, so disjoint in the plan; the input is written here directly
        fwd_end = self.analysis.fwd_scope(self.analysis.head)
        handover = tuple(b.name for b in self.plan.buffers
                         if b.region == "head" and 1 <= b.first <= fwd_end <= b.last)
        train = [n for n in self.specs if n.startswith("train:")]  # copied into the groups before each forward
        parts = []
        for n0, n1 in batch_split.group_bounds(opts.batch, groups):
            # reordering off: the group step keeps every gradient to the end of its backward, for the sum over groups
            part = TrainStep(self.model, self.cfg, self.n_classes,
                             dataclasses.replace(opts, batch=n1 - n0, reorder=False),
                             split=1, _host=self._gemm.share(n0, n1, opts.batch))
            # (destination, source) views bound once: in before the forward, out after it
            copy_in = [(part.v(n), self.v(n)) for n in train]
            copy_out = [(_image_rows(self.v(n), n0, n1, opts.batch), part.v(n)) for n in handover]
            parts.append(((n0, n1), part, copy_in, copy_out))
        return parts, handover

    def _bind_split_backward(self):
        """A split step's backward (module docstring, "Batch split", 3-4): [one job per group: its rows of the loss
        gradient in, its backward], and [(update item, [each group's buffer of that item's gradient])] in the order
        this step applies its updates. Nothing for an unsplit step."""
        if not self._groups:
            return [], []
        N = self.opts.batch
        jobs = [partial(_group_backward, part, part.v("grad:logits"), _image_rows(self.v("grad:logits"), n0, n1, N))
                for (n0, n1), part, _, _ in self._groups]
        grads = []
        for _, part, _, _ in self._groups:
            mine = {(it[0], it[7]): it[3] for it in part._updates}  # (tag, layer) -> gradient view
            if len(mine) != len(part._updates) or any(isinstance(it[0], str) for it in part._backward):
                raise RuntimeError("a group step must keep its updates to the end, one per (tag, layer)")
            grads.append(mine)
        order = [it for it in self._backward if isinstance(it[0], str)] + self._updates
        return jobs, [(it, [g[(it[0], it[7])] for g in grads]) for it in order]

    def _run_forward(self, x):
        """The forward pass on x (checked): in the group steps where the batch is split (module docstring). A split
        step does not copy x into its own arena: each group step copies its images into its own, and whatever of x
        the backward reads comes back with the handover."""
        if self._groups:
            batch_split.run_in_turn_or_concurrently(
                [partial(_group_forward, part, copy_in, copy_out, x[n0:n1])
                 for (n0, n1), part, copy_in, copy_out in self._groups], self._groups)
            return
        self.v(f"act:{self.graph.input_name}")[...] = x
        for fn, args in self._forward:
            fn(*args)

    def _init_tail(self, head):
        m, a = self.model, self.analysis
        for op in self.graph.convs:
            if a.weight_update(op) is not None:
                w = m.params[op.name]["weight"] if self.opts.mode == "int8" else dequantized_weights(m, op)[0]
                self.v(f"train:w:{op.name}")[...] = w
            if a.bias_update(op) is not None:
                b = m.params[op.name]["bias"] if self.opts.mode == "int8" else dequantized_weights(m, op)[1]
                self.v(f"train:b:{op.name}")[...] = b
        W, b = head if head is not None else (np.zeros((self.n_classes, self.graph.classifier.cin), F32),
                                             np.zeros(self.n_classes, F32))
        W, b = np.asarray(W, F32), np.asarray(b, F32)
        if W.shape != self.specs["train:w:head"][0] or b.shape != self.specs["train:b:head"][0]:
            raise InputError(f"head must be W {self.specs['train:w:head'][0]} and b {self.specs['train:b:head'][0]}, "
                             f"got {W.shape} and {b.shape}")
        self.v("train:w:head")[...] = W
        self.v("train:b:head")[...] = b
        for name in self.specs:
            if name.startswith("adam:"):
                self.v(name)[...] = 0

    # ---- weights as the forward sees them ------------------------------------------------------
    def _weights(self, op):
        a = self.analysis
        if self.opts.mode == "int8":
            p = self.model.params[op.name]
            w, b = p["weight"], p["bias"]
        else:
            w, b = self.flash.get(f"w:{op.name}"), self.flash.get(f"b:{op.name}")
            if w is None:
                wf, bf = dequantized_weights(self.model, op)
                w, b = self._flash(f"w:{op.name}", wf), self._flash(f"b:{op.name}", bf)
        # the kernels that take w and b only read them: bound read-only, trainable or not (arena.read_only)
        if a.weight_update(op) is not None:
            w = self._read_only(f"train:w:{op.name}")
        elif self.opts.mode == "int8":
            w = self.flash.setdefault(f"w:{op.name}", read_only(w))
        if a.bias_update(op) is not None:
            b = self._read_only(f"train:b:{op.name}")
        elif self.opts.mode == "int8":
            b = self.flash.setdefault(f"b:{op.name}", read_only(b))
        return w, b

    def _read_only(self, name):
        shape, dtype = self.specs[name]
        return self.arena.read_only_view(name, shape, dtype)

    # ---- binding --------------------------------------------------------------------------------
    def _bind(self):
        for op in self.graph.ops:
            self._bind_forward(op)
        self._bind_loss()
        for op in self.analysis.backward_ops:
            self._bind_backward(op)

    def _act(self, t):
        return self.v(f"act:{t}")

    def _bind_forward(self, op):
        a, m, opts, F = self.analysis, self.model, self.opts, self._forward
        if op is a.head:
            feat = op.inputs[0]
            if opts.mode == "int8":
                s, zp = m.quant[feat]
                x4 = self.arena.view(f"act:{feat}", (opts.batch, 1, 1, op.cin), np.int8)
                f4 = self.arena.view("head:feat", (opts.batch, 1, 1, op.cin), F32)
                F.append((dequantize_s8, (f4, x4, float(np.float32(s)), int(zp))))
                xin = self.v("head:feat")
            else:
                xin = self._act(feat)
            if opts.head == "cosine":
                F.append((l2_normalize_rows_f32, (self.v("head:fn"), self.v("head:norm"), xin)))
                xin = self.v("head:fn")
            F.append((fully_connected_f32, (self.v("head:logits"), xin, self.v("train:w:head"),
                                            self.v("train:b:head"))))
            return
        y = self._act(op.output)
        keep = a.compact_input(op)
        if keep is not None and opts.save_kept_channels:  # save only the kept input channels (MIT)
            F.append((gather_channels, (self.v(f"saved:{op.name}"), self._act(op.inputs[0]),
                                        self._flash(f"keepw:{op.name}", np.asarray(keep, np.int32)))))
        want_mask = op.name in a.mask_ops
        mask = self.v(f"mask:{op.name}") if (want_mask and opts.mode == "int8") else NO_MASK
        if op.kind == "mean":
            fn = global_mean_s8 if opts.mode == "int8" else global_mean_f32
            args = (y, self._act(op.inputs[0]), -128, 127) if opts.mode == "int8" else (y, self._act(op.inputs[0]))
            F.append((fn, args))
            return
        if op.kind == "add":
            if opts.mode == "int8":
                (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(m.quant[op.inputs[0]][0], m.quant[op.inputs[1]][0],
                                                                  m.quant[op.output][0])
                a, b = self._act(op.inputs[0]), self._act(op.inputs[1])
                params = (m.quant[op.inputs[0]][1], am, ash, m.quant[op.inputs[1]][1], bm, bsh, m.quant[op.output][1],
                          ym, ysh, -128, 127)
                loop = (add_s8, (y, mask, a, b) + params)  # the reference backend: the kernel firmware runs
                F.append(self._gemm.bind_add(y, mask, a, b, params) if self._gemm else loop)
            else:
                F.append((add_f32, (y, self._act(op.inputs[0]), self._act(op.inputs[1]))))
            return
        w, b = self._weights(op)
        x = self._act(op.inputs[0])
        geo = (op.stride, op.pad) if op.kind in ("conv2d", "depthwise") else ()
        if opts.mode == "int8":
            xq, yq = m.quant[op.inputs[0]], m.quant[op.output]
            mult, shift = conv_multipliers(xq[0], m.params[op.name]["w_scales"], yq[0])
            mult, shift = self._flash(f"mult:{op.name}", mult), self._flash(f"shift:{op.name}", shift)
            lo, hi = activation_range_s8(op.act, *yq)
            fn = {"conv2d": conv2d_s8, "depthwise": depthwise_conv_s8, "pointwise": pointwise_conv_s8}[op.kind]
            gemm = self._gemm and self._gemm.forward_s8(op, y, mask, x, w, a.weight_update(op) is not None, b, mult,
                                                        shift, xq[1], yq[1], lo, hi)
            F.append(gemm or (fn, (y, mask, x, w, b, mult, shift, xq[1], yq[1], lo, hi) + geo))
        else:
            lo, hi = (0.0, 6.0) if op.act == "relu6" else ((0.0, np.inf) if op.act == "relu" else (-np.inf, np.inf))
            fn = {"conv2d": conv2d_f32, "depthwise": depthwise_conv_f32, "pointwise": pointwise_conv_f32}[op.kind]
            gemm = self._gemm and self._gemm.forward_f32(op, y, x, w, b, lo, hi)
            F.append(gemm or (fn, (y, x, w, b, lo, hi) + geo))
            if want_mask:
                F.append((mask_pack_f32, (self.v(f"mask:{op.name}"), y, lo, hi)))

    def _bind_loss(self):
        self._loss_args = (self.v("grad:logits"), self.v("head:logits"), self.v("labels"))

    def _grad(self, t):
        return self.v(f"grad:{t}")

    def _bind_backward(self, op):
        a, opts, B, U = self.analysis, self.opts, self._backward, self._updates
        later = U if not opts.reorder else B  # with reordering, each update runs right after its gradients
        if op is a.head:
            feat = op.inputs[0]
            xin = self.v("head:feat") if opts.mode == "int8" else self._act(feat)
            if opts.head == "cosine":
                xin = self.v("head:fn")
            dlog = self.v("grad:logits")
            K, C = op.cout, op.cin
            all_k = self._flash("range:head:out", np.arange(K, dtype=np.int32))
            all_c = self._flash("range:head:in", np.arange(C, dtype=np.int32))
            B.append((fully_connected_f32_backward_weight, (self.v("dw:head"), xin, F32(0.0), dlog, all_k)))
            B.append((bias_f32_backward_2d, (self.v("db:head"), dlog, all_k)))
            if a.requires_grad[feat] and opts.head == "cosine":
                B.append((fully_connected_f32_backward_input, (self.v("grad:head:fn"), dlog, self.v("train:w:head"))))
                B.append((l2_normalize_rows_f32_backward, (self._grad(feat), self.v("grad:head:fn"),
                                                           self.v("head:fn"), self.v("head:norm"))))
            elif a.requires_grad[feat]:
                B.append((fully_connected_f32_backward_input, (self._grad(feat), dlog, self.v("train:w:head"))))
            w4 = self.arena.view("train:w:head", (K, 1, 1, C), F32)
            dw4 = self.arena.view("dw:head", (K, 1, 1, C), F32)
            self._bind_update(later, "head", w4, dw4, all_k, all_c, self.v("train:b:head"), self.v("db:head"), all_k,
                              None, None, kind="fc")
            return
        g = self._grad(op.output)
        if has_clamp(op, opts.mode):
            mask = self.v(f"mask:{op.name}") if op.name in a.mask_ops else None
            gm = g if opts.inplace else self.v(f"gradm:{op.name}")
            if mask is not None:
                B.append((mask_unpack_backward_f32, (gm, g, mask)))
            else:  # fp32: the saved output itself decides (lo < y < hi passes), no mask needed
                lo, hi = (0.0, 6.0) if op.act == "relu6" else (0.0, np.inf)
                B.append((clamp_f32_backward, (gm, g, self._act(op.output), lo, hi)))
            g = gm
        if op.kind == "add":
            sc, br = op.inputs
            if a.requires_grad[sc]:
                B.append((scale_f32, (self._grad(sc), g, 1.0)))  # the shortcut starts with a copy of dy
            if a.requires_grad[br] and not opts.inplace:
                B.append((scale_f32, (self._grad(br), g, 1.0)))
            return
        if op.kind == "mean":
            B.append((global_mean_f32_backward, (self._grad(op.inputs[0]), g)))
            return
        self._bind_conv_backward(op, g, later)

    def _bind_conv_backward(self, op, g, later):
        a, m, opts, B = self.analysis, self.model, self.opts, self._backward
        x_name = op.inputs[0]
        lu_w, lu_b = a.weight_update(op), a.bias_update(op)
        s_w = m.params[op.name]["w_scales"].astype(np.float64)
        s_x = float(np.float32(m.quant[x_name][0]))
        x_zp = F32(m.quant[x_name][1]) if opts.mode == "int8" else F32(0.0)
        geo = (op.stride, op.pad) if op.kind in ("conv2d", "depthwise") else ()
        all_out = self._flash(f"range:{op.name}:out", np.arange(op.cout, dtype=np.int32))
        all_in = self._flash(f"range:{op.name}:in", np.arange(op.cin, dtype=np.int32))
        wb = db = keep_out = keep_in = None
        if lu_b is not None:
            db = self.v(f"db:{op.name}")
            B.append((bias_f32_backward, (db, g, all_out)))
        if lu_w is not None:
            dw = self.v(f"dw:{op.name}")
            keep = self._flash(f"keepw:{op.name}", np.asarray(lu_w.keep if lu_w.keep is not None else
                                                              range(op.cin), np.int32))
            compact = a.compact_input(op) is not None
            if compact and not opts.save_kept_channels:  # the full input was saved: gather the kept channels now
                B.append((gather_channels, (self.v(f"saved:{op.name}"), self._act(x_name), keep)))
            xs = self.v(f"saved:{op.name}") if compact else self._act(x_name)
            if op.kind == "depthwise":
                kk = keep if compact else all_in
                B.append((depthwise_conv_f32_backward_weight, (dw, xs, x_zp, g, kk) + geo))
                keep_out, keep_in = None, kk
            else:
                if lu_w.axis == "output" and lu_w.keep is not None:
                    keep_out, keep_in = keep, all_in
                else:
                    keep_out, keep_in = all_out, (keep if lu_w.keep is not None else all_in)
                fn = conv2d_f32_backward_weight if op.kind == "conv2d" else pointwise_conv_f32_backward_weight
                gemm = self._gemm and self._gemm.backward_weight(op, dw, xs, x_zp, g, keep_out)
                B.append(gemm or (fn, (dw, xs, x_zp, g, keep_out) + geo))
            wb = dw
        if a.input_needs_grad(op):
            w, _ = self._weights(op)
            if opts.mode == "int8":  # dx_real = sum dy_real * s_w[c] * w_int: fold s_w into dy (dy is done)
                B.append((scale_channels_f32, (g, self._flash(f"sw:{op.name}", s_w.astype(F32)))))
            dx_target = self.v(f"tmp:{op.name}") if f"tmp:{op.name}" in self.specs else self._grad(x_name)
            fn = {"conv2d": conv2d_f32_backward_input, "depthwise": depthwise_conv_f32_backward_input,
                  "pointwise": pointwise_conv_f32_backward_input}[op.kind]
            gemm = self._gemm and self._gemm.backward_input(op, dx_target, g, w, opts.mode == "int8",
                                                            lu_w is not None)
            B.append(gemm or (fn, (dx_target, g, w) + geo))
            if f"tmp:{op.name}" in self.specs:
                B.append((accumulate_f32, (self._grad(x_name), dx_target)))
        # updates (after dx: the input gradient uses the weights of the forward pass)
        if opts.mode == "int8" and opts.optimizer == "sgd":
            # QAS (Lin et al. 2022): G~ = dL/dw_int / s_w^2 = dL/dw_real / s_w with dL/dw_real = s_x * dw,
            # and for the int32 bias (scale s_x s_w) G~ = dL/db_real / (s_x s_w)
            coef_w = self._flash(f"qas:w:{op.name}", (s_x / s_w).astype(F32))
            coef_b = self._flash(f"qas:b:{op.name}", (1.0 / (s_x * s_w)).astype(F32))
        elif opts.mode == "int8":
            # Adam sees the gradient w.r.t. the integer parameters: dL/dw_int = s_w * s_x * dw and
            # dL/db_int = s_x s_w * db (Adam is invariant to that per-channel scale up to epsilon)
            coef_w = coef_b = self._flash(f"gscale:{op.name}", (s_x * s_w).astype(F32))
        else:
            coef_w = coef_b = None
        wv = self.v(f"train:w:{op.name}") if lu_w is not None else None
        bv = self.v(f"train:b:{op.name}") if lu_b is not None else None
        if op.kind == "pointwise" and wv is not None:
            wv = self.arena.view(f"train:w:{op.name}", (op.cout, 1, 1, op.cin), wv.dtype)
            wb = self.arena.view(f"dw:{op.name}", (wb.shape[0], 1, 1, wb.shape[1]), F32)
        self._bind_update(later, op.name, wv, wb, keep_out, keep_in, bv, db, all_out,
                          coef_w, coef_b, kind=op.kind)

    def _bind_update(self, L, name, w, dw, keep_out, keep_in, b, db, keep_b, coef_w, coef_b, kind):
        """Append the update of one layer's weight and bias to the step list L."""
        opts = self.opts
        int8 = opts.mode == "int8" and kind != "fc"
        adam = opts.optimizer == "adam"
        if w is not None:
            if kind == "depthwise":
                # dw (KH, KW, K) holds the channels keep_in (slot k <-> channel keep_in[k])
                if int8:
                    L.append(("dw_s8", upd.adam_update_hwc_s8 if adam else upd.sgd_update_hwc_s8, w, dw, None,
                              keep_in, coef_w, name))
                else:
                    L.append(("dw_f32", upd.adam_update_hwc_f32 if adam else upd.sgd_update_hwc_f32, w, dw, None,
                              keep_in, None, name))
            else:
                if int8:
                    L.append(("ohwi_s8", upd.adam_update_ohwi_s8 if adam else upd.sgd_update_ohwi_s8, w, dw, keep_out,
                              keep_in, coef_w, name))
                else:
                    L.append(("ohwi_f32", upd.adam_update_ohwi_f32 if adam else upd.sgd_update_ohwi_f32, w, dw,
                              keep_out, keep_in, None, name))
        if b is not None:
            if int8:
                L.append(("b_s32", upd.adam_update_bias_s32 if adam else upd.sgd_update_bias_s32, b, db, keep_b, None,
                          coef_b, name))
            else:
                L.append(("b_f32", upd.adam_update_bias_f32 if adam else upd.sgd_update_bias_f32, b, db, keep_b, None,
                          None, name))

    # ---- running ----------------------------------------------------------------------------------
    def _check_inputs(self, x, labels):
        N = self.opts.batch
        want = (N,) + tuple(self.graph.input_shape)
        dt = np.int8 if self.opts.mode == "int8" else np.float32
        if not isinstance(x, np.ndarray) or x.dtype != dt or x.shape != want:
            raise InputError(f"training input must be {np.dtype(dt)} {want} (N, H, W, C) in {self.opts.mode} mode, got "
                             f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
        if dt == np.float32 and not np.all(np.isfinite(x)):
            raise NumericError("training input holds NaN or inf; the weights were not changed")
        labels = np.asarray(labels)
        if labels.shape != (N,) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be {N} integers, got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise InputError(f"labels must lie in [0, {self.n_classes - 1}]")
        return labels

    def run(self, x, labels):
        """One training step on x (N, H, W, C) and labels (N,). Returns the mean loss before the update.

        Non-finite values are refused before any weight changes: the input (fp32 mode), every fp32
        trainable parameter, the loss and its gradient are checked first. Every backward quantity is then a
        linear function of the finite loss gradient through finite weights and bounded activations, so a
        non-finite gradient can only come from float32 overflow. Without reordering all gradients are
        checked before the first update; with reordering each is checked before its own update, and the
        error names the layers already updated in that (only) case.
        """
        labels = self._check_inputs(x, labels)
        for w in self._float_params:
            if not upd.all_finite(w):
                raise NumericError("a trainable fp32 parameter holds NaN or inf (diverged training, or a bad head "
                                   "given); the weights were not changed: lower the learning rate or re-initialise")
        self.v("labels")[...] = labels
        self._run_forward(x)
        loss = softmax_cross_entropy_f32(*self._loss_args)
        if not np.isfinite(loss) or not upd.all_finite(self._loss_args[0]):
            raise NumericError("the loss or its gradient is not finite (NaN/inf in the head or inputs); "
                               "the weights were not changed")
        self.t += 1
        if self._groups:
            return self._run_split_backward(loss)
        applied = []
        for item in self._backward:
            if isinstance(item[0], str):
                if not upd.all_finite(item[3]):
                    self.t -= 1
                    raise NumericError(
                        f"gradient of {item[7]} is not finite (float32 overflow in the backward pass); "
                        + ("no weight was changed" if not applied else
                           f"already updated with operator reordering: {', '.join(dict.fromkeys(applied))}"))
                self._apply(item)
                applied.append(item[7])
            else:
                item[0](*item[1])
        if self._updates:
            for item in self._updates:
                if not upd.all_finite(item[3]):
                    self.t -= 1
                    raise NumericError(f"gradient of {item[7]} is not finite; no weight was changed")
            for item in self._updates:
                self._apply(item)
        return float(loss)

    def _run_split_backward(self, loss):
        """A split step after its loss (module docstring, "Batch split", 3-4). Returns the loss."""
        batch_split.run_in_turn_or_concurrently(self._split_backward, self._groups)
        for _, grads in self._split_updates:  # in group order, into group 0's buffer
            for g in grads[1:]:
                np.add(grads[0], g, out=grads[0])
        for item, grads in self._split_updates:
            if not upd.all_finite(grads[0]):
                self.t -= 1
                raise NumericError(f"gradient of {item[7]} is not finite (float32 overflow in the backward pass); "
                                   "no weight was changed")
        for item, grads in self._split_updates:
            np.copyto(item[3], grads[0])  # this step's gradient buffer holds the step's gradient, as unsplit
            self._apply(item)
        return float(loss)

    def _apply(self, item):
        tag, fn, w, dw, k1, k2, coef, name = item
        lr = float(self.opts.lr)
        adam = self.opts.optimizer == "adam"
        if adam:
            m = self.v(f"adam:m:{_pname(tag, name)}")
            v = self.v(f"adam:v:{_pname(tag, name)}")
            if tag in ("ohwi_s8", "ohwi_f32"):
                m = m.reshape(dw.shape)
                v = v.reshape(dw.shape)
        if tag in ("ohwi_s8",):
            fn(w, dw, k1, k2, coef, lr) if not adam else fn(w, dw, m, v, k1, k2, coef, lr, self.t)
        elif tag == "ohwi_f32":
            fn(w, dw, k1, k2, lr) if not adam else fn(w, dw, m, v, k1, k2, lr, self.t)
        elif tag == "dw_s8":
            fn(w, dw, k2, coef, lr) if not adam else fn(w, dw, m, v, k2, coef, lr, self.t)
        elif tag == "dw_f32":
            fn(w, dw, k2, lr) if not adam else fn(w, dw, m, v, k2, lr, self.t)
        elif tag == "b_s32":
            fn(w, dw, k1, coef, lr) if not adam else fn(w, dw, m, v, k1, coef, lr, self.t)
        else:
            fn(w, dw, k1, lr) if not adam else fn(w, dw, m, v, k1, lr, self.t)

    def forward_logits(self, x):
        """Forward pass only (same kernels and arena); returns a copy of the fp32 logits (N, K)."""
        N = self.opts.batch
        want = (N,) + tuple(self.graph.input_shape)
        dt = np.int8 if self.opts.mode == "int8" else np.float32
        if not isinstance(x, np.ndarray) or x.dtype != dt or x.shape != want:
            raise InputError(f"input must be {np.dtype(dt)} {want}")
        self._run_forward(x)
        return self.v("head:logits").copy()

    def features(self, x):
        """Pooled backbone features (N, C) float32 of x (dequantized in int8 mode): a copy. Runs the forward."""
        self.forward_logits(x)
        feat = self.graph.classifier.inputs[0]
        return (self.v("head:feat") if self.opts.mode == "int8" else self._act(feat)).copy()

    def set_lr(self, lr):
        """Learning rate of the following steps (a schedule); validated like TrainOptions.lr (ConfigError,
        and the step keeps its lr)."""
        self.opts = dataclasses.replace(self.opts, lr=lr).validate()

    def set_head(self, W, b):
        """Replace the head's trainable weights (K, C) and bias (K,), e.g. with prototypes; resets Adam state."""
        W, b = np.asarray(W, F32), np.asarray(b, F32)
        if W.shape != self.specs["train:w:head"][0] or b.shape != self.specs["train:b:head"][0]:
            raise InputError(f"head must be W {self.specs['train:w:head'][0]} and b {self.specs['train:b:head'][0]}")
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            raise NumericError("head weights hold NaN or inf")
        self.v("train:w:head")[...] = W
        self.v("train:b:head")[...] = b
        for name in self.specs:
            if name.startswith("adam:") and name.endswith(":head"):
                self.v(name)[...] = 0

    def trained_model(self):
        """The int8 Model with the trained weights and biases (int8 mode), plus the fp32 head (W, b)."""
        if self.opts.mode != "int8":
            raise InputError("trained_model() exports int8 weights; in fp32 mode read the train:* views")
        params = {k: dict(v) for k, v in self.model.params.items()}
        for op in self.graph.convs:
            if f"train:w:{op.name}" in self.specs:
                params[op.name]["weight"] = self.v(f"train:w:{op.name}").copy()
            if f"train:b:{op.name}" in self.specs:
                params[op.name]["bias"] = self.v(f"train:b:{op.name}").copy()
        params.pop(self.graph.classifier.name, None)
        head = (self.v("train:w:head").copy(), self.v("train:b:head").copy())
        return Model(self.model.graph, params, dict(self.model.quant), dict(self.model.meta)), head


def _image_rows(v, n0, n1, batch):
    """Images [n0, n1) of a per-image buffer v, whose leading axis holds batch * (rows per image)."""
    per = v.shape[0] // batch
    return v[n0 * per:n1 * per]


def _group_forward(part, copy_in, copy_out, x):
    """One group of a split forward (on its own thread): the step's trainable parameters into the group step
    (copy_in), its forward on this group's images x, then the buffers read after the forward into the step's rows
    of them (copy_out): (destination, source) view pairs bound in TrainStep._group_steps."""
    for dst, src in copy_in:
        np.copyto(dst, src)
    part.v(f"act:{part.graph.input_name}")[...] = x
    for fn, args in part._forward:
        fn(*args)
    for dst, src in copy_out:
        np.copyto(dst, src)


def _group_backward(part, dlogits, rows):
    """One group of a split backward (on its own thread, or in turn): its rows of the step's loss gradient into the
    group step, then the group step's backward on its images. Its updates stay in its _updates, not run: the step
    sums the gradients over the groups and updates its own parameters."""
    np.copyto(dlogits, rows)
    for fn, args in part._backward:
        fn(*args)


def _pname(tag, name):
    return ("b:" if tag.startswith("b_") else "w:") + name

