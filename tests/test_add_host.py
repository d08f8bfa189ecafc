"""add_s8_host (the "blas" backends' int8 ADD, a lookup in add_table's table) against tests/naive.py's TFLM AddFunc,
y and mask bit for bit, and against the reference add_s8 on real residual shapes; the table's cache."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from microtrain.graph import load_graph
from microtrain.kernels.add import add_s8
from microtrain.kernels.add_host import ADD_TABLE_SIZE, add_host_fits, add_s8_host, add_table
from microtrain.kernels.mask import NO_MASK, mask_shape
from microtrain.kernels.requant import add_multipliers
from microtrain.kernels.scratch import SCRATCH_W8
from microtrain.reference_models import NAMES
from settings import JIT_DISABLED, kernel_settings
from test_kernels_add import CASES, add_args, make_add


def host_add(y, mask, a, b, *params):
    """add_s8_host with add_s8's arguments: the table built for params (a fresh cache each call), then the lookup."""
    add_s8_host(y, mask, a, b, add_table({}, *params))


def run(seed, shape, **opts):
    p = make_add(np.random.default_rng(seed), shape, **opts)
    expected, in_range = naive.add_s8(**p, with_mask=True)
    return naive.check_s8_kernel(host_add, expected, in_range, *add_args(p)), p, in_range


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
    host_add(p[alias], mask, *add_args(p))  # the residual add written over one of its inputs
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
    host_add(y_host, m_host, *args)
    np.testing.assert_array_equal(y_host, y_ref)
    np.testing.assert_array_equal(m_host, m_ref)
    assert 0.01 < np.mean(y_ref == 90) < 0.5  # the clamp and the mask are exercised


def test_add_host_rejects_bad_arguments():
    p = make_add(np.random.default_rng(3), (1, 2, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        host_add(np.zeros((1, 2, 2, 3), np.int8), NO_MASK, *add_args(p))
    with pytest.raises(ValueError, match="65536"):
        add_s8_host(np.zeros((1, 2, 2, 2), np.int8), NO_MASK, p["a"], p["b"], np.zeros(256, np.int16))
    p["y_shift"] = 1
    with pytest.raises(ValueError, match="shifts"):  # add_s8's own refusal, when the table is built
        host_add(np.zeros((1, 2, 2, 2), np.int8), NO_MASK, *add_args(p))
    wide = SCRATCH_W8 // 2 + 1
    assert not add_host_fits(wide, 2)
    q = make_add(np.random.default_rng(3), (1, 1, wide, 2))
    with pytest.raises(ValueError, match="SCRATCH_W8"):
        host_add(np.zeros((1, 1, wide, 2), np.int8), NO_MASK, *add_args(q))


def test_add_table_is_built_once_per_parameter_set_and_read_only():
    p = make_add(np.random.default_rng(4), (1, 2, 2, 2), act="relu6")
    params = add_args(p)[2:]
    tables = {}
    t = add_table(tables, *params)
    assert add_table(tables, *(int(v) for v in params)) is t and len(tables) == 1  # same values: the same table
    q = list(params)
    q[-1] -= 1  # another clamp bound: another table
    assert add_table(tables, *q) is not t and len(tables) == 2
    assert t.shape == (ADD_TABLE_SIZE,) and t.dtype == np.int16 and not t.flags.writeable
    # entry ((a + 128) << 8) | (b + 128) holds y + 128 and, in bit 8, the mask bit: every entry against the
    # independent oracle over all 65536 input pairs
    grid = np.arange(-128, 128).astype(np.int8)
    pa = dict(p, a=np.repeat(grid, 256).reshape(1, 256, 256, 1), b=np.tile(grid, 256).reshape(1, 256, 256, 1))
    y, in_range = naive.add_s8(**pa, with_mask=True)
    np.testing.assert_array_equal((t & 0xFF) - 128, y.ravel())
    np.testing.assert_array_equal(t >> 8, in_range.ravel())
    assert 0.01 < in_range.mean() < 0.99  # relu6: both bit values occur
