"""quantize_s8 / dequantize_s8 against tests/naive.py and requant's host helpers: both are bit-exact targets
(int8 and float32 alike), so every comparison is assert_array_equal."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.kernels.quantize import dequantize_s8, quantize_s8
from microtrain.kernels.requant import dequantize_s8_to_f32, quantize_f32_to_s8
import naive
from settings import kernel_settings


def check_quantize(x, scale, zp):
    expected = naive.quantize_s8(x, scale, zp)
    y = np.full(x.shape, 99, np.int8)  # the kernel must overwrite every element
    quantize_s8(y, x, scale, zp)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(quantize_f32_to_s8(np.zeros(x.shape, np.int8), x, scale, zp), expected)
    return y


def check_dequantize(x, scale, zp):
    expected = naive.dequantize_s8(x, scale, zp)
    y = np.full(x.shape, np.nan, np.float32)
    dequantize_s8(y, x, scale, zp)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(dequantize_s8_to_f32(np.zeros(x.shape, np.float32), x, scale, zp), expected)


def test_quantize_ties_round_half_away_from_zero():
    # scale 0.5 (a power of two): x / scale is exact, so k + 0.5 ties reach the rounding step unchanged.
    x = np.array([1.25, -1.25, 0.25, -0.25, 0.75, -0.75, 2.0, -2.0], np.float32).reshape(1, 1, 8, 1)
    y = check_quantize(x, 0.5, 0)
    assert y.ravel().tolist() == [3, -3, 1, -1, 2, -2, 4, -4]  # np.round would give 2, -2, 0, -0, 2, -2, ...


@pytest.mark.parametrize("scale, zp", [(0.02, 0), (0.1, -128), (0.1, 127), (6 / 255, -128), (2 / 255, 0),
                                       (1e-4, 5), (37.5, -3)],
                         ids=["s0.02_zp0", "zp_min", "zp_max", "relu6_range", "mcunet_input_2_over_255",
                              "tiny_scale_saturates", "huge_scale"])
def test_quantize_cases(scale, zp):
    rng = np.random.default_rng(1)
    x = naive.rand_f32(rng, (2, 3, 5, 4), 3.0)
    x[0, 0, 0, :] = [0.0, -0.0, 1e5, -1e5]  # zero, negative zero, saturation both ways
    check_quantize(x, scale, zp)


def test_quantize_saturates_infinities_and_nan():
    # Outside TFLM's defined range (its int32 cast is undefined there); the kernel saturates, NaN -> -128.
    x = np.array([np.inf, -np.inf, np.nan, 3e38], np.float32).reshape(1, 1, 4, 1)
    y = np.zeros(x.shape, np.int8)
    with np.errstate(over="ignore", invalid="ignore"):  # NumPy scalars warn under NUMBA_DISABLE_JIT=1
        quantize_s8(y, x, 0.1, 3)
    assert y.ravel().tolist() == [127, -128, -128, 127]


@kernel_settings(40)
# |x| <= 1e6 keeps |x / scale| < 2^31, inside the range where TFLM's int32 cast is defined.
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=24),
       st.floats(2.0 ** -10, 1.0, width=32), st.integers(-128, 127))
def test_quantize_hypothesis_values(values, scale, zp):
    check_quantize(np.array(values, np.float32).reshape(1, 1, len(values), 1), scale, zp)


@kernel_settings(30)
@given(st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 7), st.integers(1, 8)),
       st.integers(0, 2 ** 32 - 1), st.floats(0.005, 0.5), st.integers(-128, 127))
def test_quantize_hypothesis_near_ties(shape, seed, scale, zp):
    """Values at and next to k + 1/2 steps, where half-to-even and truncation differ from half-away."""
    rng = np.random.default_rng(seed)
    s = np.float32(scale)
    steps = rng.integers(-200, 200, shape) + 0.5
    x = (steps * s).astype(np.float32)
    x = np.where(rng.random(shape) < 0.3, np.nextafter(x, np.float32(np.inf)), x).astype(np.float32)
    check_quantize(x, scale, zp)


@pytest.mark.parametrize("scale, zp", [(0.02, 0), (0.1, -128), (0.1, 127), (6 / 255, -128), (0.0471, 17)])
def test_dequantize_cases(scale, zp):
    x = np.arange(-128, 128, dtype=np.int8).reshape(2, 4, 8, 4)
    check_dequantize(x, scale, zp)


@kernel_settings(30)
@given(st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 7), st.integers(1, 8)),
       st.integers(0, 2 ** 32 - 1), st.floats(1e-4, 10.0), st.integers(-128, 127))
def test_dequantize_hypothesis(shape, seed, scale, zp):
    check_dequantize(naive.rand_s8(np.random.default_rng(seed), shape), scale, zp)
