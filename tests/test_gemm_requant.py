"""The GEMM path's requantization (kernels/gemm_io.py: the float64 fast path and its integer fall-back) against the
line-by-line integer reference of TFLM's arithmetic (naive.requant_pre_s8): y and the 1-bit mask, bit for bit, on
accumulators that straddle the fast path's limit, int32-wrapping biases, exact rounding ties and rows too long for
the stack row."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from microtrain.kernels.gemm_io import (ONE_ROUNDING_MAX_RIGHT, requant_checked_channels, requant_f64_params,
                                        requant_offsets, requant_one_rounding, requantize_acc_f32_s8,
                                        requantize_acc_f32_s8_mask, weight_reach, widest_input)
from microtrain.kernels.mask import NO_MASK
from microtrain.kernels.scratch import SCRATCH_ACC, SCRATCH_W8
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


# How the constants bound |acc|: not at all (every element is tested against the limit), or by the largest |acc|
# of each channel plus a slack (a valid bound, as weight_reach gives a frozen layer: the test is skipped wherever
# reach + |bias| stays below the limit, and the float64 form must then be exact on its own)
REACH = st.one_of(st.none(), st.integers(0, 3))


def reach_of(acc, slack):
    return None if slack is None else np.abs(acc.astype(np.int64)).max(axis=0) + slack


@kernel_settings(200)
@given(layers(), REACH)
def test_requantize_matches_the_integer_reference(layer, slack):
    acc, bias, mult, shift, y_zp, lo, hi = layer
    want_y, _ = expected(acc, bias, mult, shift, y_zp, lo, hi)
    y = np.full(acc.shape, 77, np.int8)
    requantize_acc_f32_s8(y, acc, bias, requant_f64_params(mult, shift, reach_of(acc, slack)), mult, shift, y_zp, lo,
                          hi)
    np.testing.assert_array_equal(y, want_y)


@kernel_settings(200)
@given(layers(), st.sampled_from(["one image row", "one pixel per row"]), REACH)
def test_requantize_with_mask_matches_the_integer_reference(layer, layout, slack):
    """The P pixels as one image row (its mask bytes span pixels) or as P rows of one pixel (a partial byte each)."""
    acc, bias, mult, shift, y_zp, lo, hi = layer
    p, co = acc.shape
    shape = (1, 1, p, co) if layout == "one image row" else (p, 1, 1, co)
    want_y, in_range = expected(acc, bias, mult, shift, y_zp, lo, hi)
    y = np.full(shape, 77, np.int8)
    mask = np.full(naive.pack_mask(in_range.reshape(shape)).shape, 0xA5, np.uint8)  # every byte must be written
    requantize_acc_f32_s8_mask(y, mask, acc.reshape(shape), bias, requant_f64_params(mult, shift, reach_of(acc, slack)),
                               mult, shift, y_zp, lo, hi)
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


def test_requant_f64_params_carry_the_reach():
    mult, shift = np.array([1 << 30, 1 << 30], np.int32), np.array([-3, 2], np.int32)
    assert np.all(np.isinf(requant_f64_params(mult, shift)[3]))  # none known
    assert requant_f64_params(mult, shift, 9)[3].tolist() == [9.0, 9.0]
    assert requant_f64_params(mult, shift, np.array([5, (1 << 53) - 1]))[3].tolist() == [5.0, 2.0 ** 53 - 1]


@pytest.mark.parametrize("left", [0, 3])
def test_a_channel_is_checked_exactly_while_its_acc_plus_bias_can_reach_the_limit(left):
    """requant_checked_channels compares reach + |bias| with lim = 2^(21 - left) per channel, for the bias as it
    is, and counts the channels that may reach it."""
    lim = 1 << (21 - left)
    mult, shift = np.full(3, 1 << 30, np.int32), np.full(3, left, np.int32)
    for reach, bias, needs in [(lim - 101, 100, False), (lim - 100, 100, True), (lim - 100, -100, True),
                               (lim - 1, 0, False), (lim, 0, True), (0, I32.min, True)]:
        rq = requant_f64_params(mult, shift, reach)
        b = np.array([0, bias, 0], np.int32)
        assert requant_checked_channels(rq, b) == (3 if reach >= lim else int(needs)), (reach, bias)
    assert requant_checked_channels(requant_f64_params(mult, shift), np.zeros(3, np.int32)) == 3  # none known


# An accumulator beyond the float64 form's limit (2^21 for shift <= 0) on which that form is wrong: a * M / 2^31 =
# k + 1/2 - 2^-31 needs 54 significant bits, float64 rounds it up to the tie, floor(. + 1/2) gives k + 1 instead of
# SRDHM's k, and k + 1 sits on RDBPOT's rounding boundary for a right shift of 16 (found by search over odd a near
# 2^23 with a * M = 2^30 - 1 mod 2^31). The integer reference gives 87, the float64 form 88.
BEYOND_LIMIT = dict(acc=8578625, mult=1435489855, shift=-16, integer=87, float64=88)


def _beyond_limit_row(reach, co=9):
    """requantize_acc_f32_s8 and _mask on one pixel of co channels: channel 0 holds BEYOND_LIMIT's accumulator,
    the others 3. Returns channel 0's output from both kernels."""
    b = BEYOND_LIMIT
    acc = np.full((1, co), 3, np.float32)
    acc[0, 0] = b["acc"]
    mult, shift, bias = np.full(co, b["mult"], np.int32), np.full(co, b["shift"], np.int32), np.zeros(co, np.int32)
    rq = requant_f64_params(mult, shift, reach)
    y = np.empty((1, co), np.int8)
    requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, 0, -128, 127)
    y4 = np.empty((1, 1, 1, co), np.int8)
    requantize_acc_f32_s8_mask(y4, np.empty((1, 2), np.uint8), acc.reshape(1, 1, 1, co), bias, rq, mult, shift, 0,
                               -128, 127)
    return int(y[0, 0]), int(y4[0, 0, 0, 0])


