"""Batch split (microtrain/batch_split.py): a batch run as concurrent groups of images gives the sequential run's bits.

Oracle: the same engine with split=1 (the sequential run, itself checked against TFLM and the loop kernels in
test_inference_blas.py / test_tflm_conformance.py) and the "reference" backend's loop kernels.
"""

import threading
import time
import tracemalloc

import numba
import numpy as np
import pytest

from microtrain import batch_split, blas_env, errors
from microtrain.graph import load_graph
from microtrain.inference import Inference, plan_inference
from microtrain.model import random_model
from microtrain.reference_models import NAMES
from settings import JIT_DISABLED

_MODELS = {}


def _model(name):
    if name not in _MODELS:
        _MODELS[name] = random_model(load_graph(name), seed=3)
    return _MODELS[name]


def _images(batch, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (batch, 128, 128, 3)).astype(np.int8)


@pytest.mark.skipif(JIT_DISABLED, reason="whole models at batch 2-5 in pure Python take minutes")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch,split", [(2, 2), (3, 2), (5, 3), (3, 3)])
def test_split_run_equals_the_sequential_run(name, batch, split):
    m = _model(name)
    x = _images(batch, seed=batch)
    seq = Inference(m, batch, split=1)
    par = Inference(m, batch, split=split)
    assert (seq.split, par.split) == (1, split)
    want = seq.run(x).copy()
    np.testing.assert_array_equal(par.run(x), want)
    np.testing.assert_array_equal(par.run(x), want)  # again: nothing left over from the first run matters
    if name == NAMES[0]:
        np.testing.assert_array_equal(Inference(m, batch, backend="reference", split=split).run(x), want)


@pytest.mark.skipif(JIT_DISABLED, reason="whole models in pure Python take minutes")
def test_groups_see_only_their_images():
    """Each image's logits depend on that image alone: changing image 3 of 5 changes row 3 only."""
    m = _model("mcunet-5fps")
    e = Inference(m, 5, split=2)
    x = _images(5)
    a = e.run(x).copy()
    x[3] = _images(1, seed=9)[0]
    b = e.run(x).copy()
    np.testing.assert_array_equal(np.delete(a, 3, 0), np.delete(b, 3, 0))
    np.testing.assert_array_equal(b[3], Inference(m, 1).run(x[3:4])[0])


def test_group_bounds_cover_the_batch_in_order():
    for batch in range(1, 12):
        for groups in range(1, batch + 1):
            b = batch_split.group_bounds(batch, groups)
            assert b[0][0] == 0 and b[-1][1] == batch and len(b) == groups
            assert all(b0 < b1 for b0, b1 in b) and all(b[i][1] == b[i + 1][0] for i in range(groups - 1))
            sizes = [b1 - b0 for b0, b1 in b]
            assert max(sizes) - min(sizes) <= 1


def test_host_memory_counts_the_group_arenas():
    """Split: the group engines' arenas (each exactly its batch's plan peak) are host memory on top of the
    sequential engine's; the float32 GEMM scratch is shared (each group takes its images' share)."""
    m = _model("proxyless-w0.3")
    g = m.graph
    seq = Inference(m, 5, split=1)
    par = Inference(m, 5, split=2)
    assert par.host_bytes == seq.host_bytes + plan_inference(g, 2).peak + plan_inference(g, 3).peak
    assert par.plan.peak == seq.plan.peak  # the device's memory is the sequential plan's


def test_bad_split_is_refused():
    m = _model("mcunet-5fps")
    for split in (0, -1, 3):
        with pytest.raises(errors.InputError, match="split"):
            Inference(m, 2, split=split)


def test_default_splits_only_where_it_pays(monkeypatch):
    m = _model("mcunet-5fps")
    assert Inference(m, 1).split == 1
    assert Inference(m, 2, preserve_all=True).split == 1
    want = 1 if (batch_split.available() or numba.get_num_threads() < 2) else min(numba.get_num_threads(), 4)
    assert Inference(m, 4).split == want
    monkeypatch.setattr(batch_split, "available", lambda: "not here")
    assert Inference(m, 4).split == 1


def test_unsafe_threading_layer_refuses_an_explicit_split(monkeypatch):
    monkeypatch.setattr(batch_split, "unsafe", lambda: "Numba's threading layer is 'workqueue'")
    monkeypatch.setattr(batch_split, "available", lambda: "Numba's threading layer is 'workqueue'")
    m = _model("mcunet-5fps")
    with pytest.raises(errors.InputError, match="workqueue.*split=1"):
        Inference(m, 2, split=2)
    assert Inference(m, 2).split == 1


