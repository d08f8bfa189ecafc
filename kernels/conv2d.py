"""Dense 2-D convolution forward, int8 (per-channel requantization) and fp32, NHWC activations, OHWI weights.

Direct loops with symmetric explicit padding, no im2col. int8: outer products over a per-thread stack scratch
(kernels/scratch.py: a transposed weight tile and an int32 accumulator row), so the multiply-adds vectorise across
output channels; fp32: a dot product per output channel. Neither needs arena scratch.
C twins: mt_conv2d_s8, mt_conv2d_f32 (docs/porting.md).
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .mask import mask_check, mask_or_bit, mask_zero_row
from .requant import INT32_MIN, clamp, mbqm
from .scratch import LANES, PARALLEL_CHUNKS, SCRATCH_ACC, SCRATCH_W8, chunk_bounds, scratch_acc_i32, scratch_w_i8


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
               on every TFLM target). Summed here in int32 (exact, the bound above) as outer products: per output
               pixel and tap, each input channel (x - x_zp) times a row of output channels of a per-thread
               transposed weight tile, into a per-thread int32 accumulator row (stack scratch, kernels/scratch.py;
               KH*KW*Ci <= SCRATCH_W8); then acc + bias in int64 is wrapped to int32 explicitly, so that case
               matches too. mbqm's pre-shift acc * 2^max(shift, 0) is not wrapped: it must fit int32 (true whenever
               the effective scale is < 1).
    Zero points: x_zp, y_zp are zero points, in [-128, 127]; TFLM/CMSIS-NN pass input_offset = -x_zp.
    Parallel:  prange over one contiguous chunk of (batch x output rows) per thread (the weight tile is transposed
               once per chunk); disjoint rows of y and of mask (byte-aligned rows, cleared then OR-ed; deterministic:
               integer sums are exact whatever the chunking).
    C twin:    mt_conv2d_s8 (the direct loop nest, same bits)
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
    KK = KH * KW * CI
    if KK > SCRATCH_W8:
        raise ValueError("conv2d_s8: KH * KW * Ci exceeds the weight scratch")
    write_mask = mask_check(mask, N * OH, OW, CO)
    xz = np.int32(x_zp)
    yz = np.int64(y_zp)
    CB = min(CO, SCRATCH_ACC, SCRATCH_W8 // KK)  # output channels per block: acc row and transposed weight tile
    rows = N * OH
    chunks = min(PARALLEL_CHUNKS, rows)
    for t in prange(chunks):
        acc = scratch_acc_i32()  # per-thread stack scratch (kernels/scratch.py)
        wt = scratch_w_i8()
        r0, r1 = chunk_bounds(rows, chunks, t)
        if write_mask:
            for r in range(r0, r1):
                mask_zero_row(mask, r)
        for co0 in range(0, CO, CB):
            co1 = min(CO, co0 + CB)
            cb = co1 - co0
            cb8 = cb - cb % LANES
            for co in range(co0, co1):  # wt[((ky * KW + kx) * CI + ci) * cb + k] = w[co0 + k, ky, kx, ci]
                for ky in range(KH):
                    for kx in range(KW):
                        for ci in range(CI):
                            wt[((ky * KW + kx) * CI + ci) * cb + (co - co0)] = w[co, ky, kx, ci]
            for r in range(r0, r1):
                n = r // OH
                oy = r - n * OH
                iy0 = oy * stride - pad
                for ox in range(OW):
                    ix0 = ox * stride - pad
                    for k in range(cb):
                        acc[k] = 0
                    for ky in range(KH):
                        iy = iy0 + ky
                        if iy < 0 or iy >= H:
                            continue  # tap in the padding: (x_zp - x_zp) * w = 0
                        for kx in range(KW):
                            ix = ix0 + kx
                            if ix < 0 or ix >= W:
                                continue
                            base = (ky * KW + kx) * CI
                            for ci in range(CI):  # outer product: one input value times a row of output channels
                                xv = np.int32(x[n, iy, ix, ci]) - xz
                                row = (base + ci) * cb
                                for k0 in range(0, cb8, LANES):  # constant-trip blocks: straight vector code
                                    for lane in range(LANES):
                                        acc[k0 + lane] += np.int32(wt[row + k0 + lane]) * xv
                                for k in range(cb8, cb):
                                    acc[k] += np.int32(wt[row + k]) * xv
                    for k in range(cb):
                        a = np.int64(acc[k]) + np.int64(bias[co0 + k])
                        a = ((a - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN  # C's int32 acc + bias wraps (see Overflow)
                        v = mbqm(a, mult[co0 + k], shift[co0 + k]) + yz
                        y[n, oy, ox, co0 + k] = np.int8(clamp(v, act_min, act_max))
                        acc[k] = np.int32(v >= act_min and v <= act_max)
                    if write_mask:  # a separate loop, so the one above stays branch-free in inference
                        for k in range(cb):
                            mask_or_bit(mask, r, ox * CO + co0 + k, acc[k] != 0)


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