def test_the_float64_form_is_wrong_beyond_its_limit_so_such_elements_are_redone():
    b = BEYOND_LIMIT
    assert naive.requant_pre_s8(b["acc"], b["mult"], b["shift"], 0) == b["integer"]
    left, right = max(b["shift"], 0), max(-b["shift"], 0)
    t = np.floor(b["acc"] * np.ldexp(float(b["mult"]), left - 31) + 0.5) * np.ldexp(1.0, -right)
    assert np.trunc(t + np.copysign(0.5, t)) == b["float64"]  # the float64 form (gemm_io._row_f64), in NumPy
    # every channel may reach the limit (no bound known; or all bound beyond it): the loop tests each element
    assert _beyond_limit_row(None) == (b["integer"],) * 2
    assert _beyond_limit_row(np.full(9, b["acc"])) == (b["integer"],) * 2
    # one channel of nine may (its true bound; the others bound by 3): a check-free loop, then that channel's scan
    one = np.full(9, 3)
    one[0] = b["acc"]
    assert _beyond_limit_row(one) == (b["integer"],) * 2


# A bias beyond the limit that the accumulator cancels: |acc + bias| = 3 is far inside the limit 2^21, but the float64
# pass folds the bias into a per-channel offset bias * mf + 0.5, and bias * M needs 55 bits, so that offset rounds;
# floor(acc * mf + offset) then gives SRDHM + 1 = 2 where SRDHM is 1, on RDBPOT's tie for a right shift of 1 (found
# by searching small sums a with a * M + 2^30 = -1 or -2 mod 2^31). The integer reference gives 1, the folded form 2.
BIAS_BEYOND_LIMIT = dict(acc=-(1 << 24), bias=(1 << 24) + 3, mult=1789569706, shift=-1, integer=1, folded=2)


