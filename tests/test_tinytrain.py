"""TinyTrain: the Fisher pass against float64 references (finite differences in fp32 mode, a dense STE backward in
int8 mode), chunked == unchunked and checkpointed == plain bit for bit, budget fitting, the criterion, greedy
selection under the real plan, channel choices, and a selected config that trains."""

import math
import tracemalloc

import numpy as np
import pytest

import naive
import naive_grad as ng
from microtrain import errors
from microtrain.graph import graph_from_spec, load_graph, with_classes
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers
from microtrain.model import random_model
from microtrain.sparse import SparseConfig, backward_macs, last_layer, select_channels
from microtrain.tinytrain import (FisherPass, FisherResult, checkpoint_candidates, criterion, fisher_potential,
                                  fit_fisher_pass, plan_fisher_pass, prototype_head, select)
from microtrain.train import TrainStep, dequantized_weights
from microtrain.train_plan import TrainOptions, plan_training_step
from settings import JIT_DISABLED

# The tiny network of test_train.py: conv2d k3 s2, pointwise expand (ReLU6), depthwise k3 (ReLU6), pointwise
# project, residual add, depthwise k5 s2 (expand 1), global mean, fc head.
from test_train import K, TINY, batch as support, head_init, tiny_model  # noqa: E402,F401

KB = 1024


def fisher_tensors(graph):
    return [op.output for op in graph.ops if op.kind in ("conv2d", "depthwise", "pointwise", "add")]


# ---- float64 references ----------------------------------------------------------------------------

def fp32_per_sample_losses(model, head, x, labels, target=None, eps=0.0):
    """Per-sample losses L_n of the dequantized network in float64; `target` tensor's pre-activation channel
    `target[1]` is scaled by (1 + eps) (the directional derivative along a_c is sum_d a_d dL/da_d)."""
    g, t = model.graph, {model.graph.input_name: x.astype(np.float64)}
    for op in g.ops[:-1]:
        if op.kind == "mean":
            t[op.output] = ng.global_mean(t[op.inputs[0]])
            continue
        if op.kind == "add":
            z = t[op.inputs[0]] + t[op.inputs[1]]
        else:
            w, b = (a.astype(np.float64) for a in dequantized_weights(model, op))
            xin = t[op.inputs[0]]
            z = {"conv2d": lambda: ng.conv2d(xin, w, b, op.stride, op.pad),
                 "depthwise": lambda: ng.depthwise(xin, w, b, op.stride, op.pad),
                 "pointwise": lambda: ng.pointwise(xin, w, b)}[op.kind]()
        if target is not None and target[0] == op.output:
            z = z.copy()
            z[..., target[1]] *= 1.0 + eps
        t[op.output] = ng.clamp(z, 0.0, 6.0) if op.act == "relu6" else z
    logits = ng.fully_connected(t[g.ops[-1].inputs[0]], head[0].astype(np.float64), head[1].astype(np.float64))
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return lse - logits[np.arange(len(labels)), labels]


def fp32_fisher_by_finite_differences(model, head, x, labels, eps=1e-6):
    """Δ_c = 1/(2N) sum_n s_nc^2 with s_nc = d/de L_n(a_c -> (1 + e) a_c) at e = 0, by central differences."""
    out = {}
    for t in fisher_tensors(model.graph):
        C = model.graph.shapes[t][-1]
        s = np.zeros((x.shape[0], C))
        for c in range(C):
            lp = fp32_per_sample_losses(model, head, x, labels, (t, c), eps)
            lm = fp32_per_sample_losses(model, head, x, labels, (t, c), -eps)
            s[:, c] = (lp - lm) / (2 * eps)
        out[t] = (s ** 2).sum(axis=0) / (2 * x.shape[0])
    return out


