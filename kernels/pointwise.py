"""Pointwise (1x1, stride 1) convolution forward, int8 (per-channel requantization) and fp32, NHWC.

int8: outer products over a per-thread stack scratch (kernels/scratch.py); fp32: a dot product over the contiguous input
channels per pixel and output channel; no BLAS.
C twins: mt_pointwise_conv_s8, mt_pointwise_conv_f32 (docs/porting.md).
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .mask import mask_check, mask_or_bit, mask_zero_row
from .requant import INT32_MIN, clamp, mbqm
from .scratch import SCRATCH_ACC, SCRATCH_W8, chunk_bounds, scratch_acc_i32, scratch_w_i8
from .threads import parallel_chunks, threads_for, threads_restore


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
               on every TFLM target). Summed here in int32 (exact, the bound above) as outer products: per pixel,
               each input channel (x - x_zp) times a row of output channels of a per-thread transposed weight tile,
               into a per-thread int32 accumulator row (both stack scratch, kernels/scratch.py; Ci <= SCRATCH_W8),
               so the multiply-adds vectorise across output channels; then acc + bias in int64 is wrapped to
               int32 explicitly, so that case matches too. mbqm's pre-shift acc * 2^max(shift, 0) is not wrapped:
               it must fit int32 (true whenever the effective scale is < 1).
    Zero points: x_zp, y_zp are zero points; TFLM/CMSIS-NN pass input_offset = -x_zp.
    Parallel:  prange over one contiguous chunk of (batch x rows) per thread (the weight tile is transposed once per
               chunk); disjoint rows of y and of mask (byte-aligned rows, cleared then OR-ed; deterministic: integer
               sums are exact whatever the chunking).
    C twin:    mt_pointwise_conv_s8
    """
    N, H, W, CO = y.shape
    CI = x.shape[3]
    if (x.shape[0] != N or x.shape[1] != H or x.shape[2] != W or w.shape[0] != CO or w.shape[1] != CI
            or bias.shape[0] != CO or mult.shape[0] != CO or shift.shape[0] != CO):
        raise ValueError("pointwise_conv_s8: inconsistent shapes")
    if CI > SCRATCH_W8:
        raise ValueError("pointwise_conv_s8: more input channels than the weight scratch holds")
    write_mask = mask_check(mask, N * H, W, CO)
    xz = np.int32(x_zp)
    yz = np.int64(y_zp)
    CB = min(CO, SCRATCH_ACC, SCRATCH_W8 // CI)  # output channels per block: acc row and transposed weight tile
    rows = N * H
    prev = threads_for(y.size * w.shape[1])
    chunks = parallel_chunks(rows)
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
            for co in range(co0, co1):  # wt[ci * cb + k] = w[co0 + k, ci]: output channels contiguous
                for ci in range(CI):
                    wt[ci * cb + (co - co0)] = w[co, ci]
            for r in range(r0, r1):
                n = r // H
                oy = r - n * H
                for ox in range(W):
                    for k in range(cb):
                        acc[k] = 0
                    for ci in range(CI):  # outer product: one input channel times a row of output channels
                        xv = np.int32(x[n, oy, ox, ci]) - xz
                        for k in range(cb):
                            acc[k] += np.int32(wt[ci * cb + k]) * xv
                    for k in range(cb):
                        a = np.int64(acc[k]) + np.int64(bias[co0 + k])
                        a = ((a - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN  # C's int32 acc + bias wraps (see Overflow)
                        v = mbqm(a, mult[co0 + k], shift[co0 + k]) + yz
                        y[n, oy, ox, co0 + k] = np.int8(clamp(v, act_min, act_max))
                        acc[k] = np.int32(v >= act_min and v <= act_max)
                    if write_mask:  # a separate loop, so the one above stays branch-free in inference
                        for k in range(cb):
                            mask_or_bit(mask, r, ox * CO + co0 + k, acc[k] != 0)
    threads_restore(prev)


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
    prev = threads_for(y.size * w.shape[1])
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
    threads_restore(prev)
