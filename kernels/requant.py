"""Requantization primitives, bit-exact with TFLite Micro's default (double-rounding) build.

C twins: mt_srdhm, mt_rdbpot, mt_mbqm (docs/porting.md). Sources of the semantics:
  - QuantizeMultiplier: tensorflow/lite/kernels/internal/quantization_util.cc
  - MultiplyByQuantizedMultiplier (double rounding, TFLITE_SINGLE_ROUNDING unset, as in every TFLM
    build): tensorflow/lite/kernels/internal/common.cc
  - SaturatingRoundingDoublingHighMul / RoundingDivideByPOT: gemmlowp fixedpoint/fixedpoint.h
  - CalculateActivationRangeQuantized, AffineQuantize: kernel_util.cc, reference/quantize.h
Rounding: `np.round` / Python `round` round half to even and are never used here; TfLiteRound is
C `round`, half away from zero (`round_half_away`).

All integer helpers compute in int64 so the jitted and the NUMBA_DISABLE_JIT paths agree bit for bit
(Numba promotes small ints to int64, pure Python/NumPy does not; widening explicitly removes the gap).
"""

import math

import numpy as np
from numba import njit

from microtrain.config import NJIT

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ----------------------------------------------------------------------------------------------
# Fixed-point primitives (jitted; called from every int8 kernel)
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul(a, b) for int32 a, b; returns int64 holding an int32.

    gemmlowp: the high 32 bits of 2*a*b, rounded. With C's truncating division and the
    sign-dependent nudge this equals floor((a*b + 2^30) / 2^31) (round half up) for every pair
    except a == b == INT32_MIN, which saturates to INT32_MAX.
    """
    a64 = np.int64(a)
    b64 = np.int64(b)
    if a64 == INT32_MIN and b64 == INT32_MIN:
        return np.int64(INT32_MAX)
    return (a64 * b64 + np.int64(1 << 30)) >> np.int64(31)


@njit(**NJIT)
def rdbpot(x, exponent):
    """RoundingDivideByPOT(x, exponent), 0 <= exponent <= 31: x / 2^exponent, half away from zero."""
    x64 = np.int64(x)
    e = np.int64(exponent)
    mask = (np.int64(1) << e) - np.int64(1)
    remainder = x64 & mask
    threshold = (mask >> np.int64(1)) + (np.int64(1) if x64 < 0 else np.int64(0))
    return (x64 >> e) + (np.int64(1) if remainder > threshold else np.int64(0))


@njit(**NJIT)
def mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier(x, M, shift), TFLM double rounding.

    x: int32 accumulator; multiplier M in [2^30, 2^31) (or 0); shift > 0 is a left shift.
    = RDBPOT(SRDHM(x * 2^max(shift, 0), M), max(-shift, 0)). The pre-shift is an int32 operation in C;
    callers keep |x * 2^shift| < 2^31 (true for every layer whose effective scale is < 1).
    """
    s = np.int64(shift)
    left = s if s > 0 else np.int64(0)
    right = -s if s < 0 else np.int64(0)
    return rdbpot(srdhm(np.int64(x) << left, multiplier), right)


@njit(**NJIT)
def clamp(v, lo, hi):
    """Clamp an int64 value into [lo, hi] (activation range after adding the output zero point)."""
    if v < lo:
        return np.int64(lo)
    if v > hi:
        return np.int64(hi)
    return np.int64(v)


# ----------------------------------------------------------------------------------------------
# Parameter derivation (host side, run once at load; not jitted)
# ----------------------------------------------------------------------------------------------

def round_half_away(x):
    """C `round` / TfLiteRound: round half away from zero (x a Python float or NumPy float array)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    r = np.floor(a)
    r = r + ((a - r) >= 0.5)  # exact: a - floor(a) is computed without rounding error
    return np.copysign(r, x)


def quantize_multiplier(real):
    """QuantizeMultiplier(double) -> (int32 multiplier, int shift), TFLM quantization_util.cc.

    real = M * 2^(shift - 31), M in [2^30, 2^31). Zero gives (0, 0); tiny values (shift < -31)
    flush to (0, 0) exactly as TFLM does. No single-rounding saturation of shift > 30 (TFLM default).
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(round_half_away(abs(q) * float(1 << 31)))
    q_fixed = q_fixed if q >= 0 else -q_fixed
    if abs(q_fixed) > (1 << 31):
        raise ValueError("QuantizeMultiplier: q_fixed out of range")
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    return int(q_fixed), int(shift)


