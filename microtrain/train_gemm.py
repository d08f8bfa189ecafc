"""The "blas" backend of a training step (TrainOptions(backend="blas")): 1x1 and standard convs as host GEMMs.

On a host, a conv's multiply-adds run fastest in NumPy's float32 BLAS (sgemm). This module binds, for the ops of a
TrainStep that can use it, a step entry that calls sgemm into a preallocated `out` between two small jitted kernels,
in place of the loop kernel the "reference" backend (and firmware's C twins) runs:

  op                         "blas" entry                                         bits vs "reference"
  int8 forward, conv2d/1x1   widen or im2col (x - x_zp) -> sgemm -> requantize +   identical (kernels/gemm_io.py:
                             1-bit mask                                            every partial sum is an integer
                                                                                   <= 2^24, exact in float32)
  fp32 forward, conv2d/1x1   (im2col) -> sgemm -> + bias, clamp                     float32 rounding
  1x1 input gradient         dx (P, Ci) = dy (P, Co) @ w (Co, Ci)                   float32 rounding
  1x1 weight gradient        dw (K, Ci') = dy[:, keep_out].T @ (x - x_zp)           float32 rounding
  KxK weight gradient        dw (K, KH*KW*Ci') = dy[:, keep_out].T @ im2col(x - x_zp) float32 rounding
  int8 forward, depthwise    kernels/depthwise_host.py (row-wise vectorised taps,   identical (exact int32 sums)
                             float64 requantization) + 1-bit mask
  int8 residual add          kernels/add_host.py (one lookup table of add_s8's       identical (add_s8's own
                             outputs per parameter set) + 1-bit mask (bound in      outputs)
                             train.py)
  fp32 depthwise, stride 1:  depthwise_host.py: taps outer over row segments, same   identical (same per-element
  forward and input gradient per-element order                                      order, no fastmath)

The int8 forward is exact only while sum_ci |w[co, ci]| * max|x - x_zp| <= 2^24; a frozen layer is checked on its
weights, a trainable one on the worst case (every weight at 127: its weights change every step), and a layer that
fails keeps the loop kernel. The fp32 sums differ from the loop kernels' in float32 rounding only (sgemm blocks
and fuses the same products in another order), so results differ from the reference backend at that level: the
adaptation is deterministic for one machine and thread count, but firmware reproduces the "reference" backend, not
this one. Other depthwise cases (stride 2, too wide for the stack tiles, the depthwise weight gradient), fp32 adds,
pooling, the head, masks and updates are the same kernels in both backends.

Memory: the arena (plan, offsets, peak) is the same for both backends. The GEMMs' float32 operands live in host
buffers outside it (`HostGemm.host_bytes`): one left-operand buffer and one result/gather buffer shared by every
layer (ops run one after another), one buffer to widen a trainable int8 weight, a float32 copy of each frozen
int8 weight a GEMM reads, each int8 GEMM or depthwise layer's (4, Co) float64 requantization constants
(gemm_io.requant_f64_params), and a 128 KiB lookup table per distinct int8 ADD parameter set (add_host.add_table).
"""

import numpy as np

from microtrain.arena import read_only
from microtrain.kernels.add_host import bind_add_s8
from microtrain.kernels.depthwise_host import (bind_depthwise_s8, depthwise_conv_f32_backward_input_host,
                                              depthwise_conv_f32_host, depthwise_f32_host_fits)
from microtrain.kernels.gather import gather_channels
from microtrain.kernels.gemm_f32 import bias_add_clamp_f32
from microtrain.kernels.gemm_io import (F32_EXACT_INT, INT8_WEIGHT_MAX, exact_in_f32, im2col_f32,
                                        requant_f64_params, requantize_acc_f32_s8, requantize_acc_f32_s8_mask,
                                        weight_reach, widen_s8_f32, widest_input)

F32 = np.float32
GEMM_KINDS = ("conv2d", "pointwise")


def _pixels(shape):
    return int(np.prod(shape[:-1]))


