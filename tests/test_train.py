"""The sparse training step: gradients against finite differences, sparse == dense at kept channels,
determinism, loss decrease in both modes, no allocation, every plan overlap-free, bad input."""

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import naive_grad as ng
from microtrain import errors
from microtrain.graph import graph_from_spec, load_graph
from microtrain.model import random_model
from microtrain.sparse import LayerUpdate, SparseConfig, bias_only, full_train, last_layer, load_config
from microtrain.train import TrainStep, dequantized_weights
from microtrain.train_plan import TrainOptions
from settings import JIT_DISABLED

# Every op kind: conv2d k3 s2, pointwise expand (ReLU6), depthwise k3 (ReLU6), pointwise project, residual
# add, depthwise k5 s2 on an odd 5x5 input, global mean, fc head.
TINY = {"name": "tiny", "input": [9, 9, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 2},
        "blocks": [{"expand": 2, "out": 4, "kernel": 3, "stride": 1},
                   {"expand": 1, "out": 6, "kernel": 5, "stride": 2}], "classifier": 10}
K = 3  # classes of the trained head


def tiny_model(seed=0):
    return random_model(graph_from_spec(TINY), seed=seed)


def batch(mode, n, seed=0):
    rng = np.random.default_rng(seed)
    if mode == "int8":
        x = rng.integers(-128, 128, (n, 9, 9, 3)).astype(np.int8)
    else:
        x = rng.uniform(-1, 1, (n, 9, 9, 3)).astype(np.float32)
    return x, rng.integers(0, K, n)


def head_init(model, seed=1):
    rng = np.random.default_rng(seed)
    c = model.graph.classifier.cin
    return rng.normal(0, 0.5, (K, c)).astype(np.float32), rng.normal(0, 0.1, K).astype(np.float32)


# ---- a float64 reference of the whole network (fp32 mode semantics) --------------------------------

def reference_loss(model, params, head, x, labels, cosine=False):
    """Loss of the dequantized network in float64; params: op name -> (w, b) float64."""
    g, t = model.graph, {model.graph.input_name: x.astype(np.float64)}
    for op in g.ops[:-1]:
        if op.kind == "add":
            t[op.output] = t[op.inputs[0]] + t[op.inputs[1]]
        elif op.kind == "mean":
            t[op.output] = ng.global_mean(t[op.inputs[0]])
        else:
            w, b = params[op.name]
            xin = t[op.inputs[0]]
            y = {"conv2d": lambda: ng.conv2d(xin, w, b, op.stride, op.pad),
                 "depthwise": lambda: ng.depthwise(xin, w, b, op.stride, op.pad),
                 "pointwise": lambda: ng.pointwise(xin, w, b)}[op.kind]()
            t[op.output] = ng.clamp(y, 0.0, 6.0) if op.act == "relu6" else y
    f = t[g.ops[-1].inputs[0]]
    if cosine:
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
    logits = ng.fully_connected(f, head[0], head[1])
    return ng.softmax_cross_entropy(logits, labels)


@pytest.mark.parametrize("head_kind", ["linear", "cosine"])
def test_fp32_full_train_gradients_match_finite_differences(head_kind):
    m = tiny_model(seed=3)
    x, labels = batch("fp32", 2, seed=4)
    W, b = head_init(m)
    cosine = head_kind == "cosine"
    opts = TrainOptions(mode="fp32", lr=1e-30, batch=2, reorder=False, head=head_kind)  # lr ~ 0: read gradients
    step = TrainStep(m, full_train(m.graph), K, opts, head=(W, b))
    step.run(x, labels)
    params = {op.name: tuple(a.astype(np.float64) for a in dequantized_weights(m, op)) for op in m.graph.convs}
    head = (W.astype(np.float64), b.astype(np.float64))
    for op in m.graph.convs:
        for which, idx in (("dw", 0), ("db", 1)):
            p = params[op.name][idx].copy()  # perturbed in place by numerical_gradient
            pair = list(params[op.name])
            pair[idx] = p
            q = dict(params)
            q[op.name] = tuple(pair)
            fd = ng.numerical_gradient(lambda: reference_loss(m, q, head, x, labels, cosine), p)
            got = step.v(f"{which}:{op.name}")
            got = got.reshape(fd.shape)
            # float32 engine vs float64 central differences: float32 rounding of ~1e-7 relative per op
            np.testing.assert_allclose(got, fd, rtol=2e-3, atol=2e-4 * np.abs(fd).max() + 1e-6,
                                       err_msg=f"{which} of {op.name}")
    hw = head[0].copy()
    fd_w = ng.numerical_gradient(lambda: reference_loss(m, params, (hw, head[1]), x, labels, cosine), hw)
    np.testing.assert_allclose(step.v("dw:head"), fd_w, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "blas"])
