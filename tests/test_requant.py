"""kernels/requant.py against the literal gemmlowp / TFLM ports in tests/naive.py, plus known vectors and edges."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from microtrain.kernels.requant import (
    INT32_MAX,
    INT32_MIN,
    activation_range_s8,
    add_multipliers,
    clamp,
    mbqm,
    quantize_multiplier,
    rdbpot,
    round_half_away,
    srdhm,
)

int32s = st.integers(INT32_MIN, INT32_MAX)
# Multipliers as QuantizeMultiplier makes them: 0, or M in [2^30, 2^31) (negative reals give negative M).
multipliers = st.one_of(st.just(0), st.integers(1 << 30, INT32_MAX), st.integers(INT32_MIN + 1, -(1 << 30)))


@settings(max_examples=400, deadline=None)
@given(int32s, int32s)
def test_srdhm_matches_naive(a, b):
    assert srdhm(a, b) == naive.srdhm(a, b)


@pytest.mark.parametrize("a, b", [
    (INT32_MIN, INT32_MIN),  # the one saturating pair
    (INT32_MIN, INT32_MAX), (INT32_MAX, INT32_MAX), (INT32_MIN, 1), (1, 1 << 30), (-1, 1 << 30),
    (3, 1 << 30), (-3, 1 << 30),  # exact halves: a*b*2 / 2^32 = +-1.5 (ties round up, toward +inf)
])
def test_srdhm_edges(a, b):
    assert srdhm(a, b) == naive.srdhm(a, b)


def test_srdhm_saturates():
    assert srdhm(INT32_MIN, INT32_MIN) == INT32_MAX
    assert naive.srdhm(INT32_MIN, INT32_MIN) == INT32_MAX


@settings(max_examples=400, deadline=None)
@given(int32s, st.integers(0, 31))
def test_rdbpot_matches_naive(x, e):
    assert rdbpot(x, e) == naive.rdbpot(x, e)


@pytest.mark.parametrize("x, e, expected", [
    (5, 1, 3), (-5, 1, -3),  # +-2.5 -> +-3: half away from zero
    (3, 1, 2), (-3, 1, -2), (7, 2, 2), (-7, 2, -2), (6, 2, 2), (-6, 2, -2),  # +-1.5 -> +-2, +-1.75 -> +-2
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1), (-1, 31, 0), (12345, 0, 12345),
])
def test_rdbpot_known_values(x, e, expected):
    assert rdbpot(x, e) == expected
    assert naive.rdbpot(x, e) == expected


@st.composite
def mbqm_args(draw):
    """(x, M, shift) within TFLM's contract: shift in [-31, 30] and x * 2^max(shift, 0) fits in int32."""
    shift = draw(st.integers(-31, 30))
    left = max(shift, 0)
    x = draw(st.integers(INT32_MIN >> left, INT32_MAX >> left))
    return x, draw(multipliers), shift


@settings(max_examples=800, deadline=None)
@given(mbqm_args())
def test_mbqm_matches_naive(args):
    x, m, s = args
    assert mbqm(x, m, s) == naive.mbqm(x, m, s)


def test_mbqm_tensorflow_25087_vector():
    # tensorflow/tensorflow#25087: real value 7984 * 1583594044 * 2^-40 = 11.499; double rounding gives 12
    # (single rounding would give 11).
    assert mbqm(7984, 1583594044, -9) == 12
    assert naive.mbqm(7984, 1583594044, -9) == 12


def test_clamp():
    assert clamp(-200, -128, 127) == -128
    assert clamp(200, -128, 127) == 127
    assert clamp(5, -128, 127) == 5
    assert clamp(5, 10, 20) == 10


# ------------------------------------------------------------------------------------------------
# Host-side parameter derivation
# ------------------------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_matches_naive(real):
    assert quantize_multiplier(real) == naive.quantize_multiplier(real)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=2.0 ** -31, max_value=2.0 ** 20))
def test_quantize_multiplier_represents_the_real(real):
    m, s = quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    assert abs(m * 2.0 ** (s - 31) - real) <= real * 2.0 ** -31


@pytest.mark.parametrize("real, expected", [
    (0.0, (0, 0)),
    (1.0, (1 << 30, 1)),
    (0.5, (1 << 30, 0)),
    (0.75, (3 << 29, 0)),
    (1.0 - 2.0 ** -34, (1 << 30, 1)),  # q * 2^31 = 2^31 - 1/8 rounds up to 2^31: halved, shift + 1
    (0.5 - 2.0 ** -35, (1 << 30, 0)),  # the same carry one octave lower
    (2.0 ** -32, (1 << 30, -31)),  # smallest shift kept
    (2.0 ** -33, (0, 0)),  # shift -32 < -31: flushed to zero
    (1e-12, (0, 0)),
    (-0.75, (-(3 << 29), 0)),
])
def test_quantize_multiplier_edges(real, expected):
    assert quantize_multiplier(real) == expected
    assert naive.quantize_multiplier(real) == expected


def test_add_multipliers_have_non_positive_shifts():
    (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(0.05, 0.2, 0.1)
    assert ash <= 0 and bsh <= 0 and ysh <= 0
    assert (am, ash) == quantize_multiplier(float(np.float32(0.05)) / (2 * float(np.float32(0.2))))
    assert (bm, bsh) == (1 << 30, 0)  # the larger scale over twice itself: exactly 0.5


def test_activation_range_relu6_absorbed_in_the_quant_range():
    # MCUNet block outputs: y_scale = 6/255, y_zero = -128 -> Q(0) = -128, Q(6) = 127.
    assert activation_range_s8("relu6", 6 / 255, -128) == (-128, 127)
    assert activation_range_s8(None, 0.1, 3) == (-128, 127)
    assert activation_range_s8("relu", 0.1, 3) == (3, 127)
    assert activation_range_s8("relu6", 0.1, 3) == (3, 63)


@pytest.mark.parametrize("v, expected", [(2.5, 3), (-2.5, -3), (0.5, 1), (-0.5, -1), (1.5, 2), (-1.5, -2),
                                         (0.49999999999999994, 0), (2.4, 2), (-2.6, -3), (0.0, 0)])
def test_round_half_away(v, expected):
    assert round_half_away(v) == expected
    assert naive.round_half_away(v) == expected


def test_naive_c_div_truncates():
    assert naive.c_div(-7, 2) == -3 and naive.c_div(7, 2) == 3 and naive.c_div(-7, -2) == 3
    assert math.floor(-7 / 2) == -4  # what Python's // would give


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_round_half_away_matches_naive(v):
    assert round_half_away(v) == naive.round_half_away(v)
