"""Depthwise convs of the host "blas" backends, faster than the loop kernels and equal to them bit for bit:
depthwise_conv_s8_host (int8 forward with its 1-bit mask) and, stride 1 only, depthwise_conv_f32_host and
depthwise_conv_f32_backward_input_host (the training step's fp32 forward and input gradient).

Host only, no C twins: firmware mirrors depthwise_conv_s8 / depthwise_conv_f32 / depthwise_conv_f32_backward_input.
Inference and TrainStep with backend="blas" call these for every layer that fits their stack rows
(depthwise_host_fits, depthwise_f32_host_fits), the loop kernels for any other.

What makes it faster than the reference (numbers in bench/README.md):
- Stride 1: one output row at a time. For tap (ky, kx), output (ox, c) reads input (ox + kx - pad, c), so along a
  row the tap's products form one contiguous run in x's row and in the int32 accumulator row, and, once the
  weights are laid out along a row (wt[(ky * KW + kx) * L + ox * C + c] = w[ky, kx, c], L = OW * C, built once
  per thread chunk), in the weights too. The inner loop then runs over up to OW * C elements instead of C: MCUNet's
  first depthwise layer has C = 16, fewer than one unrolled AVX2 iteration of LLVM's vectorised loop, so the
  reference's channel loop most likely runs in its scalar remainder (measured: 9.3 -> 2.1 ms for that layer at
  batch 25). The fp32 kernels do the same over row segments (below).
- Stride s > 1, the same row-wise runs over the input row's stride phases: output ox reads input column
  s * ox + kx - pad = s * (ox + q) + p (q, p the floor quotient and remainder of kx - pad by s), which is pixel ox + q
  of phase p, the row of every s-th input pixel from column p. Each input row is split into its phases once and
  kept in a ring of KH split rows (successive output rows reuse KH - s of them), so each tap is again one
  contiguous run. MCUNet's stride-2 layers at batch 1 (one thread, min of 400 calls): (1, 64, 64, 32) 3x3
  90-92 -> 53-55 us, (1, 32, 32, 48) 7x7 95-106 -> 55-57 us. Layers with fewer than TILED_STRIDED_ROWS output rows
  (batch 1's last stages) run per output pixel, channels innermost, as the reference; so does any layer whose
  row-wise weights and rows do not fit the stack row (SCRATCH_W8).
- Inner loops index slices from 0. Numba gives an index that might be negative a wraparound branch, which stops
  LLVM from vectorising the loop (acc[c - c0] in the reference); a range index from 0 has none.
- Requantization in float64 (exact: kernels/gemm_io.py's docstring; one rounding instead of two in the ReLU
  layers), with the integer primitives for any element whose |acc + bias| is beyond the fast path's limit.
Every sum is the same exact int32 sum as the reference's (integers, |sum| < 2^21 for 7x7: depthwise.py's Overflow
note), whatever the order, so y and the mask are the reference's.
"""

import numpy as np
from numba import njit, prange

from microtrain.arena import read_only
from microtrain.config import NJIT, NJIT_PARALLEL

from .depthwise import depthwise_conv_s8, depthwise_s8_shapes_ok
from .gemm_io import (INT8_WEIGHT_MAX, RQ_ROWS, requant_checked_channels, requant_f64_params, requant_offsets,
                      requant_one_rounding, requant_row_f64, weight_reach, widest_input)
from .mask import mask_check, mask_pack_row
from .scratch import (SCRATCH_ACC, SCRATCH_W8, SCRATCH_WF, chunk_bounds, scratch_acc_i32, scratch_acc_like,
                      scratch_w_f32, scratch_w_i8)
from .threads import DW_F32_MACS, parallel_chunks, threads_for, threads_restore


@njit(**NJIT)
def tile_taps(wt, w, s):
    """Lay a depthwise weight out along s pixels, tap by tap: wt[(ky * KW + kx) * s * C + p * C + c] = w[ky, kx, c]
    for p < s (cast to wt's dtype, exact for int8 into float32). wt: a stack row of >= KH * KW * s * C elements."""
    KH, KW, C = w.shape
    sc = s * C
    for k in range(KH * KW):
        ky = k // KW
        wk = w[ky, k - ky * KW]
        for p in range(s):
            wo = wt[k * sc + p * C:k * sc + p * C + C]
            for c in range(C):
                wo[c] = wk[c]


