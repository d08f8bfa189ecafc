"""Whole-model int8 inference (batch 1 and 25) in the planned arena, against a NumPy chain of the
vectorised reference ops with the same weights. Outputs are compared exactly before timing."""

import numpy as np
import pytest

import numpy_ref
from microtrain.graph import load_graph
from microtrain.inference import Inference
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers
from microtrain.model import random_model
from microtrain.reference_models import NAMES


def numpy_forward(model, x):
    """The same int8 network, op by op, with bench/numpy_ref.py (allocates freely)."""
    g, t = model.graph, {model.graph.input_name: x}
    for op in g.ops:
        yq = model.quant[op.output]
        if op.has_weights:
            p, xq = model.params[op.name], model.quant[op.inputs[0]]
            mult, shift = conv_multipliers(xq[0], p["w_scales"], yq[0])
            lo, hi = activation_range_s8(op.act, *yq)
            a = (t[op.inputs[0]], p["weight"], p["bias"], mult, shift, xq[1], yq[1], lo, hi)
            if op.kind == "conv2d":
                t[op.output] = numpy_ref.conv2d_s8(*a, op.stride, op.pad)
            elif op.kind == "depthwise":
                t[op.output] = numpy_ref.depthwise_conv_s8(*a, op.stride, op.pad)
            elif op.kind == "pointwise":
                t[op.output] = numpy_ref.pointwise_conv_s8(*a)
            else:
                t[op.output] = numpy_ref.fully_connected_s8(*a)
        elif op.kind == "add":
            aq, bq = model.quant[op.inputs[0]], model.quant[op.inputs[1]]
            (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(aq[0], bq[0], yq[0])
            t[op.output] = numpy_ref.add_s8(t[op.inputs[0]], t[op.inputs[1]], aq[1], am, ash, bq[1], bm, bsh,
                                            yq[1], ym, ysh, -128, 127)
        elif op.kind == "mean":
            t[op.output] = numpy_ref.global_mean_s8(t[op.inputs[0]], -128, 127)
    return t[g.output]


@pytest.mark.parametrize("impl", ["microtrain", "numpy"])
@pytest.mark.parametrize("batch", [1, 25], ids=["b1", "b25"])
@pytest.mark.parametrize("name", NAMES)
def test_inference_s8(benchmark, name, batch, impl):
    model = random_model(load_graph(name), seed=1)
    x = np.random.default_rng(0).integers(-128, 128, size=(batch, 128, 128, 3)).astype(np.int8)
    engine = Inference(model, batch=batch)
    expect = numpy_forward(model, x)
    np.testing.assert_array_equal(engine.run(x), expect)  # compiled and checked outside the timer
    g = model.graph
    benchmark.group = "inference_s8"
    benchmark.extra_info.update(macs=batch * (g.conv_macs() + g.op_macs(g.classifier)),
                                arena_bytes=engine.plan.peak)
    if impl == "microtrain":
        benchmark.pedantic(engine.run, args=(x,), rounds=3 if batch > 1 else 5, warmup_rounds=0)
    else:
        benchmark.pedantic(numpy_forward, args=(model, x), rounds=1 if batch > 1 else 3, warmup_rounds=0)
