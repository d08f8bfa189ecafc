"""kernels/update.py against plain NumPy references written here (float64 arithmetic, explicit rounding).

int8 results are compared exactly (assert_array_equal), and so are the float32 ones: every kernel fixes its
arithmetic (float64 intermediates, one rounding to float32 where stated), which vectorised NumPy reproduces bit for bit.
Also: rounding ties and saturation, kept-slice updates leave every other entry's bits alone, pointwise (Co, Ci)
weights through (Co, 1, 1, Ci) views, Adam against a textbook float64 Adam, all_finite, errors, no allocation.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.kernels import update as upd
from settings import JIT_DISABLED, kernel_settings
from test_kernels_noalloc import NO_NRT, nrt_allocations, numpy_bytes_held_after

B1, B2, EPS = 0.9, 0.999, 1e-8
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


# ---------------------------------------------------------------------------------------------------------------
# references

def round_half_away(v):
    """C round() on float64: exact for every float64 (floor(|v| + 0.5) is not: 0.49999999999999994 + 0.5 == 1.0)."""
    a = np.abs(v)
    r = np.floor(a)
    r = r + ((a - r) >= 0.5)
    return np.copysign(r, v)


def kept(keep_out, shape_mid, keep_in):
    """np.ix_ index of the kept block w[keep_out][:, :, :, keep_in] of an OHWI array."""
    return np.ix_(keep_out, np.arange(shape_mid[0]), np.arange(shape_mid[1]), keep_in)


def ref_sgd_s8(w, dw, keep_out, keep_in, coef, lr):
    """OHWI int8 SGD + QAS: step = (lr * coef[co]) * dw in float64, w - round(step) saturated to [-127, 127]."""
    out = w.astype(np.float64)
    s = np.float64(lr) * coef.astype(np.float64)[keep_out]
    step = round_half_away(s[:, None, None, None] * dw.astype(np.float64))
    idx = kept(keep_out, w.shape[1:3], keep_in)
    out[idx] = np.clip(out[idx] - step, -127, 127)
    return out.astype(np.int8)


def ref_adam_state(m, v, g, t):
    """(m', v', step) of Adam in float64 with float32 state, as the kernels define it."""
    m2 = (B1 * m.astype(np.float64) + (1.0 - B1) * g).astype(np.float32)
    v2 = (B2 * v.astype(np.float64) + (1.0 - B2) * (g * g)).astype(np.float32)
    bc1, bc2 = 1.0 - math.pow(B1, t), 1.0 - math.pow(B2, t)
    step = (m2.astype(np.float64) / bc1) / (np.sqrt(v2.astype(np.float64) / bc2) + EPS)
    return m2, v2, step


def distinct_keep(rng, n):
    """A non-empty subset of range(n) in random (unsorted) order, int32."""
    return rng.permutation(n)[:rng.integers(1, n + 1)].astype(np.int32)


def untouched(shape, keep_out, keep_in):
    """Boolean mask of the OHWI entries a kept-slice update must not touch."""
    m = np.ones(shape, bool)
    m[kept(keep_out, shape[1:3], keep_in)] = False
    return m


def rand_w8(rng, shape):
    return rng.integers(-127, 128, shape).astype(np.int8)


# ---------------------------------------------------------------------------------------------------------------
# int8 SGD with QAS

@st.composite
def ohwi_case(draw):
    co, ci = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = draw(st.sampled_from([1, 3]))
    return co, k, ci, draw(st.integers(0, 2 ** 32 - 1)), draw(st.sampled_from([0.01, 0.1, 1.0, 37.5]))


@kernel_settings(40)
@given(ohwi_case())
def test_sgd_update_ohwi_s8(case):
    co, k, ci, seed, lr = case
    rng = np.random.default_rng(seed)
    w = rand_w8(rng, (co, k, k, ci))
    keep_out, keep_in = distinct_keep(rng, co), distinct_keep(rng, ci)
    dw = (rng.standard_normal((len(keep_out), k, k, len(keep_in))) * 40).astype(np.float32)
    coef = rng.uniform(0.5, 20, co).astype(np.float32)  # s_x / s_w: 0.02 / 0.04 .. 0.2 / 0.01
    expect = ref_sgd_s8(w, dw, keep_out, keep_in, coef, lr)
    before = w.copy()
    upd.sgd_update_ohwi_s8(w, dw, keep_out, keep_in, coef, lr)
    np.testing.assert_array_equal(w, expect)
    rest = untouched(w.shape, keep_out, keep_in)
    np.testing.assert_array_equal(w[rest], before[rest])  # every other entry keeps its bits


def test_sgd_update_s8_rounding_half_away_from_zero():
    # lr = coef = 1: the step is dw itself. Ties go away from zero, symmetrically in both directions (TinyEngine's
    # truncation of w - step would give 3 - 0.5 -> 2 but 3 + 0.5 -> 3).
    dw = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 0.0, 1.0000001],
                  np.float32).reshape(1, 1, 1, 10)
    w = np.full((1, 1, 1, 10), 3, np.int8)
    one = np.ones(1, np.float32)
    upd.sgd_update_ohwi_s8(w, dw, np.array([0], np.int32), np.arange(10, dtype=np.int32), one, 1.0)
    assert w.ravel().tolist() == [2, 4, 1, 5, 0, 6, 3, 3, 3, 2]
    # the largest float64 below 0.5 rounds to 0 (floor(v + 0.5) would say 1)
    w1 = np.zeros((1, 1, 1, 1), np.int8)
    upd.sgd_update_ohwi_s8(w1, np.ones((1, 1, 1, 1), np.float32), np.array([0], np.int32), np.array([0], np.int32),
                           one, 0.49999999999999994)
    assert w1[0, 0, 0, 0] == 0
    upd.sgd_update_ohwi_s8(w1, np.ones((1, 1, 1, 1), np.float32), np.array([0], np.int32), np.array([0], np.int32),
                           one, 0.5)
    assert w1[0, 0, 0, 0] == -1


def test_sgd_update_s8_saturates_to_symmetric_range():
    w = np.array([120, -120, 127, -127, 5, 5, 0, 0], np.int8).reshape(1, 1, 1, 8)
    dw = np.array([-20, 20, -1, 1, 1e30, -1e30, np.inf, -np.inf], np.float32).reshape(1, 1, 1, 8)
    upd.sgd_update_ohwi_s8(w, dw, np.array([0], np.int32), np.arange(8, dtype=np.int32), np.ones(1, np.float32), 1.0)
    # 120 + 20 -> 127 (never 128 or a wrap), -120 - 20 -> -127 (never -128), huge and infinite steps saturate
    assert w.ravel().tolist() == [127, -127, 127, -127, -127, 127, -127, 127]


def test_sgd_update_pointwise_through_reshape_views():
    rng = np.random.default_rng(3)
    w2 = rand_w8(rng, (6, 5))  # pointwise / FC weights (Co, Ci)
    keep_out, keep_in = np.arange(6, dtype=np.int32), np.array([4, 1], np.int32)  # input-channel axis
    dw2 = (rng.standard_normal((6, 2)) * 30).astype(np.float32)
    coef = rng.uniform(1, 5, 6).astype(np.float32)
    expect = ref_sgd_s8(w2.reshape(6, 1, 1, 5), dw2.reshape(6, 1, 1, 2), keep_out, keep_in, coef, 0.1).reshape(6, 5)
    before = w2.copy()
    view = w2.reshape(6, 1, 1, 5)
    assert np.shares_memory(view, w2)
    upd.sgd_update_ohwi_s8(view, dw2.reshape(6, 1, 1, 2), keep_out, keep_in, coef, 0.1)
    np.testing.assert_array_equal(w2, expect)  # the update landed in the (Co, Ci) array
    assert not np.array_equal(w2[:, keep_in], before[:, keep_in])  # (not vacuous: the kept columns moved)
    np.testing.assert_array_equal(w2[:, [0, 2, 3]], before[:, [0, 2, 3]])

    wf = rng.standard_normal((6, 5)).astype(np.float32)
    before = wf.copy()
    upd.sgd_update_ohwi_f32(wf.reshape(6, 1, 1, 5), dw2.reshape(6, 1, 1, 2), keep_out, keep_in, 0.1)
    exp_f = before.copy()
    exp_f[:, keep_in] = before[:, keep_in] - np.float32(0.1) * dw2
    np.testing.assert_array_equal(wf, exp_f)


@kernel_settings(30)
@given(st.integers(1, 8), st.sampled_from([3, 5, 7]), st.integers(0, 2 ** 32 - 1))
def test_sgd_update_hwc_s8(c, k, seed):
    rng = np.random.default_rng(seed)
    w = rand_w8(rng, (k, k, c))
    keep = distinct_keep(rng, c)
    dw = (rng.standard_normal((k, k, len(keep))) * 40).astype(np.float32)
    coef = rng.uniform(0.5, 20, c).astype(np.float32)
    lr = float(rng.choice([0.01, 0.1, 1.0]))
    expect = w.astype(np.float64)
    step = round_half_away((np.float64(lr) * coef.astype(np.float64)[keep]) * dw.astype(np.float64))
    expect[:, :, keep] = np.clip(expect[:, :, keep] - step, -127, 127)
    before = w.copy()
    upd.sgd_update_hwc_s8(w, dw, keep, coef, lr)
    np.testing.assert_array_equal(w, expect.astype(np.int8))
    rest = np.setdiff1d(np.arange(c), keep)
    np.testing.assert_array_equal(w[:, :, rest], before[:, :, rest])


def test_sgd_update_bias_s32():
    rng = np.random.default_rng(4)
    b = rng.integers(-50000, 50000, 9).astype(np.int32)
    b[[0, 1]] = [INT32_MAX - 3, INT32_MIN + 2]  # near the limits: must saturate, never wrap
    keep = np.array([0, 1, 7, 4, 2], np.int32)
    db = np.array([-10.0, 5.0, 123.456, -0.5, 0.5], np.float32)
    coef = rng.uniform(1, 100, 9).astype(np.float32)  # 1 / (s_x s_w)
    coef[[0, 1]] = 1.0
    lr = 0.75
    expect = b.astype(np.float64)
    step = round_half_away((lr * coef.astype(np.float64)[keep]) * db.astype(np.float64))
    expect[keep] = np.clip(expect[keep] - step, INT32_MIN, INT32_MAX)
    before = b.copy()
    upd.sgd_update_bias_s32(b, db, keep, coef, lr)
    np.testing.assert_array_equal(b, expect.astype(np.int64))
    assert b[0] == INT32_MAX and b[1] == INT32_MIN
    np.testing.assert_array_equal(b[[3, 5, 6, 8]], before[[3, 5, 6, 8]])
    huge = np.array([0, 0], np.int32)
    upd.sgd_update_bias_s32(huge, np.array([np.inf, -1e30], np.float32), np.array([0, 1], np.int32),
                            np.ones(2, np.float32), 1.0)
    assert huge.tolist() == [INT32_MIN, INT32_MAX]


def test_qas_coefficient_is_the_scaled_gradient():
    # What the engine's coefficients mean, checked once: with dw = sum dy_real * (x_int - x_zp), coef = s_x / s_w,
    # the step equals lr * G_int / s_w^2 where G_int = dL/dw_int = s_w * s_x * dw (Lin et al. 2022 §3.3).
    s_x, s_w, dw, lr = 0.05, 0.004, 321.0, 0.01
    g_int = s_w * s_x * dw
    assert math.isclose(lr * g_int / s_w ** 2, lr * (s_x / s_w) * dw, rel_tol=1e-12)
    w = np.zeros((1, 1, 1, 1), np.int8)
    upd.sgd_update_ohwi_s8(w, np.full((1, 1, 1, 1), dw, np.float32), np.array([0], np.int32),
                           np.array([0], np.int32), np.array([s_x / s_w], np.float32), lr)
    assert lr * g_int / s_w ** 2 == pytest.approx(40.125) and w[0, 0, 0, 0] == -40


# ---------------------------------------------------------------------------------------------------------------
# fp32 SGD

def test_sgd_update_f32_kernels():
    rng = np.random.default_rng(5)
    f = np.float32
    lr = 0.03
    w = rng.standard_normal((5, 3, 3, 4)).astype(f)
    keep_out, keep_in = np.array([4, 0, 2], np.int32), np.array([3, 1], np.int32)
    dw = rng.standard_normal((3, 3, 3, 2)).astype(f)
    expect = w.copy()
    idx = kept(keep_out, (3, 3), keep_in)
    expect[idx] = w[idx] - f(lr) * dw  # float32: the product rounded, then the difference
    upd.sgd_update_ohwi_f32(w, dw, keep_out, keep_in, lr)
    np.testing.assert_array_equal(w, expect)

    wd = rng.standard_normal((5, 5, 6)).astype(f)
    keep = np.array([5, 2], np.int32)
    dwd = rng.standard_normal((5, 5, 2)).astype(f)
    expect = wd.copy()
    expect[:, :, keep] = wd[:, :, keep] - f(lr) * dwd
    upd.sgd_update_hwc_f32(wd, dwd, keep, lr)
    np.testing.assert_array_equal(wd, expect)

    b = rng.standard_normal(6).astype(f)
    db = rng.standard_normal(2).astype(f)
    expect = b.copy()
    expect[keep] = b[keep] - f(lr) * db
    upd.sgd_update_bias_f32(b, db, keep, lr)
    np.testing.assert_array_equal(b, expect)


# ---------------------------------------------------------------------------------------------------------------
# Adam

def test_adam_update_ohwi_f32_several_steps():
    rng = np.random.default_rng(6)
    f = np.float32
    w = rng.standard_normal((4, 3, 3, 5)).astype(f)
    keep_out, keep_in = np.array([3, 1], np.int32), np.array([0, 4, 2], np.int32)
    m = np.zeros((2, 3, 3, 3), f)
    v = np.zeros((2, 3, 3, 3), f)
    lr = 1e-2
    w64, m64, v64 = w.astype(np.float64), np.zeros(m.shape), np.zeros(v.shape)  # textbook Adam in float64
    idx = kept(keep_out, (3, 3), keep_in)
    before = w.copy()
    for t in range(1, 6):
        dw = rng.standard_normal(m.shape).astype(f)
        g = dw.astype(np.float64)
        m2, v2, step = ref_adam_state(m, v, g, t)
        expect = w.copy()
        expect[idx] = (w[idx].astype(np.float64) - lr * step).astype(f)
        upd.adam_update_ohwi_f32(w, dw, m, v, keep_out, keep_in, lr, t)
        np.testing.assert_array_equal(m, m2)
        np.testing.assert_array_equal(v, v2)
        np.testing.assert_array_equal(w, expect)
        m64 = B1 * m64 + (1 - B1) * g
        v64 = B2 * v64 + (1 - B2) * g * g
        w64[idx] -= lr * (m64 / (1 - B1 ** t)) / (np.sqrt(v64 / (1 - B2 ** t)) + EPS)
    np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-6)  # it is Adam (float32 state, float32 weights)
    rest = untouched(w.shape, keep_out, keep_in)
    np.testing.assert_array_equal(w[rest], before[rest])


def test_adam_update_hwc_and_bias_f32():
    rng = np.random.default_rng(7)
    f = np.float32
    wd, b = rng.standard_normal((3, 3, 5)).astype(f), rng.standard_normal(5).astype(f)
    keep = np.array([4, 0], np.int32)
    md, vd = np.zeros((3, 3, 2), f), np.zeros((3, 3, 2), f)
    mb, vb = np.zeros(2, f), np.zeros(2, f)
    wd0, b0 = wd.copy(), b.copy()
    for t in (1, 2, 3):
        dwd, db = rng.standard_normal((3, 3, 2)).astype(f), rng.standard_normal(2).astype(f)
        m2, v2, step = ref_adam_state(md, vd, dwd.astype(np.float64), t)
        expect = wd.copy()
        expect[:, :, keep] = (wd[:, :, keep].astype(np.float64) - 0.05 * step).astype(f)
        upd.adam_update_hwc_f32(wd, dwd, md, vd, keep, 0.05, t)
        np.testing.assert_array_equal(wd, expect)
        np.testing.assert_array_equal(md, m2)
        np.testing.assert_array_equal(vd, v2)
        m2, v2, step = ref_adam_state(mb, vb, db.astype(np.float64), t)
        expect = b.copy()
        expect[keep] = (b[keep].astype(np.float64) - 0.05 * step).astype(f)
        upd.adam_update_bias_f32(b, db, mb, vb, keep, 0.05, t)
        np.testing.assert_array_equal(b, expect)
        np.testing.assert_array_equal(mb, m2)
        np.testing.assert_array_equal(vb, v2)
    np.testing.assert_array_equal(wd[:, :, 1:4], wd0[:, :, 1:4])
    np.testing.assert_array_equal(b[1:4], b0[1:4])


@kernel_settings(30)
@given(ohwi_case(), st.integers(1, 50))
def test_adam_update_ohwi_s8(case, t):
    co, k, ci, seed, lr = case
    rng = np.random.default_rng(seed)
    w = rand_w8(rng, (co, k, k, ci))
    keep_out, keep_in = distinct_keep(rng, co), distinct_keep(rng, ci)
    shape = (len(keep_out), k, k, len(keep_in))
    dw = (rng.standard_normal(shape) * 100).astype(np.float32)
    m = (rng.standard_normal(shape) * 0.01).astype(np.float32)  # state from earlier steps
    v = (rng.uniform(0, 1e-3, shape)).astype(np.float32)
    gscale = rng.uniform(1e-5, 1e-3, co).astype(np.float32)  # s_x * s_w
    g = gscale.astype(np.float64)[keep_out][:, None, None, None] * dw.astype(np.float64)
    m2, v2, step = ref_adam_state(m, v, g, t)
    expect = w.astype(np.float64)
    idx = kept(keep_out, (k, k), keep_in)
    expect[idx] = np.clip(expect[idx] - round_half_away(np.float64(lr) * step), -127, 127)
    before = w.copy()
    upd.adam_update_ohwi_s8(w, dw, m, v, keep_out, keep_in, gscale, lr, t)
    np.testing.assert_array_equal(w, expect.astype(np.int8))
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(v, v2)
    rest = untouched(w.shape, keep_out, keep_in)
    np.testing.assert_array_equal(w[rest], before[rest])


def test_adam_s8_first_step_moves_one_lsb_per_unit_lr():
    # At t = 1, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps): lr LSBs against the gradient's sign.
    rng = np.random.default_rng(8)
    w = np.zeros((2, 1, 1, 3), np.int8)
    dw = rng.standard_normal((2, 1, 1, 3)).astype(np.float32)
    zeros = np.zeros_like(dw)
    all2, all3 = np.arange(2, dtype=np.int32), np.arange(3, dtype=np.int32)
    upd.adam_update_ohwi_s8(w, dw, zeros.copy(), zeros.copy(), all2, all3, np.full(2, 1e-3, np.float32), 1.0, 1)
    np.testing.assert_array_equal(w, -np.sign(dw).astype(np.int8))
    w[...] = 0
    upd.adam_update_ohwi_s8(w, dw, zeros.copy(), zeros.copy(), all2, all3, np.full(2, 1e-3, np.float32), 0.49, 1)
    np.testing.assert_array_equal(w, 0)  # sub-half-LSB steps are lost (the sharp edge in the docstring)


def test_adam_update_hwc_s8_and_bias_s32():
    rng = np.random.default_rng(9)
    w = rand_w8(rng, (3, 3, 6))
    w[0, 0, 4] = 127  # saturates
    keep = np.array([4, 1, 5], np.int32)
    dw = (rng.standard_normal((3, 3, 3)) * 50).astype(np.float32)
    dw[0, 0, 0] = -50.0
    m, v = np.zeros((3, 3, 3), np.float32), np.zeros((3, 3, 3), np.float32)
    gscale = rng.uniform(1e-4, 1e-3, 6).astype(np.float32)
    g = gscale.astype(np.float64)[keep] * dw.astype(np.float64)
    m2, v2, step = ref_adam_state(m, v, g, 1)
    expect = w.astype(np.float64)
    expect[:, :, keep] = np.clip(expect[:, :, keep] - round_half_away(3.0 * step), -127, 127)
    w0 = w.copy()
    upd.adam_update_hwc_s8(w, dw, m, v, keep, gscale, 3.0, 1)
    np.testing.assert_array_equal(w, expect.astype(np.int8))
    assert w[0, 0, 4] == 127
    np.testing.assert_array_equal(w[:, :, [0, 2, 3]], w0[:, :, [0, 2, 3]])
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(v, v2)

    b = np.array([INT32_MAX - 1, 5, -7, 1000], np.int32)
    keep_b = np.array([0, 2, 3], np.int32)
    db = np.array([-2.0, 0.3, 7.0], np.float32)
    mb, vb = np.zeros(3, np.float32), np.zeros(3, np.float32)
    gs = np.array([1e-3, 1e-3, 2e-3, 5e-4], np.float32)
    g = gs.astype(np.float64)[keep_b] * db.astype(np.float64)
    for t in (1, 2):
        m2, v2, step = ref_adam_state(mb, vb, g, t)
        expect = b.astype(np.float64)
        expect[keep_b] = np.clip(expect[keep_b] - round_half_away(10.0 * step), INT32_MIN, INT32_MAX)
        upd.adam_update_bias_s32(b, db, mb, vb, keep_b, gs, 10.0, t)
        np.testing.assert_array_equal(b, expect.astype(np.int64))
        np.testing.assert_array_equal(mb, m2)
        np.testing.assert_array_equal(vb, v2)
    assert b[0] == INT32_MAX and b[1] == 5


# ---------------------------------------------------------------------------------------------------------------
# all_finite, errors, determinism, no allocation

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite(dtype):
    a = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    assert upd.all_finite(a) is True
    assert upd.all_finite(np.zeros((0, 3), dtype)) is True
    assert upd.all_finite(np.full(3, np.finfo(dtype).max, dtype)) is True
    for bad in (np.nan, np.inf, -np.inf):
        for pos in ((0, 0, 0), (1, 2, 3), (1, 0, 2)):
            b = a.copy()
            b[pos] = bad
            assert upd.all_finite(b) is False
            assert upd.all_finite(b.reshape(-1)) is False
            assert upd.all_finite(b.reshape(2, 3, 4, 1)) is False
    c = a.copy()
    c[1, 1, 1] = np.nan
    assert upd.all_finite(c.transpose(2, 0, 1)) is False  # any layout
    assert upd.all_finite(c[:, ::2, :]) is True  # the strided view skips row 1
    assert upd.all_finite(c[:, 1, ::-1]) is False


def test_update_errors():
    f, i8, i32 = np.float32, np.int8, np.int32
    k1, k9 = np.array([0], i32), np.array([9], i32)
    with pytest.raises(ValueError):  # keep_in out of range
        upd.sgd_update_ohwi_s8(np.zeros((2, 1, 1, 3), i8), np.zeros((1, 1, 1, 1), f), k1, k9, np.ones(2, f), 1.0)
    with pytest.raises(ValueError):  # dw kernel size differs
        upd.sgd_update_ohwi_f32(np.zeros((2, 3, 3, 3), f), np.zeros((1, 1, 1, 1), f), k1, k1, 1.0)
    with pytest.raises(ValueError):  # coef must have Co entries
        upd.sgd_update_hwc_s8(np.zeros((3, 3, 4), i8), np.zeros((3, 3, 1), f), k1, np.ones(3, f), 1.0)
    with pytest.raises(ValueError):
        upd.sgd_update_bias_s32(np.zeros(4, i32), np.zeros(1, f), k9, np.ones(4, f), 1.0)
    with pytest.raises(ValueError):
        upd.sgd_update_bias_f32(np.zeros(4, f), np.zeros(2, f), k1, 1.0)
    with pytest.raises(ValueError):  # t starts at 1
        upd.adam_update_bias_f32(np.zeros(4, f), np.zeros(1, f), np.zeros(1, f), np.zeros(1, f), k1, 1.0, 0)
    with pytest.raises(ValueError):  # m must have dw's shape
        upd.adam_update_ohwi_s8(np.zeros((2, 1, 1, 3), i8), np.zeros((1, 1, 1, 1), f), np.zeros((1, 1, 1, 2), f),
                                np.zeros((1, 1, 1, 1), f), k1, k1, np.ones(2, f), 1.0, 1)
    with pytest.raises(ValueError):
        upd.adam_update_hwc_f32(np.zeros((3, 3, 4), f), np.zeros((3, 3, 1), f), np.zeros((3, 3, 1), f),
                                np.zeros((3, 3, 1), f), k9, 1.0, 1)


def update_calls():
    """(name, kernel, args) for every update kernel, on small arrays with valid parameters."""
    rng = np.random.default_rng(10)
    f = np.float32
    r = lambda *s: rng.standard_normal(s).astype(f)  # noqa: E731
    w8 = lambda *s: rng.integers(-127, 128, s).astype(np.int8)  # noqa: E731
    ko, ki, kc = np.array([3, 0], np.int32), np.array([1, 2, 0], np.int32), np.array([4, 1], np.int32)
    coef = rng.uniform(1, 10, 4).astype(f)
    coef5 = rng.uniform(1, 10, 5).astype(f)
    return [
        ("sgd_ohwi_s8", upd.sgd_update_ohwi_s8, (w8(4, 3, 3, 3), r(2, 3, 3, 3), ko, ki, coef, 0.1)),
        ("sgd_hwc_s8", upd.sgd_update_hwc_s8, (w8(3, 3, 5), r(3, 3, 2), kc, coef5, 0.1)),
        ("sgd_bias_s32", upd.sgd_update_bias_s32, (rng.integers(-999, 999, 5).astype(np.int32), r(2), kc, coef5, 0.1)),
        ("sgd_ohwi_f32", upd.sgd_update_ohwi_f32, (r(4, 3, 3, 3), r(2, 3, 3, 3), ko, ki, 0.1)),
        ("sgd_hwc_f32", upd.sgd_update_hwc_f32, (r(3, 3, 5), r(3, 3, 2), kc, 0.1)),
        ("sgd_bias_f32", upd.sgd_update_bias_f32, (r(5), r(2), kc, 0.1)),
        ("adam_ohwi_f32", upd.adam_update_ohwi_f32,
         (r(4, 3, 3, 3), r(2, 3, 3, 3), np.zeros((2, 3, 3, 3), f), np.zeros((2, 3, 3, 3), f), ko, ki, 1e-3, 3)),
        ("adam_hwc_f32", upd.adam_update_hwc_f32,
         (r(3, 3, 5), r(3, 3, 2), np.zeros((3, 3, 2), f), np.zeros((3, 3, 2), f), kc, 1e-3, 3)),
        ("adam_bias_f32", upd.adam_update_bias_f32, (r(5), r(2), np.zeros(2, f), np.zeros(2, f), kc, 1e-3, 3)),
        ("adam_ohwi_s8", upd.adam_update_ohwi_s8,
         (w8(4, 3, 3, 3), r(2, 3, 3, 3), np.zeros((2, 3, 3, 3), f), np.zeros((2, 3, 3, 3), f), ko, ki, coef, 1.0, 3)),
        ("adam_hwc_s8", upd.adam_update_hwc_s8,
         (w8(3, 3, 5), r(3, 3, 2), np.zeros((3, 3, 2), f), np.zeros((3, 3, 2), f), kc, coef5, 1.0, 3)),
        ("adam_bias_s32", upd.adam_update_bias_s32,
         (rng.integers(-999, 999, 5).astype(np.int32), r(2), np.zeros(2, f), np.zeros(2, f), kc, coef5, 1.0, 3)),
        ("all_finite", upd.all_finite, (r(2, 3, 3, 3),)),
        ("all_finite_strided", upd.all_finite, (r(4, 6)[:, ::2],)),
    ]


CALLS = update_calls()


@pytest.mark.parametrize("name, kernel, args", CALLS, ids=[c[0] for c in CALLS])
def test_update_kernels_are_deterministic(name, kernel, args):
    a1 = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    a2 = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    r1, r2 = kernel(*a1), kernel(*a2)
    assert r1 == r2
    for x, y in zip(a1, a2):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name, kernel, args", CALLS, ids=[c[0] for c in CALLS])
def test_update_kernels_hold_no_numpy_memory(name, kernel, args):
    kernel(*args)  # compile (or load from the cache) outside the measurement
    assert numpy_bytes_held_after(kernel, args) == 0


@pytest.mark.skipif(JIT_DISABLED, reason=NO_NRT)
@pytest.mark.parametrize("name, kernel, args", CALLS, ids=[c[0] for c in CALLS])
def test_update_kernels_make_no_nrt_allocation(name, kernel, args):
    kernel(*args)
    # one MemInfo per array argument, made by the dispatcher when it unboxes it; nothing inside the kernel
    assert nrt_allocations(kernel, args) == sum(isinstance(a, np.ndarray) for a in args)