class HostGemm:
    """Host float32 buffers of one TrainStep's "blas" backend, and the builders of its step entries.

    graph: the step's graph; batch: the step's batch. Each builder returns (fn, args) for the step list, or None
    where the loop kernel stays (a reference-only case).
    """

    def __init__(self, graph, batch, share=None):
        a = b = w = 0
        for op in graph.convs:
            if op.kind not in GEMM_KINDS:
                continue
            p = batch * _pixels(graph.shapes[op.output])
            k = int(np.prod(op.weight_shape()[1:]))  # KH * KW * Ci
            a, b, w = max(a, p * k), max(b, p * op.cout), max(w, op.cout * k)
        self._w = np.empty(w, F32)  # a trainable int8 weight widened for this step
        if share is not None:  # a batch-split group's (see share): only _w is its own
            self._a, self._b, self._frozen, self._rq, self._add_tables = share
            self._shared = True
            return
        self._shared = False
        self._a = np.empty(a, F32)  # left operand: widened / im2col input, or a widened saved input
        self._b = np.empty(b, F32)  # int8 forward's exact sums, or dy's kept output channels
        self._frozen = {}  # op name -> read-only float32 copy of a frozen int8 weight (Co, K)
        self._rq = {}  # op name -> requantization constants of the float64 fast path (gemm_io.requant_f64_params)
        self._add_tables = {}  # int8 ADD parameters -> (65536,) int16 lookup table (add_host.bind_add_s8)

    def share(self, n0, n1, batch):
        """What a batch-split group step of images [n0, n1) of `batch` takes from this one (microtrain.train, "Batch
        split"): its images' share of the two float32 operand buffers (each is batch times its largest per-image
        need, so the groups' shares are disjoint whatever layer each group is at) and the constants (read-only)."""
        a, b = self._a.size // batch, self._b.size // batch
        return self._a[n0 * a:n1 * a], self._b[n0 * b:n1 * b], self._frozen, self._rq, self._add_tables

    @property
    def host_bytes(self):
        """This step's host bytes; a group step counts only its own weight buffer (its parent counts the rest)."""
        if self._shared:
            return self._w.nbytes
        return (self._a.nbytes + self._b.nbytes + self._w.nbytes + sum(v.nbytes for v in self._frozen.values())
                + sum(v.nbytes for v in self._rq.values()) + sum(v.nbytes for v in self._add_tables.values()))

    def bind_add(self, y, mask, a, b, params):
        """(kernel, args) of an int8 residual ADD with add_s8's parameters `params` (after its tensors):
        add_host.bind_add_s8, its lookup table built once per distinct parameter set and counted in host_bytes."""
        return bind_add_s8(self._add_tables, y, mask, a, b, params)

    def _frozen_f32(self, op, w_int):
        if op.name not in self._frozen:
            self._frozen[op.name] = read_only(np.ascontiguousarray(w_int.reshape(op.cout, -1), dtype=F32))
        return self._frozen[op.name]

    def _int8_weight(self, op, w, trainable):
        """(source int8 (Co, K) or None, float32 (Co, K)): a trainable weight is widened into the shared buffer
        at each call (it changes every step); a frozen one is widened once."""
        k = int(np.prod(op.weight_shape()[1:]))
        if trainable:
            return w.reshape(op.cout, k), self._w[:op.cout * k].reshape(op.cout, k)
        return None, self._frozen_f32(op, w)

    # ---- forward ---------------------------------------------------------------------------------------
    def forward_s8(self, op, y, mask, x, w, trainable, bias, mult, shift, x_zp, y_zp, lo, hi):
        """int8 conv2d / 1x1 forward, bit-exact with conv2d_s8 / pointwise_conv_s8 (mask included), or None when
        the float32 sums could round; an int8 depthwise forward from depthwise_host.bind_depthwise_s8 (the host
        kernel where it fits, bit-exact with depthwise_conv_s8, else that loop kernel)."""
        key = op.name + (":trainable" if trainable else "")  # the constants bound |acc| differently (below)
        if op.kind == "depthwise":
            return bind_depthwise_s8(self._rq, key, y, mask, x, w, bias, mult, shift, x_zp, y_zp, lo, hi,
                                     op.stride, op.pad, trainable)
        if op.kind not in GEMM_KINDS:
            return None
        k = int(np.prod(op.weight_shape()[1:]))
        worst = INT8_WEIGHT_MAX * k * widest_input(x_zp)  # |acc| of any int8 weight: one that trains is bound by it
        if trainable:
            if worst > F32_EXACT_INT:
                return None
        elif not exact_in_f32(w.reshape(op.cout, k), x_zp):
            return None
        P = _pixels(y.shape)
        w_src, wf = self._int8_weight(op, w, trainable)
        xf = self._a[:P * k].reshape(P, k)
        acc = self._b[:P * op.cout].reshape(P, op.cout)
        if key not in self._rq:  # (4, Co) f64, fixed like mult, shift: once per layer, however often bound
            reach = worst if trainable else weight_reach(w.reshape(op.cout, k), x_zp)
            self._rq[key] = read_only(requant_f64_params(mult, shift, reach))
        rq = self._rq[key]
        tail = (w_src, wf, acc, acc.reshape(y.shape), bias, rq, mult, shift, x_zp, y_zp, lo, hi)
        if op.kind == "conv2d":
            return gemm_conv2d_s8, (y, mask, read_only(x), xf) + tail + (op.kernel, op.stride, op.pad)
        return gemm_pointwise_s8, (y, mask, read_only(x.reshape(P, k)), xf) + tail

    def forward_f32(self, op, y, x, w, bias, lo, hi):
        """fp32 conv2d / 1x1 forward: sgemm, then + bias and clamp (float32 rounding differs from the loops); fp32
        stride-1 depthwise: depthwise_conv_f32_host (bit-identical to depthwise_conv_f32); else None."""
        if op.kind == "depthwise":
            if not depthwise_f32_host_fits(op.kernel, op.cout, op.stride):
                return None
            return depthwise_conv_f32_host, (y, read_only(x), w, bias, lo, hi, op.pad)
        if op.kind not in GEMM_KINDS:
            return None
        P = _pixels(y.shape)
        w2 = w.reshape(op.cout, -1)
        y2 = y.reshape(P, op.cout)
        if op.kind == "conv2d":
            k = w2.shape[1]
            cols = self._a[:P * k].reshape(P, k)
            return gemm_conv2d_f32, (y2, read_only(x), cols, w2, bias, F32(lo), F32(hi), op.kernel, op.stride,
                                     op.pad)
        return gemm_pointwise_f32, (y2, read_only(x.reshape(P, op.cin)), w2, bias, F32(lo), F32(hi))

    # ---- backward --------------------------------------------------------------------------------------
    def backward_input(self, op, dx, g, w, int8, trainable):
        """1x1 input gradient dx = dy @ w (w int8 in int8 mode: dy already carries s_w); stride-1 depthwise input
        gradient: depthwise_conv_f32_backward_input_host (bit-identical to the loop kernel); else None."""
        if op.kind == "depthwise":
            if not depthwise_f32_host_fits(op.kernel, op.cout, op.stride):
                return None
            return depthwise_conv_f32_backward_input_host, (dx, read_only(g), w, op.pad)
        if op.kind != "pointwise":
            return None
        P = _pixels(dx.shape)
        if int8:
            w_src, wf = self._int8_weight(op, w, trainable)
        else:
            w_src, wf = None, w
        return gemm_pointwise_backward_input, (dx.reshape(P, op.cin), read_only(g.reshape(P, op.cout)), w_src, wf)

    def backward_weight(self, op, dw, xs, x_zp, g, keep_out):
        """1x1 weight gradient dw (K, Ci') = dy[:, keep_out].T @ (xs - x_zp), or KxK dw (K, KH*KW*Ci') =
        dy[:, keep_out].T @ im2col(xs - x_zp); None for other kinds.

        xs: the saved input (N, H, W, Ci'), float32 (x_zp 0) or int8 (widened here); keep_out (K,) int32."""
        if op.kind not in GEMM_KINDS:
            return None
        P, ci, K = _pixels(g.shape), xs.shape[3], dw.shape[0]
        if K == op.cout and np.array_equal(keep_out, np.arange(op.cout)):
            gk4 = None  # every output channel: dy itself is the operand
            g2 = read_only(g.reshape(P, op.cout))
        else:
            gk4 = self._b[:P * K].reshape(g.shape[:3] + (K,))
            g2 = gk4.reshape(P, K)
        if op.kind == "conv2d":
            kk = op.kernel * op.kernel * ci
            zp = int(x_zp) if xs.dtype == np.int8 else 0.0  # the forward's im2col specialisations
            return gemm_conv2d_backward_weight, (dw.reshape(K, kk), read_only(xs), self._a[:P * kk].reshape(P, kk),
                                                 zp, g2, gk4, read_only(g), keep_out, op.kernel, op.stride, op.pad)
        xs2 = read_only(xs.reshape(P, ci))
        xf = self._a[:P * ci].reshape(P, ci) if xs.dtype == np.int8 else None
        return gemm_pointwise_backward_weight, (dw, xs2, xf, int(x_zp), g2, gk4, read_only(g), keep_out)


