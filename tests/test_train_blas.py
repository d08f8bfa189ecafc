"""The training step's "blas" backend (microtrain.train_gemm): its GEMM entries against the naive references (the
int8 forward, mask included, bit for bit; the fp32 ones within float32 rounding), and whole steps against the
"reference" backend (the same arena after an int8 forward; gradients within float32 rounding)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
import naive_grad
from microtrain import errors
from microtrain.export_c import export_training_step
from microtrain.kernels.add_host import add_s8_host
from microtrain.kernels.depthwise_host import (depthwise_conv_f32_backward_input_host, depthwise_conv_f32_host,
                                              depthwise_conv_s8_host)
from microtrain.kernels.gemm_f32 import bias_add_clamp_f32
from microtrain.kernels.gemm_io import im2col_f32, requant_f64_params, requantize_acc_f32_s8_mask
from microtrain.kernels.mask import NO_MASK
from microtrain.sparse import LayerUpdate, SparseConfig, full_train, load_config
from microtrain.train import TrainStep
from microtrain.train_gemm import (HostGemm, gemm_conv2d_backward_weight, gemm_conv2d_f32, gemm_conv2d_s8,
                                   gemm_pointwise_backward_input, gemm_pointwise_backward_weight, gemm_pointwise_f32,
                                   gemm_pointwise_s8)
from microtrain.train_plan import TrainOptions
from settings import kernel_settings
from test_inference_blas import conv_geometry
from test_train import K, batch, head_init, tiny_model

geometry = st.fixed_dictionaries(dict(n=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
                                      ci=st.integers(1, 40), co=st.integers(1, 24)))


def _garbage(shape, dtype):
    return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else 77, dtype)


@kernel_settings(30)
@given(geometry, st.integers(0, 2 ** 32 - 1), st.sampled_from([None, "relu6", "random"]), st.booleans(),
       st.booleans(), st.booleans())
def test_int8_pointwise_entry_matches_naive_with_its_mask(geom, seed, act, extreme_bias, trainable, masked):
    """y bit for bit, and the mask where one is written (NO_MASK: a layer below the backward's reach, requantized by
    the flat kernel)."""
    n, h, w, ci, co = (geom[k] for k in ("n", "h", "w", "ci", "co"))
    rng = np.random.default_rng(seed)
    p = naive.make_s8_layer(rng, (n, h, w, ci), (co, ci), 0,
                            lambda xr, wr, br: naive.pointwise_conv_f32(xr, wr, br, -np.inf, np.inf),
                            act=act, extreme_bias=extreme_bias)
    expected, in_range = naive.pointwise_conv_s8(**p, with_mask=True)
    P = n * h * w
    y = _garbage((n, h, w, co), np.int8)
    mask = np.full(naive.pack_mask(in_range).shape, 0xA5, np.uint8)  # garbage: every byte must be written
    acc = _garbage((P, co), np.float32)
    wf = _garbage((co, ci), np.float32) if trainable else p["w"].astype(np.float32)
    gemm_pointwise_s8(y, mask if masked else NO_MASK, p["x"].reshape(P, ci), _garbage((P, ci), np.float32),
                      p["w"] if trainable else None, wf, acc, acc.reshape(n, h, w, co), p["bias"],
                      requant_f64_params(p["mult"], p["shift"]), p["mult"], p["shift"], p["x_zp"], p["y_zp"],
                      p["act_min"], p["act_max"])
    np.testing.assert_array_equal(y, expected)
    if masked:
        np.testing.assert_array_equal(mask, naive.pack_mask(in_range))


@kernel_settings(30)
@given(conv_geometry, st.integers(0, 2 ** 32 - 1), st.sampled_from([None, "relu6", "random"]), st.booleans(),
       st.booleans())
def test_int8_conv2d_entry_matches_naive_with_its_mask(geom, seed, act, trainable, masked):
    n, h, w, ci, co, k, stride, pad = (geom[key] for key in ("n", "h", "w", "ci", "co", "k", "stride", "pad"))
    if h + 2 * pad < k or w + 2 * pad < k:
        return  # no output pixel
    rng = np.random.default_rng(seed)
    p = naive.make_s8_layer(rng, (n, h, w, ci), (co, k, k, ci), 0,
                            lambda xr, wr, br: naive.conv2d_f32(xr, wr, br, -np.inf, np.inf, stride, pad), act=act)
    expected, in_range = naive.conv2d_s8(**p, stride=stride, pad=pad, with_mask=True)
    P, kk = int(np.prod(expected.shape[:3])), k * k * ci
    y = _garbage(expected.shape, np.int8)
    mask = np.full(naive.pack_mask(in_range).shape, 0xA5, np.uint8)
    acc = _garbage((P, co), np.float32)
    w2 = p["w"].reshape(co, kk)
    wf = _garbage((co, kk), np.float32) if trainable else w2.astype(np.float32)
    gemm_conv2d_s8(y, mask if masked else NO_MASK, p["x"], _garbage((P, kk), np.float32), w2 if trainable else None,
                   wf, acc, acc.reshape(expected.shape), p["bias"], requant_f64_params(p["mult"], p["shift"]),
                   p["mult"], p["shift"], p["x_zp"], p["y_zp"], p["act_min"], p["act_max"], k, stride, pad)
    np.testing.assert_array_equal(y, expected)
    if masked:
        np.testing.assert_array_equal(mask, naive.pack_mask(in_range))


def test_requantize_without_a_mask_writes_the_same_output():
    rng = np.random.default_rng(3)
    p = naive.make_s8_layer(rng, (2, 3, 5, 7), (6, 7), 0,
                            lambda xr, wr, br: naive.pointwise_conv_f32(xr, wr, br, -np.inf, np.inf), act="relu6")
    acc = ((p["x"].astype(np.int64) - p["x_zp"]) @ p["w"].astype(np.int64).T).astype(np.float32)
    y = _garbage(acc.shape, np.int8)
    rq = requant_f64_params(p["mult"], p["shift"])
    requantize_acc_f32_s8_mask(y, NO_MASK, acc, p["bias"], rq, p["mult"], p["shift"], p["y_zp"], p["act_min"],
                               p["act_max"])
    np.testing.assert_array_equal(y, naive.pointwise_conv_s8(**p))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        requantize_acc_f32_s8_mask(y, NO_MASK, acc[:, :, :, :5], p["bias"], rq, p["mult"], p["shift"], p["y_zp"],
                                   -128, 127)


def _close(got, want):
    """float32 sums of the same products in another order: within float32 rounding of the float64 reference."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@kernel_settings(30)
