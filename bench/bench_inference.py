"""Whole-model int8 inference (batch 1 and 25) in the planned arena, against peers on the same weights.

microtrain is Inference's default "blas" backend (convs and the classifier as exact float32 GEMMs in NumPy's
BLAS); "reference" is its "reference" backend, the loop kernels that firmware mirrors. Both must equal the NumPy
chain below bit for bit. Peers:

- numpy: a NumPy chain of the vectorised reference ops (bench/numpy_ref.py); its int8 output must equal ours;
- tflm: TFLite Micro's reference interpreter (tflite-micro's host build, `pip install microtrain[oracle]`) on
  the model exported by microtrain.tflite; its int8 output must equal ours bit for bit;
- litert: LiteRT (`ai-edge-litert`, optional), its default CPU kernels (XNNPACK) on the same .tflite and the
  same thread count; they round differently from TFLite Micro's reference, so its int8 logits are checked to
  within LITERT_MAX_LSB of ours and the share that differs goes into extra_info;
- torch: PyTorch's fp32 network with the dequantized weights (bench_train.torch_net, channels-last, no grad),
  checked against microtrain's fp32 forward (ptq.float_forward) before timing.

Peers are optional: each case skips, with the reason, when its package is missing. The torch cases run last
so that torch's thread pool is not running while the others are timed."""

import microtrain  # noqa: F401  (before NumPy when run as a script: microtrain.blas_env, README "Threads")
import numpy as np
import pytest

import numpy_ref
from bench_train import _import_torch, _model, threads, torch_net
from microtrain.inference import Inference
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers
from microtrain.reference_models import NAMES

LITERT_MAX_LSB = 4  # XNNPACK vs TFLM reference rounding: measured max 2 LSB on the logits (bench/README.md)
IMPLS = ("microtrain", "reference", "numpy", "tflm", "litert", "torch")
# Timed rounds (b1, b25): ~0.1-0.5 s of calls for the fast implementations (microtrain, LiteRT, PyTorch alike; with 5
# rounds one slow call in a 1.3 ms b1 mean moved it by 10 %), a few calls of the slow ones (0.03-0.8 s each)
ROUNDS = {"microtrain": (50, 10), "reference": (10, 3), "numpy": (3, 1), "tflm": (3, 1), "litert": (50, 10),
          "torch": (50, 10)}


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


def tflm_runner(model, batch):
    pytest.importorskip("tflite_micro", reason="TFLite Micro peer: pip install microtrain[oracle]")
    from microtrain.tflite import TFLMRunner, export_tflite

    runner = TFLMRunner(export_tflite(model, batch=batch))
    return lambda x: runner.run(x)[0]


def litert_runner(model, batch):
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter",
                                     reason="LiteRT peer: pip install ai-edge-litert (optional)")
    from microtrain.tflite import export_tflite

    it = interp_mod.Interpreter(model_content=bytes(export_tflite(model, batch=batch)), num_threads=threads())
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def run(x):
        it.set_tensor(i_in, x)
        it.invoke()
        return it.get_tensor(i_out)

    return run


def torch_runner(model, x, timed=False):
    """run(x) -> fp32 logits of PyTorch's fp32 network with the dequantized weights, on x (int8, the model's input
    quantization) dequantized once here: the int8 engine too is timed on an input already quantized."""
    torch = _import_torch(timed)  # skips without torch, or when it cannot be timed fairly; Numba's threads
    from microtrain.ptq import float_forward
    from microtrain.sparse import SparseConfig
    from microtrain.train import dequantized_weights

    g = model.graph
    weights = {op.name: dequantized_weights(model, op) for op in list(g.convs) + [g.classifier]}
    s, z = model.quant[g.input_name]
    xf = ((x.astype(np.float32) - z) * np.float32(s)).astype(np.float32)
    net, _, _ = torch_net(torch, model, g, SparseConfig(g.name, ()), weights[g.classifier.name])
    xt = torch.from_numpy(xf).permute(0, 3, 1, 2)  # NHWC memory seen as NCHW: channels-last strides

    def run(_x):
        with torch.no_grad():
            return net(xt)

    got, expect = run(x).numpy(), float_forward(g, weights, xf)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())
    return run


