"""conv2d_s8 / conv2d_f32 against tests/naive.py: int8 bit-exact (assert_array_equal), fp32 within
config.F32_RTOL / F32_ATOL (1e-5 / 1e-5) of a float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.config import F32_ATOL, F32_RTOL
from microtrain.kernels.conv2d import conv2d_f32, conv2d_s8
import naive
from settings import kernel_settings

# name -> geometry (k is KH = KW unless kh/kw are given) and layer options of naive.make_s8_layer.
CASES = {
    "k3_s1_p1_basic": dict(n=1, h=5, w=5, ci=3, co=4, k=3, stride=1, pad=1),
    "k3_s2_p1_oddw": dict(n=1, h=6, w=7, ci=2, co=3, k=3, stride=2, pad=1),
    "stride2_odd_input": dict(n=1, h=9, w=9, ci=3, co=2, k=3, stride=2, pad=1),
    "k7_s2_p3_c1": dict(n=1, h=9, w=8, ci=1, co=1, k=7, stride=2, pad=3),
    "k5_s1_p2_image_smaller_than_kernel": dict(n=1, h=3, w=2, ci=2, co=2, k=5, stride=1, pad=2),
    "k3_s1_p0_valid": dict(n=1, h=5, w=6, ci=4, co=3, k=3, stride=1, pad=0),
    "k3_p1_image_1x1_centre_tap_only": dict(n=1, h=1, w=1, ci=5, co=3, k=3, stride=1, pad=1),
    "k1_s1_p0_like_pointwise": dict(n=1, h=3, w=4, ci=6, co=5, k=1, stride=1, pad=0),
    "k1_s2_p0_subsample": dict(n=1, h=5, w=5, ci=2, co=2, k=1, stride=2, pad=0),
    "kh1_kw3_p1_nonsquare": dict(n=1, h=4, w=5, ci=2, co=3, kh=1, kw=3, stride=1, pad=1),
    "batch3": dict(n=3, h=4, w=4, ci=2, co=3, k=3, stride=1, pad=1),
    # MCUNet / MbV2 / Proxyless stem: 3 -> 16 channels, k3 s2 p1 (real input 96-176 px; 12 px here).
    "mcunet_stem_3to16_k3_s2": dict(n=1, h=12, w=12, ci=3, co=16, k=3, stride=2, pad=1),
    "mcunet_stem_relu6_range": dict(n=1, h=8, w=8, ci=3, co=16, k=3, stride=2, pad=1, act="relu6"),
    "saturate_small_y_scale": dict(n=1, h=6, w=6, ci=4, co=4, k=3, stride=1, pad=1, saturate=True),
    "positive_shift_effective_scale_4": dict(n=1, h=5, w=5, ci=2, co=3, k=3, stride=1, pad=1, eff_scale=4.0),
    "narrow_random_act_range": dict(n=1, h=5, w=5, ci=3, co=4, k=3, stride=2, pad=1, act="random"),
    "y_zp_extreme_127": dict(n=1, h=5, w=5, ci=3, co=4, k=3, stride=1, pad=1, y_zp=127),
    # acc + bias overflows int32 and wraps, as TFLM's int32 accumulator does (real tiny-training dead channels)
    "bias_int32_extremes_wrap": dict(n=1, h=9, w=9, ci=3, co=16, k=3, stride=2, pad=1, act="relu6",
                                     extreme_bias=True),
}
GEOM = ("n", "h", "w", "ci", "co", "k", "kh", "kw", "stride", "pad")


def split(case):
    geom = {k: v for k, v in case.items() if k in GEOM}
    opts = {k: v for k, v in case.items() if k not in GEOM}
    kh = geom.pop("kh", geom.get("k"))
    kw = geom.pop("kw", geom.get("k"))
    geom.pop("k", None)
    return geom, kh, kw, opts


def run_s8(seed, n, h, w, ci, co, kh, kw, stride, pad, **opts):
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.conv2d_f32(xr, wr, br, -np.inf, np.inf, stride, pad)

    p = naive.make_s8_layer(rng, (n, h, w, ci), (co, kh, kw, ci), 0, real_fn, **opts)
    expected = naive.conv2d_s8(**p, stride=stride, pad=pad)
    y = np.full(expected.shape, 99, np.int8)  # the kernel must overwrite every element
    conv2d_s8(y, p["x"], p["w"], p["bias"], p["mult"], p["shift"], p["x_zp"], p["y_zp"],
              p["act_min"], p["act_max"], stride, pad)
    np.testing.assert_array_equal(y, expected)
    return y, p


def run_f32(seed, n, h, w, ci, co, kh, kw, stride, pad, act=(-np.inf, np.inf)):
    rng = np.random.default_rng(seed)
    x = naive.rand_f32(rng, (n, h, w, ci), 2.0)
    wt = naive.rand_f32(rng, (co, kh, kw, ci), 1.0 / np.sqrt(kh * kw * ci))
    b = naive.rand_f32(rng, (co,), 0.5)
    expected = naive.conv2d_f32(x, wt, b, act[0], act[1], stride, pad)
    y = np.full(expected.shape, np.nan, np.float32)
    conv2d_f32(y, x, wt, b, act[0], act[1], stride, pad)
    np.testing.assert_allclose(y, expected, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name", CASES)
def test_conv2d_s8_cases(name):
    geom, kh, kw, opts = split(CASES[name])
    y, p = run_s8(1234, kh=kh, kw=kw, **geom, **opts)
    if opts.get("saturate") or "eff_scale" in opts:
        assert np.mean((y == p["act_min"]) | (y == p["act_max"])) > 0.3  # the case does what its name says
    if name == "positive_shift_effective_scale_4":
        assert p["shift"].max() > 0
    if name == "k3_s1_p1_basic":
        assert len(np.unique(y)) > 10  # not vacuous: outputs spread over the int8 range


@pytest.mark.parametrize("name", [n for n in CASES if not set(CASES[n]) - set(GEOM)])
@pytest.mark.parametrize("act", [(-np.inf, np.inf), (0.0, 6.0)], ids=["none", "relu6"])
def test_conv2d_f32_cases(name, act):
    geom, kh, kw, _ = split(CASES[name])
    run_f32(99, kh=kh, kw=kw, **geom, act=act)


@st.composite
def geometry(draw):
    """Small random conv geometry: odd sizes, 1 channel, batch 1-2, stride 2 on odd inputs, k up to 7."""
    k = draw(st.sampled_from([1, 3, 5, 7]))
    pad = draw(st.integers(0, k // 2))
    lo = max(1, k - 2 * pad)  # at least one output position
    return dict(n=draw(st.integers(1, 2)), h=draw(st.integers(lo, 11)), w=draw(st.integers(lo, 11)),
                ci=draw(st.integers(1, 8)), co=draw(st.integers(1, 8)), kh=k, kw=k,
                stride=draw(st.sampled_from([1, 2])), pad=pad)


@kernel_settings(30)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu6", "random"]),
       st.one_of(st.none(), st.integers(-128, 127)))
def test_conv2d_s8_hypothesis(geom, seed, saturate, act, y_zp):
    run_s8(seed, **geom, saturate=saturate, act=act, y_zp=y_zp)


@kernel_settings(25)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.sampled_from([(-np.inf, np.inf), (0.0, 6.0)]))
def test_conv2d_f32_hypothesis(geom, seed, act):
    run_f32(seed, **geom, act=act)


def test_conv2d_s8_rejects_wrong_output_shape():
    x = np.zeros((1, 5, 5, 2), np.int8)
    w = np.zeros((3, 3, 3, 2), np.int8)
    c = np.zeros(3, np.int32)
    y = np.zeros((1, 4, 5, 3), np.int8)  # OH should be 5 with pad 1
    with pytest.raises(ValueError):
        conv2d_s8(y, x, w, c, c, c, 0, 0, -128, 127, 1, 1)
