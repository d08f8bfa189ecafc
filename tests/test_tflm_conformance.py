"""Conformance with the external oracle: TFLite Micro's reference kernels (the tflite-micro package).

Every case exports microtrain's layers or whole models with microtrain.tflite, runs them in TFLM's host
interpreter and in microtrain's kernels, and demands 0 differing int8 outputs (assert_array_equal). Whole
models are compared layer by layer (every intermediate tensor, both sides preserving all tensors).
`pytest -s` prints the totals; bench/conformance_summary.py runs this file and prints them for quoting.
"""

import json
import os
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tflite_micro", reason="the TFLM oracle needs the tflite-micro package: "
                                           "pip install microtrain[oracle]")

from microtrain.errors import MicrotrainError  # noqa: E402
from microtrain.graph import Op, load_graph  # noqa: E402
from microtrain.kernels.add import add_s8  # noqa: E402
from microtrain.kernels.conv2d import conv2d_s8  # noqa: E402
from microtrain.kernels.depthwise import depthwise_conv_s8  # noqa: E402
from microtrain.kernels.fully_connected import fully_connected_s8  # noqa: E402
from microtrain.kernels.mask import NO_MASK  # noqa: E402
from microtrain.kernels.pointwise import pointwise_conv_s8  # noqa: E402
from microtrain.kernels.pool import avgpool_s8, global_mean_s8  # noqa: E402
from microtrain.kernels.quantize import quantize_s8  # noqa: E402
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers  # noqa: E402
from microtrain.model import load_model, random_model  # noqa: E402
from microtrain.reference_models import NAMES  # noqa: E402
from microtrain.tflite import TFLMRunner, compare_with_tflm, export_single_op, export_tflite  # noqa: E402
from settings import JIT_DISABLED, kernel_settings  # noqa: E402
from shared import MODELS  # noqa: E402

pytestmark = pytest.mark.oracle

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1

# Totals over the whole module: what `pytest -s` prints and bench/conformance_summary.py quotes.
TALLY = {"single": {"layers": 0, "outputs": 0, "diffs": 0},
         "models": {"runs": 0, "layers": 0, "outputs": 0, "diffs": 0}, "per_model": {}}


@pytest.fixture(scope="module", autouse=True)
def _report_totals():
    t0 = time.perf_counter()
    yield
    s, m = TALLY["single"], TALLY["models"]
    TALLY["seconds"] = time.perf_counter() - t0
    print(f"\nTFLM conformance: single layers: {s['layers']} layers, {s['outputs']} int8 outputs compared, "
          f"{s['diffs']} differences; whole models: {m['runs']} runs, {m['layers']} layer outputs, "
          f"{m['outputs']} int8 outputs compared, {m['diffs']} differences ({TALLY['seconds']:.1f} s)")
    out = os.environ.get("MICROTRAIN_CONFORMANCE_JSON")
    if out:
        with open(out, "w") as f:
            json.dump(TALLY, f, indent=1, sort_keys=True)


def _count_single(ours, theirs):
    TALLY["single"]["layers"] += 1
    TALLY["single"]["outputs"] += ours.size
    TALLY["single"]["diffs"] += int(np.count_nonzero(ours != theirs))


# ----------------------------------------------------------------------------------------------
# Random single layers
# ----------------------------------------------------------------------------------------------

def _f32(v):
    return float(np.float32(v))