@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_sparse_gradients_equal_dense_at_kept_channels(mode, backend):
    """A sparse config's weight gradients are the dense ones restricted to the kept channels: bit for bit with the
    loop kernels (one fixed summation order per element); to float32 rounding with sgemm, whose blocking depends
    on the matrix shapes."""
    m = tiny_model(seed=5)
    g = m.graph
    x, labels = batch(mode, 2, seed=6)
    head = head_init(m)
    convs = g.convs
    pw1, dw, pw2 = convs[1], convs[2], convs[3]
    sparse = SparseConfig(g.name, (
        LayerUpdate(pw1.conv_index, bias=True, weight=True, keep=(0, 2), axis="input"),
        LayerUpdate(dw.conv_index, bias=False, weight=True, keep=(1, 3, 6), axis="input"),
        LayerUpdate(pw2.conv_index, bias=True, weight=True, keep=(0, 2, 3), axis="output"),
    ), name="sparse")
    dense = SparseConfig(g.name, tuple(LayerUpdate(c.conv_index, bias=True, weight=True)
                                       for c in (pw1, dw, pw2)), name="dense")
    opts = TrainOptions(mode=mode, lr=1e-30, batch=2, reorder=False, backend=backend)
    s = TrainStep(m, sparse, K, opts, head=head)
    d = TrainStep(m, dense, K, opts, head=head)
    s.run(x, labels)
    d.run(x, labels)
    same = np.testing.assert_array_equal if backend == "reference" else \
        (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max()))
    same(s.v(f"dw:{pw1.name}"), d.v(f"dw:{pw1.name}")[:, [0, 2]])
    same(s.v(f"dw:{dw.name}"), d.v(f"dw:{dw.name}")[:, :, [1, 3, 6]])
    same(s.v(f"dw:{pw2.name}"), d.v(f"dw:{pw2.name}")[[0, 2, 3], :])
    same(s.v(f"db:{pw1.name}"), d.v(f"db:{pw1.name}"))


