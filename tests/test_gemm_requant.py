"""The GEMM path's requantization (kernels/gemm_io.py: the float64 fast path and its integer fall-back) against the
line-by-line integer reference of TFLM's arithmetic (naive.requant_pre_s8): y and the 1-bit mask, bit for bit, on
accumulators that straddle the fast path's limit, int32-wrapping biases, exact rounding ties and rows too long for
the stack row."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from microtrain.kernels.gemm_io import requant_f64_params, requantize_acc_f32_s8, requantize_acc_f32_s8_mask
from microtrain.kernels.mask import NO_MASK
from microtrain.kernels.scratch import SCRATCH_W8
from settings import kernel_settings

I32 = np.iinfo(np.int32)
# accumulators the GEMM can hand over (exact float32 integers, |acc| <= 2^24), weighted toward the fast path's
# limit 2^(21 - left) and toward small values
ACC = st.one_of(st.integers(-(1 << 24), 1 << 24), st.integers(-300, 300),
                st.sampled_from([(1 << 21) - 1, 1 << 21, -(1 << 21) + 1, -(1 << 21), (1 << 20) - 1, 1 << 20,
                                 -(1 << 20), (1 << 24), -(1 << 24)]))
BIAS = st.one_of(st.integers(-5000, 5000), st.integers(I32.min, I32.max), st.sampled_from([I32.min, I32.max]))
MULT = st.one_of(st.integers(1 << 30, I32.max), st.just(0), st.just(1 << 30))  # 2^30: many exact ties


def expected(acc, bias, mult, shift, y_zp, lo, hi):
    """(y, in_range) from the integer reference, element by element; acc (P, Co) float32 exact integers."""
    pre = np.array([[naive.requant_pre_s8(int(acc[p, c]) + int(bias[c]), int(mult[c]), int(shift[c]), y_zp)
                     for c in range(acc.shape[1])] for p in range(acc.shape[0])], dtype=np.int64).reshape(acc.shape)
    return np.clip(pre, lo, hi).astype(np.int8), (pre >= lo) & (pre <= hi)


@st.composite
def layers(draw):
    p, co = draw(st.integers(1, 9)), draw(st.integers(1, 19))
    # shift > 0 only with accumulators whose pre-shift fits int32, as TFLM's callers guarantee (requant.mbqm)
    left = draw(st.sampled_from([0, 0, 0, 1, 3]))
    if left:
        acc = draw(st.lists(st.integers(-(1 << (30 - left)) + 5001, (1 << (30 - left)) - 5001),
                            min_size=p * co, max_size=p * co))
        bias = draw(st.lists(st.integers(-5000, 5000), min_size=co, max_size=co))
        shift = [left] * co
    else:
        acc = draw(st.lists(ACC, min_size=p * co, max_size=p * co))
        bias = draw(st.lists(BIAS, min_size=co, max_size=co))
        shift = draw(st.lists(st.integers(-31, 0), min_size=co, max_size=co))
    mult = draw(st.lists(MULT, min_size=co, max_size=co))
    y_zp = draw(st.integers(-128, 127))
    lo = draw(st.integers(-128, 127))
    hi = draw(st.integers(lo, 127))
    return (np.array(acc, np.float32).reshape(p, co), np.array(bias, np.int32), np.array(mult, np.int32),
            np.array(shift, np.int32), y_zp, lo, hi)


@kernel_settings(200)
@given(layers())
def test_requantize_matches_the_integer_reference(layer):
    acc, bias, mult, shift, y_zp, lo, hi = layer
    want_y, _ = expected(acc, bias, mult, shift, y_zp, lo, hi)
    y = np.full(acc.shape, 77, np.int8)
    requantize_acc_f32_s8(y, acc, bias, requant_f64_params(mult, shift), mult, shift, y_zp, lo, hi)
    np.testing.assert_array_equal(y, want_y)


@kernel_settings(200)
@given(layers(), st.sampled_from(["one image row", "one pixel per row"]))
def test_requantize_with_mask_matches_the_integer_reference(layer, layout):
    """The P pixels as one image row (its mask bytes span pixels) or as P rows of one pixel (a partial byte each)."""
    acc, bias, mult, shift, y_zp, lo, hi = layer
    p, co = acc.shape
    shape = (1, 1, p, co) if layout == "one image row" else (p, 1, 1, co)
    want_y, in_range = expected(acc, bias, mult, shift, y_zp, lo, hi)
    y = np.full(shape, 77, np.int8)
    mask = np.full(naive.pack_mask(in_range.reshape(shape)).shape, 0xA5, np.uint8)  # every byte must be written
    requantize_acc_f32_s8_mask(y, mask, acc.reshape(shape), bias, requant_f64_params(mult, shift), mult, shift, y_zp,
                               lo, hi)
    np.testing.assert_array_equal(y, want_y.reshape(shape))
    np.testing.assert_array_equal(mask, naive.pack_mask(in_range.reshape(shape)))


def test_every_rounding_tie_rounds_as_tflm():
    """mult = 2^30 halves a * 2^-right exactly: SRDHM rounds its ties up, RDBPOT away from zero."""
    acc = np.arange(-4096, 4096, dtype=np.float32).reshape(-1, 16)
    bias = np.zeros(16, np.int32)
    for right in range(0, 14):
        mult = np.full(16, 1 << 30, np.int32)
        shift = np.full(16, -right, np.int32)
        want, _ = expected(acc, bias, mult, shift, 3, -128, 127)
        y = np.empty_like(want)
        requantize_acc_f32_s8(y, acc, bias, requant_f64_params(mult, shift), mult, shift, 3, -128, 127)
        np.testing.assert_array_equal(y, want, err_msg=f"right shift {right}")


def test_a_row_longer_than_the_stack_row_takes_the_integer_path():
    rng = np.random.default_rng(4)
    co, w = 256, SCRATCH_W8 // 256 + 1  # w * co > SCRATCH_W8
    acc = rng.integers(-30000, 30000, (w, co)).astype(np.float32)
    bias = rng.integers(-5000, 5000, co).astype(np.int32)
    mult = rng.integers(1 << 30, I32.max, co).astype(np.int32)
    shift = rng.integers(-12, -6, co).astype(np.int32)
    want_y, in_range = expected(acc, bias, mult, shift, -7, -20, 60)
    y = np.full((1, 1, w, co), 77, np.int8)
    mask = np.full((1, (w * co + 7) // 8), 0xA5, np.uint8)
    rq = requant_f64_params(mult, shift)
    requantize_acc_f32_s8_mask(y, mask, acc.reshape(1, 1, w, co), bias, rq, mult, shift, -7, -20, 60)
    np.testing.assert_array_equal(y.reshape(w, co), want_y)
    np.testing.assert_array_equal(mask, naive.pack_mask(in_range.reshape(1, 1, w, co)))
    y2 = np.full_like(y, 77)  # the same values, without a mask
    requantize_acc_f32_s8_mask(y2, NO_MASK, acc.reshape(1, 1, w, co), bias, rq, mult, shift, -7, -20, 60)
    np.testing.assert_array_equal(y2, y)


def test_requant_f64_params_are_exact_powers_of_two_times_the_multiplier():
    mult = np.array([0, 1 << 30, I32.max, 1518500250], np.int32)
    shift = np.array([0, -31, 2, -7], np.int32)
    rq = requant_f64_params(mult, shift)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    for c in range(4):  # Python floats from exact integer ratios
        assert rq[0, c] == int(mult[c]) * 2 ** int(left[c]) / 2 ** 31
        assert rq[1, c] == 1 / 2 ** int(right[c])
        assert rq[2, c] == 2 ** (21 - int(left[c]))


def test_inconsistent_constants_are_refused():
    c = np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        requantize_acc_f32_s8(np.zeros((3, 4), np.int8), np.zeros((3, 4), np.float32), c, np.zeros((3, 5)), c, c, 0,
                              -128, 127)