def _weight_layer(rng, kind, h, w, cin, cout, k, stride, act, batch, bias="random", y_zp=None, gain=1.0,
                  small=False):
    """A random per-channel int8 conv2d / depthwise / pointwise / fc layer: (op, params, quant, shapes, inputs).

    Weight scales put the real-valued outputs at a standard deviation of about 3 (varying 4x across
    channels), so a fused ReLU6 clamps some outputs at 6 and passes others; the output scale spans about
    +-4 std (None) or [0, 6] (ReLU/ReLU6) of the int8 range, divided by `gain` (gain > 1 saturates).
    bias: "random" (|b| <= 5000) or "extreme" (INT32_MIN / INT32_MAX and values near them, as in the real
    tiny-training weights). small: weights in [-3, 3], inputs within 4 of the zero point, |bias| <= 20 and
    effective multipliers of 2 to 6, i.e. positive (left) shifts without int32 overflow.
    """
    pad = k // 2 if kind in ("conv2d", "depthwise") else 0
    if kind == "depthwise":
        cout = cin
    op = Op("layer", kind, ("x",), "layer", cin, cout, k, stride, pad, act)
    if kind == "fc":
        shapes = {"x": (cin,), "layer": (cout,)}
    else:
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        shapes = {"x": (h, w, cin), "layer": (oh, ow, cout)}
    wmax = 3 if small else 127
    weight = rng.integers(-wmax, wmax + 1, op.weight_shape()).astype(np.int8)
    if bias == "extreme":
        b = rng.choice(np.array([INT32_MIN, INT32_MAX, INT32_MIN + 7, INT32_MAX - 7, -(2 ** 30) - 12345, 0],
                                np.int64), cout)
    else:
        b = rng.integers(-20, 21, cout) if small else rng.integers(-5000, 5001, cout)
    x_scale = _f32(rng.uniform(0.01, 0.1))
    x_zp = int(rng.integers(-128, 128))
    if small:
        x = np.clip(x_zp + rng.integers(-4, 5, (batch,) + shapes["x"]), -128, 127).astype(np.int8)
    else:
        x = rng.integers(-128, 128, (batch,) + shapes["x"]).astype(np.int8)
    fan_in = k * k * (1 if kind == "depthwise" else cin)
    acc_std = np.sqrt(fan_in) * float(np.std(weight)) * float(np.std(x.astype(np.float64) - x_zp)) + 1.0
    w_scales = (3.0 / (x_scale * acc_std) * rng.uniform(0.5, 2.0, cout)).astype(np.float32)
    if small:
        y_scale = x_scale * float(np.median(w_scales)) / rng.uniform(2.0, 6.0)
    elif act in ("relu", "relu6"):
        y_scale = 6.0 / 255.0 * rng.uniform(0.6, 1.6) / gain
    else:
        y_scale = 24.0 / 255.0 * rng.uniform(0.8, 1.25) / gain
    if y_zp is None:
        y_zp = -128 if act in ("relu", "relu6") and rng.random() < 0.5 else int(rng.integers(-60, 60))
    params = {"weight": weight, "bias": b.astype(np.int32), "w_scales": w_scales}
    quant = {"x": (x_scale, x_zp), "layer": (_f32(y_scale), int(y_zp))}
    return op, params, quant, shapes, [x]


def _add_layer(rng, h, w, c, batch, ratio=1.0, act=None):
    op = Op("add", "add", ("a", "b"), "add", c, c, act=act)
    a_scale = _f32(rng.uniform(0.01, 0.1))
    b_scale = _f32(a_scale * ratio * rng.uniform(0.9, 1.1))
    y_scale = _f32(max(a_scale, b_scale) * rng.uniform(0.7, 2.5))
    quant = {"a": (a_scale, int(rng.integers(-128, 128))), "b": (b_scale, int(rng.integers(-128, 128))),
             "add": (y_scale, int(rng.integers(-128, 128)))}
    shapes = {t: (h, w, c) for t in ("a", "b", "add")}
    xs = [rng.integers(-128, 128, (batch, h, w, c)).astype(np.int8) for _ in range(2)]
    return op, None, quant, shapes, xs


def _mean_layer(rng, h, w, c, batch, lo=-128, hi=128):
    op = Op("pool", "mean", ("x",), "pool", c, c)
    q = (_f32(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128)))
    shapes = {"x": (h, w, c), "pool": (c,)}
    return op, None, {"x": q, "pool": q}, shapes, [rng.integers(lo, hi, (batch, h, w, c)).astype(np.int8)]