def _conv_t(dy, w, stride, pad, in_shape, depthwise=False):
    """dL/dx of a conv (OHWI w) or depthwise conv ((KH, KW, C) w) in float64: scatter dy through every tap."""
    N, H, W, C = in_shape
    kh, kw = (w.shape[0], w.shape[1]) if depthwise else (w.shape[1], w.shape[2])
    OH, OW = dy.shape[1], dy.shape[2]
    xp = np.zeros((N, H + 2 * pad, W + 2 * pad, C))
    for ky in range(kh):
        for kx in range(kw):
            win = (slice(None), slice(ky, ky + stride * (OH - 1) + 1, stride),
                   slice(kx, kx + stride * (OW - 1) + 1, stride))
            xp[win] += dy * w[ky, kx, :] if depthwise else np.einsum("nhwo,oc->nhwc", dy, w[:, ky, kx, :])
    return xp[:, pad:pad + H, pad:pad + W, :]


def int8_fisher_reference(model, head, x, labels):
    """Δ of the int8 pass from a float64 dense backward: int8 forward and 1-bit in-range masks from tests/naive.py,
    a = s_y (y - zp_y), g = dL_n/dy * mask (the STE), real weights w_int * s_w, per-sample loss gradients."""
    g, m = model.graph, model
    t, mask = {g.input_name: x}, {}
    for op in g.ops[:-1]:
        xq, yq = m.quant[op.inputs[0]], m.quant[op.output]
        if op.kind == "mean":
            t[op.output] = naive.global_mean_s8(t[op.inputs[0]], -128, 127)
        elif op.kind == "add":
            (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(xq[0], m.quant[op.inputs[1]][0], yq[0])
            t[op.output], mask[op.name] = naive.add_s8(t[op.inputs[0]], t[op.inputs[1]], xq[1], am, ash,
                                                       m.quant[op.inputs[1]][1], bm, bsh, yq[1], ym, ysh, -128, 127,
                                                       with_mask=True)
        else:
            p = m.params[op.name]
            mult, shift = conv_multipliers(xq[0], p["w_scales"], yq[0])
            lo, hi = activation_range_s8(op.act, *yq)
            args = (t[op.inputs[0]], p["weight"], p["bias"], mult, shift, xq[1], yq[1], lo, hi)
            fn = {"conv2d": naive.conv2d_s8, "depthwise": naive.depthwise_conv_s8, "pointwise": naive.pointwise_conv_s8}
            geo = (op.stride, op.pad) if op.kind != "pointwise" else ()
            t[op.output], mask[op.name] = fn[op.kind](*args, *geo, with_mask=True)
    feat_t = g.ops[-1].inputs[0]
    feat = naive.dequantize_s8(t[feat_t], *m.quant[feat_t]).astype(np.float64)
    W, b = head[0].astype(np.float64), head[1].astype(np.float64)
    logits = feat @ W.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1.0  # dL_n/dlogits of the per-sample loss
    grad = {feat_t: p @ W}
    out = {}
    for op in reversed(g.ops[:-1]):
        dy = grad[op.output]
        if op.kind == "mean":
            H, W_, _ = g.shapes[op.inputs[0]]
            grad[op.inputs[0]] = np.broadcast_to(dy[:, None, None, :] / (H * W_),
                                                 (x.shape[0],) + g.shapes[op.inputs[0]])
            continue
        gm = dy * mask[op.name]
        s, zp = m.quant[op.output]
        a = float(np.float32(s)) * (t[op.output].astype(np.float64) - zp)
        out[op.output] = ((a * gm).sum(axis=(1, 2)) ** 2).sum(axis=0) / (2 * x.shape[0])
        if op.kind == "add":
            for name in op.inputs:
                grad[name] = grad.get(name, 0) + gm
            continue
        if op.inputs[0] == g.input_name:
            continue
        pr = m.params[op.name]
        sw = pr["w_scales"].astype(np.float64)
        if op.kind == "pointwise":
            dx = np.einsum("nhwo,oc->nhwc", gm, pr["weight"] * sw[:, None])
        elif op.kind == "depthwise":
            dx = _conv_t(gm, pr["weight"] * sw, op.stride, op.pad, (x.shape[0],) + g.shapes[op.inputs[0]], True)
        else:
            dx = _conv_t(gm, pr["weight"] * sw[:, None, None, None], op.stride, op.pad,
                         (x.shape[0],) + g.shapes[op.inputs[0]])
        grad[op.inputs[0]] = grad.get(op.inputs[0], 0) + dx
    return out


# ---- the Fisher pass ----------------------------------------------------------------------------------

def test_fp32_fisher_matches_finite_differences_of_the_definition():
    m = tiny_model(seed=3)
    x, y = support("fp32", 3, seed=4)
    head = head_init(m)
    r = fisher_potential(m, x, y, K, head=head, mode="fp32")
    ref = fp32_fisher_by_finite_differences(m, head, x, y)
    assert set(r.tensor_delta) == set(ref)
    for t, want in ref.items():
        # float32 engine vs float64 central differences (eps 1e-6): ~1e-6 relative per op, squared sums
        np.testing.assert_allclose(r.tensor_delta[t], want, rtol=1e-3, atol=1e-6 * max(want.max(), 1e-12), err_msg=t)
    for op in m.graph.convs:
        np.testing.assert_array_equal(r.delta[op.conv_index], r.tensor_delta[op.output])
        assert r.potential[op.conv_index] == pytest.approx(ref[op.output].sum(), rel=1e-3)
    assert r.loss == pytest.approx(fp32_per_sample_losses(m, head, x, y).mean(), rel=1e-5)


def test_int8_fisher_matches_a_dense_float64_ste_backward():
    m = tiny_model(seed=5)
    x, y = support("int8", 3, seed=6)
    head = head_init(m)
    r = fisher_potential(m, x, y, K, head=head, mode="int8")
    ref = int8_fisher_reference(m, head, x, y)
    assert set(r.tensor_delta) == set(ref)
    for t, want in ref.items():
        # same int8 forward and masks (bit-exact); only the float32 backward rounds
        np.testing.assert_allclose(r.tensor_delta[t], want, rtol=1e-4, atol=1e-7 * max(want.max(), 1e-12), err_msg=t)
    assert min(r.potential.values()) > 0


@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_chunked_and_checkpointed_passes_are_bit_identical_to_one_batch(mode):
    """Chunks run in order and every kernel is per-sample, so Δ is bit-identical (not just close); the same for
    any segmentation (recomputation reruns the same kernels on the same inputs)."""
    m = tiny_model(seed=7)
    x, y = support(mode, 5, seed=8)
    head = head_init(m)
    whole = fisher_potential(m, x, y, K, head=head, mode=mode)
    assert whole.chunk == 5 and whole.segments == 1
    g = with_classes(m.graph, K)
    runs = [fisher_potential(m, x, y, K, head=head, mode=mode, chunk=2)]  # 2 + 2 + 1
    for cuts in ([0], [4], [0, 4, 5], [1, 3], checkpoint_candidates(g)):  # [1, 3]: inside the residual block
        runs.append(fisher_potential(m, x, y, K, head=head, mode=mode, chunk=2, cuts=cuts))
        assert runs[-1].segments == len(cuts) + 1
        # a one-op first segment ([0]) only checkpoints its output: nothing to recompute
        assert (runs[-1].recompute_macs > 0) == (cuts != [0])
    for r in runs:
        assert set(r.tensor_delta) == set(whole.tensor_delta)
        for t in whole.tensor_delta:
            np.testing.assert_array_equal(r.tensor_delta[t], whole.tensor_delta[t], err_msg=t)
        assert r.loss == pytest.approx(whole.loss, rel=1e-12)


def test_first_conv_stops_the_backward_and_keeps_the_deltas_above():
    m = tiny_model(seed=9)
    x, y = support("int8", 4, seed=10)
    head = head_init(m)
    whole = fisher_potential(m, x, y, K, head=head)
    part = fisher_potential(m, x, y, K, head=head, first_conv=3)
    assert sorted(part.delta) == [3, 4, 5]
    for t in part.tensor_delta:
        np.testing.assert_array_equal(part.tensor_delta[t], whole.tensor_delta[t])
    assert part.backward_macs < whole.backward_macs


def test_pass_reports_its_own_plan():
    m = tiny_model(seed=11)
    x, y = support("int8", 4, seed=12)
    r = fisher_potential(m, x, y, K, chunk=2, cuts=[4])
    fp = plan_fisher_pass(with_classes(m.graph, K), "int8", 2, 0, [4])
    fp.plan.check()
    assert r.peak_bytes == fp.peak and r.chunk == 2 and r.segments == 2 and r.seconds > 0
    assert len(FisherPass(m, fp).arena) == fp.peak
    # recomputed: every op of the first segment (ops 0..4); per sample, so x 4 samples
    g = fp.graph
    assert r.recompute_macs == 4 * sum(g.op_macs(op) for op in g.ops[:5])
    assert r.forward_macs == 2 * 4 * fp.forward_macs  # the prototype-head forward, then the pass
    # prototype head: one row per class, scale 10 / mean |f| (see prototype_head)
    W, b = r.head
    assert W.shape == (K, g.classifier.cin) and not b.any() and np.all(np.isfinite(W))


# Four stride-1 residual blocks at 12x12: saved activations outweigh the gradients, so checkpointing pays.
DEEP = {"name": "deep", "input": [12, 12, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 1},
        "blocks": [{"expand": 4, "out": 4, "kernel": 3, "stride": 1, "repeat": 4},
                   {"expand": 2, "out": 6, "kernel": 3, "stride": 2}], "classifier": 10}


def test_budget_picks_the_largest_chunk_then_checkpoints_then_refuses():
    g = with_classes(graph_from_spec(DEEP), K)
    peaks = {c: plan_fisher_pass(g, "int8", c).peak for c in (1, 2, 3, 4, 5)}
    assert peaks[1] < peaks[2] < peaks[3] < peaks[4] < peaks[5]
    fp, _ = fit_fisher_pass(g, "int8", 5, peaks[3])
    assert (fp.chunk, fp.segments) == (3, 1)
    fp, _ = fit_fisher_pass(g, "int8", 5, peaks[3], chunk=2)  # chunk is the largest chunk allowed
    assert fp.chunk == 2
    fp, tried = fit_fisher_pass(g, "int8", 5, peaks[1] - 1)
    assert fp.chunk == 1 and fp.segments > 1 and fp.peak <= peaks[1] - 1 and fp.recompute_macs > 0
    assert [o.kind for o in tried] == ["plain", "checkpoint"] and tried[-1].fits
    with pytest.raises(errors.ArenaOverflowError, match=r"needs at least [\d,]+ bytes"):
        fit_fisher_pass(g, "int8", 5, 1000)


def test_a_budget_that_needs_checkpointing_gives_the_same_deltas():
    m = random_model(graph_from_spec(DEEP), seed=15)
    rng = np.random.default_rng(16)
    x, y = rng.integers(-128, 128, (3, 12, 12, 3)).astype(np.int8), rng.integers(0, K, 3)
    head = head_init(m)
    plain = fisher_potential(m, x, y, K, head=head)
    budget = plan_fisher_pass(with_classes(m.graph, K), "int8", 1).peak - 1
    ck = fisher_potential(m, x, y, K, head=head, memory_budget=budget)
    assert ck.peak_bytes <= budget and ck.segments > 1 and ck.recompute_macs > 0 and ck.chunk == 1
    for t in plain.tensor_delta:
        np.testing.assert_array_equal(ck.tensor_delta[t], plain.tensor_delta[t], err_msg=t)


def test_mcunet_full_fisher_pass_cannot_fit_512kb_but_auto_first_conv_does():
    """A batch-1 int8 backward to conv 0 keeps 64x64 fp32 gradients (524,288 bytes for 32 channels alone)."""
    g = with_classes(load_graph("mcunet-5fps"), 5)
    with pytest.raises(errors.ArenaOverflowError, match="needs at least") as e:
        fit_fisher_pass(g, "int8", 25, 512 * KB)
    need = int(str(e.value).split("needs at least ")[1].split(" ")[0].replace(",", ""))
    assert 512 * KB < need < plan_fisher_pass(g, "int8", 1).peak  # checkpointing helps, not enough
    for budget in (256 * KB, 512 * KB):
        fp, tried = fit_fisher_pass(g, "int8", 25, budget, first_conv="auto")
        assert fp.peak <= budget and tried[-1].fits and fp.first_conv > 0
        fp.plan.check()


@pytest.mark.skipif(JIT_DISABLED, reason="pure-Python kernels allocate temporaries; the contract is the jitted one")
@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_pass_allocates_no_numpy_memory(mode):
    m = tiny_model(seed=17)
    x, y = support(mode, 5, seed=18)
    fp = plan_fisher_pass(with_classes(m.graph, K), mode, 2, 0, [4])
    p = FisherPass(m, fp, head=head_init(m))
    y = y.astype(np.int32)
    p.run(x, y)  # binds the calls for chunks of 2 and of 1
    tracemalloc.start()
    p.run(x, y)
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    tracemalloc.stop()
    assert sum(s.size for s in snap.statistics("filename")) == 0


@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_host_kernels_give_the_loop_kernels_bits(mode, monkeypatch):
    """The pass binds the host depthwise / ADD kernels and (int8) the exact GEMM forward where they fit; with them
    refused (every layer on the loop kernels firmware runs) the deltas, potentials and loss are the same bits."""
    import microtrain.kernels.add_host as ah
    import microtrain.kernels.depthwise_host as dh
    import microtrain.tinytrain as tt

    m = tiny_model(seed=19)
    x, y = support(mode, 3, seed=20)
    head = head_init(m)
    fp = plan_fisher_pass(with_classes(m.graph, K), mode, 3, 0)
    fwd, _, back = FisherPass(m, fp, head=head)._bind(3)
    bound = {fn.__name__ for fn, _ in fwd + back}
    assert "depthwise_conv_f32_backward_input_host" in bound
    if mode == "int8":
        assert {"depthwise_conv_s8_host", "add_s8_host", "gemm_pointwise_s8", "gemm_conv2d_s8"} <= bound
        assert not {"pointwise_conv_s8", "conv2d_s8"} & bound
    fast = fisher_potential(m, x, y, K, head=head, mode=mode)
    monkeypatch.setattr(dh, "depthwise_host_fits", lambda *a: False)  # read by bind_depthwise_s8
    monkeypatch.setattr(ah, "add_host_fits", lambda *a: False)  # read by bind_add_s8
    monkeypatch.setattr(tt, "depthwise_f32_host_fits", lambda *a: False)
    monkeypatch.setattr(tt.HostGemm, "forward_s8", lambda *a: None)  # the loop kernels' int8 conv forward
    if mode == "int8":
        fwd, _, _ = FisherPass(m, fp, head=head)._bind(3)
        assert {"pointwise_conv_s8", "conv2d_s8"} <= {fn.__name__ for fn, _ in fwd}
    loop = fisher_potential(m, x, y, K, head=head, mode=mode)
    assert loop.loss == fast.loss and set(loop.tensor_delta) == set(fast.tensor_delta)
    for t in fast.tensor_delta:
        assert fast.tensor_delta[t].tobytes() == loop.tensor_delta[t].tobytes(), t


@pytest.mark.parametrize("bad", ["dtype", "shape", "labels"])
def test_bad_support_set_is_refused(bad):
    m = tiny_model()
    x, y = support("int8", 3)
    if bad == "dtype":
        x = x.astype(np.float32)
    elif bad == "shape":
        x = x[:, :8]
    else:
        y = y + K
    with pytest.raises(errors.InputError):
        fisher_potential(m, x, y, K)


def test_prototype_head_points_at_class_means():
    f = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    W, b = prototype_head(f, [0, 0, 1], 3, scale=10.0)
    r = np.linalg.norm(f, axis=1).mean()
    np.testing.assert_allclose(W, [[10 / r, 0], [0, 10 / r], [0, 0]], rtol=1e-6)
    assert not b.any()


# ---- criterion and selection ----------------------------------------------------------------------------

def test_criterion_is_the_paper_formula():
    P = [2.0, 1.0, 0.5]
    params = [100, 50, 10]
    macs = [1000, 4000, 2000]
    # max params 100, max MACs 4000: s = P / ((p / 100) * (m / 4000))
    want = [2.0 / (1.0 * 0.25), 1.0 / (0.5 * 1.0), 0.5 / (0.1 * 0.5)]
    np.testing.assert_allclose(criterion(P, params, macs), want, rtol=1e-15)
    assert list(np.argsort(-criterion(P, params, macs))) == [2, 0, 1]


def synthetic_fisher(graph, seed=0, n_classes=5):
    rng = np.random.default_rng(seed)
    td = {t: rng.random(graph.shapes[t][-1]) for t in fisher_tensors(graph)}
    delta = {op.conv_index: td[op.output] for op in graph.convs}
    return FisherResult(delta=delta, potential={i: float(d.sum()) for i, d in delta.items()}, tensor_delta=td,
                        model=graph.name, n_classes=n_classes)


def _peak(graph, cfg, mode="int8", batch=1):
    return plan_training_step(with_classes(graph, 5), cfg, TrainOptions(mode=mode, batch=batch))[0].peak


@pytest.mark.parametrize("name,budget_kb", [("mcunet-5fps", 256), ("mcunet-5fps", 512), ("mcunet-5fps", 1024),
                                            ("mbv2-w0.35", 512), ("proxyless-w0.3", 512)])
def test_greedy_selection_respects_the_memory_budget(name, budget_kb):
    g = load_graph(name)
    m = random_model(g, seed=1)
    fisher = synthetic_fisher(g, seed=2)
    sel = select(m, fisher, budget_kb * KB)
    sel.config.validate(with_classes(g, 5))
    assert sel.selected() and sel.peak_bytes == _peak(g, sel.config) <= budget_kb * KB
    assert sel.backward_macs == backward_macs(with_classes(g, 5), sel.config, "engine")
    assert [r.conv_index for r in sel.table] == list(range(len(g.convs)))
    # each selected layer: bias + top-Δ channels, ceil(0.5 C) of them
    for lu in sel.config.layers:
        row = sel.table[lu.conv_index]
        assert row.selected and lu.bias and lu.weight and row.kept == math.ceil(0.5 * row.total)
    # the first (best-s_i) candidate that fits alone is always taken
    best = max(range(len(g.convs)), key=lambda i: sel.table[i].score)
    assert sel.table[best].selected or "skipped" in sel.table[best].note


def test_greedy_selection_respects_the_compute_budget():
    g = load_graph("mcunet-5fps")
    m = random_model(g, seed=1)
    fisher = synthetic_fisher(g, seed=3)
    free = select(m, fisher, 1024 * KB)
    budget = free.backward_macs // 3
    sel = select(m, fisher, 1024 * KB, compute_budget=budget)
    assert 0 < sel.backward_macs <= budget < free.backward_macs
    assert sel.selected() and any("MACs > budget" in r.note for r in sel.table)
    two = select(m, fisher, 1024 * KB, max_layers=2)  # greedy is in s_i order: the first two layers `free` took
    first = sorted(free.selected(), key=lambda i: -free.table[i].score)[:2]
    assert two.selected() == sorted(first)


def test_too_small_budget_names_the_head_only_minimum():
    g = load_graph("mcunet-5fps")
    m = random_model(g, seed=1)
    need = _peak(g, last_layer(with_classes(g, 5)))
    with pytest.raises(errors.ArenaOverflowError, match=f"{need:,}"):
        select(m, synthetic_fisher(g), need - 1)
    sel = select(m, synthetic_fisher(g), need)  # exactly the minimum: the head only
    assert sel.selected() == [] and sel.peak_bytes == need
    with pytest.raises(errors.ConfigError, match="compute budget"):
        select(m, synthetic_fisher(g), 512 * KB, compute_budget=10)


def test_channel_choices():
    g = load_graph("mcunet-5fps")
    m = random_model(g, seed=1)
    fisher = synthetic_fisher(g, seed=4)
    convs = g.convs
    picks = {}
    for ch in ("fisher", "l2", "random"):
        for axis in ("input", "output"):
            sel = select(m, fisher, 512 * KB, channels=ch, axis=axis)
            picks[ch, axis] = {lu.conv_index: lu for lu in sel.config.layers}
    for i, lu in picks["fisher", "input"].items():
        op = convs[i]
        n = math.ceil(0.5 * (op.cout if op.kind == "depthwise" else op.cin))
        src = fisher.delta[i] if op.kind == "depthwise" else fisher.tensor_delta[op.inputs[0]]
        assert lu.keep == tuple(sorted(np.argsort(-src, kind="stable")[:n])), op.name
    for i, lu in picks["fisher", "output"].items():
        op = convs[i]
        assert lu.axis == "input" if op.kind == "depthwise" else lu.axis == "output"
        n = math.ceil(0.5 * op.cout)
        assert lu.keep == tuple(sorted(np.argsort(-fisher.delta[i], kind="stable")[:n]))
    for i, lu in picks["l2", "input"].items():
        assert lu.keep == select_channels(m, i, len(lu.keep), "input", "magnitude+")
    again = select(m, fisher, 512 * KB, channels="random", seed=0).config
    other = select(m, fisher, 512 * KB, channels="random", seed=1).config
    assert again == select(m, fisher, 512 * KB, channels="random", seed=0).config
    assert again != other and [lu.conv_index for lu in again.layers] == [lu.conv_index for lu in other.layers]


def test_first_conv_input_axis_falls_back_to_its_output_channels():
    g = graph_from_spec(TINY)
    m = random_model(g, seed=1)
    fisher = synthetic_fisher(g, seed=5, n_classes=K)
    sel = select(m, fisher, 10 ** 7, n_classes=K)  # everything fits
    lu0 = sel.config.updated(0)
    assert lu0.axis == "output" and lu0.keep == tuple(sorted(np.argsort(-fisher.delta[0], kind="stable")[:2]))
    assert "output axis" in sel.table[0].note


@pytest.mark.parametrize("mode", ["int8", "fp32"])
def test_selected_config_trains(mode):
    m = tiny_model(seed=13)
    x, y = support(mode, 6, seed=14)
    fisher = fisher_potential(m, x, y, K, mode=mode)
    g = with_classes(m.graph, K)
    budget = _peak_k(g, mode, 2)
    sel = select(m, fisher, budget, mode=mode, batch=2)
    assert sel.selected() and sel.peak_bytes <= budget
    assert SparseConfig.from_yaml(sel.to_yaml(), g) == sel.config
    step = TrainStep(m, sel.config, K, TrainOptions(mode=mode, batch=2, lr=0.01), head=fisher.head)
    assert step.plan.peak == sel.peak_bytes
    loss = step.run(x[:2], y[:2])
    assert np.isfinite(loss)


def _peak_k(g, mode, batch):
    """A budget between the head-only plan and FullTrain's on the tiny net."""
    from microtrain.sparse import full_train
    lo = plan_training_step(g, last_layer(g), TrainOptions(mode=mode, batch=batch))[0].peak
    hi = plan_training_step(g, full_train(g), TrainOptions(mode=mode, batch=batch))[0].peak
    return (lo + hi) // 2
