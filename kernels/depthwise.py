"""Depthwise 2-D convolution forward (depth multiplier 1), int8 (per-channel requantization) and fp32, NHWC.

Any kernel size and stride (MCUNet uses k 3/5/7, stride 1/2), symmetric explicit padding; direct loops with channels
innermost (vectorised): int8 sums into a per-thread stack row of int32 (kernels/scratch.py), fp32 into y's own row.
C twins: mt_depthwise_conv_s8, mt_depthwise_conv_f32 (docs/porting.md).
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from .mask import mask_check, mask_flush_row, mask_put_bit
from .requant import INT32_MIN, clamp, mbqm
from .scratch import SCRATCH_ACC, scratch_acc_i32
from .threads import DW_F32_MACS, threads_for, threads_restore


@njit(**NJIT)
def depthwise_s8_shapes_ok(y, x, w, bias, mult, shift, stride, pad):
    """True if depthwise_conv_s8's arrays agree: y (N, OH, OW, C), x (N, H, W, C), w (KH, KW, C), bias, mult,
    shift (C,), OH = (H + 2 pad - KH) // stride + 1 and OW likewise."""
    N, OH, OW, C = y.shape
    KH, KW = w.shape[0], w.shape[1]
    return (x.shape[0] == N and x.shape[3] == C and w.shape[2] == C
            and OH == (x.shape[1] + 2 * pad - KH) // stride + 1 and OW == (x.shape[2] + 2 * pad - KW) // stride + 1
            and bias.shape[0] == C and mult.shape[0] == C and shift.shape[0] == C)


