"""Post-training quantization (microtrain.ptq): the fp32 forward against a float64 NumPy forward written
from tests/naive.py; per-channel weight and per-tensor activation quantization against their definitions;
the quantized model run by the int8 engine against the fp32 forward; bad input as named errors."""

import numpy as np
import pytest

import naive
from microtrain import errors, ptq
from microtrain.fewshot import model_input
from microtrain.graph import graph_from_spec
from microtrain.inference import Inference
from microtrain.model import random_model
from microtrain.train import dequantized_weights
from test_fewshot import SPEC

GRAPH = graph_from_spec(SPEC)


def weights_of(graph, seed=0):
    """fp32 weights of a random int8 model (dequantized): plausible magnitudes for every layer."""
    m = random_model(graph, seed)
    return {op.name: dequantized_weights(m, op) for op in graph.ops if op.has_weights}


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n,) + tuple(GRAPH.input_shape), dtype=np.uint8)


def reference_forward(graph, weights, x):
    """float64 forward from the naive per-kernel references: every tensor, by name."""
    acts = {graph.input_name: x.astype(np.float64)}
    for op in graph.ops:
        a = acts[op.inputs[0]]
        if op.kind == "mean":
            y = naive.global_mean_f32(a)
        elif op.kind == "add":
            y = a + acts[op.inputs[1]]
        elif op.kind == "fc":
            y = naive.fully_connected_f32(a, *weights[op.name])
        else:
            w, b = weights[op.name]
            lo, hi = (0.0, 6.0) if op.act == "relu6" else (-np.inf, np.inf)
            if op.kind == "conv2d":
                y = naive.conv2d_f32(a, w, b, lo, hi, op.stride, op.pad)
            elif op.kind == "depthwise":
                y = naive.depthwise_conv_f32(a, w, b, lo, hi, op.stride, op.pad)
            else:
                y = naive.pointwise_conv_f32(a, w, b, lo, hi)
        acts[op.output] = y
    return acts


def test_float_forward_matches_reference_and_records_ranges():
    W = weights_of(GRAPH)
    x = (images(3).astype(np.float32) * np.float32(2 / 255) - 1).astype(np.float32)
    ranges = {}
    logits = ptq.float_forward(GRAPH, W, x, ranges)
    ref = reference_forward(GRAPH, W, x)
    np.testing.assert_allclose(logits, ref[GRAPH.output], rtol=1e-4, atol=1e-5)
    assert set(ranges) == set(ref)
    for t, (lo, hi) in ranges.items():
        assert lo == pytest.approx(ref[t].min(), rel=1e-4, abs=1e-5)
        assert hi == pytest.approx(ref[t].max(), rel=1e-4, abs=1e-5)


def test_calibrate_widens_over_batches():
    W = weights_of(GRAPH)
    xs = [(images(2, s).astype(np.float32) / 128 - 1).astype(np.float32) for s in (1, 2)]
    both = ptq.calibrate(GRAPH, W, xs)
    for x in xs:
        one = ptq.calibrate(GRAPH, W, [x])
        for t in one:
            assert both[t][0] <= one[t][0] and both[t][1] >= one[t][1]


@pytest.mark.parametrize("lo,hi", [(-1.5, 2.25), (0.0, 3.0), (0.5, 3.0), (-4.0, -1.0), (-1e-3, 1e-3)])
def test_activation_quant_holds_zero_and_the_range(lo, hi):
    s, zp = ptq.activation_quant(lo, hi)
    assert -128 <= zp <= 127 and s > 0
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    assert s == pytest.approx((hi0 - lo0) / 255, rel=1e-6)
    # the int8 grid (q - zp) * s spans [lo0, hi0] to within half a step at each end
    assert (-128 - zp) * s <= lo0 + s / 2 and (127 - zp) * s >= hi0 - s / 2


