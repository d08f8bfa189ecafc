"""The "blas" inference backend: int8 convs and classifiers as float32 GEMMs, bit-exact.

Oracles: tests/naive.py's int64 conv2d, pointwise conv and FC (layer level, hypothesis shapes), the "reference" backend's
loop kernels and TFLite Micro (whole models). The exactness bound of kernels/gemm_io.py is tested at its edge.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain import errors
from microtrain.graph import load_graph
from microtrain.inference import Inference, _gemm_conv_s8, _gemm_s8
from microtrain.kernels.add_host import add_s8_host
from microtrain.kernels.depthwise_host import depthwise_conv_s8_host
from microtrain.kernels.gemm_io import (F32_EXACT_INT, exact_in_f32, im2col_f32, requant_f64_params, requantize_acc_f32_s8,
                                        widen_s8_f32)
from microtrain.kernels.pointwise import pointwise_conv_s8
from microtrain.model import random_model
from microtrain.reference_models import NAMES
import naive
from settings import JIT_DISABLED, kernel_settings


def _gemm_layer(p, rows, ci, co):
    """y (rows, co) from the GEMM path on a naive.make_s8_layer layer (x viewed as rows x ci)."""
    assert exact_in_f32(p["w"], p["x_zp"])
    y = np.full((rows, co), 77, np.int8)  # garbage: every element must be overwritten
    xf = np.full((rows, ci), np.nan, np.float32)
    acc = np.full((rows, co), np.nan, np.float32)
    wt = np.ascontiguousarray(p["w"].T, dtype=np.float32)
    _gemm_s8(y, p["x"].reshape(rows, ci), xf, wt, acc, p["bias"], requant_f64_params(p["mult"], p["shift"]),
             p["mult"], p["shift"], p["x_zp"], p["y_zp"],
             p["act_min"], p["act_max"])
    return y


geometry = st.fixed_dictionaries(dict(n=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
                                      ci=st.integers(1, 40), co=st.integers(1, 24)))


@kernel_settings(30)
@given(geometry, st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu6", "random"]),
       st.booleans())
def test_gemm_pointwise_matches_naive_int64(geom, seed, saturate, act, extreme_bias):
    n, h, w, ci, co = (geom[k] for k in ("n", "h", "w", "ci", "co"))
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.pointwise_conv_f32(xr, wr, br, -np.inf, np.inf)

    p = naive.make_s8_layer(rng, (n, h, w, ci), (co, ci), 0, real_fn, saturate=saturate, act=act,
                            extreme_bias=extreme_bias)
    expected, _ = naive.pointwise_conv_s8(**p, with_mask=True)
    y = _gemm_layer(p, n * h * w, ci, co)
    np.testing.assert_array_equal(y.reshape(expected.shape), expected)


@kernel_settings(20)
@given(st.integers(1, 4), st.integers(1, 600), st.integers(1, 30), st.integers(0, 2 ** 32 - 1))
def test_gemm_classifier_matches_naive_int64(n, ci, co, seed):
    # up to MCUNet's widest input (576 channels) with full-range random weights: still inside the bound
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.fully_connected_f32(xr, wr, br)

    p = naive.make_s8_layer(rng, (n, ci), (co, ci), 0, real_fn)
    expected = naive.fully_connected_s8(**p)
    np.testing.assert_array_equal(_gemm_layer(p, n, ci, co), expected)


conv_geometry = st.fixed_dictionaries(dict(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9),
                                           ci=st.integers(1, 5), co=st.integers(1, 17), k=st.sampled_from([1, 3, 5]),
                                           stride=st.integers(1, 2), pad=st.integers(0, 2)))


@kernel_settings(30)
@given(conv_geometry, st.integers(0, 2 ** 32 - 1), st.sampled_from([None, "relu6", "random"]), st.booleans())
def test_gemm_conv2d_matches_naive_int64(geom, seed, act, extreme_bias):
    n, h, w, ci, co, k, stride, pad = (geom[key] for key in ("n", "h", "w", "ci", "co", "k", "stride", "pad"))
    if h + 2 * pad < k or w + 2 * pad < k:
        return  # no output pixel
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.conv2d_f32(xr, wr, br, -np.inf, np.inf, stride, pad)

    p = naive.make_s8_layer(rng, (n, h, w, ci), (co, k, k, ci), 0, real_fn, act=act, extreme_bias=extreme_bias)
    expected, _ = naive.conv2d_s8(**p, stride=stride, pad=pad, with_mask=True)
    rows, kk = int(np.prod(expected.shape[:3])), k * k * ci
    assert exact_in_f32(p["w"].reshape(co, kk), p["x_zp"])
    y = np.full((rows, co), 77, np.int8)
    cols = np.full((rows, kk), np.nan, np.float32)
    acc = np.full((rows, co), np.nan, np.float32)
    wt = np.ascontiguousarray(p["w"].reshape(co, kk).T, dtype=np.float32)
    _gemm_conv_s8(y, p["x"], cols, wt, acc, p["bias"], requant_f64_params(p["mult"], p["shift"]), p["mult"],
                  p["shift"], p["x_zp"], p["y_zp"], p["act_min"], p["act_max"], k, stride, pad)
    np.testing.assert_array_equal(y.reshape(expected.shape), expected)


def test_exactness_bound_at_its_edge():
    # x_zp = -128: x - x_zp spans 0..255, so the widest |x - x_zp| is 255; 2^24 / 255 is not an integer, so
    # build sum|w| = floor(2^24 / 255) (inside) and one more (outside)
    inside = F32_EXACT_INT // 255
    w = np.zeros((2, (inside + 126) // 127 + 1), np.int8)
    w[0, : inside // 127] = 127
    w[0, inside // 127] = inside % 127
    assert int(np.abs(w.astype(np.int64)).sum(axis=1).max()) == inside
    assert exact_in_f32(w, -128)
    w[1] = -w[0]
    w[1, -1] = -1  # one more, with the other sign: the bound uses |w|
    assert not exact_in_f32(w, -128)
    assert exact_in_f32(w, 0) == ((inside + 1) * 128 <= F32_EXACT_INT)  # widest |x - 0| is 128


@kernel_settings(40)
@given(st.integers(0, 300), st.integers(1, 40), st.integers(-128, 127), st.integers(0, 2 ** 32 - 1))
def test_widen_equals_int64_subtraction(rows, cols, x_zp, seed):
    """xf = x - x_zp exactly, every element written (odd sizes: the flat chunks' edges), x's extremes included."""
    x = np.random.default_rng(seed).integers(-128, 128, (rows, cols)).astype(np.int8)
    x.reshape(-1)[:2] = (-128, 127)[:x.size]
    xf = np.full((rows, cols), np.nan, np.float32)
    widen_s8_f32(xf, x, x_zp)
    assert np.array_equal(xf, (x.astype(np.int64) - x_zp).astype(np.float32))


def naive_im2col(x, x_zp, k, stride, pad):
    """(N * OH * OW, k * k * Ci) float64 patches of x - x_zp, zero outside the image, columns in (ky, kx, ci) order."""
    n, h, w, ci = x.shape
    xp = np.zeros((n, h + 2 * pad, w + 2 * pad, ci))
    xp[:, pad:pad + h, pad:pad + w] = x.astype(np.float64) - x_zp
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    taps = [xp[:, ky:ky + stride * (oh - 1) + 1:stride, kx:kx + stride * (ow - 1) + 1:stride] for ky in range(k)
            for kx in range(k)]
    return np.stack(taps, axis=3).reshape(n * oh * ow, k * k * ci)


@kernel_settings(40)
@given(st.integers(1, 2), st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3, 5, 1400]),
       st.sampled_from([1, 3, 5, 7]), st.integers(1, 3), st.integers(0, 3), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_im2col_equals_naive_patches(n, h, w, ci, k, stride, pad, floats, seed):
    """Every column of every row, int8 (x - x_zp) and float32 (x - 0.0: NaN and -0.0 kept) inputs; 1400 channels
    make the padded row wider than the stack row (SCRATCH_WF), so that case takes the per-tap loop."""
    if h + 2 * pad < k or w + 2 * pad < k:
        return  # no output pixel
    rng = np.random.default_rng(seed)
    if floats:
        x = rng.normal(0, 3, (n, h, w, ci)).astype(np.float32)
        x.reshape(-1)[:2] = (np.nan, -0.0)[:x.size]
        x_zp = 0.0
    else:
        x = rng.integers(-128, 128, (n, h, w, ci)).astype(np.int8)
        x_zp = int(rng.integers(-128, 128))
    want = naive_im2col(x, x_zp, k, stride, pad)
    cols = np.full(want.shape, 123.0, np.float32)
    im2col_f32(cols, x, x_zp, k, k, stride, pad)
    assert cols.astype(np.float64).tobytes() == want.tobytes()  # NaN and -0.0 compared as bits


@pytest.mark.parametrize("w,ci", [(5, 3000), (40, 3)], ids=["wider_than_the_stack_row", "stem_like"])
def test_im2col_both_paths(w, ci):
    from microtrain.kernels.scratch import SCRATCH_WF
    assert ((w + 2) * ci > SCRATCH_WF) == (ci == 3000)
    x = np.random.default_rng(1).integers(-128, 128, (2, 6, w, ci)).astype(np.int8)
    cols = np.full(((6 // 2) * ((w + 2 - 3) // 2 + 1) * 2, 9 * ci), np.nan, np.float32)
    im2col_f32(cols, x, -5, 3, 3, 2, 1)
    np.testing.assert_array_equal(cols, naive_im2col(x, -5, 3, 2, 1))


def test_gemm_ends_reject_inconsistent_shapes():
    with pytest.raises(ValueError):
        widen_s8_f32(np.zeros((3, 4), np.float32), np.zeros((3, 5), np.int8), 0)
    c = np.zeros(4, np.int32)
    with pytest.raises(ValueError):
        im2col_f32(np.zeros((5, 9), np.float32), np.zeros((1, 4, 4, 1), np.int8), 0, 3, 3, 1, 0)  # 2x2 = 4 rows
    with pytest.raises(ValueError):
        requantize_acc_f32_s8(np.zeros((3, 4), np.int8), np.zeros((3, 5), np.float32), c, np.zeros((3, 4)), c, c, 0,
                              -128, 127)


WHOLE_MODEL = pytest.mark.skipif(JIT_DISABLED, reason="whole models take minutes as pure Python; the layer cases "
                                                     "above cover the Python path")


@WHOLE_MODEL
@pytest.mark.parametrize("name", NAMES)
def test_blas_backend_equals_reference_backend(name):
    m = random_model(load_graph(name), seed=11)
    x = np.random.default_rng(1).integers(-128, 128, (3, 128, 128, 3)).astype(np.int8)
    blas = Inference(m, batch=3, backend="blas")
    ref = Inference(m, batch=3, backend="reference")
    # every standard and 1x1 conv and the classifier take the GEMM path with random full-range weights
    n_gemm = sum(op.kind in ("conv2d", "pointwise", "fc") for op in m.graph.ops)
    assert len(blas._gemm_ops) == n_gemm
    assert sum(fn in (_gemm_s8, _gemm_conv_s8) for fn, _ in blas._steps) == n_gemm
    n_dw = sum(op.kind == "depthwise" for op in m.graph.ops)
    assert sum(fn is depthwise_conv_s8_host for fn, _ in blas._steps) == n_dw
    n_add = sum(op.kind == "add" for op in m.graph.ops)
    assert sum(fn is add_s8_host for fn, _ in blas._steps) == n_add
    assert not any(fn in (depthwise_conv_s8_host, add_s8_host) for fn, _ in ref._steps)
    assert ref.host_bytes == 0 and blas.host_bytes > 0
    assert blas.plan.peak == ref.plan.peak and len(blas.arena.buffer) == blas.plan.peak
    np.testing.assert_array_equal(blas.run(x), ref.run(x))


@WHOLE_MODEL
def test_layer_outside_the_bound_keeps_the_loop_kernel_and_the_result():
    m = random_model(load_graph("mcunet-5fps"), seed=3)
    wide = max((op for op in m.graph.ops if op.kind == "pointwise"), key=lambda op: op.cin)
    w = np.where(m.params[wide.name]["weight"] >= 0, 127, -127).astype(np.int8)  # 576 x 127 x widest > 2^24
    w.setflags(write=False)  # weights are flash
    m.params[wide.name] = {**m.params[wide.name], "weight": w}
    assert not exact_in_f32(w.reshape(w.shape[0], -1), m.quant[wide.inputs[0]][1])
    blas = Inference(m, batch=1, backend="blas")
    assert wide.name not in blas._gemm_ops
    i = m.graph.ops.index(wide)
    assert blas._steps[i][0] is pointwise_conv_s8
    x = np.random.default_rng(2).integers(-128, 128, (1, 128, 128, 3)).astype(np.int8)
    np.testing.assert_array_equal(blas.run(x), Inference(m, batch=1, backend="reference").run(x))


def test_unknown_backend_is_refused():
    with pytest.raises(errors.InputError, match="backend"):
        Inference(random_model(load_graph("mcunet-5fps")), backend="fast")
