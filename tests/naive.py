"""Plain, slow, obviously-correct references of every kernel in kernels/, written independently of them.

Integer math is done on Python ints (literal ports of gemmlowp / TFLM, with C truncating division spelled out);
padding is explicit (np.pad with the input zero point, then VALID loops); fp32 references compute in float64.
Every function returns a new array. The end of the file holds the random test-parameter makers the kernel tests share.
"""

import math
from fractions import Fraction

import numpy as np

# Host-side parameter derivation only (used by the test-parameter makers at the end), never the fixed-point primitives.
from microtrain.kernels.requant import activation_range_s8, conv_multipliers
# The mask layout and the "no mask" argument (host-side constants), for check_s8_kernel.
from microtrain.kernels.mask import NO_MASK, mask_shape

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1


# ----------------------------------------------------------------------------------------------
# Fixed-point primitives (gemmlowp fixedpoint.h, TFLM common.cc / quantization_util.cc), on Python ints
# ----------------------------------------------------------------------------------------------

def _check_int32(v):
    assert INT32_MIN <= v <= INT32_MAX, f"{v} does not fit in int32 (the C code would overflow)"
    return v


def c_div(a, b):
    """C/C++ integer division: the quotient truncated toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul, line by line."""
    a, b = _check_int32(int(a)), _check_int32(int(b))
    overflow = a == b == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else 1 - (1 << 30)
    ab_x2_high32 = c_div(ab_64 + nudge, 1 << 31)
    return INT32_MAX if overflow else _check_int32(ab_x2_high32)


def rdbpot(x, exponent):
    """gemmlowp RoundingDivideByPOT, line by line (Python's & and >> on negative ints act as on two's complement)."""
    x, exponent = _check_int32(int(x)), int(exponent)
    assert 0 <= exponent <= 31
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x, multiplier, shift):
    """TFLM MultiplyByQuantizedMultiplier, double rounding (the build every TFLM target uses)."""
    x, shift = int(x), int(shift)
    left_shift = shift if shift > 0 else 0
    right_shift = -shift if shift < 0 else 0
    return rdbpot(srdhm(_check_int32(x * (1 << left_shift)), multiplier), right_shift)


def round_half_away(v):
    """C round(): nearest integer, ties away from zero; exact (via Fraction) for any finite float."""
    f = Fraction(float(v))
    r = math.floor(abs(f) + Fraction(1, 2))
    return r if f >= 0 else -r


def quantize_multiplier(real):
    """TFLM QuantizeMultiplier(double) -> (multiplier, shift), real = multiplier * 2^(shift - 31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * 2.0 ** 31)  # q * 2^31 is exact in double (a power-of-two scaling)
    assert abs(q_fixed) <= 2 ** 31
    if q_fixed == 2 ** 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    return q_fixed, shift


def wrap_int32(v):
    """Two's complement int32 wraparound of a Python int: what TFLM's int32 `acc += bias` gives on overflow
    (undefined in C, a wrap on every target TFLM runs on; real tiny-training biases sit at the int32 limits)."""
    return (int(v) + 2 ** 31) % 2 ** 32 - 2 ** 31


def requant_pre_s8(acc, multiplier, shift, y_zp):
    """The value before the clamp: acc (exact sum of products + bias) wrapped to int32, mbqm, + output zero point."""
    return mbqm(wrap_int32(acc), multiplier, shift) + int(y_zp)


def requant_s8(acc, multiplier, shift, y_zp, act_min, act_max):
    """The common tail of conv / depthwise / FC: requant_pre_s8, then max, then min, as an int."""
    return min(max(requant_pre_s8(acc, multiplier, shift, y_zp), int(act_min)), int(act_max))


def requant_store(y, in_range, idx, v, act_min, act_max):
    """y[idx] = clamp(v) and in_range[idx] = (act_min <= v <= act_max): the clamp and its STE mask (tiny-training's
    _TruncateActivationRange: the gradient passes where the pre-clamp value is inside the range, bounds included)."""
    y[idx] = min(max(v, int(act_min)), int(act_max))
    in_range[idx] = int(act_min) <= v <= int(act_max)


def finish(y, in_range, with_mask):
    """What the int8 references return: y, or (y, in_range) with the boolean in-range array when with_mask."""
    return (y, in_range) if with_mask else y


def pack_mask(in_range):
    """The 1-bit mask layout of kernels/mask.py from a boolean (N, H, W, C) array: (N * H, ceil(W * C / 8)) uint8,
    each image row packed on its own (np.packbits pads every row to a byte boundary with 0 bits), bit j = w * C + c
    of a row at bit j % 8 of byte j // 8."""
    n, h, w, c = in_range.shape
    return np.packbits(in_range.reshape(n * h, w * c), axis=1, bitorder="little")