@pytest.mark.parametrize("kind", ["conv2d", "depthwise", "pointwise", "fc"])
def test_quantize_weights_per_channel(kind):
    op = {o.kind: o for o in GRAPH.ops}[kind]
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.2, op.weight_shape()).astype(np.float32)
    b = rng.normal(0, 0.1, op.cout).astype(np.float32)
    w_q, b_q, s_w = ptq.quantize_weights(op, w, b, 0.05)
    assert w_q.dtype == np.int8 and b_q.dtype == np.int32 and s_w.dtype == np.float32
    ax = -1 if kind == "depthwise" else 0
    wq_c = np.moveaxis(w_q.astype(np.int64), ax, 0).reshape(op.cout, -1)
    w_c = np.moveaxis(w.astype(np.float64), ax, 0).reshape(op.cout, -1)
    assert np.all(np.abs(wq_c).max(axis=1) == 127) and wq_c.min() >= -127  # symmetric, full range per channel
    s = s_w.astype(np.float64)[:, None]
    assert np.all(np.abs(wq_c * s - w_c) <= s / 2 * (1 + 1e-6))
    s_b = float(np.float32(0.05)) * s_w.astype(np.float64)
    assert np.all(np.abs(b_q * s_b - b) <= s_b / 2 * (1 + 1e-6))


def test_dead_channel_keeps_its_bias():
    op = next(o for o in GRAPH.ops if o.kind == "pointwise")
    w = np.zeros(op.weight_shape(), np.float32)
    w[1:] = 0.1
    b = np.full(op.cout, 5.0, np.float32)
    w_q, b_q, s_w = ptq.quantize_weights(op, w, b, 1e-4)
    assert np.all(w_q[0] == 0) and s_w[0] > 0
    assert b_q[0] * 1e-4 * s_w[0] == pytest.approx(5.0, rel=1e-6)


def test_quantized_model_tracks_the_fp32_forward():
    """The int8 engine on the quantized model against the fp32 forward: logits within a few output steps."""
    W = weights_of(GRAPH, seed=4)
    imgs = images(16, 5)
    xf = (imgs.astype(np.float32) * np.float32(2 / 255) - 1).astype(np.float32)
    ranges = ptq.calibrate(GRAPH, W, [xf])
    model = ptq.quantize_model(GRAPH, W, ranges, meta={"note": "test"})
    assert model.meta["note"] == "test" and model.input_quant() == ptq.INPUT_QUANT
    for op in GRAPH.ops:
        if op.act == "relu6":
            assert model.quant[op.output] == ptq.RELU6_QUANT
        if op.kind == "mean":
            assert model.quant[op.output] == model.quant[op.inputs[0]]
    s, zp = model.quant[GRAPH.output]
    q = Inference(model, batch=16).run(model_input(imgs, model)).astype(np.float64)
    f = ptq.float_forward(GRAPH, W, xf)
    err = np.abs((q - zp) * s - f)
    spread = f.max() - f.min()
    assert err.max() < 0.1 * spread and np.corrcoef(((q - zp) * s).ravel(), f.ravel())[0, 1] > 0.98


def test_bad_input_is_named():
    W = weights_of(GRAPH)
    x = np.zeros((1,) + tuple(GRAPH.input_shape), np.float32)
    with pytest.raises(errors.InputError, match="float32"):
        ptq.float_forward(GRAPH, W, x.astype(np.float64))
    bad = dict(W)
    name = next(iter(bad))
    bad[name] = (np.full_like(bad[name][0], np.nan), bad[name][1])
    with pytest.raises(errors.NumericError, match="NaN"):
        ptq.float_forward(GRAPH, bad, x)
    short = dict(W)
    short.pop(name)
    with pytest.raises(errors.InputError, match=name):
        ptq.quantize_model(GRAPH, short, {})
    with pytest.raises(errors.InputError, match="calibrated range"):
        ptq.quantize_model(GRAPH, W, {})
    with pytest.raises(errors.InputError, match="at least one batch"):
        ptq.calibrate(GRAPH, W, [])
