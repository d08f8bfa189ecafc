"""depthwise_conv_s8 / depthwise_conv_f32 against tests/naive.py: int8 bit-exact (assert_array_equal), fp32 within
config.F32_RTOL / F32_ATOL (1e-5 / 1e-5) of a float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.config import F32_ATOL, F32_RTOL
from microtrain.kernels.depthwise import depthwise_conv_f32, depthwise_conv_s8
from microtrain.kernels.mask import NO_MASK
import naive
from settings import kernel_settings

# name -> geometry and layer options of naive.make_s8_layer.
CASES = {
    "k3_s1_p1": dict(n=1, h=5, w=5, c=4, k=3, stride=1, pad=1),
    "k3_s2_p1_oddw": dict(n=1, h=6, w=7, c=3, k=3, stride=2, pad=1),
    "stride2_odd_input": dict(n=1, h=7, w=7, c=5, k=3, stride=2, pad=1),
    "k5_s1_p2": dict(n=1, h=6, w=5, c=2, k=5, stride=1, pad=2),
    "k5_s2_p2": dict(n=1, h=9, w=9, c=3, k=5, stride=2, pad=2),
    "k7_s1_p3": dict(n=1, h=7, w=7, c=2, k=7, stride=1, pad=3),
    "k7_s2_p3_c1": dict(n=1, h=9, w=8, c=1, k=7, stride=2, pad=3),
    "k7_p3_image_smaller_than_kernel": dict(n=1, h=3, w=4, c=3, k=7, stride=1, pad=3),
    "k3_p1_image_1x1_centre_tap_only": dict(n=1, h=1, w=1, c=6, k=3, stride=1, pad=1),
    "k3_s1_p0_valid": dict(n=1, h=5, w=4, c=3, k=3, stride=1, pad=0),
    "batch2": dict(n=2, h=5, w=5, c=3, k=3, stride=1, pad=1),
    # Real MCUNet (mcunet-in1 / 5fps) depthwise layers, spatial size shrunk.
    "mcunet_b1_dw16_k3_s1": dict(n=1, h=8, w=8, c=16, k=3, stride=1, pad=1),
    "mcunet_b4_dw48_k7_s2": dict(n=1, h=10, w=10, c=48, k=7, stride=2, pad=3),
    "mcunet_b8_dw192_k5_s1": dict(n=1, h=4, w=4, c=192, k=5, stride=1, pad=2),
    "mcunet_b11_dw240_k7_s2": dict(n=1, h=6, w=6, c=240, k=7, stride=2, pad=3),
    "mcunet_b14_dw576_k3_s1_relu6": dict(n=1, h=3, w=3, c=576, k=3, stride=1, pad=1, act="relu6"),
    "saturate_small_y_scale": dict(n=1, h=6, w=6, c=4, k=3, stride=1, pad=1, saturate=True),
    "positive_shift_effective_scale_4": dict(n=1, h=5, w=5, c=4, k=3, stride=1, pad=1, eff_scale=4.0),
    "narrow_random_act_range": dict(n=1, h=5, w=5, c=4, k=5, stride=2, pad=2, act="random"),
    "y_zp_extreme_minus128": dict(n=1, h=5, w=5, c=4, k=3, stride=1, pad=1, y_zp=-128),
    # acc + bias overflows int32 and wraps, as TFLM's int32 accumulator does (real tiny-training dead channels)
    "bias_int32_extremes_wrap": dict(n=1, h=9, w=9, c=16, k=3, stride=1, pad=1, act="relu6", extreme_bias=True),
}
GEOM = ("n", "h", "w", "c", "k", "stride", "pad")


def split(case):
    return {k: v for k, v in case.items() if k in GEOM}, {k: v for k, v in case.items() if k not in GEOM}


def run_s8(seed, n, h, w, c, k, stride, pad, **opts):
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.depthwise_conv_f32(xr, wr, br, -np.inf, np.inf, stride, pad)

    p = naive.make_s8_layer(rng, (n, h, w, c), (k, k, c), -1, real_fn, **opts)
    expected, in_range = naive.depthwise_conv_s8(**p, stride=stride, pad=pad, with_mask=True)
    # y bit-exact with and without the training mask; the mask equal to the naive pre-clamp in-range bits
    y = naive.check_s8_kernel(depthwise_conv_s8, expected, in_range, p["x"], p["w"], p["bias"], p["mult"],
                              p["shift"], p["x_zp"], p["y_zp"], p["act_min"], p["act_max"], stride, pad)
    return y, p, in_range


def run_f32(seed, n, h, w, c, k, stride, pad, act=(-np.inf, np.inf)):
    rng = np.random.default_rng(seed)
    x = naive.rand_f32(rng, (n, h, w, c), 2.0)
    wt = naive.rand_f32(rng, (k, k, c), 1.0 / k)
    b = naive.rand_f32(rng, (c,), 0.5)
    expected = naive.depthwise_conv_f32(x, wt, b, act[0], act[1], stride, pad)
    y = np.full(expected.shape, np.nan, np.float32)
    depthwise_conv_f32(y, x, wt, b, act[0], act[1], stride, pad)
    np.testing.assert_allclose(y, expected, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name", CASES)
def test_depthwise_conv_s8_cases(name):
    geom, opts = split(CASES[name])
    y, p, in_range = run_s8(4321, **geom, **opts)
    if opts.get("saturate") or "eff_scale" in opts:
        assert np.mean((y == p["act_min"]) | (y == p["act_max"])) > 0.3
        assert np.mean(~in_range) > 0.3  # the mask blocks the clamped values (zero gradient there)
    if "eff_scale" in opts:
        assert p["shift"].max() > 0


@pytest.mark.parametrize("name", [n for n in CASES if not set(CASES[n]) - set(GEOM)])
@pytest.mark.parametrize("act", [(-np.inf, np.inf), (0.0, 6.0)], ids=["none", "relu6"])
def test_depthwise_conv_f32_cases(name, act):
    run_f32(77, **split(CASES[name])[0], act=act)


@st.composite
def geometry(draw):
    """Small random depthwise geometry: k 3/5/7, stride 1/2, odd sizes, 1 channel, batch 1-2."""
    k = draw(st.sampled_from([1, 3, 5, 7]))
    pad = draw(st.integers(0, k // 2))
    lo = max(1, k - 2 * pad)
    return dict(n=draw(st.integers(1, 2)), h=draw(st.integers(lo, 11)), w=draw(st.integers(lo, 11)),
                c=draw(st.integers(1, 8)), k=k, stride=draw(st.sampled_from([1, 2])), pad=pad)


@kernel_settings(30)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu6", "random"]),
       st.one_of(st.none(), st.integers(-128, 127)))
def test_depthwise_conv_s8_hypothesis(geom, seed, saturate, act, y_zp):
    run_s8(seed, **geom, saturate=saturate, act=act, y_zp=y_zp)


@kernel_settings(25)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.sampled_from([(-np.inf, np.inf), (0.0, 6.0)]))
def test_depthwise_conv_f32_hypothesis(geom, seed, act):
    run_f32(seed, **geom, act=act)


def test_depthwise_conv_s8_rejects_wrong_channels():
    x = np.zeros((1, 5, 5, 4), np.int8)
    w = np.zeros((3, 3, 3), np.int8)  # 3 channels for a 4-channel input
    c = np.zeros(4, np.int32)
    y = np.zeros((1, 5, 5, 4), np.int8)
    with pytest.raises(ValueError):
        depthwise_conv_s8(y, NO_MASK, x, w, c, c, c, 0, 0, -128, 127, 1, 1)