# ----------------------------------------------------------------------------------------------
# Convolutions and FC
# ----------------------------------------------------------------------------------------------

def conv2d_s8(x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max, stride, pad, with_mask=False):
    """x (N,H,W,Ci) s8, w (Co,KH,KW,Ci) s8 -> (N,OH,OW,Co) s8. Pad with x_zp, then a VALID convolution.
    with_mask: also return the boolean pre-clamp in-range array (N,OH,OW,Co)."""
    N, H, W, CI = x.shape
    CO, KH, KW, _ = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=int(x_zp))
    OH = (H + 2 * pad - KH) // stride + 1
    OW = (W + 2 * pad - KW) // stride + 1
    w64 = w.astype(np.int64)
    y = np.empty((N, OH, OW, CO), np.int8)
    in_range = np.empty(y.shape, bool)
    for n in range(N):
        for oy in range(OH):
            for ox in range(OW):
                patch = xp[n, oy * stride:oy * stride + KH, ox * stride:ox * stride + KW, :] - int(x_zp)
                for co in range(CO):
                    acc = int(np.sum(patch * w64[co])) + int(bias[co])
                    v = requant_pre_s8(acc, mult[co], shift[co], y_zp)
                    requant_store(y, in_range, (n, oy, ox, co), v, act_min, act_max)
    return finish(y, in_range, with_mask)


def conv2d_f32(x, w, bias, act_min, act_max, stride, pad):
    """float64 reference of conv2d_f32 (zero padding), clipped to [act_min, act_max]."""
    N, H, W, CI = x.shape
    CO, KH, KW, _ = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    OH = (H + 2 * pad - KH) // stride + 1
    OW = (W + 2 * pad - KW) // stride + 1
    w64 = w.astype(np.float64)
    y = np.empty((N, OH, OW, CO), np.float64)
    for n in range(N):
        for oy in range(OH):
            for ox in range(OW):
                patch = xp[n, oy * stride:oy * stride + KH, ox * stride:ox * stride + KW, :]
                for co in range(CO):
                    y[n, oy, ox, co] = np.sum(patch * w64[co]) + float(bias[co])
    return np.clip(y, act_min, act_max)


def depthwise_conv_s8(x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max, stride, pad, with_mask=False):
    """x (N,H,W,C) s8, w (KH,KW,C) s8 -> (N,OH,OW,C) s8: each channel convolved with its own KH x KW filter.
    with_mask: also return the boolean pre-clamp in-range array."""
    N, H, W, C = x.shape
    KH, KW, _ = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=int(x_zp))
    OH = (H + 2 * pad - KH) // stride + 1
    OW = (W + 2 * pad - KW) // stride + 1
    w64 = w.astype(np.int64)
    y = np.empty((N, OH, OW, C), np.int8)
    in_range = np.empty(y.shape, bool)
    for n in range(N):
        for oy in range(OH):
            for ox in range(OW):
                patch = xp[n, oy * stride:oy * stride + KH, ox * stride:ox * stride + KW, :] - int(x_zp)
                for c in range(C):
                    acc = int(np.sum(patch[:, :, c] * w64[:, :, c])) + int(bias[c])
                    v = requant_pre_s8(acc, mult[c], shift[c], y_zp)
                    requant_store(y, in_range, (n, oy, ox, c), v, act_min, act_max)
    return finish(y, in_range, with_mask)