@pytest.mark.parametrize("mode", ["int8", "fp32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_few_steps_lower_the_loss(mode, optimizer):
    m = tiny_model(seed=7)
    x, labels = batch(mode, 6, seed=8)
    lr = {"sgd": 0.3, "adam": 0.01}[optimizer] if mode == "fp32" else {"sgd": 0.1, "adam": 1.0}[optimizer]
    opts = TrainOptions(mode=mode, lr=lr, batch=6, optimizer=optimizer)
    step = TrainStep(m, full_train(m.graph), K, opts, head=head_init(m))
    losses = [step.run(x, labels) for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_int8_updates_change_int8_weights_and_stay_in_range():
    m = tiny_model(seed=9)
    x, labels = batch("int8", 4, seed=10)
    step = TrainStep(m, full_train(m.graph), K, TrainOptions(mode="int8", lr=0.5, batch=4), head=head_init(m))
    for _ in range(3):
        step.run(x, labels)
    trained, _ = step.trained_model()
    changed = 0
    for op in m.graph.convs:
        w = trained.params[op.name]["weight"]
        assert w.dtype == np.int8 and w.min() >= -127
        changed += int(np.sum(w != m.params[op.name]["weight"]))
        assert trained.params[op.name]["bias"].dtype == np.int32
    assert changed > 0


def _run_twice(mode, threads, layer=None):
    code = f"""
import numpy as np, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_train import tiny_model, batch, head_init, K
from microtrain.sparse import full_train
from microtrain.train import TrainStep
from microtrain.train_plan import TrainOptions
m = tiny_model(seed=11)
x, y = batch({mode!r}, 4, seed=12)
s = TrainStep(m, full_train(m.graph), K, TrainOptions(mode={mode!r}, lr=0.05, batch=4), head=head_init(m))
for _ in range(3):
    s.run(x, y)
out = b"".join(s.v(n).tobytes() for n in sorted(s.specs) if n.startswith("train:"))
import hashlib; print(hashlib.sha256(out).hexdigest())
"""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))  # the default backend
    # ("blas") runs sgemm: its thread count changes with Numba's
    env.pop("NUMBA_THREADING_LAYER", None)  # microtrain.config's choice, or the one asked for
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd="/")
    return r.stdout.strip()


@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_same_seed_gives_bit_identical_weights_with_1_and_2_threads(mode):
    h1 = _run_twice(mode, 1)
    assert h1 == _run_twice(mode, 1)
    assert h1 == _run_twice(mode, 2)
    assert h1 == _run_twice(mode, 2, layer="workqueue")  # microtrain.config's default is omp where it loads


@pytest.mark.skipif(JIT_DISABLED, reason="pure-Python kernels allocate temporaries; the contract is the jitted one")
@pytest.mark.parametrize("backend", ["reference", "blas"])
@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_training_step_allocates_no_numpy_memory(mode, backend):
    from numba.core.registry import CPUDispatcher
    from test_kernels_noalloc import nrt_allocations

    m = tiny_model(seed=13)
    x, labels = batch(mode, 2, seed=14)
    cfg = load_config("full", m)
    step = TrainStep(m, cfg, K, TrainOptions(mode=mode, lr=0.01, batch=2, optimizer="adam", backend=backend),
                     head=head_init(m))
    step.run(x, labels)
    step.run(x, labels)
    tracemalloc.start()
    step.run(x, labels)
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    tracemalloc.stop()
    assert sum(s.size for s in snap.statistics("filename")) == 0
    # Numba's runtime: each bound kernel call makes exactly one MemInfo per array argument (made by the
    # dispatcher when it unboxes it) and nothing inside the kernel
    calls = step._forward + [it for it in step._backward if not isinstance(it[0], str)]
    gemm = [fn for fn, _ in calls if not isinstance(fn, CPUDispatcher)]  # the "blas" backend's Python entries
    assert (len(gemm) > 0) == (backend == "blas"), gemm
    for fn, call in calls:
        if isinstance(fn, CPUDispatcher):  # a GEMM entry calls several kernels and np.matmul: tracemalloc above
            assert nrt_allocations(fn, call) == sum(isinstance(a, np.ndarray) for a in call), fn
    for it in [it for it in step._backward if isinstance(it[0], str)] + step._updates:
        arrays = sum(isinstance(a, np.ndarray) for a in it[2:7]) + 2  # + Adam's m and v
        assert nrt_allocations(step._apply, (it,)) == arrays, it[0]


# ---- plans -------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(save=st.booleans(), masks=st.booleans(), reorder=st.booleans(), inplace=st.booleans(),
       mode=st.sampled_from(["int8", "fp32"]), cfg=st.sampled_from(["full", "last", "last+conv", "bias", "sparse"]),
       optimizer=st.sampled_from(["sgd", "adam"]), n=st.integers(1, 3), head=st.sampled_from(["linear", "cosine"]))