def test_workqueue_layer_is_unsafe(monkeypatch):
    monkeypatch.setattr(batch_split, "threading_layer", lambda: "workqueue")
    monkeypatch.setattr(numba.config, "DISABLE_JIT", False)
    assert "workqueue" in batch_split.unsafe()
    assert batch_split.available()
    monkeypatch.setattr(batch_split, "threading_layer", lambda: "omp")
    assert batch_split.unsafe() == ""


@pytest.mark.skipif(JIT_DISABLED, reason="whole models in pure Python take minutes")
def test_width_one_runs_sequentially(monkeypatch):
    """After numba.set_num_threads(1) a split engine runs on the calling thread alone (no group is handed out)."""
    m = _model("mcunet-5fps")
    x = _images(2)
    e = Inference(m, 2, split=2)
    want = Inference(m, 2, split=1).run(x).copy()

    def no_groups(jobs):
        raise AssertionError("a group run at width 1")
    monkeypatch.setattr(batch_split, "run_groups", no_groups)
    width = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        np.testing.assert_array_equal(e.run(x), want)
    finally:
        numba.set_num_threads(width)


def test_run_groups_waits_for_every_group_then_reraises():
    finished = threading.Event()

    def slow():
        time.sleep(0.05)
        finished.set()

    def bad():
        raise ValueError("group 0 failed")
    api = blas_env.blas_threads()
    blas_before = api.get() if api is not None else None
    width = numba.get_num_threads()
    with pytest.raises(ValueError, match="group 0 failed"):
        batch_split.run_groups([bad, slow])
    assert finished.is_set()  # the other group had finished before the error propagated
    assert numba.get_num_threads() == width
    if api is not None:
        assert api.get() == blas_before
    with pytest.raises(KeyError):  # a worker's exception reaches the caller too; the worker lives on
        batch_split.run_groups([lambda: None, lambda: {}["missing"]])
    out = []
    batch_split.run_groups([lambda: out.append(0), lambda: out.append(numba.get_num_threads())])
    assert sorted(out) == [0, 1]  # the worker ran at width 1


def test_blas_thread_count_round_trips():
    api = blas_env.blas_threads()
    if api is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose thread count microtrain can set")
    before = api.get()
    try:
        api.set(1)
        assert api.get() == 1
    finally:
        api.set(before)
    assert api.get() == before


@pytest.mark.skipif(JIT_DISABLED, reason="pure-Python kernels allocate temporaries; the no-allocation contract is the jitted one")
def test_split_run_allocates_no_numpy_memory():
    m = _model("mbv2-w0.35")
    e = Inference(m, 3, split=2)
    x = _images(3)
    e.run(x)  # compile
    e.run(x)  # and fill the dispatchers' type caches
    tracemalloc.start()
    e.run(x)
    numpy_snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    tracemalloc.stop()
    assert sum(s.size for s in numpy_snap.statistics("filename")) == 0


# ---- TrainStep: the forward split (microtrain/train.py, "Batch split") -------------------------------------------

def _step(name, config, batch, split, mode="int8", **kw):
    from microtrain.sparse import load_config
    from microtrain.train import TrainStep
    from microtrain.train_plan import TrainOptions
    m = _model(name)
    rng = np.random.default_rng(1)
    head = (rng.normal(0, 0.05, (5, m.graph.classifier.cin)).astype(np.float32), np.zeros(5, np.float32))
    opts = TrainOptions(mode=mode, lr=0.01, batch=batch, **{"optimizer": "sgd", **kw})
    return TrainStep(m, load_config(config, m), 5, opts, head=head, split=split)


def _trained(step):
    return {n: step.v(n).copy() for n in step.specs if n.startswith(("train:", "adam:"))}


SPLIT_STEPS = [
    ("mcunet-5fps", "49kb", 3, 2, {}),
    ("proxyless-w0.3", "49kb", 2, 2, {}),
    ("mbv2-w0.35", "49kb", 3, 3, {}),
    ("mcunet-5fps", "last", 4, 2, {}),
    ("mbv2-w0.35", "full", 2, 2, {"optimizer": "adam", "head": "cosine"}),
    ("proxyless-w0.3", "bias", 3, 2, {"save_kept_channels": False}),
    ("mcunet-5fps", "full", 4, 2, {"reorder": False, "inplace": False}),
]


