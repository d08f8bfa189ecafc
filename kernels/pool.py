"""Average pooling forward, int8 and fp32, NHWC: windowed (padding excluded from the count) and global.

Global pooling is AVERAGE_POOL_2D with an H x W filter, VALID, as the exported TFLite models express it; input and
output share scale and zero point (no requantization). No scratch. C twins: mt_<kernel name> (docs/porting.md).
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT

from .requant import clamp


@njit(**NJIT)
def _rounded_mean(acc, count):
    """TFLM AveragePool's integer rounding of acc / count (count > 0): half away from zero.

    acc > 0: (acc + count/2) / count, else (acc - count/2) / count, with C's truncating division.
    `//` floors in Python and in Numba, so the negative branch truncates explicitly: -((-a) // count).
    """
    half = count // 2
    if acc > 0:
        return (acc + half) // count  # numerator > 0: floor == truncation
    return -((half - acc) // count)  # numerator acc - half <= 0: trunc(a / c) = -floor(-a / c)


@njit(**NJIT)
def avgpool_s8(y, x, kh, kw, stride, pad, act_min, act_max):
    """y = clamp(round(mean of the in-image taps of each kh x kw window)), int8 average pool.

    Layout:    y (N, OH, OW, C) s8 out; x (N, H, W, C) s8; OH = (H + 2*pad - kh) // stride + 1, OW likewise;
               requires pad < kh and pad < kw, so every window holds at least one in-image tap
               (TFLM fails the op on an empty window).
    Ownership: writes every element of y (`=`, overwrite); allocates nothing. y must not alias x.
    Exactness: bit-exact with TFLM tflite::reference_integer_ops::AveragePool (reference/integer_ops/pooling.h):
               window clipped to the image, count = in-image taps (padding excluded), acc = sum of raw int8,
               rounding half away from zero with truncating division, max(act_min), min(act_max).
    Overflow:  |acc| <= 128 * kh * kw; the C twin's int32 is safe for windows up to 2^24 taps.
    Zero points: none needed (input and output share scale and zero point, TFLite's constraint for this op).
    C twin:    mt_avgpool_s8
    """
    N, OH, OW, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    if (x.shape[0] != N or x.shape[3] != C or pad >= kh or pad >= kw
            or OH != (H + 2 * pad - kh) // stride + 1 or OW != (W + 2 * pad - kw) // stride + 1):
        raise ValueError("avgpool_s8: inconsistent shapes, or pad >= kernel size")
    for n in range(N):
        for oy in range(OH):
            y0 = oy * stride - pad
            fy0 = max(0, -y0)
            fy1 = min(kh, H - y0)
            for ox in range(OW):
                x0 = ox * stride - pad
                fx0 = max(0, -x0)
                fx1 = min(kw, W - x0)
                count = (fy1 - fy0) * (fx1 - fx0)
                for c in range(C):
                    acc = np.int64(0)
                    for fy in range(fy0, fy1):
                        for fx in range(fx0, fx1):
                            acc += np.int64(x[n, y0 + fy, x0 + fx, c])
                    y[n, oy, ox, c] = np.int8(clamp(_rounded_mean(acc, count), act_min, act_max))


@njit(**NJIT)
def global_mean_s8(y, x, act_min, act_max):
    """y[n, c] = clamp(round(mean over h, w of x[n, h, w, c])), int8 global average pool.

    Layout:    y (N, C) s8 out; x (N, H, W, C) s8.
    Ownership: writes every element of y (`=`, overwrite); allocates nothing.
    Exactness: bit-exact with TFLM tflite::reference_integer_ops::AveragePool with an H x W filter, VALID
               (count = H * W), i.e. avgpool_s8(y.reshape(N, 1, 1, C), x, H, W, 1, 0, ...). Not TFLite MEAN,
               which requantizes with a multiplier and rounds differently.
    Overflow:  |acc| <= 128 * H * W; the C twin's int32 is safe up to 2^24 pixels.
    Zero points: none needed (input and output share scale and zero point).
    C twin:    mt_global_mean_s8
    """
    N, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    if x.shape[0] != N or x.shape[3] != C:
        raise ValueError("global_mean_s8: inconsistent shapes")
    count = H * W
    for n in range(N):
        for c in range(C):
            acc = np.int64(0)
            for h in range(H):
                for w in range(W):
                    acc += np.int64(x[n, h, w, c])
            y[n, c] = np.int8(clamp(_rounded_mean(acc, count), act_min, act_max))


@njit(**NJIT)
def avgpool_f32(y, x, kh, kw, stride, pad):
    """y = mean of the in-image taps of each kh x kw window, fp32 average pool (padding excluded from the count).

    Layout:    y (N, OH, OW, C) f32 out; x (N, H, W, C) f32; OH = (H + 2*pad - kh) // stride + 1;
               requires pad < kh and pad < kw.
    Ownership: writes every element of y (`=`, overwrite); allocates nothing. y must not alias x.
    Exactness: float32 sum in TFLM tflite::reference_ops::AveragePool's (float) order (filter_y, filter_x),
               then one float32 division by the count; tested against float64 within config.F32_RTOL / F32_ATOL.
    Overflow:  not applicable (float32).
    Zero points: none (fp32).
    C twin:    mt_avgpool_f32
    """
    N, OH, OW, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    if (x.shape[0] != N or x.shape[3] != C or pad >= kh or pad >= kw
            or OH != (H + 2 * pad - kh) // stride + 1 or OW != (W + 2 * pad - kw) // stride + 1):
        raise ValueError("avgpool_f32: inconsistent shapes, or pad >= kernel size")
    for n in range(N):
        for oy in range(OH):
            y0 = oy * stride - pad
            fy0 = max(0, -y0)
            fy1 = min(kh, H - y0)
            for ox in range(OW):
                x0 = ox * stride - pad
                fx0 = max(0, -x0)
                fx1 = min(kw, W - x0)
                count = np.float32((fy1 - fy0) * (fx1 - fx0))
                for c in range(C):
                    acc = np.float32(0.0)
                    for fy in range(fy0, fy1):
                        for fx in range(fx0, fx1):
                            acc += x[n, y0 + fy, x0 + fx, c]
                    y[n, oy, ox, c] = acc / count


@njit(**NJIT)
def global_mean_f32(y, x):
    """y[n, c] = mean over h, w of x[n, h, w, c], fp32 global average pool.

    Layout:    y (N, C) f32 out; x (N, H, W, C) f32.
    Ownership: writes every element of y (`=`, overwrite); allocates nothing.
    Exactness: float32 sum in row-major (h, w) order, then one float32 division by H * W (= avgpool_f32 with an
               H x W window); tested against float64 within config.F32_RTOL / F32_ATOL.
    Overflow:  not applicable (float32).
    Zero points: none (fp32).
    C twin:    mt_global_mean_f32
    """
    N, C = y.shape
    H = x.shape[1]
    W = x.shape[2]
    if x.shape[0] != N or x.shape[3] != C:
        raise ValueError("global_mean_f32: inconsistent shapes")
    count = np.float32(H * W)
    for n in range(N):
        for c in range(C):
            acc = np.float32(0.0)
            for h in range(H):
                for w in range(W):
                    acc += x[n, h, w, c]
            y[n, c] = acc / count
