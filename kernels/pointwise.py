"""Pointwise (1x1, stride 1) convolution forward, int8 (per-channel requantization) and fp32, NHWC.

For each pixel and output channel a dot product over the contiguous input channels; no scratch, no BLAS.
C twins: mt_pointwise_conv_s8, mt_pointwise_conv_f32 (docs/porting.md).
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .mask import mask_check, mask_flush_row, mask_put_bit
from .requant import INT32_MIN, clamp, mbqm


@njit(**NJIT_PARALLEL)
def pointwise_conv_s8(y, mask, x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max):
    """y[n, h, w, co] = clamp(mbqm(sum_ci w[co, ci] * (x[n, h, w, ci] - x_zp) + bias[co]) + y_zp), int8 1x1 conv.

    Layout:    y (N, H, W, Co) s8 out; mask (N * H, ceil(W * Co / 8)) u8 out, or mask.NO_MASK;
               x (N, H, W, Ci) s8; w (Co, Ci) s8 (OHWI with KH = KW = 1 squeezed;
               symmetric, zp 0); bias (Co,) s32; mult, shift (Co,) s32 from requant.conv_multipliers.
    Ownership: writes every element of y (`=`, overwrite) and, unless NO_MASK, every byte of mask; allocates
               nothing. y must not alias x.
    Mask:      1-bit STE mask for training (layout in kernels/mask.py): bit (n, h, w, co) = 1 iff the value before
               clamping, mbqm(acc) + y_zp, lies in [act_min, act_max] (inclusive; tiny-training's
               _TruncateActivationRange backward). It cannot be recovered from y: a y equal to a bound is ambiguous.
               y is the same with or without a mask.
    Exactness: bit-exact with TFLM tflite::reference_integer_ops::ConvPerChannel (reference/integer_ops/conv.h)
               for a 1x1 filter, stride 1, no padding (double-rounding mbqm, + y_zp, max/min clamp).
    Overflow:  |w * (x - x_zp)| <= 128 * 255 = 32640, so the sum over Ci fits int32 while Ci <= 65793 (MCUNet's
               widest is 576).
               acc + bias can overflow: int32 biases at the limits occur in the real tiny-training weights
               (dead channels), and TFLM's int32 `acc += bias` then wraps modulo 2^32 (UB in C, two's complement
               on every TFLM target). Accumulated here in int64 (every int8 load widened), then acc + bias is
               wrapped to int32 explicitly, so that case matches too. mbqm's pre-shift acc * 2^max(shift, 0) is
               not wrapped: it must fit int32 (true whenever the effective scale is < 1).
    Zero points: x_zp, y_zp are zero points; TFLM/CMSIS-NN pass input_offset = -x_zp.
    Parallel:  prange over (batch x rows); disjoint rows of y and of mask (byte-aligned rows; deterministic).
    C twin:    mt_pointwise_conv_s8
    """
    N, H, W, CO = y.shape
    CI = x.shape[3]
    if (x.shape[0] != N or x.shape[1] != H or x.shape[2] != W or w.shape[0] != CO or w.shape[1] != CI
            or bias.shape[0] != CO or mult.shape[0] != CO or shift.shape[0] != CO):
        raise ValueError("pointwise_conv_s8: inconsistent shapes")
    write_mask = mask_check(mask, N * H, W, CO)
    xz = np.int64(x_zp)
    yz = np.int64(y_zp)
    for r in prange(N * H):
        n = r // H
        oy = r - n * H
        j = 0  # mask bit of (ox, co) in row r: ox * CO + co
        byte = 0
        for ox in range(W):
            for co in range(CO):
                acc = np.int64(0)
                for ci in range(CI):
                    acc += np.int64(w[co, ci]) * (np.int64(x[n, oy, ox, ci]) - xz)
                acc += np.int64(bias[co])
                acc = ((acc - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN  # C's int32 acc + bias wraps (see Overflow)
                v = mbqm(acc, mult[co], shift[co]) + yz
                y[n, oy, ox, co] = np.int8(clamp(v, act_min, act_max))
                if write_mask:
                    byte = mask_put_bit(mask, r, j, byte, v >= act_min and v <= act_max)
                    j += 1
        if write_mask:
            mask_flush_row(mask, r, j, byte)


@njit(**NJIT_PARALLEL)
def pointwise_conv_f32(y, x, w, bias, act_min, act_max):
    """y[n, h, w, co] = clamp(sum_ci w[co, ci] * x[n, h, w, ci] + bias[co], act_min, act_max), fp32 1x1 conv.

    Layout:    y (N, H, W, Co) f32 out; x (N, H, W, Ci) f32; w (Co, Ci) f32; bias (Co,) f32;
               act_min/act_max floats ((-inf, inf) none, (0, 6) ReLU6).
    Ownership: writes every element of y (`=`, overwrite); allocates nothing (loops, not a BLAS matmul, which
               would allocate its result). y must not alias x.
    Exactness: float32 accumulation over ci in order, then + bias, then clamp (TFLM reference_ops::Conv order
               for a 1x1 filter), no fastmath; tested against float64 within config.F32_RTOL / F32_ATOL.
    Overflow:  not applicable (float32).
    Zero points: none (fp32).
    Parallel:  prange over (batch x rows); disjoint writes (deterministic).
    C twin:    mt_pointwise_conv_f32
    """
    N, H, W, CO = y.shape
    CI = x.shape[3]
    if (x.shape[0] != N or x.shape[1] != H or x.shape[2] != W or w.shape[0] != CO or w.shape[1] != CI
            or bias.shape[0] != CO):
        raise ValueError("pointwise_conv_f32: inconsistent shapes")
    lo = np.float32(act_min)
    hi = np.float32(act_max)
    for r in prange(N * H):
        n = r // H
        oy = r - n * H
        for ox in range(W):
            for co in range(CO):
                acc = np.float32(0.0)
                for ci in range(CI):
                    acc += x[n, oy, ox, ci] * w[co, ci]
                acc += bias[co]
                if acc < lo:
                    acc = lo
                if acc > hi:
                    acc = hi
                y[n, oy, ox, co] = acc