@njit(**NJIT_PARALLEL)
def depthwise_conv_s8(y, mask, x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max, stride, pad):
    """y[..., c] = clamp(mbqm(sum_taps w[:, :, c] * (x[..., c] - x_zp) + bias[c]) + y_zp), int8 depthwise conv.

    Layout:    y (N, OH, OW, C) s8 out; mask (N * OH, ceil(OW * C / 8)) u8 out, or mask.NO_MASK;
               x (N, H, W, C) s8; w (KH, KW, C) s8 (TFLite's [1, KH, KW, C] without the
               leading 1; symmetric, zp 0); bias (C,) s32; mult, shift (C,) s32 from requant.conv_multipliers;
               OH = (H + 2*pad - KH) // stride + 1, OW likewise; `pad` on all four sides.
    Ownership: writes every element of y (`=`, overwrite) and, unless NO_MASK, every byte of mask; allocates
               nothing. y must not alias x.
    Mask:      1-bit STE mask for training (layout in kernels/mask.py): bit (n, oy, ox, c) = 1 iff the value before
               clamping, mbqm(acc) + y_zp, lies in [act_min, act_max] (inclusive; tiny-training's
               _TruncateActivationRange backward). It cannot be recovered from y: a y equal to a bound is ambiguous.
               y is the same with or without a mask.
    Exactness: bit-exact with TFLM tflite::reference_integer_ops::DepthwiseConvPerChannel
               (reference/integer_ops/depthwise_conv.h) with depth_multiplier 1: out-of-image taps skipped
               (= padding with x_zp), acc += bias, double-rounding mbqm, + y_zp, max(act_min), min(act_max).
    Overflow:  |w * (x - x_zp)| <= 128 * 255 = 32640; a 7x7 window sums to at most 49 * 32640 = 1,599,360 < 2^21.
               acc + bias can overflow: int32 biases at the limits occur in the real tiny-training weights
               (dead channels), and TFLM's int32 `acc += bias` then wraps modulo 2^32 (UB in C, two's complement
               on every TFLM target). The taps are summed in int32 (every int8 load widened to int32; exact,
               the bound above), in a per-thread stack row of channels (kernels/scratch.py) so the multiply-adds
               vectorise across channels; then acc + bias in int64 is wrapped to int32 explicitly, so that case
               matches too. mbqm's pre-shift acc * 2^max(shift, 0) is not wrapped: it must fit int32 (true
               whenever the effective scale is < 1).
    Zero points: x_zp, y_zp are zero points; TFLM/CMSIS-NN pass input_offset = -x_zp.
    Parallel:  prange over (batch x output rows); disjoint rows of y and of mask (byte-aligned rows; deterministic).
    C twin:    mt_depthwise_conv_s8
    """
    N, OH, OW, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    KH = w.shape[0]
    KW = w.shape[1]
    if not depthwise_s8_shapes_ok(y, x, w, bias, mult, shift, stride, pad):
        raise ValueError("depthwise_conv_s8: inconsistent shapes")
    write_mask = mask_check(mask, N * OH, OW, C)
    xz = np.int32(x_zp)
    yz = np.int64(y_zp)
    prev = threads_for(y.size * w.shape[0] * w.shape[1])
    for r in prange(N * OH):
        acc = scratch_acc_i32()  # per-thread stack row of int32 accumulators, SCRATCH_ACC channels at a time
        n = r // OH
        oy = r - n * OH
        iy0 = oy * stride - pad
        ky0 = max(0, -iy0)  # taps inside the image: iy = iy0 + ky in [0, H)
        ky1 = min(KH, H - iy0)
        j = 0  # mask bit of (ox, c) in row r: ox * C + c
        byte = 0
        for ox in range(OW):
            ix0 = ox * stride - pad
            kx0 = max(0, -ix0)
            kx1 = min(KW, W - ix0)
            for c0 in range(0, C, SCRATCH_ACC):
                c1 = min(C, c0 + SCRATCH_ACC)
                for c in range(c0, c1):
                    acc[c - c0] = 0
                # taps outside the image are skipped: padding with x_zp contributes (x_zp - x_zp) * w = 0
                for ky in range(ky0, ky1):
                    for kx in range(kx0, kx1):
                        for c in range(c0, c1):  # contiguous channels: vectorised int32 multiply-add
                            acc[c - c0] += np.int32(w[ky, kx, c]) * (np.int32(x[n, iy0 + ky, ix0 + kx, c]) - xz)
                for c in range(c0, c1):
                    a = np.int64(acc[c - c0]) + np.int64(bias[c])
                    a = ((a - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN  # C's int32 acc + bias wraps (see Overflow)
                    v = mbqm(a, mult[c], shift[c]) + yz
                    y[n, oy, ox, c] = np.int8(clamp(v, act_min, act_max))
                    acc[c - c0] = np.int32(v >= act_min and v <= act_max)
                if write_mask:  # a separate loop, so the one above stays branch-free in inference
                    for c in range(c0, c1):
                        byte = mask_put_bit(mask, r, j, byte, acc[c - c0] != 0)
                        j += 1
        if write_mask:
            mask_flush_row(mask, r, j, byte)
    threads_restore(prev)


@njit(**NJIT_PARALLEL)
def depthwise_conv_f32(y, x, w, bias, act_min, act_max, stride, pad):
    """y[..., c] = clamp(sum_taps w[:, :, c] * x[..., c] + bias[c], act_min, act_max), fp32 depthwise conv.

    Layout:    y (N, OH, OW, C) f32 out; x (N, H, W, C) f32; w (KH, KW, C) f32; bias (C,) f32;
               OH = (H + 2*pad - KH) // stride + 1; act_min/act_max floats ((-inf, inf) none, (0, 6) ReLU6).
    Ownership: writes every element of y (`=`, overwrite); allocates nothing. y must not alias x.
    Exactness: float32 accumulation in TFLM tflite::reference_ops::DepthwiseConv's (float) order (filter_y,
               filter_x, then + bias, then clamp), no fastmath; tested against float64 within
               config.F32_RTOL / F32_ATOL.
    Overflow:  not applicable (float32).
    Zero points: none (fp32); padding contributes 0.
    Parallel:  prange over (batch x output rows); disjoint writes (deterministic).
    C twin:    mt_depthwise_conv_f32
    """
    N, OH, OW, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    KH = w.shape[0]
    KW = w.shape[1]
    if (x.shape[0] != N or x.shape[3] != C or w.shape[2] != C
            or OH != (H + 2 * pad - KH) // stride + 1 or OW != (W + 2 * pad - KW) // stride + 1
            or bias.shape[0] != C):
        raise ValueError("depthwise_conv_f32: inconsistent shapes")
    lo = np.float32(act_min)
    hi = np.float32(act_max)
    prev = threads_for(y.size * w.shape[0] * w.shape[1] // DW_F32_MACS)
    for r in prange(N * OH):
        n = r // OH
        oy = r - n * OH
        iy0 = oy * stride - pad
        ky0 = max(0, -iy0)  # taps inside the image (padding contributes 0)
        ky1 = min(KH, H - iy0)
        for ox in range(OW):
            ix0 = ox * stride - pad
            kx0 = max(0, -ix0)
            kx1 = min(KW, W - ix0)
            # y's own row is the accumulator: channels innermost (contiguous, vectorised), every element still
            # summed over (ky, kx) in order from 0, then + bias, then clamped: the scalar loop's order exactly
            for c in range(C):
                y[n, oy, ox, c] = 0
            for ky in range(ky0, ky1):
                for kx in range(kx0, kx1):
                    for c in range(C):
                        y[n, oy, ox, c] += x[n, iy0 + ky, ix0 + kx, c] * w[ky, kx, c]
            for c in range(C):
                acc = y[n, oy, ox, c] + bias[c]
                if acc < lo:
                    acc = lo
                if acc > hi:
                    acc = hi
                y[n, oy, ox, c] = acc
    threads_restore(prev)
