"""Whole-model int8 inference inside one planned arena: exact sizes, no allocation, bad input."""

import tracemalloc

import numpy as np
import pytest

from microtrain import errors
from microtrain.graph import load_graph
from microtrain.inference import Inference, plan_inference
from microtrain.model import random_model
from microtrain.reference_models import NAMES
from settings import JIT_DISABLED

# Inference peak = head + tail (bytes), batch 1, derived by hand:
#   head: the largest pair of simultaneously live int8 activations (inclusive lifetimes, 16-byte sizes):
#     mcunet-5fps    b1.pointwise1: in 64x64x8 + out 64x64x32         = 32,768 + 131,072 = 163,840
#     mbv2-w0.35     b1.depthwise:  in 64x64x48 + out 32x32x48        = 196,608 + 49,152 = 245,760
#     proxyless-w0.3 greedy result 139,264: 8,192 above the lower bound 131,072 (b1.pointwise1: in 64x64x8
#                    + out 64x64x24): the greedy order (largest first) leaves a gap it cannot fill; TFLM's
#                    planner, which ours reproduces, makes the same choice.
#   tail: an int32 multiplier and an int32 shift per output channel of every conv and the classifier,
#     i.e. 8 bytes x (conv channels + 1000): mcunet 8 x 7,008; mbv2 8 x 6,760; proxyless 8 x 6,416.
EXPECTED_HEAD = {"mcunet-5fps": 163_840, "mbv2-w0.35": 245_760, "proxyless-w0.3": 139_264}
EXPECTED_TAIL = {"mcunet-5fps": 8 * 7_008, "mbv2-w0.35": 8 * 6_760, "proxyless-w0.3": 8 * 6_416}


@pytest.mark.parametrize("name", NAMES)
def test_inference_plan_is_exact(name):
    g = load_graph(name)
    plan = plan_inference(g, batch=1)
    plan.check()
    assert plan.tail_bytes == EXPECTED_TAIL[name]
    assert plan.head_bytes == EXPECTED_HEAD[name]
    # Lower bound: at every op the input(s) and output are live together.
    live = max(sum(g.numel(t) for t in op.inputs) + g.numel(op.output) for op in g.ops)
    assert plan.head_bytes >= live
    assert plan.peak == plan.head_bytes + plan.tail_bytes


@pytest.mark.parametrize("batch", [1, 3])
def test_arena_is_exactly_the_peak_and_views_are_inside(batch):
    m = random_model(load_graph("mcunet-5fps"), seed=2)
    e = Inference(m, batch=batch)
    assert len(e.arena.buffer) == e.plan.peak
    base = e.arena.buffer.ctypes.data
    for op in m.graph.ops:
        v = e.view(op.output)
        assert base <= v.ctypes.data and v.ctypes.data + v.nbytes <= base + e.plan.peak


def test_preserve_all_gives_the_same_logits():
    m = random_model(load_graph("proxyless-w0.3"), seed=4)
    x = np.random.default_rng(0).integers(-128, 128, (2, 128, 128, 3)).astype(np.int8)
    a = Inference(m, batch=2).run(x).copy()
    e = Inference(m, batch=2, preserve_all=True)
    np.testing.assert_array_equal(e.run(x), a)
    assert e.plan.peak > Inference(m, batch=2).plan.peak  # nothing is reused


@pytest.mark.skipif(JIT_DISABLED, reason="pure-Python kernels allocate temporaries; the no-allocation contract is the jitted one")
@pytest.mark.parametrize("backend", ["reference", "blas"])  # blas: NumPy's matmul writes into its out= buffer
def test_inference_step_allocates_no_numpy_memory(backend):
    m = random_model(load_graph("mcunet-5fps"), seed=5)
    e = Inference(m, batch=1, backend=backend)
    x = np.zeros((1, 128, 128, 3), np.int8)
    e.run(x)  # compile
    e.run(x)  # and fill the dispatchers' type caches
    tracemalloc.start()
    tracemalloc.reset_peak()
    e.run(x)
    _, peak = tracemalloc.get_traced_memory()
    numpy_snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    tracemalloc.stop()
    assert sum(s.size for s in numpy_snap.statistics("filename")) == 0
    # Python bookkeeping of the call loop only (argument tuples): far below any activation (>= 1 KiB here)
    assert peak < 1024


def test_wrong_input_is_refused():
    e = Inference(random_model(load_graph("mcunet-5fps")), batch=1)
    with pytest.raises(errors.InputError, match="int8"):
        e.run(np.zeros((1, 128, 128, 3), np.float32))
    with pytest.raises(errors.InputError, match="shape"):
        e.run(np.zeros((1, 64, 64, 3), np.int8))


def test_arena_too_small_is_refused():
    g = load_graph("mcunet-5fps")
    plan = plan_inference(g)
    with pytest.raises(errors.ArenaOverflowError):
        Inference(random_model(g), arena_buffer=np.zeros(plan.peak // 2, np.uint8))


@pytest.mark.skipif(JIT_DISABLED, reason="counts allocations of Numba's runtime, which does not run with the JIT off")
@pytest.mark.parametrize("backend", ["reference", "blas"])
def test_inference_step_makes_no_jitted_allocation(backend):
    from microtrain.inference import _gemm_conv_s8, _gemm_s8
    from test_kernels_noalloc import nrt_allocations

    e = Inference(random_model(load_graph("mbv2-w0.35"), seed=6), batch=1, backend=backend)
    x = np.zeros((1, 128, 128, 3), np.int8)
    e.run(x)
    e.run(x)
    # The dispatcher makes one MemInfo wrapper per array argument when it unboxes it; kernels make none.
    # A GEMM step hands 7 of its 8 arrays to its two kernels (widen or im2col: xf, x; requantize: y, acc, bias,
    # mult, shift); the 8th, the float32 weights, goes to NumPy's matmul only.
    gemm = (_gemm_s8, _gemm_conv_s8)
    wrappers = sum(sum(isinstance(a, np.ndarray) for a in args) - (fn in gemm) for fn, args in e._steps)
    assert nrt_allocations(e.run, (x,)) == wrappers