def _avgpool_layer(rng, h, w, c, k, stride, pad, batch):
    op = Op("avgpool", "avgpool", ("x",), "avgpool", c, c, k, stride, pad)
    q = (_f32(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    shapes = {"x": (h, w, c), "avgpool": (oh, ow, c)}
    return op, None, {"x": q, "avgpool": q}, shapes, [rng.integers(-128, 128, (batch, h, w, c)).astype(np.int8)]


def run_ours(op, params, quant, shapes, inputs):
    """microtrain's kernel for one op, parameters derived as microtrain.inference derives them."""
    batch = inputs[0].shape[0]
    y = np.empty((batch,) + tuple(shapes[op.output]), np.int8)
    yq = quant[op.output]
    lo, hi = activation_range_s8(op.act, *yq)
    if op.has_weights:
        xq = quant[op.inputs[0]]
        mult, shift = conv_multipliers(xq[0], params["w_scales"], yq[0])
        common = (params["weight"], params["bias"], mult, shift, xq[1], yq[1], lo, hi)
        if op.kind == "conv2d":
            conv2d_s8(y, NO_MASK, inputs[0], *common, op.stride, op.pad)
        elif op.kind == "depthwise":
            depthwise_conv_s8(y, NO_MASK, inputs[0], *common, op.stride, op.pad)
        elif op.kind == "pointwise":
            pointwise_conv_s8(y, NO_MASK, inputs[0], *common)
        else:
            fully_connected_s8(y, inputs[0], *common)
    elif op.kind == "add":
        aq, bq = quant[op.inputs[0]], quant[op.inputs[1]]
        (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(aq[0], bq[0], yq[0])
        add_s8(y, NO_MASK, inputs[0], inputs[1], aq[1], am, ash, bq[1], bm, bsh, yq[1], ym, ysh, lo, hi)
    elif op.kind == "mean":
        global_mean_s8(y, inputs[0], lo, hi)
    elif op.kind == "avgpool":
        avgpool_s8(y, inputs[0], op.kernel, op.kernel, op.stride, op.pad, lo, hi)
    elif op.kind == "quantize":
        quantize_s8(y, inputs[0], *yq)
    else:
        raise ValueError(op.kind)
    return y


def check_single(op, params, quant, shapes, inputs):
    """Export one op, run it in TFLM and in microtrain, require identical int8 outputs."""
    data = export_single_op(op, params, quant, shapes, batch=inputs[0].shape[0])
    theirs = TFLMRunner(data).run(*inputs)[0]
    ours = run_ours(op, params, quant, shapes, inputs)
    _count_single(ours, theirs)
    assert theirs.dtype == np.int8 and theirs.shape == ours.shape
    np.testing.assert_array_equal(ours, theirs)


# (id, kind, h, w, cin, cout, k, stride, act, batch, extra keyword arguments)
WEIGHT_CASES = [
    ("conv_k3_s1_odd", "conv2d", 9, 7, 3, 8, 3, 1, None, 1, {}),
    ("conv_k3_s2_odd_relu6", "conv2d", 11, 13, 3, 16, 3, 2, "relu6", 1, {}),
    ("conv_k3_s2_even_b2", "conv2d", 16, 16, 3, 16, 3, 2, "relu6", 2, {}),
    ("conv_k5_s1_relu", "conv2d", 9, 9, 5, 7, 5, 1, "relu", 1, {}),
    ("conv_k5_s2_odd_b2", "conv2d", 13, 11, 4, 6, 5, 2, None, 2, {}),
    ("conv_k7_s1_odd", "conv2d", 7, 9, 3, 5, 7, 1, "relu6", 1, {}),
    ("conv_k7_s2_odd_b2", "conv2d", 15, 9, 2, 4, 7, 2, None, 2, {}),
    ("conv_k3_s2_tiny_1x1", "conv2d", 1, 1, 3, 16, 3, 2, None, 1, {}),
    ("conv_k7_s1_smaller_than_kernel", "conv2d", 3, 2, 3, 4, 7, 1, None, 1, {}),
    ("conv_relu6_clamp_inside_range", "conv2d", 9, 9, 3, 8, 3, 1, "relu6", 1, dict(y_zp=-40, gain=0.4)),
    ("conv_saturating", "conv2d", 9, 9, 8, 8, 3, 1, None, 1, dict(gain=8.0)),
    ("dw_k3_s1_odd", "depthwise", 9, 7, 8, 0, 3, 1, "relu6", 1, {}),
    ("dw_k3_s2_odd_b2", "depthwise", 11, 13, 12, 0, 3, 2, "relu6", 2, {}),
    ("dw_k5_s1", "depthwise", 10, 10, 16, 0, 5, 1, None, 1, {}),
    ("dw_k5_s2_odd", "depthwise", 13, 9, 8, 0, 5, 2, "relu6", 1, {}),
    ("dw_k7_s1_odd_b2", "depthwise", 9, 11, 8, 0, 7, 1, "relu6", 2, {}),
    ("dw_k7_s2_odd", "depthwise", 15, 15, 24, 0, 7, 2, None, 1, {}),
    ("dw_k7_s2_small", "depthwise", 4, 3, 5, 0, 7, 2, "relu", 1, {}),
    ("dw_relu6_clamp_inside_range", "depthwise", 8, 8, 16, 0, 3, 1, "relu6", 1, dict(y_zp=-30, gain=0.4)),
    ("pw_linear", "pointwise", 8, 8, 16, 24, 1, 1, None, 1, {}),
    ("pw_relu6_b2", "pointwise", 7, 5, 24, 72, 1, 1, "relu6", 2, {}),
    ("pw_wide_in", "pointwise", 4, 4, 480, 96, 1, 1, None, 1, {}),
    ("pw_saturating_relu6", "pointwise", 6, 6, 32, 16, 1, 1, "relu6", 1, dict(gain=6.0)),
    ("pw_positive_shift", "pointwise", 5, 5, 2, 8, 1, 1, None, 1, dict(small=True)),
    ("conv_positive_shift_b2", "conv2d", 5, 6, 2, 4, 3, 1, None, 2, dict(small=True)),
    ("fc_positive_shift", "fc", 0, 0, 3, 16, 1, 1, None, 1, dict(small=True)),
    ("fc_160_to_1000", "fc", 0, 0, 160, 1000, 1, 1, None, 1, {}),
    ("fc_96_to_10_b2", "fc", 0, 0, 96, 10, 1, 1, None, 2, {}),
    ("fc_relu6", "fc", 0, 0, 64, 32, 1, 1, "relu6", 1, {}),
    # Biases at the int32 limits, as in the real tiny-training weights (dead channels whose folded bias
    # saturated): acc + bias overflows int32 there, and TFLM's int32 arithmetic wraps around.
    ("conv_bias_int32_extremes", "conv2d", 9, 9, 3, 16, 3, 2, "relu6", 1, dict(bias="extreme")),
    ("dw_bias_int32_extremes", "depthwise", 9, 9, 16, 0, 3, 1, "relu6", 1, dict(bias="extreme")),
    ("pw_bias_int32_extremes", "pointwise", 6, 6, 16, 32, 1, 1, "relu6", 1, dict(bias="extreme")),
    ("fc_bias_int32_extremes", "fc", 0, 0, 64, 32, 1, 1, None, 1, dict(bias="extreme")),
]


@pytest.mark.parametrize("case", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_weight_layer_matches_tflm(case):
    name, kind, h, w, cin, cout, k, stride, act, batch, extra = case
    rng = np.random.default_rng(sum(map(ord, name)))
    check_single(*_weight_layer(rng, kind, h, w, cin, cout, k, stride, act, batch, **extra))


# derandomize: the same 40 examples every run, so the totals bench/conformance_summary.py prints are reproducible
@settings(kernel_settings(40), derandomize=True)
@given(kind=st.sampled_from(["conv2d", "depthwise"]), k=st.sampled_from([1, 3, 5, 7]), stride=st.sampled_from([1, 2]),
       h=st.integers(1, 14), w=st.integers(1, 14), cin=st.integers(1, 9), cout=st.integers(1, 9),
       act=st.sampled_from([None, "relu", "relu6"]), batch=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 31))
def test_conv_geometry_matches_tflm(kind, k, stride, h, w, cin, cout, act, batch, seed):
    rng = np.random.default_rng(seed)
    check_single(*_weight_layer(rng, kind, h, w, cin, cout, k, stride, act, batch))


ADD_CASES = [
    ("add_same_scale", 8, 8, 16, 1, 1.0, None),
    ("add_b_scale_3x", 7, 5, 24, 1, 3.0, None),
    ("add_b_scale_tenth_b2", 6, 6, 8, 2, 0.1, None),
    ("add_b_scale_40x", 4, 9, 40, 1, 40.0, None),
    ("add_relu6_b2", 5, 5, 8, 2, 1.5, "relu6"),
]


@pytest.mark.parametrize("case", ADD_CASES, ids=[c[0] for c in ADD_CASES])
def test_add_matches_tflm(case):
    name, h, w, c, batch, ratio, act = case
    for seed in range(3):
        rng = np.random.default_rng(seed * 1000 + sum(map(ord, name)))
        check_single(*_add_layer(rng, h, w, c, batch, ratio, act))


MEAN_CASES = [
    ("mean_4x4", 4, 4, 160, 1, -128, 128),
    ("mean_2x2_many_ties", 2, 2, 64, 2, -128, 128),
    ("mean_7x5_odd_count", 7, 5, 24, 1, -128, 128),
    ("mean_8x8_negative", 8, 8, 32, 2, -128, -100),
    ("mean_1x1", 1, 1, 8, 1, -128, 128),
]


@pytest.mark.parametrize("case", MEAN_CASES, ids=[c[0] for c in MEAN_CASES])
def test_global_mean_matches_tflm(case):
    name, h, w, c, batch, lo, hi = case
    check_single(*_mean_layer(np.random.default_rng(sum(map(ord, name))), h, w, c, batch, lo, hi))


AVGPOOL_CASES = [  # our symmetric padding where TFLite's SAME pads the same way, and VALID
    ("avgpool_k3_s1_p1", 7, 6, 8, 3, 1, 1, 1),
    ("avgpool_k3_s2_p1_odd", 9, 7, 4, 3, 2, 1, 2),
    ("avgpool_k5_s1_p2", 6, 6, 3, 5, 1, 2, 1),
    ("avgpool_k2_s2_valid", 8, 6, 5, 2, 2, 0, 1),
]


@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=[c[0] for c in AVGPOOL_CASES])
def test_avgpool_matches_tflm(case):
    name, h, w, c, k, stride, pad, batch = case
    check_single(*_avgpool_layer(np.random.default_rng(sum(map(ord, name))), h, w, c, k, stride, pad, batch))


def test_quantize_matches_tflm_including_ties():
    """QUANTIZE float32 -> int8: x / scale exactly k + 0.5 rounds away from zero (not to even).

    Inputs stay within |x / scale| < 2^31: beyond that TFLM's (int32) cast is undefined behaviour in C (the
    x86 host build turns +1e9 / (1/16) into INT32_MIN, i.e. -128; Arm's VCVT saturates to 127, as
    quantize_s8 does by design)."""
    rng = np.random.default_rng(5)
    op = Op("q", "quantize", ("x",), "q")
    for scale, zp in ((1 / 16, 0), (1 / 127.5, 0), (0.0372, -17), (0.25, 100)):
        ties = (np.arange(-200, 200) + 0.5) * (1 / 16)
        x = np.concatenate([ties, rng.uniform(-6, 6, 400), [0.0, -0.0, 1e5, -1e5]]).astype(np.float32)
        x = x[: (x.size // 4) * 4].reshape(1, -1, 2, 2)
        shapes = {"x": x.shape[1:], "q": x.shape[1:]}
        check_single(op, None, {"x": None, "q": (_f32(scale), zp)}, shapes, [x])


# ----------------------------------------------------------------------------------------------
# Whole reference models, layer by layer
# ----------------------------------------------------------------------------------------------

def _inputs(graph, batch, rng):
    """Three int8 inputs: uniform noise, a smooth image (upsampled noise), all zeros."""
    h, w, c = graph.input_shape
    noise = rng.integers(-128, 128, (batch, h, w, c)).astype(np.int8)
    coarse = rng.integers(-128, 128, (batch, h // 16 + 1, w // 16 + 1, c))
    smooth = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :h, :w].astype(np.int8)
    return {"noise": noise, "smooth": smooth, "zeros": np.zeros((batch, h, w, c), np.int8)}


def _check_model(model, label, batch=1, seed=0, backend="blas"):
    if JIT_DISABLED:
        pytest.skip("whole models take minutes per input as pure Python (NUMBA_DISABLE_JIT=1); "
                    "the single-layer cases cover the Python path")
    runner = TFLMRunner(export_tflite(model, batch=batch), preserve_all=True)
    failures = []
    for kind, x in _inputs(model.graph, batch, np.random.default_rng(seed)).items():
        t0 = time.perf_counter()
        rows = compare_with_tflm(model, x, runner, backend)
        per = TALLY["per_model"].setdefault(label, {"runs": 0, "layers": 0, "outputs": 0, "diffs": 0,
                                                    "seconds": 0.0})
        compared = rows[1:]  # the input is copied, not computed
        for d in (TALLY["models"], per):
            d["runs"] += 1
            d["layers"] += len(compared)
            d["outputs"] += sum(r[2] for r in compared)
            d["diffs"] += sum(r[3] for r in compared)
        per["seconds"] += time.perf_counter() - t0
        failures += [f"{kind}: {name} ({k}) {nd}/{n} differ" for name, k, n, nd in compared if nd]
    assert not failures, f"{label}: layers that differ from TFLM:\n" + "\n".join(failures)


@pytest.mark.parametrize("backend", ["blas", "reference"])
@pytest.mark.parametrize("name", NAMES)
def test_random_model_matches_tflm_layer_by_layer(name, backend):
    _check_model(random_model(load_graph(name), seed=3), f"{name} (random, {backend})", backend=backend)


@pytest.mark.parametrize("name", NAMES)
def test_random_model_batch2_matches_tflm(name):
    _check_model(random_model(load_graph(name), seed=4), f"{name} (random, batch 2)", batch=2, seed=1)


@pytest.mark.shared
@pytest.mark.parametrize("name", NAMES)
def test_tiny_training_weights_match_tflm_layer_by_layer(name):
    path = MODELS / f"{name}.pkl"
    if not path.is_file():
        pytest.skip(f"tiny-training weights not found at {path} (set MICROTRAIN_SHARED to the shared folder)")
    for backend in ("blas", "reference"):  # real weights: both backends, one TFLM export
        _check_model(load_model(name, path), f"{name} (tiny-training, {backend})", backend=backend)


# ----------------------------------------------------------------------------------------------
# The export itself
# ----------------------------------------------------------------------------------------------

def test_export_names_shapes_and_opcodes():
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    m = random_model(load_graph("mcunet-5fps"), seed=0)
    data = export_tflite(m, batch=2)
    edited = model_editor.read(bytes(data))
    sg = edited.subgraphs[0]
    shapes = {t.name: t.shape for t in sg.tensors}
    for t, s in m.graph.shapes.items():
        assert shapes[t] == (2,) + tuple(s), t
    assert [t.name for t in sg.inputs] == ["input"] and [t.name for t in sg.outputs] == ["classifier"]
    for oc in edited.operator_codes:  # both fields set, so old readers see the right operator as well
        assert oc._fb.deprecatedBuiltinCode == min(oc.builtin_code, 127)


def test_tflm_reads_deprecated_builtin_code_left_at_zero(tmp_path):
    """DESIGN.md's gotcha, checked: with deprecated_builtin_code = 0 (model_editor's default) TFLM still
    resolves every operator (it reads max(builtin_code, deprecated_builtin_code)) and computes the same."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    m = random_model(load_graph("proxyless-w0.3"), seed=2)
    data = export_tflite(m, tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").read_bytes() == data
    edited = model_editor.read(bytes(data))
    for oc in edited.operator_codes:
        oc._fb.deprecatedBuiltinCode = 0
    zeroed = bytes(edited.build())
    x = np.random.default_rng(0).integers(-128, 128, (1, 128, 128, 3)).astype(np.int8)
    np.testing.assert_array_equal(TFLMRunner(zeroed).run(x)[0], TFLMRunner(data).run(x)[0])


def test_export_without_tflite_micro_says_how_to_install(monkeypatch):
    for mod in list(sys.modules):
        if mod.startswith("tflite_micro"):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # import fails
    with pytest.raises(MicrotrainError, match=r"pip install microtrain\[oracle\]"):
        export_tflite(random_model(load_graph("mcunet-5fps")))


def test_tensor_needs_preserve_all():
    m = random_model(load_graph("mbv2-w0.35"), seed=0)
    r = TFLMRunner(export_tflite(m))
    r.run(np.zeros((1, 128, 128, 3), np.int8))
    with pytest.raises(MicrotrainError, match="preserve_all"):
        r.tensor("first_conv")
