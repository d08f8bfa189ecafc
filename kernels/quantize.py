"""QUANTIZE (fp32 -> int8) and DEQUANTIZE (int8 -> fp32) of NHWC tensors with a per-tensor scale and zero point.

The jitted twins of requant.quantize_f32_to_s8 / dequantize_s8_to_f32 (host helpers that allocate temporaries).
No scratch. C twins: mt_quantize_s8, mt_dequantize_s8 (docs/porting.md).
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT


@njit(**NJIT)
def quantize_s8(y, x, scale, zero_point):
    """y = clamp(zero_point + round_half_away(x / scale), -128, 127), elementwise.

    Layout:    y (N, H, W, C) s8 out; x (N, H, W, C) f32; scale > 0 (rounded to float32, as stored in TFLite),
               zero_point in [-128, 127].
    Ownership: writes every element of y (`=`, overwrite); allocates nothing.
    Exactness: bit-exact with TFLM tflite::reference_ops::AffineQuantize (reference/quantize.h): float32 division
               x / (float)scale, TfLiteRound = C round (half away from zero; never np.round, half to even),
               + zero_point, clamp to [-128, 127]. Where C's int32 cast is undefined (|x / scale| >= 2^31, NaN)
               this saturates instead (NaN -> -128, the value x86 produces).
    Overflow:  the clamp is done in float64 before the integer cast, so no integer overflow is possible.
    Zero points: zero_point is the zero point (added).
    C twin:    mt_quantize_s8
    """
    N, H, W, C = y.shape
    if x.shape != y.shape:
        raise ValueError("quantize_s8: x and y must have the same shape")
    s = np.float32(scale)
    zp = np.float64(zero_point)
    half = np.float32(0.5)
    one = np.float32(1.0)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    v = x[n, h, w, c] / s  # float32 / float32, as C's val / (float)scale
                    a = abs(v)
                    r = np.floor(a)
                    if a - r >= half:  # a - floor(a) is exact in float32
                        r += one
                    if v < 0:
                        r = -r
                    q = np.float64(r) + zp
                    if not q >= -128.0:  # also catches NaN
                        q = -128.0
                    elif q > 127.0:
                        q = 127.0
                    y[n, h, w, c] = np.int8(np.int64(q))


@njit(**NJIT)
def dequantize_s8(y, x, scale, zero_point):
    """y = (float)((double)scale * (x - zero_point)), elementwise.

    Layout:    y (N, H, W, C) f32 out; x (N, H, W, C) s8; scale rounded to float32 then widened to double (the
               tensor's float32 scale in a double op param), zero_point in [-128, 127].
    Ownership: writes every element of y (`=`, overwrite); allocates nothing.
    Exactness: bit-exact with TFLM tflite::reference_ops::Dequantize (reference/dequantize.h): the product is
               exact in double (24-bit scale times a 9-bit integer) and rounded once to float32, so it also
               equals the float32 product float(scale) * float(x - zero_point).
    Overflow:  |x - zero_point| <= 255.
    Zero points: zero_point is the zero point (subtracted).
    C twin:    mt_dequantize_s8
    """
    N, H, W, C = y.shape
    if x.shape != y.shape:
        raise ValueError("dequantize_s8: x and y must have the same shape")
    s = np.float64(np.float32(scale))
    zp = np.int64(zero_point)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    y[n, h, w, c] = np.float32(s * np.float64(np.int64(x[n, h, w, c]) - zp))