def test_a_channel_whose_bias_is_beyond_the_limit_is_redone_even_where_acc_cancels_it():
    b = BIAS_BEYOND_LIMIT
    assert naive.requant_pre_s8(b["acc"] + b["bias"], b["mult"], b["shift"], 0) == b["integer"]
    mf = np.ldexp(float(b["mult"]), -31)
    t = np.floor(b["acc"] * mf + (b["bias"] * mf + 0.5)) * 0.5
    assert np.trunc(t + np.copysign(0.5, t)) == b["folded"]  # gemm_io._row_f64's arithmetic, in NumPy
    co = 9
    acc = np.full((2, co), 3, np.float32)
    acc[1, 0] = b["acc"]
    bias = np.zeros(co, np.int32)
    bias[0] = b["bias"]
    mult, shift = np.full(co, b["mult"], np.int32), np.full(co, b["shift"], np.int32)
    want, in_range = expected(acc, bias, mult, shift, 0, -128, 127)
    assert want[1, 0] == b["integer"]
    one = np.full(co, 3)
    one[0] = 1 << 24
    for reach in (None, one):  # every element tested; or only channel 0 may reach the limit, scanned after
        rq = requant_f64_params(mult, shift, reach)
        assert requant_checked_channels(rq, bias) == (co if reach is None else 1)
        y = np.empty((2, co), np.int8)
        requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, 0, -128, 127)
        np.testing.assert_array_equal(y, want)
        y4, mask = np.empty((1, 1, 2, co), np.int8), np.empty((1, 3), np.uint8)
        requantize_acc_f32_s8_mask(y4, mask, acc.reshape(1, 1, 2, co), bias, rq, mult, shift, 0, -128, 127)
        np.testing.assert_array_equal(y4.reshape(2, co), want)


def test_more_channels_than_the_offset_row_holds_take_the_integer_primitives():
    """Co > SCRATCH_ACC leaves no stack room for the per-channel offsets: the row is written with the integer
    primitives, still bit for bit (biases at the int32 extremes included)."""
    co = SCRATCH_ACC + 3
    rng = np.random.default_rng(5)
    acc = rng.integers(-(1 << 24), (1 << 24) + 1, (2, co)).astype(np.float32)
    bias = rng.integers(-5000, 5000, co).astype(np.int32)
    bias[:2] = I32.min, I32.max
    mult = rng.integers(1 << 30, I32.max, co).astype(np.int32)
    shift = rng.integers(-20, -10, co).astype(np.int32)
    want, _ = expected(acc, bias, mult, shift, -3, -100, 90)
    y = np.empty((2, co), np.int8)
    requantize_acc_f32_s8(y, acc, bias, requant_f64_params(mult, shift), mult, shift, -3, -100, 90)
    np.testing.assert_array_equal(y, want)
    assert 0.05 < np.mean((want > -100) & (want < 90))  # not all clamped


def test_a_reach_that_understates_acc_is_trusted():
    """White box: with a (false) reach of 3 for every channel the kernels skip the limit test, so the element
    beyond the limit is not redone and comes out as the float64 form's 88: the check-free loops are the ones that
    run, and the bound is what keeps them exact."""
    assert _beyond_limit_row(3) == (BEYOND_LIMIT["float64"],) * 2