def depthwise_conv_f32(x, w, bias, act_min, act_max, stride, pad):
    """float64 reference of depthwise_conv_f32."""
    N, H, W, C = x.shape
    KH, KW, _ = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    OH = (H + 2 * pad - KH) // stride + 1
    OW = (W + 2 * pad - KW) // stride + 1
    y = np.empty((N, OH, OW, C), np.float64)
    for n in range(N):
        for oy in range(OH):
            for ox in range(OW):
                patch = xp[n, oy * stride:oy * stride + KH, ox * stride:ox * stride + KW, :]
                y[n, oy, ox, :] = np.sum(patch * w.astype(np.float64), axis=(0, 1)) + bias.astype(np.float64)
    return np.clip(y, act_min, act_max)


def pointwise_conv_s8(x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max, with_mask=False):
    """x (N,H,W,Ci) s8, w (Co,Ci) s8 -> (N,H,W,Co) s8: a 1x1 convolution is a matrix product per pixel.
    with_mask: also return the boolean pre-clamp in-range array."""
    acc = (x.astype(np.int64) - int(x_zp)) @ w.astype(np.int64).T + bias.astype(np.int64)
    y = np.empty(acc.shape, np.int8)
    in_range = np.empty(y.shape, bool)
    for idx in np.ndindex(*acc.shape):
        co = idx[-1]
        v = requant_pre_s8(int(acc[idx]), mult[co], shift[co], y_zp)
        requant_store(y, in_range, idx, v, act_min, act_max)
    return finish(y, in_range, with_mask)


def pointwise_conv_f32(x, w, bias, act_min, act_max):
    """float64 reference of pointwise_conv_f32."""
    y = x.astype(np.float64) @ w.astype(np.float64).T + bias.astype(np.float64)
    return np.clip(y, act_min, act_max)


def fully_connected_s8(x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max):
    """x (N,Ci) s8, w (Co,Ci) s8 -> (N,Co) s8, per-channel requantization."""
    N, CI = x.shape
    CO = w.shape[0]
    y = np.empty((N, CO), np.int8)
    for n in range(N):
        for co in range(CO):
            acc = sum(int(w[co, ci]) * (int(x[n, ci]) - int(x_zp)) for ci in range(CI)) + int(bias[co])
            y[n, co] = requant_s8(acc, mult[co], shift[co], y_zp, act_min, act_max)
    return y


def fully_connected_f32(x, w, bias):
    """float64 reference of fully_connected_f32."""
    return x.astype(np.float64) @ w.astype(np.float64).T + bias.astype(np.float64)


# ----------------------------------------------------------------------------------------------
# ADD, pooling, quantize
# ----------------------------------------------------------------------------------------------

def add_s8(a, b, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, y_zp, y_mult, y_shift, act_min, act_max,
           with_mask=False):
    """TFLM AddFunc (reference/integer_ops/add.h), left_shift = 20, elementwise on Python ints.
    with_mask: also return the boolean pre-clamp in-range array."""
    y = np.empty(a.shape, np.int8)
    in_range = np.empty(a.shape, bool)
    for idx in np.ndindex(*a.shape):
        va = _check_int32((int(a[idx]) - int(a_zp)) * (1 << 20))
        vb = _check_int32((int(b[idx]) - int(b_zp)) * (1 << 20))
        # MultiplyByQuantizedMultiplierSmallerThanOneExp(v, M, s) = RDBPOT(SRDHM(v, M), -s), s <= 0
        ua = rdbpot(srdhm(va, a_mult), -int(a_shift))
        ub = rdbpot(srdhm(vb, b_mult), -int(b_shift))
        v = rdbpot(srdhm(_check_int32(ua + ub), y_mult), -int(y_shift)) + int(y_zp)
        requant_store(y, in_range, idx, v, act_min, act_max)
    return finish(y, in_range, with_mask)


def add_f32(a, b):
    """float64 reference of add_f32."""
    return a.astype(np.float64) + b.astype(np.float64)


def _pool_windows(H, W, kh, kw, stride, pad):
    """Yield (oy, ox, [(iy, ix) in-image taps]) for every output position of a padded pooling window."""
    OH = (H + 2 * pad - kh) // stride + 1
    OW = (W + 2 * pad - kw) // stride + 1
    for oy in range(OH):
        for ox in range(OW):
            taps = [(oy * stride - pad + fy, ox * stride - pad + fx) for fy in range(kh) for fx in range(kw)]
            yield oy, ox, [(iy, ix) for iy, ix in taps if 0 <= iy < H and 0 <= ix < W]