def quantize_multiplier_array(reals):
    """Vector form of quantize_multiplier: (int32 multipliers, int32 shifts) for a 1-D array."""
    reals = np.asarray(reals, dtype=np.float64).ravel()
    mult = np.empty(reals.shape[0], np.int32)
    shift = np.empty(reals.shape[0], np.int32)
    for i, r in enumerate(reals):
        mult[i], shift[i] = quantize_multiplier(r)
    return mult, shift


def conv_multipliers(x_scale, w_scales, y_scale):
    """Per-channel (M, shift) of a conv / depthwise / FC layer, as PopulateConvolutionQuantizationParams:
    float32 scales widened to double, effective = (s_x * s_w[c]) / s_y in double, multiply first."""
    sx = float(np.float32(x_scale))
    sy = float(np.float32(y_scale))
    sw = np.asarray(w_scales, dtype=np.float32).astype(np.float64)
    return quantize_multiplier_array((sx * sw) / sy)


def quantize_multiplier_smaller_than_one_exp(real):
    """QuantizeMultiplierSmallerThanOneExp: requires 0 < real < 1; returns (M, shift <= 0)."""
    if not (0.0 < real < 1.0):
        raise ValueError(f"multiplier {real} must lie in (0, 1)")
    m, s = quantize_multiplier(real)
    if s > 0:
        raise ValueError(f"multiplier {real} gave a positive shift {s}")
    return m, s


ADD_LEFT_SHIFT = 20  # TFLM add_common.cc: left_shift = 20 for int8 output


def add_multipliers(a_scale, b_scale, y_scale):
    """ADD's requantization parameters, TFLM add_common.cc (int8): returns
    ((a_mult, a_shift), (b_mult, b_shift), (y_mult, y_shift)), all shifts <= 0."""
    sa = float(np.float32(a_scale))
    sb = float(np.float32(b_scale))
    sy = float(np.float32(y_scale))
    twice_max = 2.0 * max(sa, sb)
    a = quantize_multiplier_smaller_than_one_exp(sa / twice_max)
    b = quantize_multiplier_smaller_than_one_exp(sb / twice_max)
    y = quantize_multiplier_smaller_than_one_exp(twice_max / ((1 << ADD_LEFT_SHIFT) * sy))
    return a, b, y


def activation_range_s8(act, y_scale, y_zero):
    """CalculateActivationRangeQuantized for an int8 output: (act_min, act_max).

    act: None/'none', 'relu' or 'relu6'. Q(f) = zero_point + TfLiteRound(f / scale) with the division
    in float32, as kernel_util.cc does.
    """
    qmin, qmax = -128, 127
    scale = np.float32(y_scale)

    def q(f):
        return int(y_zero) + int(round_half_away(np.float32(np.float32(f) / scale)))

    if act in (None, "none"):
        return qmin, qmax
    if act == "relu":
        return max(qmin, q(0.0)), qmax
    if act == "relu6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    raise ValueError(f"unsupported activation {act!r}")


def quantize_f32_to_s8(out, x, scale, zero_point):
    """AffineQuantize: out = clamp(zp + TfLiteRound(x / (float32)scale), -128, 127).

    out: int8 array, written in place (same shape as x). Division in float32, as reference/quantize.h.
    """
    q = round_half_away(np.asarray(x, np.float32) / np.float32(scale)) + int(zero_point)
    np.clip(q, -128, 127, out=q)
    out[...] = q.astype(np.int8)
    return out


def dequantize_s8_to_f32(out, x, scale, zero_point):
    """Dequantize: out = (x - zp) * scale, float32 (reference/dequantize.h)."""
    out[...] = (np.asarray(x, np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale)
    return out
