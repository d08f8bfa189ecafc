"""pointwise_conv_s8 / pointwise_conv_f32 against tests/naive.py: int8 bit-exact (assert_array_equal), fp32 within
config.F32_RTOL / F32_ATOL (1e-5 / 1e-5) of a float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.config import F32_ATOL, F32_RTOL
from microtrain.kernels.mask import NO_MASK, mask_shape
from microtrain.kernels.pointwise import pointwise_conv_f32, pointwise_conv_s8
import naive
from settings import kernel_settings

# name -> geometry and layer options of naive.make_s8_layer.
CASES = {
    "batch1_1x1": dict(n=1, h=1, w=1, ci=4, co=3),
    "c1_to_c1": dict(n=1, h=3, w=5, ci=1, co=1),
    "odd_spatial_5x3": dict(n=1, h=5, w=3, ci=5, co=7),
    "batch3": dict(n=3, h=2, w=3, ci=4, co=4),
    # Real MCUNet (mcunet-in1 / 5fps) 1x1 layers, spatial size shrunk.
    "mcunet_b1_pw2_16to8": dict(n=1, h=6, w=6, ci=16, co=8),
    "mcunet_b2_pw1_8to32_relu6": dict(n=1, h=6, w=6, ci=8, co=32, act="relu6"),
    "mcunet_b5_pw1_24to120": dict(n=1, h=3, w=3, ci=24, co=120),
    "mcunet_b14_pw2_576to160": dict(n=1, h=2, w=2, ci=576, co=160),
    "saturate_small_y_scale": dict(n=1, h=4, w=4, ci=8, co=8, saturate=True),
    "positive_shift_effective_scale_4": dict(n=1, h=3, w=3, ci=4, co=4, eff_scale=4.0),
    "narrow_random_act_range": dict(n=1, h=4, w=4, ci=6, co=5, act="random"),
    # acc + bias overflows int32 and wraps, as TFLM's int32 accumulator does (real tiny-training dead channels)
    "bias_int32_extremes_wrap": dict(n=1, h=6, w=6, ci=16, co=32, act="relu6", extreme_bias=True),
}
GEOM = ("n", "h", "w", "ci", "co")


def split(case):
    return {k: v for k, v in case.items() if k in GEOM}, {k: v for k, v in case.items() if k not in GEOM}


def run_s8(seed, n, h, w, ci, co, **opts):
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.pointwise_conv_f32(xr, wr, br, -np.inf, np.inf)

    p = naive.make_s8_layer(rng, (n, h, w, ci), (co, ci), 0, real_fn, **opts)
    expected, in_range = naive.pointwise_conv_s8(**p, with_mask=True)
    # y bit-exact with and without the training mask; the mask equal to the naive pre-clamp in-range bits
    y = naive.check_s8_kernel(pointwise_conv_s8, expected, in_range, p["x"], p["w"], p["bias"], p["mult"],
                              p["shift"], p["x_zp"], p["y_zp"], p["act_min"], p["act_max"])
    return y, p, in_range


def run_f32(seed, n, h, w, ci, co, act=(-np.inf, np.inf)):
    rng = np.random.default_rng(seed)
    x = naive.rand_f32(rng, (n, h, w, ci), 2.0)
    wt = naive.rand_f32(rng, (co, ci), 1.0 / np.sqrt(ci))
    b = naive.rand_f32(rng, (co,), 0.5)
    expected = naive.pointwise_conv_f32(x, wt, b, act[0], act[1])
    y = np.full(expected.shape, np.nan, np.float32)
    pointwise_conv_f32(y, x, wt, b, act[0], act[1])
    np.testing.assert_allclose(y, expected, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name", CASES)
def test_pointwise_conv_s8_cases(name):
    geom, opts = split(CASES[name])
    y, p, in_range = run_s8(2024, **geom, **opts)
    if opts.get("saturate") or "eff_scale" in opts:
        assert np.mean((y == p["act_min"]) | (y == p["act_max"])) > 0.3
        assert np.mean(~in_range) > 0.3  # the mask blocks the clamped values (zero gradient there)
    if "eff_scale" in opts:
        assert p["shift"].max() > 0


@pytest.mark.parametrize("name", [n for n in CASES if not set(CASES[n]) - set(GEOM)])
@pytest.mark.parametrize("act", [(-np.inf, np.inf), (0.0, 6.0)], ids=["none", "relu6"])
def test_pointwise_conv_f32_cases(name, act):
    run_f32(55, **split(CASES[name])[0], act=act)


geometry = st.fixed_dictionaries(dict(n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7),
                                      ci=st.integers(1, 16), co=st.integers(1, 16)))


@kernel_settings(30)
@given(geometry, st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu6", "random"]),
       st.one_of(st.none(), st.integers(-128, 127)))
def test_pointwise_conv_s8_hypothesis(geom, seed, saturate, act, y_zp):
    run_s8(seed, **geom, saturate=saturate, act=act, y_zp=y_zp)


@kernel_settings(25)
@given(geometry, st.integers(0, 2 ** 32 - 1), st.sampled_from([(-np.inf, np.inf), (0.0, 6.0)]))
def test_pointwise_conv_f32_hypothesis(geom, seed, act):
    run_f32(seed, **geom, act=act)


def test_pointwise_conv_s8_rejects_wrong_weight_shape():
    x = np.zeros((1, 2, 2, 4), np.int8)
    w = np.zeros((3, 5), np.int8)  # Ci 5 for a 4-channel input
    c = np.zeros(3, np.int32)
    y = np.zeros((1, 2, 2, 3), np.int8)
    with pytest.raises(ValueError):
        pointwise_conv_s8(y, NO_MASK, x, w, c, c, c, 0, 0, -128, 127)


@pytest.mark.parametrize("y_zp, act_min, act_max", [(0, 0, 6), (0, -128, 127), (100, -128, 127), (-3, -3, 3)],
                         ids=["relu6_bounds_0_6", "full_range_identity", "y_zp_100_saturates_above_27",
                              "narrow_range_at_zp"])
def test_pointwise_conv_s8_mask_bounds_are_inclusive(y_zp, act_min, act_max):
    # Identity weights and an effective scale of exactly 1 (M = 2^30, shift 1: mbqm(v) = v), so the pre-clamp value
    # is x + y_zp for x = -128..127: it hits both bounds exactly and every value beyond them.
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 16, 4)
    eye = np.eye(4, dtype=np.int8)
    zeros = np.zeros(4, np.int32)
    one = np.full(4, 1 << 30, np.int32)
    y = np.zeros(x.shape, np.int8)
    mask = np.full(mask_shape(1, 4, 16, 4), 0xFF, np.uint8)
    pointwise_conv_s8(y, mask, x, eye, zeros, one, np.ones(4, np.int32), 0, y_zp, act_min, act_max)
    pre = x.astype(np.int64) + y_zp
    np.testing.assert_array_equal(y, np.clip(pre, act_min, act_max))
    bits = np.unpackbits(mask, axis=1, bitorder="little").reshape(x.shape).astype(bool)
    np.testing.assert_array_equal(bits, (pre >= act_min) & (pre <= act_max))
    assert bits.any() and (act_min == -128 and act_max == 127 and y_zp == 0 or not bits.all())