def _same_to_float32_rounding(got, want, what):
    """Trained arrays of a split and an unsplit step: float ones within float32 rounding of the gradients' sums
    (1e-5 of each element, or of the array's largest magnitude where a sum of thousands of terms nearly cancels),
    integer ones (int8 weights, int32 biases: rounded updates) within 1."""
    assert got.keys() == want.keys()
    for k in want:
        a, b = want[k], got[k]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * max(1e-30, float(np.abs(a).max())),
                                       err_msg=f"{what}: {k}")
        else:
            assert np.abs(b.astype(np.int64) - a.astype(np.int64)).max() <= 1, f"{what}: {k}"


@pytest.mark.skipif(JIT_DISABLED, reason="whole models in pure Python take minutes")
@pytest.mark.parametrize("name,config,batch,split,kw", SPLIT_STEPS)
def test_train_step_split_forward_and_loss_equal_the_unsplit_steps(name, config, batch, split, kw):
    """The forward of a split step is the unsplit step's bit for bit (integer arithmetic and per-row float work per
    image), so are its logits, features and first loss (the loss over the whole batch reads the same logits)."""
    seq = _step(name, config, batch, 1, **kw)
    par = _step(name, config, batch, split, **kw)
    assert (seq.split, par.split) == (1, split)
    assert par._handover and all(n in par.specs for n in par._handover)
    assert "head:logits" in par._handover
    x = _images(batch, seed=4)
    labels = np.arange(batch) % 5
    np.testing.assert_array_equal(par.forward_logits(x), seq.forward_logits(x))
    np.testing.assert_array_equal(par.features(x), seq.features(x))
    assert par.run(x, labels) == seq.run(x, labels)


@pytest.mark.skipif(JIT_DISABLED, reason="whole models in pure Python take minutes")
@pytest.mark.parametrize("name,config,batch,split,kw", SPLIT_STEPS)
def test_train_step_split_trains_like_the_unsplit_step(name, config, batch, split, kw):
    """Three steps: the split step's losses, trained parameters and Adam state are the unsplit step's to float32
    rounding (its gradients are summed per group of images, then over the groups: another float32 association of
    the same sum). Where the step keeps its gradient buffers (reorder=False), they hold the step's gradients after
    a run, as an unsplit step's do."""
    seq = _step(name, config, batch, 1, **kw)
    par = _step(name, config, batch, split, **kw)
    x = _images(batch, seed=4)
    labels = np.arange(batch) % 5
    for _ in range(3):
        a, b = seq.run(x, labels), par.run(x, labels)
        assert abs(b - a) <= 1e-5 * abs(a), (a, b)
    _same_to_float32_rounding(_trained(par), _trained(seq), name)
    if not kw.get("reorder", True):
        grads = {n: seq.v(n) for n in seq.specs if n.startswith(("dw:", "db:"))}
        assert grads
        _same_to_float32_rounding({n: par.v(n) for n in grads}, grads, f"{name} gradients")


@pytest.mark.skipif(JIT_DISABLED, reason="whole models in pure Python take minutes")
@pytest.mark.parametrize("name,config,batch,kw", [
    ("mcunet-5fps", "49kb", 3, {}),
    ("mbv2-w0.35", "full", 4, {"optimizer": "adam", "head": "cosine"}),
])
def test_train_step_split_bits_do_not_depend_on_how_the_groups_run(name, config, batch, kw, monkeypatch):
    """The default split is a fixed group count (STEP_GROUPS), not the thread count, and the groups give the same
    bits whether they run concurrently, in turn on one core (Numba width 1), or in turn because concurrent launches
    are unsafe (the "workqueue" layer): losses and every trained byte equal after three steps."""
    steps = [_step(name, config, batch, None, **kw) for _ in range(3)]
    assert all(s.split == batch_split.STEP_GROUPS for s in steps)
    x = _images(batch, seed=5)
    labels = np.arange(batch) % 5
    width = numba.get_num_threads()
    losses = [[], [], []]
    for _ in range(3):
        losses[0].append(steps[0].run(x, labels))  # concurrently where this machine has two threads
        numba.set_num_threads(1)
        try:
            losses[1].append(steps[1].run(x, labels))  # in turn, on the calling thread
        finally:
            numba.set_num_threads(width)
        with monkeypatch.context() as mp:
            mp.setattr(batch_split, "unsafe", lambda: "Numba's threading layer is 'workqueue'")
            assert not batch_split.concurrent(steps[2]._groups)
            losses[2].append(steps[2].run(x, labels))
    assert losses[0] == losses[1] == losses[2]
    want = _trained(steps[0])
    for s in steps[1:]:
        got = _trained(s)
        for k in want:
            assert got[k].tobytes() == want[k].tobytes(), k