# ---- the step entries (each allocates nothing: every array is bound once; np.matmul writes into out) --------

def gemm_pointwise_s8(y, mask, x2, xf, w_src, wf, acc, acc4, bias, rq, mult, shift, x_zp, y_zp, lo, hi):
    """int8 1x1 conv: xf = x - x_zp (P, Ci); acc = xf @ wf.T (exact); y, mask = requantize(acc)."""
    if w_src is not None:
        widen_s8_f32(wf, w_src, 0)
    widen_s8_f32(xf, x2, x_zp)
    np.matmul(xf, wf.T, out=acc)
    _requantize(y, mask, acc, acc4, bias, rq, mult, shift, y_zp, lo, hi)


def gemm_conv2d_s8(y, mask, x, cols, w_src, wf, acc, acc4, bias, rq, mult, shift, x_zp, y_zp, lo, hi, k, stride,
                   pad):
    """int8 KxK conv: cols = im2col(x - x_zp) (P, K*K*Ci); acc = cols @ wf.T (exact); y, mask = requantize(acc)."""
    if w_src is not None:
        widen_s8_f32(wf, w_src, 0)
    im2col_f32(cols, x, x_zp, k, k, stride, pad)
    np.matmul(cols, wf.T, out=acc)
    _requantize(y, mask, acc, acc4, bias, rq, mult, shift, y_zp, lo, hi)