@kernel_settings(100)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(-128, 127), st.integers(0, 2 ** 32 - 1))
def test_weight_reach_bounds_every_accumulator(co, k, x_zp, seed):
    """weight_reach[co] >= |sum_k w[co, k] * (x[k] - x_zp)| for every int8 x, and it is attained where it can be: with
    x at the end of [-128, 127] farthest from x_zp, signed as each weight."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (co, k)).astype(np.int8)
    reach = weight_reach(w, x_zp)
    far_end = 127 if 127 - x_zp >= x_zp + 128 else -128  # |far_end - x_zp| = widest_input(x_zp)
    assert abs(far_end - x_zp) == widest_input(x_zp)
    near_end = -128 if far_end == 127 else 127
    w64 = w.astype(np.int64)
    worst = np.where(w64 * (far_end - x_zp) >= 0, far_end, near_end)  # each product as large as it can be...
    assert np.all(np.abs((w64 * (worst - x_zp)).sum(axis=1)) <= reach)
    x = rng.integers(-128, 128, (50, k))
    assert np.all(np.abs((x - x_zp) @ w64.T) <= reach)
    wabs = np.abs(w64)  # ...and with weights of one sign the bound is attained
    assert np.array_equal(np.abs((wabs * (far_end - x_zp)).sum(axis=1)), weight_reach(wabs.astype(np.int8), x_zp))


# ---- the one-rounding form (act_min >= y_zp, no mask; gemm_io's docstring, "One rounding") ------------------------

@kernel_settings(300)
@given(layers(), REACH, st.data())
def test_a_relu_range_matches_the_integer_reference(layer, slack, data):
    """act_min >= y_zp (ReLU, ReLU6): the kernel takes the one-rounding form where every right shift is <= 21
    (layers() draws shifts in [-31, 0], so both forms run); y bit for bit, and with a mask the same y and TFLM's
    in-range bits."""
    acc, bias, mult, shift, y_zp, _, _ = layer
    lo = data.draw(st.integers(y_zp, 127))
    hi = data.draw(st.integers(lo, 127))
    if data.draw(st.booleans()):  # mostly inside the one-rounding form's range
        shift = np.maximum(shift, -ONE_ROUNDING_MAX_RIGHT).astype(np.int32)
    want_y, in_range = expected(acc, bias, mult, shift, y_zp, lo, hi)
    rq = requant_f64_params(mult, shift, reach_of(acc, slack))
    y = np.full(acc.shape, 77, np.int8)
    requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, y_zp, lo, hi)
    np.testing.assert_array_equal(y, want_y)
    shape = (1, 1) + acc.shape
    y4 = np.full(shape, 77, np.int8)
    mask = np.full(naive.pack_mask(in_range.reshape(shape)).shape, 0xA5, np.uint8)
    requantize_acc_f32_s8_mask(y4, mask, acc.reshape(shape), bias, rq, mult, shift, y_zp, lo, hi)
    np.testing.assert_array_equal(y4.reshape(acc.shape), want_y)
    np.testing.assert_array_equal(mask, naive.pack_mask(in_range.reshape(shape)))


def test_every_rounding_tie_rounds_as_tflm_in_a_relu_range():
    """mult = 2^30 puts SRDHM and RDBPOT on their ties for every right shift the one-rounding form takes, around 0
    (where it differs from TFLM before the clamp) and at the limit's edge (|acc| up to 2^21 - 1, the largest sums)."""
    small = np.arange(-4096, 4096, dtype=np.float32)
    edge = np.concatenate([np.arange((1 << 21) - 4096, 1 << 21), np.arange(-(1 << 21) + 1, -(1 << 21) + 4097)])
    acc = np.concatenate([small, edge.astype(np.float32)]).reshape(-1, 16)
    for right in range(0, ONE_ROUNDING_MAX_RIGHT + 1):
        for bias_v, mult_v in [(0, 1 << 30), (-3, 1 << 30), (0, I32.max)]:
            mult = np.full(16, mult_v, np.int32)
            shift = np.full(16, -right, np.int32)
            bias = np.full(16, bias_v, np.int32)
            rq = requant_f64_params(mult, shift, np.abs(acc).max(axis=0).astype(np.int64))
            assert requant_one_rounding(rq, np.empty(64), 3, 3)
            for lo, hi in [(3, 127), (3, 9), (40, 127)]:
                msg = f"right shift {right}, bias {bias_v}, [{lo}, {hi}]"
                want, in_range = expected(acc, bias, mult, shift, 3, lo, hi)
                y = np.empty_like(want)
                requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, 3, lo, hi)
                np.testing.assert_array_equal(y, want, err_msg=msg)
                shape = (1, 1) + acc.shape  # the mask's bits: TFLM's in-range test before the clamp, ties included
                y4, mask = np.empty(shape, np.int8), np.empty(naive.pack_mask(in_range.reshape(shape)).shape, np.uint8)
                requantize_acc_f32_s8_mask(y4, mask, acc.reshape(shape), bias, rq, mult, shift, 3, lo, hi)
                np.testing.assert_array_equal(y4.reshape(acc.shape), want, err_msg=msg)
                np.testing.assert_array_equal(mask, naive.pack_mask(in_range.reshape(shape)), err_msg=msg)