def avgpool_s8(x, kh, kw, stride, pad, act_min, act_max):
    """TFLM reference_integer_ops::AveragePool: padding excluded from the count, rounding half away from zero."""
    N, H, W, C = x.shape
    OH = (H + 2 * pad - kh) // stride + 1
    OW = (W + 2 * pad - kw) // stride + 1
    y = np.empty((N, OH, OW, C), np.int8)
    for n in range(N):
        for oy, ox, taps in _pool_windows(H, W, kh, kw, stride, pad):
            count = len(taps)
            assert count > 0
            for c in range(C):
                acc = sum(int(x[n, iy, ix, c]) for iy, ix in taps)
                if acc > 0:
                    q = c_div(acc + count // 2, count)
                else:
                    q = c_div(acc - count // 2, count)
                y[n, oy, ox, c] = min(max(q, int(act_min)), int(act_max))
    return y


def global_mean_s8(x, act_min, act_max):
    """Global average pool = AveragePool with an H x W window, VALID; returns (N, C) s8."""
    N, H, W, C = x.shape
    return avgpool_s8(x, H, W, 1, 0, act_min, act_max).reshape(N, C)


def avgpool_f32(x, kh, kw, stride, pad):
    """float64 reference of avgpool_f32 (mean of the in-image taps)."""
    N, H, W, C = x.shape
    OH = (H + 2 * pad - kh) // stride + 1
    OW = (W + 2 * pad - kw) // stride + 1
    y = np.empty((N, OH, OW, C), np.float64)
    for n in range(N):
        for oy, ox, taps in _pool_windows(H, W, kh, kw, stride, pad):
            y[n, oy, ox, :] = np.mean([x[n, iy, ix, :].astype(np.float64) for iy, ix in taps], axis=0)
    return y


def global_mean_f32(x):
    """float64 reference of global_mean_f32: (N, C)."""
    return x.astype(np.float64).mean(axis=(1, 2))


def quantize_s8(x, scale, zero_point):
    """TFLM AffineQuantize: clamp(zp + round_half_away(float32(x) / float32(scale)), -128, 127)."""
    y = np.empty(x.shape, np.int8)
    s = np.float32(scale)
    for idx in np.ndindex(*x.shape):
        v = np.float32(x[idx]) / s  # the division is float32, as in C
        y[idx] = min(max(int(zero_point) + round_half_away(v), -128), 127)
    return y


def dequantize_s8(x, scale, zero_point):
    """TFLM Dequantize: float32(double(float32 scale) * (x - zero_point))."""
    s = float(np.float32(scale))
    y = np.empty(x.shape, np.float32)
    for idx in np.ndindex(*x.shape):
        y[idx] = np.float32(s * (int(x[idx]) - int(zero_point)))
    return y


# ----------------------------------------------------------------------------------------------
# Random test parameters (realistic scales; multipliers from requant's host helpers, as the layers derive them)
# ----------------------------------------------------------------------------------------------

def rand_s8(rng, shape, lo=-128, hi=127):
    """Uniform int8 in [lo, hi]."""
    return rng.integers(lo, hi + 1, shape).astype(np.int8)


def rand_f32(rng, shape, scale=1.0):
    """Uniform float32 in [-scale, scale)."""
    return (rng.uniform(-scale, scale, shape)).astype(np.float32)


def act_range(rng, act, y_scale, y_zp):
    """(act_min, act_max): act None / 'relu' / 'relu6' via requant.activation_range_s8, or 'random' (a random
    sub-range of [-128, 127])."""
    if act == "random":
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        return lo, hi
    return activation_range_s8(act, y_scale, y_zp)


def calibrate_output(rng, real, saturate=False, y_zp=None):
    """(y_scale, y_zp) so that the real outputs fill the int8 range (or overflow it 3-20x when saturate).

    y_zp=None takes the calibrated zero point (real minimum -> -128); an int overrides it."""
    lo, hi = float(np.min(real)), float(np.max(real))
    span = max(hi - lo, 1e-3)
    factor = rng.uniform(0.05, 0.3) if saturate else rng.uniform(1.0, 1.3)
    y_scale = float(np.float32(span / 255.0 * factor))
    if y_zp is None:
        y_zp = int(np.clip(round_half_away(-128.0 - lo / y_scale), -128, 127))
    return y_scale, int(y_zp)


# int32 biases at (and near) the limits, as in the real tiny-training weights' dead channels
EXTREME_BIASES = np.array([INT32_MIN, INT32_MAX, INT32_MIN + 7, INT32_MAX - 7, -(2 ** 30) - 12345], np.int64)


def make_s8_layer(rng, x_shape, w_shape, w_axis, real_fn, *, saturate=False, y_zp=None, act=None, eff_scale=None,
                  extreme_bias=False):
    """A random int8 layer with per-channel weights (conv, depthwise, pointwise or FC).

    x_shape, w_shape: tensor shapes; w_axis: the weight axis that indexes output channels (0 for OHWI and FC,
    -1 for depthwise). real_fn(x_real, w_real, b_real) -> the layer's real-valued output (a float naive kernel),
    used to calibrate y_scale. eff_scale: force y_scale = x_scale * max(w_scales) / eff_scale, so the largest
    effective multiplier is eff_scale (> 1 gives positive shifts; outputs then mostly saturate).
    extreme_bias: after calibration, about half of the channels get a bias from EXTREME_BIASES (acc + bias then
    overflows int32 and must wrap as in TFLM).
    Returns the kernel's keyword arguments (x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max)."""
    co = w_shape[w_axis]
    x = rand_s8(rng, x_shape)
    w = rand_s8(rng, w_shape, -127, 127)
    bias = rng.integers(-5000, 5001, co).astype(np.int32)
    x_zp = int(rng.integers(-128, 128))
    x_scale = float(np.float32(rng.uniform(0.02, 0.2)))
    w_scales = rng.uniform(0.001, 0.05, co).astype(np.float32)
    bshape = [1] * len(w_shape)
    bshape[w_axis] = co
    x_real = (x.astype(np.float64) - x_zp) * x_scale
    w_real = w.astype(np.float64) * w_scales.astype(np.float64).reshape(bshape)
    b_real = bias.astype(np.float64) * x_scale * w_scales.astype(np.float64)
    real = real_fn(x_real, w_real, b_real)
    if eff_scale is None:
        y_scale, y_zp = calibrate_output(rng, real, saturate, y_zp)
    else:
        y_scale = float(np.float32(x_scale * float(np.max(w_scales)) / eff_scale))
        y_zp = int(rng.integers(-128, 128)) if y_zp is None else int(y_zp)
    mult, shift = conv_multipliers(x_scale, w_scales, y_scale)
    if extreme_bias:
        dead = rng.random(co) < 0.5
        bias[dead] = rng.choice(EXTREME_BIASES, int(dead.sum()))
    act_min, act_max = act_range(rng, act, y_scale, y_zp)
    return dict(x=x, w=w, bias=bias, mult=mult, shift=shift, x_zp=x_zp, y_zp=y_zp,
                act_min=int(act_min), act_max=int(act_max))


def check_s8_kernel(kernel, expected, in_range, *args):
    """Run an int8 forward kernel(y, mask, *args) twice, for inference (mask = NO_MASK) and for training (a mask):
    both times y must equal `expected` (it starts as garbage, so every element is overwritten), and the training
    mask must equal pack_mask(in_range) (it starts as garbage too: every byte, padding bits included, is written).
    Returns y."""
    y = np.full(expected.shape, 99, np.int8)
    kernel(y, NO_MASK, *args)
    np.testing.assert_array_equal(y, expected)
    y_train = np.full(expected.shape, 99, np.int8)
    mask = np.full(mask_shape(*expected.shape), 0xA5, np.uint8)
    kernel(y_train, mask, *args)
    np.testing.assert_array_equal(y_train, y)
    np.testing.assert_array_equal(mask, pack_mask(in_range))
    return y
