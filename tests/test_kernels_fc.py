"""fully_connected_s8 / fully_connected_f32 against tests/naive.py: int8 bit-exact (assert_array_equal), fp32
within config.F32_RTOL / F32_ATOL (1e-5 / 1e-5) of a float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.config import F32_ATOL, F32_RTOL
from microtrain.kernels.fully_connected import fully_connected_f32, fully_connected_s8
import naive
from settings import kernel_settings

CASES = {
    "batch1_c1": dict(n=1, ci=1, co=1),
    "batch1_ci7_co5": dict(n=1, ci=7, co=5),
    "batch4": dict(n=4, ci=8, co=3),
    # The classifier heads: MCUNet's 160 features, MbV2-w0.35's 112 (no feature-mix); 10 and 1000 classes.
    "mcunet_classifier_160to10": dict(n=2, ci=160, co=10),
    "mbv2_classifier_112to1000": dict(n=1, ci=112, co=1000),
    "saturate_small_y_scale": dict(n=2, ci=16, co=8, saturate=True),
    "positive_shift_effective_scale_4": dict(n=2, ci=4, co=4, eff_scale=4.0),
    "relu_range": dict(n=2, ci=16, co=8, act="relu"),
    "narrow_random_act_range": dict(n=2, ci=16, co=8, act="random"),
    # acc + bias overflows int32 and wraps, as TFLM's int32 accumulator does (real tiny-training dead channels)
    "bias_int32_extremes_wrap": dict(n=1, ci=64, co=32, extreme_bias=True),
}
GEOM = ("n", "ci", "co")


def run_s8(seed, n, ci, co, **opts):
    rng = np.random.default_rng(seed)
    p = naive.make_s8_layer(rng, (n, ci), (co, ci), 0, naive.fully_connected_f32, **opts)
    expected = naive.fully_connected_s8(**p)
    y = np.full(expected.shape, 99, np.int8)  # the kernel must overwrite every element
    fully_connected_s8(y, p["x"], p["w"], p["bias"], p["mult"], p["shift"], p["x_zp"], p["y_zp"],
                       p["act_min"], p["act_max"])
    np.testing.assert_array_equal(y, expected)
    return y, p


def run_f32(seed, n, ci, co):
    rng = np.random.default_rng(seed)
    x = naive.rand_f32(rng, (n, ci), 2.0)
    w = naive.rand_f32(rng, (co, ci), 1.0 / np.sqrt(ci))
    b = naive.rand_f32(rng, (co,), 0.5)
    y = np.full((n, co), np.nan, np.float32)
    fully_connected_f32(y, x, w, b)
    np.testing.assert_allclose(y, naive.fully_connected_f32(x, w, b), rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name", CASES)
def test_fully_connected_s8_cases(name):
    case = CASES[name]
    y, p = run_s8(11, **case)
    if case.get("saturate") or "eff_scale" in case:
        assert np.mean((y == p["act_min"]) | (y == p["act_max"])) > 0.3
    if "eff_scale" in case:
        assert p["shift"].max() > 0


@pytest.mark.parametrize("name", [n for n in CASES if not set(CASES[n]) - set(GEOM)])
def test_fully_connected_f32_cases(name):
    run_f32(12, **CASES[name])


def test_fully_connected_s8_int32_wraparound_as_tflm():
    # acc = 1 * (1 - 0) + INT32_MAX = 2^31 wraps to INT32_MIN in TFLM's int32 accumulator: the output is the
    # most negative value, not 127 (what an unwrapped int64 sum would give).
    y = np.zeros((1, 1), np.int8)
    x = np.ones((1, 1), np.int8)
    w = np.ones((1, 1), np.int8)
    fully_connected_s8(y, x, w, np.array([naive.INT32_MAX], np.int32), np.array([1 << 30], np.int32),
                       np.zeros(1, np.int32), 0, 0, -128, 127)
    assert y[0, 0] == -128
    assert naive.requant_s8(1 + naive.INT32_MAX, 1 << 30, 0, 0, -128, 127) == -128


geometry = st.fixed_dictionaries(dict(n=st.integers(1, 3), ci=st.integers(1, 64), co=st.integers(1, 16)))


@kernel_settings(40)
@given(geometry, st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu", "random"]),
       st.one_of(st.none(), st.integers(-128, 127)))
def test_fully_connected_s8_hypothesis(geom, seed, saturate, act, y_zp):
    run_s8(seed, **geom, saturate=saturate, act=act, y_zp=y_zp)


@kernel_settings(25)
@given(geometry, st.integers(0, 2 ** 32 - 1))
def test_fully_connected_f32_hypothesis(geom, seed):
    run_f32(seed, **geom)
