"""Elementwise ADD (the residual connection) forward, int8 (TFLM's left-shift-20 fixed-point scheme) and fp32.

Elementwise, so y may alias a or b (in-place residual add). No scratch.
C twins: mt_add_s8, mt_add_f32 (docs/porting.md).
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT

from .mask import mask_check, mask_flush_row, mask_put_bit
from .requant import ADD_LEFT_SHIFT, clamp, rdbpot, srdhm


@njit(**NJIT)
def add_s8(y, mask, a, b, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, y_zp, y_mult, y_shift, act_min, act_max):
    """y = clamp(S(S((a - a_zp) * 2^20, a_mult, a_shift) + S((b - b_zp) * 2^20, b_mult, b_shift), y_mult, y_shift)
    + y_zp), with S(v, M, s) = RDBPOT(SRDHM(v, M), -s): int8 ADD of two tensors with their own scales.

    Layout:    y, a, b (N, H, W, C) s8, same shape; mask (N * H, ceil(W * C / 8)) u8 out, or mask.NO_MASK;
               scalar (mult, shift) pairs from requant.add_multipliers (QuantizeMultiplierSmallerThanOneExp, every
               shift <= 0; a positive shift raises ValueError).
    Ownership: writes every element of y (`=`, overwrite) and, unless NO_MASK, every byte of mask; y may be a or b
               (each element is read before its own slot is written); allocates nothing.
    Mask:      1-bit STE mask for training (layout in kernels/mask.py): bit (n, h, w, c) = 1 iff the value before
               clamping, S(u_a + u_b, y_mult, y_shift) + y_zp, lies in [act_min, act_max] (inclusive; tiny-training's
               _TruncateActivationRange backward). y is the same with or without a mask.
    Exactness: bit-exact with TFLM tflite::reference_integer_ops::Add / AddFunc (reference/integer_ops/add.h)
               with the int8 parameters of micro/kernels/add_common.cc (left_shift = 20):
               MultiplyByQuantizedMultiplierSmallerThanOneExp on each shifted input and on their sum.
    Overflow:  |a - a_zp| <= 255, so |v| <= 255 * 2^20 < 2^28; SRDHM with M < 2^31 and RDBPOT do not grow it,
               so |u_a + u_b| < 2^29: every int32 intermediate of the C twin is safe. Computed in int64 here.
    Zero points: a_zp, b_zp, y_zp are zero points; TFLM passes input1_offset = -a_zp, input2_offset = -b_zp,
               output_offset = +y_zp.
    C twin:    mt_add_s8
    """
    N, H, W, C = y.shape
    if a.shape != y.shape or b.shape != y.shape:
        raise ValueError("add_s8: a, b and y must have the same shape")
    if a_shift > 0 or b_shift > 0 or y_shift > 0:
        raise ValueError("add_s8: shifts must be <= 0 (QuantizeMultiplierSmallerThanOneExp)")
    write_mask = mask_check(mask, N * H, W, C)
    az = np.int64(a_zp)
    bz = np.int64(b_zp)
    yz = np.int64(y_zp)
    ea = -np.int64(a_shift)
    eb = -np.int64(b_shift)
    ey = -np.int64(y_shift)
    for n in range(N):
        for h in range(H):
            r = n * H + h
            j = 0  # mask bit of (x, c) in row r: x * C + c
            byte = 0
            for x in range(W):
                for c in range(C):
                    va = (np.int64(a[n, h, x, c]) - az) << ADD_LEFT_SHIFT
                    vb = (np.int64(b[n, h, x, c]) - bz) << ADD_LEFT_SHIFT
                    ua = rdbpot(srdhm(va, a_mult), ea)
                    ub = rdbpot(srdhm(vb, b_mult), eb)
                    v = rdbpot(srdhm(ua + ub, y_mult), ey) + yz
                    y[n, h, x, c] = np.int8(clamp(v, act_min, act_max))
                    if write_mask:
                        byte = mask_put_bit(mask, r, j, byte, v >= act_min and v <= act_max)
                        j += 1
            if write_mask:
                mask_flush_row(mask, r, j, byte)


@njit(**NJIT)
def add_f32(y, a, b):
    """y = a + b, fp32, elementwise.

    Layout:    y, a, b (N, H, W, C) f32, same shape.
    Ownership: writes every element of y (`=`, overwrite); y may be a or b; allocates nothing.
    Exactness: one float32 addition per element (TFLM tflite::reference_ops::Add float without activation).
    Overflow:  not applicable (float32).
    Zero points: none (fp32).
    C twin:    mt_add_f32
    """
    N, H, W, C = y.shape
    if a.shape != y.shape or b.shape != y.shape:
        raise ValueError("add_f32: a, b and y must have the same shape")
    for n in range(N):
        for h in range(H):
            for x in range(W):
                for c in range(C):
                    y[n, h, x, c] = a[n, h, x, c] + b[n, h, x, c]