def test_the_one_rounding_form_differs_from_tflm_below_zero_so_only_a_relu_range_may_use_it():
    """M = 2^30, right = 2, a = -4 .. -11: v = a / 2, SRDHM s = floor(v + 0.5) = -2 .. -5, and TFLM's RDBPOT(s, 2)
    rounds s / 4 half away from zero to -1, where the one-rounding trunc((v + 0.5 + 2) / 4) gives 0.
    With act_min = y_zp both clamp to act_min (and the mask's bit, 0 for TFLM's -1, comes from the t >= thr test);
    with act_min < y_zp the kernel must (and does) keep the two-rounding form."""
    mult, shift = np.full(8, 1 << 30, np.int32), np.full(8, -2, np.int32)
    acc = np.array([[-4, -5, -6, -7, -8, -9, -10, -11]], np.float32)  # a * mf = a / 2: s = -2 .. -5
    bias = np.zeros(8, np.int32)
    pre = [naive.requant_pre_s8(int(a), 1 << 30, -2, 0) for a in acc[0]]
    one = [int(np.trunc(a / 2 * 0.25 + (0.5 + 2) * 0.25)) for a in acc[0]]
    assert pre != one and min(pre) < 0 and max(one) <= 0  # they differ, only below zero
    rq = requant_f64_params(mult, shift, 11)
    for lo in (0, -128):  # a ReLU range (one rounding), the full range (two)
        assert requant_one_rounding(rq, np.empty(64), 0, lo) == (lo == 0)
        y = np.empty((1, 8), np.int8)
        requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, 0, lo, 127)
        assert y[0].tolist() == [max(v, lo) for v in pre]
        y4, mask = np.empty((1, 1, 1, 8), np.int8), np.empty((1, 1), np.uint8)
        requantize_acc_f32_s8_mask(y4, mask, acc.reshape(1, 1, 1, 8), bias, rq, mult, shift, 0, lo, 127)
        assert y4.ravel().tolist() == y[0].tolist()
        assert int(mask[0, 0]) == (0 if lo == 0 else 0xFF)  # TFLM's -1 is below act_min = 0


def test_the_one_rounding_form_is_chosen_only_where_it_is_exact():
    mult = np.full(4, 1 << 30, np.int32)
    off = np.empty(64)
    for right, ok in [(0, True), (ONE_ROUNDING_MAX_RIGHT, True), (ONE_ROUNDING_MAX_RIGHT + 1, False), (31, False)]:
        shift = np.array([-1, -right, 0, -2], np.int32)
        rq = requant_f64_params(mult, shift, 100)
        assert requant_one_rounding(rq, off, -5, -5) == ok
    rq = requant_f64_params(mult, np.full(4, -7, np.int32), 100)
    assert requant_one_rounding(rq, off, -5, -4)
    assert not requant_one_rounding(rq, off, -5, -6)  # act_min < y_zp: negative q is not clamped away
    assert requant_one_rounding(rq, np.empty(16), -5, -5)
    assert not requant_one_rounding(rq, np.empty(15), -5, -5)  # no room for mf2, off2, thr (4 * Co > 15)


def test_requant_offsets_hold_the_one_rounding_constants_exactly():
    """off[Co:2Co] = mf * 2^-right, off[2Co:3Co] = (bias * mf + 0.5 + 2^(right - 1)) * 2^-right (no 2^(right - 1)
    for right 0), off[3Co:4Co] = 2^-right (0 for right 0), as exact rationals."""
    from fractions import Fraction
    mult = np.array([1 << 30, I32.max, 1518500250, 1 << 30], np.int32)
    shift = np.array([0, -1, -13, -ONE_ROUNDING_MAX_RIGHT], np.int32)
    bias = np.array([-7, (1 << 20) - 1, -(1 << 20), 12345], np.int32)
    rq = requant_f64_params(mult, shift)
    off = np.empty(16)
    assert not requant_offsets(off, bias, rq)
    for c in range(4):
        r = -int(shift[c])
        mf = Fraction(int(mult[c]), 1 << 31)
        h = Fraction(1 << r, 2) if r else 0
        assert Fraction(off[4 + c]) == mf / (1 << r)
        assert Fraction(off[8 + c]) == (int(bias[c]) * mf + Fraction(1, 2) + h) / (1 << r)
        assert Fraction(off[12 + c]) == (Fraction(1, 1 << r) if r else 0)
