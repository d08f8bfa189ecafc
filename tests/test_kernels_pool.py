"""avgpool_s8 / global_mean_s8 / avgpool_f32 / global_mean_f32 against tests/naive.py: int8 bit-exact
(assert_array_equal), fp32 within config.F32_RTOL / F32_ATOL (1e-5 / 1e-5) of a float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.config import F32_ATOL, F32_RTOL
from microtrain.kernels.pool import avgpool_f32, avgpool_s8, global_mean_f32, global_mean_s8
import naive
from settings import kernel_settings


def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def run_s8(seed, n, h, w, c, kh, kw, stride, pad, act="none"):
    rng = np.random.default_rng(seed)
    x = naive.rand_s8(rng, (n, h, w, c))
    act_min, act_max = (-128, 127) if act == "none" else naive.act_range(rng, "random", 1.0, 0)
    expected = naive.avgpool_s8(x, kh, kw, stride, pad, act_min, act_max)
    y = np.full(expected.shape, 99, np.int8)  # the kernel must overwrite every element
    avgpool_s8(y, x, kh, kw, stride, pad, act_min, act_max)
    np.testing.assert_array_equal(y, expected)


def run_f32(seed, n, h, w, c, kh, kw, stride, pad):
    rng = np.random.default_rng(seed)
    x = naive.rand_f32(rng, (n, h, w, c), 3.0)
    y = np.full((n, out_size(h, kh, stride, pad), out_size(w, kw, stride, pad), c), np.nan, np.float32)
    avgpool_f32(y, x, kh, kw, stride, pad)
    np.testing.assert_allclose(y, naive.avgpool_f32(x, kh, kw, stride, pad), rtol=F32_RTOL, atol=F32_ATOL)


CASES = {
    "k2_s2_p0": dict(n=1, h=6, w=6, c=3, kh=2, kw=2, stride=2, pad=0),
    "k2_s2_p0_odd_input_drops_last": dict(n=1, h=5, w=7, c=2, kh=2, kw=2, stride=2, pad=0),
    "k3_s1_p1_clipped_count": dict(n=1, h=4, w=5, c=3, kh=3, kw=3, stride=1, pad=1),
    "k3_s2_p1_oddw": dict(n=1, h=6, w=7, c=2, kh=3, kw=3, stride=2, pad=1),
    "k7_s2_p3_c1": dict(n=1, h=9, w=8, c=1, kh=7, kw=7, stride=2, pad=3),
    "k5_s1_p2_image_smaller_than_window": dict(n=1, h=3, w=2, c=2, kh=5, kw=5, stride=1, pad=2),
    "k3_s3_p0_non_overlapping": dict(n=2, h=6, w=6, c=4, kh=3, kw=3, stride=3, pad=0),
    "kh2_kw3_nonsquare": dict(n=1, h=5, w=6, c=2, kh=2, kw=3, stride=1, pad=1),
    "global_4x4_as_window": dict(n=2, h=4, w=4, c=5, kh=4, kw=4, stride=1, pad=0),
    "narrow_random_act_range": dict(n=1, h=6, w=6, c=4, kh=3, kw=3, stride=1, pad=1, act="random"),
}


@pytest.mark.parametrize("name", CASES)
def test_avgpool_s8_cases(name):
    run_s8(5, **CASES[name])


@pytest.mark.parametrize("name", [n for n in CASES if "act" not in CASES[n]])
def test_avgpool_f32_cases(name):
    run_f32(6, **CASES[name])


@pytest.mark.parametrize("values, expected", [
    ([-1, 0, 0], 0),  # -1/3: truncating (acc - 1) / 3 = -2/3 -> 0; a floor division would give -1
    ([1, 0, 0], 0),
    ([1, 1, 0], 1),  # 2/3 -> 1
    ([-1, -1, 0], -1),
    ([1, 0], 1),  # +0.5 -> 1 (half away from zero)
    ([-1, 0], -1),  # -0.5 -> -1
    ([-3, 0], -2),  # -1.5 -> -2
    ([3, 0], 2),  # 1.5 -> 2
    ([-5, 0, 0, 0], -1),  # -1.25 -> -1
    ([-128] * 7, -128),
    ([127] * 7, 127),
])
def test_global_mean_s8_rounds_half_away_with_truncating_division(values, expected):
    x = np.array(values, np.int8).reshape(1, 1, len(values), 1)
    y = np.zeros((1, 1), np.int8)
    global_mean_s8(y, x, -128, 127)
    assert y[0, 0] == expected
    assert naive.global_mean_s8(x, -128, 127)[0, 0] == expected
    y4 = np.zeros((1, 1, 1, 1), np.int8)
    avgpool_s8(y4, x, 1, len(values), 1, 0, -128, 127)
    assert y4[0, 0, 0, 0] == expected


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 3, 8), (2, 7, 5, 3),
                                   (1, 4, 4, 160)],  # MCUNet's last feature map, 4x4 x 160 at 128 px input
                         ids=["1x1_c1", "3x3_c8", "batch2_7x5_c3", "mcunet_final_4x4x160"])
def test_global_mean_s8_equals_avgpool_with_whole_image_window(shape):
    rng = np.random.default_rng(8)
    x = naive.rand_s8(rng, shape)
    n, h, w, c = shape
    y = np.full((n, c), 99, np.int8)
    global_mean_s8(y, x, -128, 127)
    y4 = np.full((n, 1, 1, c), 99, np.int8)
    avgpool_s8(y4, x, h, w, 1, 0, -128, 127)
    np.testing.assert_array_equal(y, y4.reshape(n, c))
    np.testing.assert_array_equal(y, naive.global_mean_s8(x, -128, 127))
    yf = np.full((n, c), np.nan, np.float32)
    xf = naive.rand_f32(rng, shape, 3.0)
    global_mean_f32(yf, xf)
    np.testing.assert_allclose(yf, naive.global_mean_f32(xf), rtol=F32_RTOL, atol=F32_ATOL)


def test_global_mean_s8_clamps_to_act_range():
    x = np.full((1, 2, 2, 1), 100, np.int8)
    y = np.zeros((1, 1), np.int8)
    global_mean_s8(y, x, -10, 20)
    assert y[0, 0] == 20


def test_avgpool_rejects_pad_ge_kernel():
    x = np.zeros((1, 4, 4, 1), np.int8)
    y = np.zeros((1, 6, 6, 1), np.int8)  # k2 s1 p2 would have all-padding corner windows
    with pytest.raises(ValueError):
        avgpool_s8(y, x, 2, 2, 1, 2, -128, 127)


@st.composite
def geometry(draw):
    kh = draw(st.integers(1, 7))
    kw = draw(st.integers(1, 7))
    pad = draw(st.integers(0, min(kh, kw) - 1))
    return dict(n=draw(st.integers(1, 2)), h=draw(st.integers(max(1, kh - 2 * pad), 11)),
                w=draw(st.integers(max(1, kw - 2 * pad), 11)), c=draw(st.integers(1, 8)),
                kh=kh, kw=kw, stride=draw(st.integers(1, 3)), pad=pad)


@kernel_settings(40)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.sampled_from(["none", "random"]))
def test_avgpool_s8_hypothesis(geom, seed, act):
    run_s8(seed, **geom, act=act)


@kernel_settings(25)
@given(geometry(), st.integers(0, 2 ** 32 - 1))
def test_avgpool_f32_hypothesis(geom, seed):
    run_f32(seed, **geom)


@kernel_settings(30)
@given(st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 8)),
       st.integers(0, 2 ** 32 - 1))
def test_global_mean_hypothesis(shape, seed):
    rng = np.random.default_rng(seed)
    x = naive.rand_s8(rng, shape)
    y = np.full((shape[0], shape[3]), 99, np.int8)
    global_mean_s8(y, x, -128, 127)
    np.testing.assert_array_equal(y, naive.global_mean_s8(x, -128, 127))
    xf = naive.rand_f32(rng, shape, 3.0)
    yf = np.full((shape[0], shape[3]), np.nan, np.float32)
    global_mean_f32(yf, xf)
    np.testing.assert_allclose(yf, naive.global_mean_f32(xf), rtol=F32_RTOL, atol=F32_ATOL)