def _requantize(y, mask, acc, acc4, bias, rq, mult, shift, y_zp, lo, hi):
    """y, and the mask unless it is NO_MASK (a layer below the backward's reach), from the exact sums acc (P, Co),
    acc4 its (N, H, W, Co) view. Without a mask the flat (P, Co) kernel runs: the same bits, and 12-45 % faster
    than the masked kernel's loop over image rows (MCUNet's unmasked 1x1 layers of a 6-image group, one thread:
    e.g. (24576, 8) 92 -> 72 us, (6144, 16) 42 -> 31, (384, 160) 23 -> 13). The choice is made here, not inside
    requantize_acc_f32_s8_mask: viewing its (N, H, W, Co) arrays as (P, Co) there needs a reshape, which Numba types
    only for contiguous arrays, and the kernel also takes strided ones (it raises its own shape errors for them)."""
    if mask.shape[0] == 0:
        requantize_acc_f32_s8(y.reshape(acc.shape), acc, bias, rq, mult, shift, y_zp, lo, hi)
    else:
        requantize_acc_f32_s8_mask(y, mask, acc4, bias, rq, mult, shift, y_zp, lo, hi)


def gemm_pointwise_f32(y2, x2, w2, bias, lo, hi):
    """fp32 1x1 conv: y (P, Co) = clamp(x (P, Ci) @ w.T + bias)."""
    np.matmul(x2, w2.T, out=y2)
    bias_add_clamp_f32(y2, bias, lo, hi)


def gemm_conv2d_f32(y2, x, cols, w2, bias, lo, hi, k, stride, pad):
    """fp32 KxK conv: y (P, Co) = clamp(im2col(x) @ w.reshape(Co, -1).T + bias)."""
    im2col_f32(cols, x, 0.0, k, k, stride, pad)
    np.matmul(cols, w2.T, out=y2)
    bias_add_clamp_f32(y2, bias, lo, hi)


def gemm_pointwise_backward_input(dx2, g2, w_src, wf):
    """dx (P, Ci) = dy (P, Co) @ w (Co, Ci); an int8 trainable weight is widened first (w_src)."""
    if w_src is not None:
        widen_s8_f32(wf, w_src, 0)
    np.matmul(g2, wf, out=dx2)


def gemm_conv2d_backward_weight(dw2, xs, cols, x_zp, g2, gk4, g4, keep_out, k, stride, pad):
    """dw (K, KH*KW*Ci') = dy[:, keep_out].T @ im2col(xs - x_zp) (P, KH*KW*Ci'): the OHWI weight gradient
    flattened; kept dy channels gathered into gk4 first (None: every channel, g2 is dy itself)."""
    im2col_f32(cols, xs, x_zp, k, k, stride, pad)
    if gk4 is not None:
        gather_channels(gk4, g4, keep_out)
    np.matmul(g2.T, cols, out=dw2)


def gemm_pointwise_backward_weight(dw, xs2, xf, x_zp, g2, gk4, g4, keep_out):
    """dw (K, Ci') = dy[:, keep_out].T @ (xs - x_zp): int8 xs widened into xf, kept dy channels gathered into gk4."""
    if xf is not None:
        widen_s8_f32(xf, xs2, x_zp)
        xs2 = xf
    if gk4 is not None:
        gather_channels(gk4, g4, keep_out)
    np.matmul(g2.T, xs2, out=dw)
