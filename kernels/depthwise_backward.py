"""Depthwise convolution backward, fp32 (float64 also accepted): input gradient and sparse weight gradient.

Differentiates `depthwise_conv_f32` / `depthwise_conv_s8` (NHWC, weights (KH, KW, C), depth multiplier 1,
symmetric padding, taps outside the image skipped). Input and output channel coincide, so a sparse update keeps
"channels" (MIT tiny-training masks dim 0 of the depthwise weight). QAS scaling happens in the optimizer.
C twins: mt_depthwise_conv_f32_backward_input, mt_depthwise_conv_f32_backward_weight.
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .scratch import SCRATCH_ACC, chunk_bounds, scratch_acc_like
from .threads import DW_F32_MACS, parallel_chunks, threads_for, threads_restore


@njit(**NJIT_PARALLEL)
def depthwise_conv_f32_backward_input(dx, dy, w, stride, pad):
    """dx = dL/dx of y = depthwise_conv(x, w), `=` overwrite.

    Forward:   y[n, oy, ox, c] = sum_{ky, kx} x[n, oy*stride - pad + ky, ox*stride - pad + kx, c] * w[ky, kx, c].
    So now:    dx[n, iy, ix, c] = sum over the taps (ky, kx) that read (iy, ix) from an in-range output (oy, ox)
               of dy[n, oy, ox, c] * w[ky, kx, c].
    Layout:    dx (N, H, W, C) out; dy (N, OH, OW, C); w (KH, KW, C); OH = (H + 2*pad - KH)//stride + 1.
    Reads:     dy and the weights only; nothing saved from the forward pass. w may be the frozen int8 weights (int8
               mode: dy pre-scaled by s_w per channel with scale_channels_f32); int8 * float32 stays float32.
    Ownership: writes every element of dx (`=`); pixels no window reads get 0; allocates nothing. No aliasing.
    Order:     per element, sum over (ky, kx) in that order, in the dtype of dx.
    Parallel:  prange over (batch x input rows); disjoint writes (deterministic).
    C twin:    mt_depthwise_conv_f32_backward_input.
    """
    N, H, W, C = dx.shape
    OH = dy.shape[1]
    OW = dy.shape[2]
    KH = w.shape[0]
    KW = w.shape[1]
    if (dy.shape[0] != N or dy.shape[3] != C or w.shape[2] != C or stride < 1
            or OH != (H + 2 * pad - KH) // stride + 1 or OW != (W + 2 * pad - KW) // stride + 1):
        raise ValueError("depthwise_conv_f32_backward_input: inconsistent shapes")
    prev = threads_for(dy.size * w.shape[0] * w.shape[1] // DW_F32_MACS)
    for r in prange(N * H):
        n = r // H
        iy = r - n * H
        for ix in range(W):
            for c in range(C):
                dx[n, iy, ix, c] = 0
            for ky in range(KH):
                ty = iy + pad - ky  # = oy * stride if output row oy read input row iy through tap ky
                if ty < 0 or ty % stride != 0:
                    continue
                oy = ty // stride
                if oy >= OH:
                    continue
                for kx in range(KW):
                    tx = ix + pad - kx
                    if tx < 0 or tx % stride != 0:
                        continue
                    ox = tx // stride
                    if ox >= OW:
                        continue
                    for c in range(C):
                        dx[n, iy, ix, c] += w[ky, kx, c] * dy[n, oy, ox, c]
    threads_restore(prev)


@njit(**NJIT_PARALLEL)
def depthwise_conv_f32_backward_weight(dw, x_kept, x_zp, dy, keep, stride, pad):
    """dw = dL/dw of y = depthwise_conv(x, w) for the kept channels, `=` overwrite.

    Forward:   y[n, oy, ox, c] = sum_{ky, kx} x[n, oy*stride - pad + ky, ox*stride - pad + kx, c] * w[ky, kx, c].
    So now:    dw[ky, kx, k] = sum_{n, oy, ox} (x_kept[n, oy*stride - pad + ky, ox*stride - pad + kx, k] - x_zp)
                                              * dy[n, oy, ox, keep[k]]   (taps in the padding skipped).
    Layout:    dw (KH, KW, K) out, float32 (float64 in the gradient checks); x_kept (N, H, W, K), int8 or of dw's
               dtype: forward saved input channel keep[k] in slot k (the whole x when keep = arange(C)); x_zp scalar;
               dy (N, OH, OW, C) of dw's dtype; keep (K,) int32, each in [0, C).
    int8 mode: x_kept may be the int8 activation saved by the int8 forward, x_zp its zero point; the kernel then returns
               sum dy * (x_int - x_zp), and the caller multiplies by s_x (dL/dw_real = s_x * dw) or folds s_x into
               the update's coefficient. Pass x_zp as a float of dw's dtype (np.float32(zp)); it is cast to dw's
               dtype anyway, and x_int - x_zp is exact in float32 (|x_int - x_zp| <= 255). fp32 mode: float x_kept,
               x_zp = 0.0 (x - 0.0 == x exactly, so the result is the plain sum dy * x).
    Reads:     x_kept (saved from forward, channel-compacted) and dy; not the weights.
    Exactness: each element is one sum over (n, oy, ox) in that fixed order, so the sparse result equals the dense
               dW[:, :, keep] bit for bit.
    Ownership: writes every element of dw (`=`); allocates nothing.
    Parallel:  prange over contiguous chunks of dw's flat (tap, k) elements, one per thread, each summed in a per-thread
               stack scratch (kernels/scratch.py) and written once: no shared cache lines while summing (the old
               per-channel `dw[ky, kx, k] +=` loop false-shared dw's lines and ran slower on 2 threads than on 1);
               each element's sum order is independent of the chunking (deterministic, bit-identical to before).
    C twin:    mt_depthwise_conv_f32_backward_weight.
    """
    KH, KW, K = dw.shape
    N, H, W, KX = x_kept.shape
    xz = dw.dtype.type(x_zp)
    OH = dy.shape[1]
    OW = dy.shape[2]
    C = dy.shape[3]
    if (KX != K or dy.shape[0] != N or keep.shape[0] != K or stride < 1
            or OH != (H + 2 * pad - KH) // stride + 1 or OW != (W + 2 * pad - KW) // stride + 1):
        raise ValueError("depthwise_conv_f32_backward_weight: inconsistent shapes")
    contiguous = True  # keep = c0, c0 + 1, ...: dy read with unit stride (dense and input-axis layouts)
    for k in range(K):
        if keep[k] < 0 or keep[k] >= C:
            raise ValueError("depthwise_conv_f32_backward_weight: keep index out of range")
        if keep[k] != keep[0] + k:
            contiguous = False
    c_first = keep[0] if K > 0 else 0
    # Each thread owns a contiguous range of dw's flat (tap, k) elements and sums them in a stack scratch row
    # (kernels/scratch.py) over all pixels, channels innermost; dw is written once at the end, so threads never
    # write the same cache line while summing. Every element is still one sum over (n, oy, ox) in that order,
    # whatever the thread count or chunking.
    total = KH * KW * K
    prev = threads_for(dy.size * dw.shape[0] * dw.shape[1] // DW_F32_MACS)
    chunks = parallel_chunks(total)
    for t in prange(chunks):
        acc = scratch_acc_like(dw)
        a0, a1 = chunk_bounds(total, chunks, t)
        for e0 in range(a0, a1, SCRATCH_ACC):
            e1 = min(a1, e0 + SCRATCH_ACC)
            for e in range(e1 - e0):
                acc[e] = 0
            t0 = e0 // K
            t1 = (e1 - 1) // K + 1
            for n in range(N):
                for oy in range(OH):
                    iy0 = oy * stride - pad
                    for tap in range(t0, t1):
                        ky = tap // KW
                        kx = tap - ky * KW
                        iy = iy0 + ky
                        if iy < 0 or iy >= H:
                            continue  # taps in the padding contribute nothing
                        k0 = max(e0 - tap * K, 0)
                        k1 = min(e1 - tap * K, K)
                        base = tap * K - e0
                        ox0 = max(0, (pad - kx + stride - 1) // stride)  # ix = ox*stride - pad + kx in [0, W)
                        ox1 = min(OW, (W - 1 + pad - kx) // stride + 1)
                        # slices indexed from 0 (C: pointers acc + base + k0, ...): Numba puts a wraparound branch
                        # on an index that might be negative (base + k), which kept LLVM from vectorising this loop
                        a_s = acc[base + k0:base + k1]
                        kp = keep[k0:k1]
                        for ox in range(ox0, ox1):
                            ix = ox * stride - pad + kx
                            x_s = x_kept[n, iy, ix, k0:k1]
                            if contiguous:
                                g_s = dy[n, oy, ox, c_first + k0:c_first + k1]
                                for j in range(k1 - k0):
                                    a_s[j] += (x_s[j] - xz) * g_s[j]
                            else:
                                g_r = dy[n, oy, ox]
                                for j in range(k1 - k0):
                                    a_s[j] += (x_s[j] - xz) * g_r[np.uint32(kp[j])]  # keep checked >= 0 above
            for e in range(e0, e1):
                tap = e // K
                ky = tap // KW
                dw[ky, tap - ky * KW, e - tap * K] = acc[e - e0]
    threads_restore(prev)