@njit(**NJIT)
def _split_phases(dst, g0, xf, xrow, W, C, stride, PW):
    """Deinterleave one input row (W pixels of C int8 at xf[xrow:]) into its stride phases: pixel j of phase p
    (input column stride * j + p) to dst[g0 + (p * PW + j) * C:][:C]."""
    for p in range(stride):
        for j in range((W - p + stride - 1) // stride):
            d = g0 + (p * PW + j) * C
            src = xrow + (stride * j + p) * C
            d_s = dst[d:d + C]
            x_s = xf[src:src + C]
            for c in range(C):
                d_s[c] = x_s[c]


TILED_STRIDED_ROWS = 8  # output rows (N * OH) from which a strided layer takes the row-wise (tiled) path


@njit(**NJIT)
def row_wise_fits(rows, out_w, channels, kh, kw, in_w, stride):
    """True if depthwise_conv_s8_host takes its row-wise path: the row-wise weights (KH * KW * OW * C), the flag row
    (OW * C) and, for stride > 1, a ring of KH input rows split into their stride phases fit SCRATCH_W8, and a
    strided layer has at least TILED_STRIDED_ROWS output rows (N * OH). With stride > 1 and few rows the per-pixel
    path is as fast: building the row-wise weights costs about as much as one row of MACs (e.g. (1, 8, 8, 240) 7x7
    stride 2, 4 output rows: 15.0 us row-wise, 12.5 per pixel)."""
    L = out_w * channels
    ring = kh * stride * ((in_w + stride - 1) // stride) * channels if stride > 1 else 0
    return (kh * kw + 1) * L + ring <= SCRATCH_W8 and (stride == 1 or rows >= TILED_STRIDED_ROWS)


def depthwise_host_fits(out_w, channels):
    """True if depthwise_conv_s8_host can run a layer with this output width and channel count: one output row of
    int32 sums (OW * C) must fit the per-thread stack row (SCRATCH_ACC)."""
    return int(out_w) * int(channels) <= SCRATCH_ACC


def bind_depthwise_s8(host, key, y, mask, x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max, stride, pad,
                      trainable):
    """(kernel, args) of an int8 depthwise forward, as every host caller (Inference, TrainStep, FisherPass) binds
    it: depthwise_conv_s8_host where the output row fits, with its requantization constants stored once in
    host[key] (the caller counts them as host memory), else the loop kernel depthwise_conv_s8. x is bound
    read-only (the kernels only read it), so all callers share one compiled specialisation.

    trainable: w changes between calls, so the constants bound |acc| by the int8 worst case (127 per weight)
    rather than by w's values (gemm_io.weight_reach); a caller that binds one layer both ways needs two keys."""
    x = read_only(x)
    if not depthwise_host_fits(y.shape[2], y.shape[3]):
        return depthwise_conv_s8, (y, mask, x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max, stride, pad)
    if key not in host:
        taps = w.shape[0] * w.shape[1]
        reach = (INT8_WEIGHT_MAX * taps * widest_input(x_zp) if trainable
                 else weight_reach(w.reshape(taps, -1).T, x_zp))  # (C, KH * KW) per channel
        host[key] = read_only(requant_f64_params(mult, shift, reach))
    return depthwise_conv_s8_host, (y, mask, x, w, bias, host[key], mult, shift, x_zp, y_zp, act_min, act_max,
                                    stride, pad)


@njit(**NJIT_PARALLEL)
def depthwise_conv_s8_host(y, mask, x, w, bias, rq, mult, shift, x_zp, y_zp, act_min, act_max, stride, pad):
    """depthwise_conv_s8 (same arguments, plus rq) for the host: identical y and mask.

    Layout:    as depthwise_conv_s8: y (N, OH, OW, C) s8 out; mask (N * OH, ceil(OW * C / 8)) u8 out, or NO_MASK;
               x (N, H, W, C) s8, C-contiguous; w (KH, KW, C) s8; bias (C,) s32; rq (4, C) f64 =
               gemm_io.requant_f64_params(mult, shift, reach); mult, shift (C,) s32. OW * C <= SCRATCH_ACC
               (depthwise_host_fits).
    Ownership: writes every element of y and, unless NO_MASK, every byte of mask; allocates nothing (per-thread
               stack rows: the accumulator row, the row-wise weights, the row's in-range flags and, for stride > 1,
               the ring of split input rows).
    Parallel:  prange over one contiguous chunk of (batch x output rows) per thread (the row-wise weights are built
               once per chunk, the ring starts empty in each); disjoint rows of y and of mask; exact integer sums,
               so deterministic.
    """
    N, OH, OW, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    KH = w.shape[0]
    KW = w.shape[1]
    if (not depthwise_s8_shapes_ok(y, x, w, bias, mult, shift, stride, pad) or rq.shape[0] != RQ_ROWS
            or rq.shape[1] != C):
        raise ValueError("depthwise_conv_s8_host: inconsistent shapes")
    L = OW * C
    if L > SCRATCH_ACC:
        raise ValueError("depthwise_conv_s8_host: an output row (OW * C) is longer than SCRATCH_ACC; "
                         "use depthwise_conv_s8")
    write_mask = mask_check(mask, N * OH, OW, C)
    checked = requant_checked_channels(rq, bias)
    PW = (W + stride - 1) // stride  # input pixels per stride phase (the first phase is the longest)
    RS = stride * PW * C  # one input row split into its stride phases, in the int8 scratch
    rows = N * OH
    tiled = row_wise_fits(rows, OW, C, KH, KW, W, stride)  # the scratch: weights [0, f0), flags, then the ring
    f0 = KH * KW * L if tiled else 0  # the flag row's offset in the int8 scratch
    g0 = f0 + L  # the ring's offset (stride > 1): input row g = n * H + iy in slot g % KH, at g0 + (g % KH) * RS
    xz = np.int32(x_zp)
    xf = x.reshape(N * H * W * C)  # a view: the tiled path addresses whole input rows
    # work in units of 16 MACs on the row-wise path, 4 per pixel. On the 2-core VM, at ~0.05-0.1 ns per MAC the
    # row-wise path gains from a second thread only above ~2 M MACs (output shape: one thread / two, median of 100
    # calls: (1, 16, 16, 48) 7x7, 0.6 M MACs, 41 / 61-85 us; (2, 64, 64, 16) 3x3, 1.2 M, 146 / 115 us; (8, 16, 16,
    # 48) 7x7, 4.8 M, 301 / 299 us), per pixel (~0.3 ns per MAC) above ~0.5 M ((2, 32, 32, 32) 3x3 stride 2, 0.6 M:
    # 212 / 151 us)
    prev = threads_for(y.size * KH * KW // (16 if tiled else 4))
    chunks = parallel_chunks(rows)
    if chunks == 1:  # one thread: no parallel launch (threads.py, "Serial calls")
        _dw_s8_chunk(y, mask, x, xf, w, bias, rq, mult, shift, xz, y_zp, act_min, act_max, stride, pad, tiled, f0,
                     g0, RS, PW, write_mask, checked, 0, 1)
    else:
        for t in prange(chunks):
            _dw_s8_chunk(y, mask, x, xf, w, bias, rq, mult, shift, xz, y_zp, act_min, act_max, stride, pad, tiled,
                         f0, g0, RS, PW, write_mask, checked, t, chunks)
    threads_restore(prev)


@njit(inline="always", **NJIT)
def _dw_s8_chunk(y, mask, x, xf, w, bias, rq, mult, shift, xz, y_zp, act_min, act_max, stride, pad, tiled, f0, g0,
                 RS, PW, write_mask, checked, t, chunks):
    """depthwise_conv_s8_host's output rows of chunk t of `chunks` (its per-thread stack rows live here)."""
    N, OH, OW, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    KH = w.shape[0]
    KW = w.shape[1]
    L = OW * C
    acc = scratch_acc_i32()  # (SCRATCH_ACC,) the row's int32 sums, element ox * C + c
    wt = scratch_w_i8()  # (SCRATCH_W8,) row-wise weights [0, f0), the row's in-range flags [f0, g0), phases
    if tiled:
        tile_taps(wt, w, OW)
    flag = wt[f0:f0 + L]
    off = scratch_acc_like(rq)  # the requantization's per-channel offsets, formed once per chunk
    bias_far = requant_offsets(off, bias, rq)
    one = requant_one_rounding(rq, off, y_zp, act_min)
    last = -1  # the last input row (n * H + iy) split into the ring; the KH rows up to it are there
    r0, r1 = chunk_bounds(N * OH, chunks, t)
    for r in range(r0, r1):
        n = r // OH
        oy = r - n * OH
        iy0 = oy * stride - pad
        ky0 = max(0, -iy0)  # taps inside the image; outside ones add (x_zp - x_zp) * w = 0
        ky1 = min(KH, H - iy0)
        for j in range(L):
            acc[j] = 0
        if tiled and stride == 1:
            for ky in range(ky0, ky1):
                xrow = ((n * H) + iy0 + ky) * W * C  # input row (n, iy) in xf
                for kx in range(KW):
                    ox0 = max(0, pad - kx)  # outputs whose input column ox + kx - pad is in [0, W)
                    ox1 = min(OW, W + pad - kx)
                    if ox1 <= ox0:
                        continue
                    wb = (ky * KW + kx) * L
                    a_s = acc[ox0 * C:ox1 * C]
                    w_s = wt[wb + ox0 * C:wb + ox1 * C]
                    x_s = xf[xrow + (ox0 + kx - pad) * C:xrow + (ox1 + kx - pad) * C]
                    for j in range(a_s.shape[0]):  # contiguous (ox, c) run: vectorised
                        a_s[j] += np.int32(w_s[j]) * (np.int32(x_s[j]) - xz)
        elif tiled:
            for ky in range(ky0, ky1):
                g = n * H + iy0 + ky
                slot = g0 + (g % KH) * RS
                if g > last:  # rows needed by successive output rows only grow, by stride per row, < KH apart
                    _split_phases(wt, slot, xf, g * W * C, W, C, stride, PW)
                    last = g
                for kx in range(KW):
                    # output ox reads input column stride * ox + kx - pad = stride * (ox + q) + p: pixel ox + q
                    # of phase p, so the tap's products are one contiguous run of that phase row
                    q = (kx - pad) // stride  # floor division (Python's, also for negative ints)
                    p = kx - pad - q * stride
                    ox0 = max(0, -q)
                    ox1 = min(OW, (W - p + stride - 1) // stride - q)  # the phase has that many pixels
                    if ox1 <= ox0:
                        continue
                    wb = (ky * KW + kx) * L
                    pb = slot + (p * PW + q) * C
                    a_s = acc[ox0 * C:ox1 * C]
                    w_s = wt[wb + ox0 * C:wb + ox1 * C]
                    x_s = wt[pb + ox0 * C:pb + ox1 * C]
                    for j in range(a_s.shape[0]):  # contiguous (ox, c) run: vectorised
                        a_s[j] += np.int32(w_s[j]) * (np.int32(x_s[j]) - xz)
        else:
            for ox in range(OW):
                ix0 = ox * stride - pad
                kx0 = max(0, -ix0)
                kx1 = min(KW, W - ix0)
                a_s = acc[ox * C:ox * C + C]
                for ky in range(ky0, ky1):
                    for kx in range(kx0, kx1):
                        w_s = w[ky, kx]
                        x_s = x[n, iy0 + ky, ix0 + kx]
                        for c in range(C):  # contiguous channels: vectorised
                            a_s[c] += np.int32(w_s[c]) * (np.int32(x_s[c]) - xz)
        requant_row_f64(y[n, oy], flag, acc[:L].reshape(OW, C), bias, rq, off, bias_far, mult, shift, y_zp,
                        act_min, act_max, write_mask, checked, one)
        if write_mask:
            mask_pack_row(mask, r, flag, L)


# ---- fp32, stride 1: the training step's float depthwise forward and input gradient ----------------------------

def depthwise_f32_host_fits(kernel, channels, stride):
    """True if the fp32 host kernels can run a layer: stride 1 and one pixel's row-wise weights of every tap
    (KH * KW * C floats) fit the per-thread stack tile (SCRATCH_WF)."""
    return int(stride) == 1 and int(kernel) ** 2 * int(channels) <= SCRATCH_WF


@njit(**NJIT)
def _segment(kernel_taps, channels, width):
    """Output pixels per row segment: as many as the tap-wise weight tile (kernel_taps * S * C floats) holds."""
    return max(1, min(width, SCRATCH_WF // (kernel_taps * channels)))


@njit(**NJIT_PARALLEL)
def depthwise_conv_f32_host(y, x, w, bias, act_min, act_max, pad):
    """depthwise_conv_f32 with stride 1 for the host: identical y, bit for bit.

    Layout:    y (N, OH, OW, C) f32 out, C-contiguous; x (N, H, W, C) f32, C-contiguous; w (KH, KW, C) f32;
               bias (C,) f32; stride 1 (depthwise_f32_host_fits), `pad` on all four sides.
    Order:     every y element is 0, then + x * w over its in-image taps in (ky, kx) order, then + bias, then the
               clamp: depthwise_conv_f32's order exactly (no fastmath), so the float32 results are identical. The
               taps are the outer loops over a row segment of S output pixels: a tap's products form one contiguous
               run of S * C elements in y's row, x's row and the tap's weights laid out along the segment
               (wt[(ky * KW + kx) * S * C + s * C + c] = w[ky, kx, c], built once per thread chunk).
    Ownership: writes every element of y; allocates nothing (a per-thread stack weight tile). y must not alias x.
    Parallel:  prange over one contiguous chunk of (batch x output rows) per thread; disjoint writes.
    """
    N, OH, OW, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    KH = w.shape[0]
    KW = w.shape[1]
    if (x.shape[0] != N or x.shape[3] != C or w.shape[2] != C or bias.shape[0] != C
            or OH != H + 2 * pad - KH + 1 or OW != W + 2 * pad - KW + 1):
        raise ValueError("depthwise_conv_f32_host: inconsistent shapes (stride 1)")
    if KH * KW * C > SCRATCH_WF:
        raise ValueError("depthwise_conv_f32_host: KH * KW * C exceeds SCRATCH_WF; use depthwise_conv_f32")
    lo = np.float32(act_min)
    hi = np.float32(act_max)
    S = _segment(KH * KW, C, OW)
    SC = S * C
    xf = x.reshape(N * H * W * C)
    rows = N * OH
    prev = threads_for(y.size * w.shape[0] * w.shape[1] // DW_F32_MACS)
    chunks = parallel_chunks(rows)
    for t in prange(chunks):
        wt = scratch_w_f32()
        tile_taps(wt, w, S)
        r0, r1 = chunk_bounds(rows, chunks, t)
        for r in range(r0, r1):
            n = r // OH
            oy = r - n * OH
            iy0 = oy - pad
            ky0 = max(0, -iy0)
            ky1 = min(KH, H - iy0)
            yr = y[n, oy].reshape(OW * C)
            for j in range(OW * C):
                yr[j] = 0
            for s0 in range(0, OW, S):
                s1 = min(OW, s0 + S)
                for ky in range(ky0, ky1):
                    xrow = ((n * H) + iy0 + ky) * W * C
                    for kx in range(KW):
                        ox0 = max(s0, pad - kx)  # outputs of this segment whose column ox + kx - pad is in [0, W)
                        ox1 = min(s1, W + pad - kx)
                        if ox1 <= ox0:
                            continue
                        wb = (ky * KW + kx) * SC + (ox0 - s0) * C
                        y_s = yr[ox0 * C:ox1 * C]
                        w_s = wt[wb:wb + (ox1 - ox0) * C]
                        x_s = xf[xrow + (ox0 + kx - pad) * C:xrow + (ox1 + kx - pad) * C]
                        for j in range(y_s.shape[0]):  # contiguous (ox, c) run: vectorised, same per-element order
                            y_s[j] += x_s[j] * w_s[j]
            for ox in range(OW):
                y_s = yr[ox * C:ox * C + C]
                for c in range(C):
                    v = y_s[c] + bias[c]
                    if v < lo:
                        v = lo
                    if v > hi:
                        v = hi
                    y_s[c] = v
    threads_restore(prev)


@njit(**NJIT_PARALLEL)
def depthwise_conv_f32_backward_input_host(dx, dy, w, pad):
    """depthwise_conv_f32_backward_input with stride 1 for the host: identical dx, bit for bit.

    Layout:    dx (N, H, W, C) f32 out, C-contiguous; dy (N, OH, OW, C) f32, C-contiguous; w (KH, KW, C) int8 or
               f32 (int8 * float32 is float32, as in the reference); OH = H + 2 pad - KH + 1 (stride 1).
    Order:     every dx element is 0, then + w * dy over the taps (ky, kx) that read it from an in-range output, in
               (ky, kx) order: the reference's order exactly. Taps are the outer loops over a row segment of S input
               pixels; input ix reads output ox = ix + pad - kx, so a tap's products are contiguous runs in dx's
               row, dy's row and the segment-wise weight tile (as depthwise_conv_f32_host).
    Ownership: writes every element of dx; allocates nothing. No aliasing.
    Parallel:  prange over one contiguous chunk of (batch x input rows) per thread; disjoint writes.
    """
    N, H, W, C = dx.shape
    OH = dy.shape[1]
    OW = dy.shape[2]
    KH = w.shape[0]
    KW = w.shape[1]
    if (dy.shape[0] != N or dy.shape[3] != C or w.shape[2] != C
            or OH != H + 2 * pad - KH + 1 or OW != W + 2 * pad - KW + 1):
        raise ValueError("depthwise_conv_f32_backward_input_host: inconsistent shapes (stride 1)")
    if KH * KW * C > SCRATCH_WF:
        raise ValueError("depthwise_conv_f32_backward_input_host: KH * KW * C exceeds SCRATCH_WF; use "
                         "depthwise_conv_f32_backward_input")
    S = _segment(KH * KW, C, W)
    SC = S * C
    gf = dy.reshape(N * OH * OW * C)
    rows = N * H
    prev = threads_for(dy.size * w.shape[0] * w.shape[1] // DW_F32_MACS)
    chunks = parallel_chunks(rows)
    for t in prange(chunks):
        wt = scratch_w_f32()
        tile_taps(wt, w, S)  # int8 weights: exact in float32
        r0, r1 = chunk_bounds(rows, chunks, t)
        for r in range(r0, r1):
            n = r // H
            iy = r - n * H
            xr = dx[n, iy].reshape(W * C)
            for j in range(W * C):
                xr[j] = 0
            for s0 in range(0, W, S):
                s1 = min(W, s0 + S)
                for ky in range(KH):
                    oy = iy + pad - ky
                    if oy < 0 or oy >= OH:
                        continue
                    grow = ((n * OH) + oy) * OW * C
                    for kx in range(KW):
                        ix0 = max(s0, kx - pad)  # inputs of this segment whose output ix + pad - kx is in [0, OW)
                        ix1 = min(s1, OW + kx - pad)
                        if ix1 <= ix0:
                            continue
                        wb = (ky * KW + kx) * SC + (ix0 - s0) * C
                        x_s = xr[ix0 * C:ix1 * C]
                        w_s = wt[wb:wb + (ix1 - ix0) * C]
                        g_s = gf[grow + (ix0 + pad - kx) * C:grow + (ix1 + pad - kx) * C]
                        for j in range(x_s.shape[0]):
                            x_s[j] += w_s[j] * g_s[j]
    threads_restore(prev)
