"""add_s8_host (the "blas" backends' int8 ADD) against tests/naive.py's TFLM AddFunc, y and mask bit for bit,
and against the reference add_s8 on real residual shapes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from microtrain.graph import load_graph
from microtrain.kernels.add import add_s8
from microtrain.kernels.add_host import add_host_fits, add_s8_host
from microtrain.kernels.mask import NO_MASK, mask_shape
from microtrain.kernels.requant import add_multipliers
from microtrain.kernels.scratch import SCRATCH_W8
from microtrain.reference_models import NAMES
from settings import JIT_DISABLED, kernel_settings
from test_kernels_add import CASES, add_args, make_add


def run(seed, shape, **opts):
    p = make_add(np.random.default_rng(seed), shape, **opts)
    expected, in_range = naive.add_s8(**p, with_mask=True)
    return naive.check_s8_kernel(add_s8_host, expected, in_range, *add_args(p)), p, in_range


@pytest.mark.parametrize("name", CASES)
def test_add_host_cases(name):
    y, p, in_range = run(11, **CASES[name])
    if CASES[name].get("saturate"):
        assert np.mean(~in_range) > 0.3


@kernel_settings(40)
@given(st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 20)),
       st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu6", "random"]),
       st.one_of(st.none(), st.integers(-128, 127)))
def test_add_host_hypothesis(shape, seed, saturate, act, y_zp):
    run(seed, shape, saturate=saturate, act=act, y_zp=y_zp)


@pytest.mark.parametrize("alias", ["a", "b"])
def test_add_host_in_place_with_mask(alias):
    p = make_add(np.random.default_rng(5), (2, 3, 5, 7), act="relu6")
    expected, in_range = naive.add_s8(**p, with_mask=True)
    mask = np.full(mask_shape(2, 3, 5, 7), 0xA5, np.uint8)
    add_s8_host(p[alias], mask, *add_args(p))  # the residual add written over one of its inputs
    np.testing.assert_array_equal(p[alias], expected)
    np.testing.assert_array_equal(mask, naive.pack_mask(in_range))


def _residual_shapes():
    out = []
    for model in NAMES:
        g = load_graph(model)
        for op in g.ops:
            if op.kind == "add":
                out.append(pytest.param(g.shapes[op.output], id=f"{model}:{op.name}"))
    return out


@pytest.mark.skipif(JIT_DISABLED, reason="real shapes take minutes as pure Python; the cases above cover it")
@pytest.mark.parametrize("shape", _residual_shapes())
def test_add_host_equals_reference_on_real_shapes(shape):
    rng = np.random.default_rng(8)
    shape = (2,) + tuple(shape)
    a, b = (rng.integers(-128, 128, shape).astype(np.int8) for _ in range(2))
    (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(0.05, 0.08, 0.07)
    args = (a, b, 3, am, ash, -7, bm, bsh, 2, ym, ysh, -128, 90)
    assert add_host_fits(shape[2], shape[3])
    y_ref, y_host = np.empty(shape, np.int8), np.full(shape, 5, np.int8)
    m_ref, m_host = np.empty(mask_shape(*shape), np.uint8), np.full(mask_shape(*shape), 0x5A, np.uint8)
    add_s8(y_ref, m_ref, *args)
    add_s8_host(y_host, m_host, *args)
    np.testing.assert_array_equal(y_host, y_ref)
    np.testing.assert_array_equal(m_host, m_ref)
    assert 0.01 < np.mean(y_ref == 90) < 0.5  # the clamp and the mask are exercised


def test_add_host_rejects_bad_arguments():
    p = make_add(np.random.default_rng(3), (1, 2, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        add_s8_host(np.zeros((1, 2, 2, 3), np.int8), NO_MASK, *add_args(p))
    p["y_shift"] = 1
    with pytest.raises(ValueError, match="shifts"):
        add_s8_host(np.zeros((1, 2, 2, 2), np.int8), NO_MASK, *add_args(p))
    wide = SCRATCH_W8 // 2 + 1
    assert not add_host_fits(wide, 2)
    q = make_add(np.random.default_rng(3), (1, 1, wide, 2))
    with pytest.raises(ValueError, match="SCRATCH_W8"):
        add_s8_host(np.zeros((1, 1, wide, 2), np.int8), NO_MASK, *add_args(q))