@given(geometry, st.integers(0, 2 ** 32 - 1), st.sampled_from([(-np.inf, np.inf), (0.0, 6.0)]))
def test_fp32_pointwise_entry_matches_naive(geom, seed, act):
    n, h, w, ci, co = (geom[k] for k in ("n", "h", "w", "ci", "co"))
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, h, w, ci)).astype(np.float32)
    wt = rng.normal(0, 1, (co, ci)).astype(np.float32)
    b = rng.normal(0, 1, co).astype(np.float32)
    P = n * h * w
    y = _garbage((P, co), np.float32)
    gemm_pointwise_f32(y, x.reshape(P, ci), wt, b, np.float32(act[0]), np.float32(act[1]))
    _close(y.reshape(n, h, w, co), naive.pointwise_conv_f32(x, wt, b, *act))


@kernel_settings(30)
@given(conv_geometry, st.integers(0, 2 ** 32 - 1))
def test_fp32_conv2d_entry_matches_naive(geom, seed):
    n, h, w, ci, co, k, stride, pad = (geom[key] for key in ("n", "h", "w", "ci", "co", "k", "stride", "pad"))
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, h, w, ci)).astype(np.float32)
    wt = rng.normal(0, 1, (co, k, k, ci)).astype(np.float32)
    b = rng.normal(0, 1, co).astype(np.float32)
    expected = naive.conv2d_f32(x, wt, b, 0.0, 6.0, stride, pad)
    P = int(np.prod(expected.shape[:3]))
    y = _garbage((P, co), np.float32)
    gemm_conv2d_f32(y, x, _garbage((P, k * k * ci), np.float32), wt.reshape(co, -1), b, np.float32(0), np.float32(6),
                    k, stride, pad)
    _close(y.reshape(expected.shape), expected)