def _cases():
    cases = [(n, b, i) for i in IMPLS if i != "torch" for n in NAMES for b in (1, 25)]
    cases += [(n, b, "torch") for n in NAMES for b in (1, 25)]
    return [pytest.param(n, b, i, id=f"{n}-b{b}-{i}") for n, b, i in cases]


@pytest.mark.parametrize("name,batch,impl", _cases())
def test_inference_s8(benchmark, name, batch, impl):
    model = _model(name)
    x = np.random.default_rng(0).integers(-128, 128, size=(batch, 128, 128, 3)).astype(np.int8)
    engine = Inference(model, batch=batch, backend="reference" if impl == "reference" else "blas")
    ours = engine.run(x).copy()  # compiled outside the timer
    g = model.graph
    benchmark.group = "inference_s8"
    benchmark.extra_info.update(macs=batch * (g.conv_macs() + g.op_macs(g.classifier)),
                                arena_bytes=engine.plan.peak, host_bytes=engine.host_bytes, threads=threads())
    if impl in ("microtrain", "reference"):
        np.testing.assert_array_equal(ours, numpy_forward(model, x))
        fn = engine.run
    elif impl == "numpy":
        fn = lambda v: numpy_forward(model, v)  # noqa: E731
        np.testing.assert_array_equal(fn(x), ours)
    elif impl == "tflm":
        fn = tflm_runner(model, batch)
        np.testing.assert_array_equal(fn(x), ours)  # TFLM's reference kernels: bit for bit
    elif impl == "litert":
        fn = litert_runner(model, batch)
        diff = np.abs(fn(x).astype(np.int32) - ours)
        assert diff.max() <= LITERT_MAX_LSB, f"LiteRT differs from TFLM/microtrain by {diff.max()} LSB"
        benchmark.extra_info.update(litert_max_lsb=int(diff.max()), litert_share_differing=float(np.mean(diff > 0)))
    else:
        fn = torch_runner(model, x, timed=not benchmark.disabled)
    rounds = ROUNDS[impl][batch > 1]
    benchmark.pedantic(fn, args=(x,), rounds=rounds, warmup_rounds=1 if impl in ("litert", "torch") else 0)


# ---- per-kernel profile of one inference ---------------------------------------------------------------------

def profile(name, batch, repeats=5, backend="blas"):
    """Time each bound kernel call of Inference.run alone, mean of `repeats` runs, summed per kernel (a "blas"
    GEMM step, widen or im2col + matmul + requantize, counts as one: _gemm_s8, _gemm_conv_s8):
    [(kernel name, seconds)] in decreasing order, and the total."""
    import time
    from collections import defaultdict

    model = _model(name)
    engine = Inference(model, batch=batch, backend=backend)
    x = np.random.default_rng(0).integers(-128, 128, size=(batch, 128, 128, 3)).astype(np.int8)
    engine.run(x)  # compile, first touch
    per = defaultdict(float)
    for _ in range(repeats):
        for fn, args in engine._steps:
            t0 = time.perf_counter()
            fn(*args)
            per[getattr(fn, "__name__", str(fn))] += (time.perf_counter() - t0) / repeats
    return sorted(per.items(), key=lambda kv: -kv[1]), sum(per.values())


if __name__ == "__main__":  # python bench/bench_inference.py MODEL [BATCH [BACKEND]]
    import sys

    rows, total = profile(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1,
                          backend=sys.argv[3] if len(sys.argv) > 3 else "blas")
    for k, v in rows:
        print(f"{k:24s} {v * 1e3:9.3f} ms {100 * v / total:5.1f} %")
    print(f"{'all kernels':24s} {total * 1e3:9.3f} ms")
