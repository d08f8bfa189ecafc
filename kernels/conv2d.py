"""Dense 2-D convolution forward, int8 (per-channel requantization) and fp32, NHWC activations, OHWI weights.

Direct loops with symmetric explicit padding; no im2col, so no scratch (no `_scratch_bytes` sibling).
C twins: mt_conv2d_s8, mt_conv2d_f32 (docs/porting.md).
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .mask import mask_check, mask_flush_row, mask_put_bit
from .requant import INT32_MIN, clamp, mbqm
from .threads import threads_for, threads_restore


@njit(**NJIT_PARALLEL)
def conv2d_s8(y, mask, x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max, stride, pad):
    """y = clamp(mbqm(sum w * (x - x_zp) + bias) + y_zp), int8 convolution with per-channel requantization.

    Layout:    y (N, OH, OW, Co) s8 out; mask (N * OH, ceil(OW * Co / 8)) u8 out, or mask.NO_MASK;
               x (N, H, W, Ci) s8; w (Co, KH, KW, Ci) s8 (OHWI, symmetric, zp 0);
               bias (Co,) s32; mult, shift (Co,) s32 from requant.conv_multipliers;
               OH = (H + 2*pad - KH) // stride + 1, OW likewise. `pad` is applied on all four sides.
    Ownership: writes every element of y (`=`, overwrite) and, unless NO_MASK, every byte of mask; reads x, w, bias,
               mult, shift; allocates nothing.
    Mask:      1-bit STE mask for training (layout in kernels/mask.py): bit (n, oy, ox, co) = 1 iff the value before
               clamping, mbqm(acc) + y_zp, lies in [act_min, act_max] (inclusive; tiny-training's
               _TruncateActivationRange backward). It cannot be recovered from y: a y equal to a bound is ambiguous.
               y is the same with or without a mask.
    Exactness: bit-exact with TFLM tflite::reference_integer_ops::ConvPerChannel (reference/integer_ops/conv.h,
               double-rounding MultiplyByQuantizedMultiplier): taps outside the image are skipped, which is
               padding with x_zp; acc += bias; mbqm; + y_zp; max(act_min), min(act_max).
    Overflow:  |w * (x - x_zp)| <= 128 * 255 = 32640, so the sum over taps fits int32 while KH*KW*Ci <= 65793
               (MCUNet's largest is 576).
               acc + bias can overflow: int32 biases at the limits occur in the real tiny-training weights
               (dead channels), and TFLM's int32 `acc += bias` then wraps modulo 2^32 (UB in C, two's complement
               on every TFLM target). Accumulated here in int64 (every int8 load widened), then acc + bias is
               wrapped to int32 explicitly, so that case matches too. mbqm's pre-shift acc * 2^max(shift, 0) is
               not wrapped: it must fit int32 (true whenever the effective scale is < 1).
    Zero points: x_zp, y_zp are zero points, in [-128, 127]; TFLM/CMSIS-NN pass input_offset = -x_zp.
    Parallel:  prange over (batch x output rows); each iteration writes disjoint rows of y and of mask (mask rows are
               byte-aligned; deterministic).
    C twin:    mt_conv2d_s8
    """
    N, OH, OW, CO = y.shape
    H = x.shape[1]
    W = x.shape[2]
    CI = x.shape[3]
    KH = w.shape[1]
    KW = w.shape[2]
    if (x.shape[0] != N or w.shape[0] != CO or w.shape[3] != CI
            or OH != (H + 2 * pad - KH) // stride + 1 or OW != (W + 2 * pad - KW) // stride + 1
            or bias.shape[0] != CO or mult.shape[0] != CO or shift.shape[0] != CO):
        raise ValueError("conv2d_s8: inconsistent shapes")
    write_mask = mask_check(mask, N * OH, OW, CO)
    xz = np.int64(x_zp)
    yz = np.int64(y_zp)
    prev = threads_for(y.size * (w.size // w.shape[0]))
    for r in prange(N * OH):
        n = r // OH
        oy = r - n * OH
        iy0 = oy * stride - pad
        j = 0  # mask bit of (ox, co) in row r: ox * CO + co
        byte = 0
        for ox in range(OW):
            ix0 = ox * stride - pad
            for co in range(CO):
                acc = np.int64(0)
                for ky in range(KH):
                    iy = iy0 + ky
                    if iy < 0 or iy >= H:
                        continue  # tap in the padding: (x_zp - x_zp) * w = 0
                    for kx in range(KW):
                        ix = ix0 + kx
                        if ix < 0 or ix >= W:
                            continue
                        for ci in range(CI):
                            acc += np.int64(w[co, ky, kx, ci]) * (np.int64(x[n, iy, ix, ci]) - xz)
                acc += np.int64(bias[co])
                acc = ((acc - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN  # C's int32 acc + bias wraps (see Overflow)
                v = mbqm(acc, mult[co], shift[co]) + yz
                y[n, oy, ox, co] = np.int8(clamp(v, act_min, act_max))
                if write_mask:
                    byte = mask_put_bit(mask, r, j, byte, v >= act_min and v <= act_max)
                    j += 1
        if write_mask:
            mask_flush_row(mask, r, j, byte)
    threads_restore(prev)


@njit(**NJIT_PARALLEL)
def conv2d_f32(y, x, w, bias, act_min, act_max, stride, pad):
    """y = clamp(sum w * x + bias, act_min, act_max), fp32 convolution with zero padding.

    Layout:    y (N, OH, OW, Co) f32 out; x (N, H, W, Ci) f32; w (Co, KH, KW, Ci) f32 (OHWI); bias (Co,) f32;
               OH = (H + 2*pad - KH) // stride + 1, OW likewise. act_min/act_max floats: (-inf, inf) = none,
               (0, 6) = ReLU6.
    Ownership: writes every element of y (`=`, overwrite); allocates nothing.
    Exactness: float32 accumulation in TFLM tflite::reference_ops::Conv's order (filter_y, filter_x, in_channel,
               then + bias, then clamp), no fastmath/FMA contraction; tests compare with a float64 reference
               within config.F32_RTOL / F32_ATOL.
    Overflow:  not applicable (float32).
    Zero points: none (fp32); padding contributes 0.
    Parallel:  prange over (batch x output rows); disjoint writes (deterministic).
    C twin:    mt_conv2d_f32
    """
    N, OH, OW, CO = y.shape
    H = x.shape[1]
    W = x.shape[2]
    CI = x.shape[3]
    KH = w.shape[1]
    KW = w.shape[2]
    if (x.shape[0] != N or w.shape[0] != CO or w.shape[3] != CI
            or OH != (H + 2 * pad - KH) // stride + 1 or OW != (W + 2 * pad - KW) // stride + 1
            or bias.shape[0] != CO):
        raise ValueError("conv2d_f32: inconsistent shapes")
    lo = np.float32(act_min)
    hi = np.float32(act_max)
    prev = threads_for(y.size * (w.size // w.shape[0]))
    for r in prange(N * OH):
        n = r // OH
        oy = r - n * OH
        iy0 = oy * stride - pad
        for ox in range(OW):
            ix0 = ox * stride - pad
            for co in range(CO):
                acc = np.float32(0.0)
                for ky in range(KH):
                    iy = iy0 + ky
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(KW):
                        ix = ix0 + kx
                        if ix < 0 or ix >= W:
                            continue
                        for ci in range(CI):
                            acc += x[n, iy, ix, ci] * w[co, ky, kx, ci]
                acc += bias[co]
                if acc < lo:
                    acc = lo
                if acc > hi:
                    acc = hi
                y[n, oy, ox, co] = acc
    threads_restore(prev)