@pytest.mark.parametrize("p,co", [(1, 1), (7, 3), (1000, 16), (513, 8), (3, 4097), (2, 5000)])
def test_bias_add_clamp_equals_numpy(p, co):
    """Blocks of SCRATCH_ACC // Co pixels with a ragged last block, and Co beyond SCRATCH_ACC (per-pixel path)."""
    rng = np.random.default_rng(p * 7 + co)
    y = rng.normal(0, 4, (p, co)).astype(np.float32)
    b = rng.normal(0, 2, co).astype(np.float32)
    want = np.minimum(np.maximum(y + b, np.float32(0)), np.float32(6))  # float32 add, then clamp
    bias_add_clamp_f32(y, b, np.float32(0), np.float32(6))
    assert y.tobytes() == want.tobytes()


def test_im2col_and_bias_clamp_reject_inconsistent_shapes():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        im2col_f32(np.zeros((16, 17), np.float32), x, 0.0, 3, 3, 1, 1)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        bias_add_clamp_f32(np.zeros((4, 3), np.float32), np.zeros(2, np.float32), 0.0, 6.0)


@kernel_settings(20)
@given(geometry, st.integers(0, 2 ** 32 - 1), st.booleans(), st.booleans())
def test_pointwise_gradient_entries_match_naive(geom, seed, int8, partial):
    """dx = dy @ w and dw = dy[:, keep].T @ (x - x_zp), against float64 (int8 mode: int8 saved input and weight)."""
    n, h, w, ci, co = (geom[k] for k in ("n", "h", "w", "ci", "co"))
    rng = np.random.default_rng(seed)
    P = n * h * w
    g = rng.normal(0, 1, (n, h, w, co)).astype(np.float32)
    if int8:
        xs = rng.integers(-128, 128, (n, h, w, ci)).astype(np.int8)
        wt = rng.integers(-127, 128, (co, ci)).astype(np.int8)
        x_zp = int(rng.integers(-128, 128))
    else:
        xs = rng.normal(0, 1, (n, h, w, ci)).astype(np.float32)
        wt = rng.normal(0, 1, (co, ci)).astype(np.float32)
        x_zp = 0
    keep = np.sort(rng.choice(co, size=max(1, co // 2), replace=False)).astype(np.int32) if partial else \
        np.arange(co, dtype=np.int32)
    g64, x64, w64 = g.astype(np.float64).reshape(P, co), xs.astype(np.float64).reshape(P, ci) - x_zp, \
        wt.astype(np.float64)

    dx = _garbage((P, ci), np.float32)
    wf = _garbage((co, ci), np.float32) if int8 else wt
    gemm_pointwise_backward_input(dx, g.reshape(P, co), wt if int8 else None, wf)
    _close(dx, g64 @ w64)

    dw = _garbage((len(keep), ci), np.float32)
    xf = _garbage((P, ci), np.float32) if int8 else None
    gk4 = _garbage((n, h, w, len(keep)), np.float32) if partial else None
    g2 = gk4.reshape(P, len(keep)) if partial else g.reshape(P, co)
    gemm_pointwise_backward_weight(dw, xs.reshape(P, ci), xf, x_zp, g2, gk4, g, keep)
    _close(dw, g64[:, keep].T @ x64)


@kernel_settings(30)
@given(conv_geometry, st.integers(0, 2 ** 32 - 1), st.booleans(), st.booleans())
def test_conv2d_weight_gradient_entry_matches_naive(geom, seed, int8, partial):
    """dw[k, ky, kx, ci] = sum over output pixels of dy[..., keep[k]] * (x - x_zp) at the tap, against float64
    windows of the zero-padded input (tests/naive_grad.py; int8 mode: int8 saved input, zero point)."""
    n, h, w, ci, co, k, stride, pad = (geom[key] for key in ("n", "h", "w", "ci", "co", "k", "stride", "pad"))
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    rng = np.random.default_rng(seed)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    P = n * oh * ow
    g = rng.normal(0, 1, (n, oh, ow, co)).astype(np.float32)
    if int8:
        xs = rng.integers(-128, 128, (n, h, w, ci)).astype(np.int8)
        x_zp = int(rng.integers(-128, 128))
    else:
        xs = rng.normal(0, 1, (n, h, w, ci)).astype(np.float32)
        x_zp = 0.0
    keep = np.sort(rng.choice(co, size=max(1, co // 2), replace=False)).astype(np.int32) if partial else \
        np.arange(co, dtype=np.int32)
    want = np.zeros((len(keep), k, k, ci))
    x64 = xs.astype(np.float64) - x_zp  # padding taps are 0 (TFLM pads with x_zp: x_zp - x_zp)
    for ky, kx, patch in naive_grad._windows(x64, k, k, stride, pad):
        want[:, ky, kx, :] = np.einsum("nhwc,nhwk->kc", patch, g.astype(np.float64)[..., keep])
    dw = _garbage((len(keep), k * k * ci), np.float32)
    gk4 = _garbage((n, oh, ow, len(keep)), np.float32) if partial else None
    g2 = gk4.reshape(P, len(keep)) if partial else g.reshape(P, co)
    gemm_conv2d_backward_weight(dw, xs, _garbage((P, k * k * ci), np.float32), x_zp, g2, gk4, g, keep, k, stride,
                                pad)
    _close(dw.reshape(want.shape), want)


# ---- whole steps ---------------------------------------------------------------------------------------------

def _partial_config(g):
    return SparseConfig(g.name, (LayerUpdate(0, bias=True, weight=True),
                                 LayerUpdate(1, bias=True, weight=True, keep=(0, 3)),
                                 LayerUpdate(2, bias=True, weight=True, keep=(2, 5, 6)),
                                 LayerUpdate(3, bias=True, weight=True, keep=(0, 2, 3), axis="output"),
                                 LayerUpdate(5, bias=True, weight=True)), name="partial")


def _steps(mode, cfg_fn, **kw):
    m = tiny_model(seed=21)
    cfg = cfg_fn(m)
    # split=1: sequential, as the reference runs; the comparisons read every activation of the arena, and a batch-split
    # step writes only those alive after the forward (tests/test_batch_split.py covers the split)
    return [TrainStep(m, cfg, K, TrainOptions(mode=mode, lr=0.05, batch=3, backend=b, **kw), head=head_init(m),
                      split=1)
            for b in ("reference", "blas")]


@pytest.mark.parametrize("cfg", ["full", "partial", "bias", "last"])
def test_int8_forward_leaves_the_same_arena_as_the_reference(cfg):
    """Every int8 activation and 1-bit mask of the forward pass, byte for byte (the GEMM sums are exact)."""
    ref, blas = _steps("int8", (lambda m: _partial_config(m.graph)) if cfg == "partial" else
                       (lambda m: load_config(cfg, m)))
    x, _ = batch("int8", 3, seed=22)
    assert any(fn.__module__ == "microtrain.train_gemm" for fn, _ in blas._forward)
    n_dw = sum(op.kind == "depthwise" for op in ref.model.graph.ops)
    assert n_dw and sum(fn is depthwise_conv_s8_host for fn, _ in blas._forward) == n_dw
    n_add = sum(op.kind == "add" for op in ref.model.graph.ops)
    assert n_add and sum(fn is add_s8_host for fn, _ in blas._forward) == n_add
    assert not any(fn in (depthwise_conv_s8_host, add_s8_host) for fn, _ in ref._forward)
    np.testing.assert_array_equal(blas.forward_logits(x), ref.forward_logits(x))
    head = [n for n in ref.specs if n.startswith(("act:", "mask:"))]
    assert any(n.startswith("mask:") for n in head) == (cfg != "last")  # "last": no backward through a clamp
    for name in head:
        assert blas.v(name).tobytes() == ref.v(name).tobytes(), name
    assert ref.host_bytes == 0 < blas.host_bytes


@pytest.mark.parametrize("mode", ["int8", "fp32"])
@pytest.mark.parametrize("cfg", ["full", "partial"])
def test_gradients_and_updates_match_the_reference_backend(mode, cfg):
    ref, blas = _steps(mode, (lambda m: _partial_config(m.graph)) if cfg == "partial" else
                       (lambda m: full_train(m.graph)), reorder=False)
    x, labels = batch(mode, 3, seed=23)
    host_dw = [depthwise_conv_f32_backward_input_host] + ([depthwise_conv_f32_host] if mode == "fp32" else [])
    for fn in host_dw:  # the tiny model's stride-1 depthwise layer runs the host kernels in blas only
        assert any(f is fn for f, _ in blas._forward + blas._backward), fn.__name__
        assert not any(f is fn for f, _ in ref._forward + ref._backward), fn.__name__
    assert ref.run(x, labels) == pytest.approx(blas.run(x, labels), rel=1e-6)
    grads = [n for n in ref.specs if n.startswith(("dw:", "db:"))]
    assert len(grads) > 4
    for name in grads:
        _close(blas.v(name), ref.v(name).astype(np.float64))
    for name in (n for n in ref.specs if n.startswith("train:")):  # int8: a rounding flip moves a weight 1 LSB
        np.testing.assert_allclose(blas.v(name).astype(np.float64), ref.v(name), rtol=1e-5, atol=1.0)


def test_trainable_int8_layer_beyond_the_exact_bound_keeps_the_loop_kernel():
    """A trainable weight is checked at the worst case (all weights at 127): with K * 127 * 255 > 2^24 (K > 518
    terms per sum) its forward stays on the loop kernel; frozen layers of the same width use the GEMM."""
    from microtrain.graph import graph_from_spec

    spec = {"name": "wide", "input": [4, 4, 3], "first_conv": {"out": 600, "kernel": 1, "stride": 1},
            "blocks": [{"expand": 1, "out": 8, "kernel": 3, "stride": 1}], "classifier": 3}
    g = graph_from_spec(spec)
    wide = next(op for op in g.convs if op.kind == "pointwise")
    assert wide.cin == 600
    for trainable in (False, True):
        gemm = HostGemm(g, 1)
        y = np.zeros((1, 4, 4, 8), np.int8)
        x = np.zeros((1, 4, 4, 600), np.int8)
        w = np.ones((8, 600), np.int8)  # small weights: a frozen layer passes its own bound
        z = np.zeros(8, np.int32)
        # x_zp = -128 (a ReLU6 output's): |x - x_zp| reaches 255
        entry = gemm.forward_s8(wide, y, NO_MASK, x, w, trainable, z, z, z, -128, 0, -128, 127)
        assert (entry is None) == trainable


def test_a_trainable_weights_requantization_bound_is_the_int8_worst_case():
    """The float64 requantization skips its per-element limit test where rq's reach bounds |acc|: a frozen weight
    is bound by its own values, a trainable one (it changes every step) by 127 per weight, under its own key."""
    from microtrain.graph import graph_from_spec

    spec = {"name": "small", "input": [4, 4, 3], "first_conv": {"out": 20, "kernel": 1, "stride": 1},
            "blocks": [{"expand": 1, "out": 8, "kernel": 3, "stride": 1}], "classifier": 3}
    g = graph_from_spec(spec)
    gemm = HostGemm(g, 1)
    pw = next(op for op in g.convs if op.kind == "pointwise")
    dw = next(op for op in g.convs if op.kind == "depthwise")
    x_zp, widest = -128, 255
    for op, w in ((pw, np.full((pw.cout, pw.cin), 2, np.int8)), (dw, np.full((3, 3, dw.cout), -3, np.int8))):
        ci = g.shapes[op.inputs[0]][2]
        x = np.zeros((1, 4, 4, ci), np.int8)
        y = np.zeros((1, 4, 4, op.cout), np.int8)
        z = np.zeros(op.cout, np.int32)
        m = np.full(op.cout, 1 << 30, np.int32)
        k = w.size // op.cout  # terms per sum
        for trainable in (False, True):
            assert gemm.forward_s8(op, y, NO_MASK, x, w, trainable, z, m, z - 8, x_zp, 0, -128, 127) is not None
        assert gemm._rq[op.name][3].tolist() == [abs(int(w.flat[0])) * k * widest] * op.cout
        assert gemm._rq[op.name + ":trainable"][3].tolist() == [127 * k * widest] * op.cout


def test_export_refuses_the_blas_backend(tmp_path):
    m = tiny_model(seed=2)
    step = TrainStep(m, load_config("last", m), K, TrainOptions(backend="blas"))
    with pytest.raises(errors.ConfigError, match="backend='reference'|backend=\"reference\""):
        export_training_step(step, tmp_path)


def test_unknown_backend_is_refused():
    with pytest.raises(errors.ConfigError, match="backend 'gpu'"):
        TrainOptions(backend="gpu").validate()