def test_every_training_plan_is_overlap_free(save, masks, reorder, inplace, mode, cfg, optimizer, n, head):
    if mode == "int8" and not masks:
        masks = True
    m = tiny_model(seed=15)
    g = m.graph
    if cfg == "sparse":
        c = SparseConfig(g.name, (LayerUpdate(1, bias=True, weight=True, keep=(1, 2)),
                                  LayerUpdate(4, bias=True, weight=True, keep=(0, 3))), name="sparse")
    else:
        c = load_config(cfg, m)
    opts = TrainOptions(mode=mode, batch=n, save_kept_channels=save, bit_masks=masks, reorder=reorder,
                        inplace=inplace, optimizer=optimizer, head=head)
    step = TrainStep(m, c, K, opts, head=head_init(m))
    step.plan.check()
    assert len(step.arena.buffer) == step.plan.peak
    x, labels = batch(mode, n, seed=16)
    loss = step.run(x, labels)
    assert np.isfinite(loss)


@pytest.mark.parametrize("name", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_reference_model_plans_check(name, mode):
    m = random_model(load_graph(name))
    for cfg in ("full", "last", "bias"):
        step = TrainStep(m, load_config(cfg, m), 10, TrainOptions(mode=mode))
        step.plan.check()


def test_memory_options_do_not_change_the_numbers():
    """Each memory-saving flag changes only where bytes live, never the result (fp32 and int8)."""
    m = tiny_model(seed=17)
    g = m.graph
    cfg = SparseConfig(g.name, (LayerUpdate(1, bias=True, weight=True, keep=(0, 3)),
                                LayerUpdate(2, bias=True, weight=True, keep=(2, 5, 6)),
                                LayerUpdate(5, bias=True, weight=True)), name="sparse")
    for mode in ("int8", "fp32"):
        x, labels = batch(mode, 3, seed=18)
        results = []
        for flags in [dict(), dict(save_kept_channels=False), dict(reorder=False), dict(inplace=False)] + \
                ([dict(bit_masks=False)] if mode == "fp32" else []):
            step = TrainStep(m, cfg, K, TrainOptions(mode=mode, lr=0.05, batch=3, **flags), head=head_init(m))
            losses = [step.run(x, labels) for _ in range(2)]
            w = b"".join(step.v(n).tobytes() for n in sorted(step.specs) if n.startswith("train:"))
            results.append((losses, w))
        for r in results[1:]:
            assert r == results[0]


# ---- the published schemes and targets ------------------------------------------------------------

def test_mit_49kb_step_fits_under_tinyengine():
    """MIT "49kb" on MCUNet-5fps, int8, batch 1, 10-way head: TinyEngine's own scheduler needs 263,080 B."""
    m = random_model(load_graph("mcunet-5fps"))
    step = TrainStep(m, load_config("mcunet-5fps-49kb", m), 10, TrainOptions(mode="int8"))
    # head: the inference peak's 163,840 (b1.pointwise1 in + out) + 16 (labels, 4 B aligned to 16);
    # tail: trainable int8 weights of convs 24, 27, 30 (48x144 + 48x192 + 48x240 = 27,648), int32 biases
    # of convs 22..41 (4 x 4,592 = 18,368 after 16-byte alignment per buffer), fp32 head 10x160 + 10
    assert step.plan.peak <= 263_080
    assert step.plan.head_bytes == 163_856
    trainable = sum(b.size for b in step.plan.buffers if b.category == "trainable")
    assert trainable == step.plan.tail_bytes


# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_learning_rate(lr):
    with pytest.raises(errors.ConfigError, match="learning rate"):
        TrainOptions(lr=lr).validate()


def test_int8_without_bit_masks_is_refused():
    with pytest.raises(errors.ConfigError, match="bit_masks"):
        TrainOptions(mode="int8", bit_masks=False).validate()


def test_nan_input_leaves_weights_unchanged():
    m = tiny_model(seed=19)
    step = TrainStep(m, full_train(m.graph), K, TrainOptions(mode="fp32", batch=2), head=head_init(m))
    before = {n: step.v(n).copy() for n in step.specs if n.startswith("train:")}
    x, labels = batch("fp32", 2)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(errors.NumericError, match="not changed"):
        step.run(x, labels)
    for n, a in before.items():
        np.testing.assert_array_equal(step.v(n), a)


def test_nan_head_is_detected_before_any_update():
    m = tiny_model(seed=20)
    W, b = head_init(m)
    W[0, 0] = np.inf
    step = TrainStep(m, bias_only(m.graph), K, TrainOptions(mode="int8", batch=2), head=(W, b))
    before = {n: step.v(n).copy() for n in step.specs if n.startswith("train:")}
    with pytest.raises(errors.NumericError):
        step.run(*batch("int8", 2))
    for n, a in before.items():
        np.testing.assert_array_equal(step.v(n), a)


@pytest.mark.parametrize("bad", ["shape", "dtype", "labels"])
def test_wrong_training_input(bad):
    m = tiny_model()
    step = TrainStep(m, last_layer(m.graph), K, TrainOptions(mode="int8", batch=2))
    x, labels = batch("int8", 2)
    if bad == "shape":
        x = x[:1]
    elif bad == "dtype":
        x = x.astype(np.float32)
    else:
        labels = np.array([0, K])
    with pytest.raises(errors.InputError):
        step.run(x, labels)


def _conv_inputs_read_only(calls):
    """(kernel name, True if w, bias (and int8 mult, shift) are read-only) for every conv kernel call bound."""
    from microtrain.kernels.conv2d import conv2d_s8
    from microtrain.kernels.depthwise import depthwise_conv_s8
    from microtrain.kernels.pointwise import pointwise_conv_s8

    s8 = (conv2d_s8, depthwise_conv_s8, pointwise_conv_s8)
    out = []
    for fn, args in calls:
        name = getattr(fn, "__name__", "")
        if fn in s8:
            out.append((name, all(not a.flags.writeable for a in args[3:7])))
        elif name.endswith("_backward_input") and not name.startswith("fully"):
            out.append((name, not args[2].flags.writeable))
    return out


@pytest.mark.parametrize("cfg", ["full", "sparse"])
def test_kernel_inputs_are_bound_read_only_trainable_or_frozen(cfg):
    """Numba compiles a kernel once per argument types, writability included: a weight that is a flash constant
    in one binding and a trainable arena buffer in another would compile the kernel twice (seconds of cold start).
    So inference, the training step and the Fisher pass bind every array a conv kernel only reads read-only."""
    from microtrain.graph import with_classes
    from microtrain.inference import Inference
    from microtrain.tinytrain import FisherPass, plan_fisher_pass

    m = tiny_model()
    config = full_train(m.graph) if cfg == "full" else SparseConfig("tiny", (LayerUpdate(2, weight=True, bias=True),))
    step = TrainStep(m, config, K, TrainOptions(mode="int8", lr=0.01, batch=2, backend="reference"), head=head_init(m))
    inf = Inference(m, batch=2, backend="reference")
    fisher = FisherPass(m, plan_fisher_pass(with_classes(m.graph, K), "int8", 2, 0, [4]), head=head_init(m))
    x, y = batch("int8", 2)
    fisher.run(x, y.astype(np.int32))
    bound = [fn_args for fwd, _loss, back in fisher._calls.values() for fn_args in fwd + back]
    step_calls = [c for c in step._forward + step._backward if not isinstance(c[0], str)]  # str: an update entry
    checked = _conv_inputs_read_only(inf._steps) + _conv_inputs_read_only(step_calls) \
        + _conv_inputs_read_only(bound)
    assert len(checked) > len(m.graph.convs) and all(ok for _, ok in checked), [n for n, ok in checked if not ok]
    step.run(x, y)  # the trainable weights still update through their writable views