@pytest.mark.skipif(JIT_DISABLED, reason="whole models in pure Python take minutes")
def test_train_step_split_checks_every_summed_gradient_before_any_update():
    """A gradient that is not finite in one group (float32 overflow) makes its sum not finite: the step raises
    NumericError and no parameter, optimizer state or step count changes."""
    step = _step("mcunet-5fps", "49kb", 3, 2, optimizer="adam")
    x = _images(3, seed=7)
    labels = np.arange(3) % 5
    step.run(x, labels)
    before, t = _trained(step), step.t
    item, grads = step._split_updates[len(step._split_updates) // 2]
    part = step._groups[1][1]
    part._backward.append((lambda g: g.fill(np.inf), (grads[1],)))  # group 1's gradient of that item overflows
    try:
        with pytest.raises(errors.NumericError, match=f"gradient of {item[7]}.*no weight was changed"):
            step.run(x, labels)
    finally:
        part._backward.pop()
    assert step.t == t
    after = _trained(step)
    for k in before:
        assert after[k].tobytes() == before[k].tobytes(), k
    step.run(x, labels)  # and the step goes on


@pytest.mark.skipif(JIT_DISABLED, reason="whole models in pure Python take minutes")
def test_train_step_handover_is_every_buffer_the_backward_reads():
    """After a split forward, every buffer the loss and the backward read holds the sequential forward's bytes."""
    seq = _step("mcunet-5fps", "49kb", 3, 1)
    par = _step("mcunet-5fps", "49kb", 3, 2)
    x = _images(3, seed=6)
    seq.forward_logits(x)
    par.forward_logits(x)
    names = [n for n in par._handover]
    assert any(n.startswith("mask:") for n in names) and any(n.startswith("act:") for n in names)
    for n in names:
        assert par.v(n).tobytes() == seq.v(n).tobytes(), n


def test_train_step_splits_only_int8_blas_steps(monkeypatch):
    assert _step("mcunet-5fps", "49kb", 2, 2, mode="fp32").split == 1  # fp32 steps run unsplit
    assert _step("mcunet-5fps", "49kb", 2, 2, backend="reference").split == 1
    assert _step("mcunet-5fps", "49kb", 1, None).split == 1
    with pytest.raises(errors.InputError, match="split"):
        _step("mcunet-5fps", "49kb", 2, 3)
    # the default is part of the step's arithmetic: the same count wherever splitting pays or not
    assert _step("mcunet-5fps", "49kb", 5, None).split == batch_split.STEP_GROUPS == 2
    monkeypatch.setattr(batch_split, "available", lambda: "not here")
    monkeypatch.setattr(batch_split, "unsafe", lambda: "Numba's threading layer is 'workqueue'")
    assert _step("mcunet-5fps", "49kb", 2, None).split == 2
    assert _step("mcunet-5fps", "49kb", 3, 3).split == 3  # an explicit split too: its groups then run in turn


def test_train_step_host_memory_counts_the_group_steps():
    """Split: each group step's arena (exactly its batch's training plan) and its own trainable-weight buffer are
    host memory on top of the sequential step's; the GEMM operand buffers and constants are shared."""
    from microtrain.graph import with_classes
    from microtrain.sparse import load_config
    from microtrain.train_plan import TrainOptions, plan_training_step
    seq = _step("mcunet-5fps", "49kb", 3, 1)
    par = _step("mcunet-5fps", "49kb", 3, 2)
    m = _model("mcunet-5fps")
    g = with_classes(m.graph, 5)
    # a group step is planned with operator reordering off (train.py, "Batch split"): its gradients live to the end
    peaks = sum(plan_training_step(g, load_config("49kb", m), TrainOptions(mode="int8", lr=0.01, batch=n,
                                                                             optimizer="sgd", reorder=False))[0].peak
                for n in (1, 2))
    assert par.host_bytes == seq.host_bytes + peaks + 2 * seq._gemm._w.nbytes
    assert par.plan.peak == seq.plan.peak


def test_a_forked_child_starts_its_own_workers(monkeypatch):
    """A child created by fork has the parent's worker list but none of its threads: it must not hand a job to them."""
    batch_split.run_groups([lambda: None, lambda: None])  # the parent has a worker now
    monkeypatch.setattr(batch_split, "_WORKERS_PID", [-1])  # as seen from a forked child
    stale = list(batch_split._WORKERS)
    out = []
    batch_split.run_groups([lambda: out.append(0), lambda: out.append(1)])
    assert sorted(out) == [0, 1] and batch_split._WORKERS and batch_split._WORKERS[0] not in stale
