"""One training step (forward, loss, partial backward, SGD update) of the three reference models with random
int8 weights, 10-way head, per sparse config and mode, in microtrain's planned arena; the peer is PyTorch's
eager autograd on the same fp32 network (optional: torch is not a dependency; its cases skip without it).

The PyTorch network is checked against microtrain's fp32 forward before it is timed. Sparse configs in
PyTorch: only the selected layers' weights/biases require grad (autograd then also stops at the earliest
one, as microtrain's partial backward does); a partial-channel weight computes the *full* weight gradient
and masks it to the kept channels before the SGD step, so the update is the same but PyTorch spends the
MACs and bytes of the full gradient (microtrain computes only the kept slice). Not equivalent: PyTorch
keeps every activation autograd needs (no 1-bit masks, no planned arena) and allocates per step.

    python bench/bench_train.py mcunet-5fps full fp32 [batch]   # per-kernel profile of one step (README)
"""

import math
import os
import sys
import time

import microtrain  # noqa: F401  (before NumPy when run as a script: microtrain.blas_env, README "Threads")
import numpy as np
import pytest

from microtrain.graph import load_graph
from microtrain.model import random_model
from microtrain.reference_models import NAMES
from microtrain.sparse import backward_macs, load_config
from microtrain.train import TrainStep, dequantized_weights
from microtrain.train_plan import TrainOptions

K = 10  # classes of the trained head
LR = 0.01
CONFIGS = {name: ("full", "last", "bias", "49kb") + (("100kb",) if name == "mcunet-5fps" else ()) for name in NAMES}
ROUND_BUDGET_S = 1.0  # timed rounds per case ~ this many seconds / one step, within [MIN_ROUNDS, MAX_ROUNDS]
MIN_ROUNDS, MAX_ROUNDS = 2, 50


def _cases(batch_cases):
    """pytest params (model, config, mode, impl): every microtrain case first, then the torch peers (fp32
    only), so torch's thread pool is not yet started while microtrain is timed."""
    mt = [(n, c, m, "microtrain") for n, c, m in batch_cases]
    pt = [(n, c, m, "torch") for n, c, m in batch_cases if m == "fp32"]
    return [pytest.param(*p, id="-".join(p)) for p in mt + pt]


B1 = [(n, c, m) for n in NAMES for c in CONFIGS[n] for m in ("int8", "fp32")]
B25 = [(n, c, m) for n in NAMES for c, m in (("full", "fp32"), ("49kb", "int8"), ("49kb", "fp32"))]

_MODELS = {}


def _model(name):
    if name not in _MODELS:
        _MODELS[name] = random_model(load_graph(name), seed=1)
    return _MODELS[name]


def _inputs(mode, batch, c_in):
    """Input (N, 128, 128, 3), labels (N,), head (W (K, C), b (K,)): the same for both implementations."""
    rng = np.random.default_rng(0)
    if mode == "int8":
        x = rng.integers(-128, 128, (batch, 128, 128, 3)).astype(np.int8)
    else:
        x = rng.uniform(-1, 1, (batch, 128, 128, 3)).astype(np.float32)
    labels = rng.integers(0, K, batch)
    head = (rng.normal(0, 0.05, (K, c_in)).astype(np.float32), rng.normal(0, 0.05, K).astype(np.float32))
    return x, labels, head


def _step(name, config, mode, batch):
    model = _model(name)
    cfg = load_config(config, model)
    x, labels, head = _inputs(mode, batch, model.graph.classifier.cin)
    step = TrainStep(model, cfg, K, TrainOptions(mode=mode, lr=LR, batch=batch, optimizer="sgd"), head=head)
    return step, x, labels, head


def _macs(step):
    g, b = step.graph, step.opts.batch
    fwd = (g.conv_macs() + g.op_macs(g.classifier)) * b
    bwd = backward_macs(g, step.cfg, convention="engine", batch=b)
    return dict(forward_macs=fwd, backward_macs=bwd, macs=fwd + bwd)


def _run_timed(benchmark, fn):
    """Two warm-up steps outside the timer (compile, first-touch), the loss asserted finite, then a few rounds
    sized to ~ROUND_BUDGET_S. With --benchmark-disable (CI smoke test) the single checked call is the case."""
    if benchmark.disabled:
        loss = benchmark.pedantic(fn, rounds=1, iterations=1)
        assert math.isfinite(loss), loss
        return
    fn()
    t0 = time.perf_counter()
    loss = fn()
    dt = time.perf_counter() - t0
    assert math.isfinite(loss), loss  # never time a diverged step
    rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, ROUND_BUDGET_S // max(dt, 1e-6))))
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


def _bench(benchmark, group, name, config, mode, impl, batch):
    benchmark.group = group
    torch = _import_torch(not benchmark.disabled) if impl == "torch" else None  # skips before any setup
    step, x, labels, head = _step(name, config, mode, batch)
    benchmark.extra_info.update(_macs(step))
    if impl == "microtrain":
        benchmark.extra_info.update(peak_bytes=step.plan.peak, flash_bytes=step.flash_bytes())  # the arena, flash
        _run_timed(benchmark, lambda: step.run(x, labels))
        return
    net, params, masks = torch_net(torch, step.model, step.graph, step.cfg, head)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # NHWC memory seen as NCHW: channels-last strides
    with torch.no_grad():
        got = net(xt).numpy()
    expect = step.forward_logits(x)  # same network: fp32 logits agree to float32 rounding
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())
    _run_timed(benchmark, torch_step(torch, net, params, masks, xt, torch.from_numpy(labels)))


@pytest.mark.parametrize("name,config,mode,impl", _cases(B1))
def test_train_step(benchmark, name, config, mode, impl):
    _bench(benchmark, "train_step", name, config, mode, impl, batch=1)


@pytest.mark.parametrize("name,config,mode,impl", _cases(B25))
def test_train_step_b25(benchmark, name, config, mode, impl):
    _bench(benchmark, "train_step_b25", name, config, mode, impl, batch=25)


# ---- the PyTorch peer ------------------------------------------------------------------------------

def threads():
    """The thread count of this run: Numba's (bench/conftest.py sets it), given to every peer alike."""
    return int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))


def _import_torch(timed):
    """torch with Numba's thread count, or a skip. timed: the case will be timed (not --benchmark-disable)."""
    if timed and os.environ.get("OMP_WAIT_POLICY", "").lower() == "passive":
        # microtrain.config set it for Numba's OpenMP pool; PyTorch's OpenMP would read it too and run slower
        # than its default (MCUNet b1 forward 3.7 -> 5.7-11 ms), so this run cannot time PyTorch fairly
        pytest.skip("PyTorch peer: OMP_WAIT_POLICY=passive in this process would slow PyTorch; time it in its own run "
                    "with NUMBA_THREADING_LAYER=workqueue (bench/README.md)")
    try:
        import torch
    except ImportError:
        pytest.skip("PyTorch peer: torch is not installed (optional, not a dependency; pip install torch)")
    torch.set_num_threads(threads())  # same threads as Numba
    return torch


def torch_net(torch, model, graph, cfg, head):
    """The network of microtrain's fp32 mode in PyTorch: the same dequantized weights (our layouts converted:
    conv2d OHWI -> OIHW, depthwise (KH, KW, C) -> (C, 1, KH, KW) with groups=C, pointwise (Co, Ci) ->
    (Co, Ci, 1, 1)), symmetric k//2 padding, ReLU6 where op.act says so, residual adds, global mean, fp32
    linear head (W, b). Channels-last memory. Returns (net, trainable params, [(weight, grad mask)])."""
    nn = torch.nn
    F = torch.nn.functional
    convs = {}
    for op in graph.convs:
        w, b = dequantized_weights(model, op)
        if op.kind == "conv2d":
            w, groups = w.transpose(0, 3, 1, 2), 1
        elif op.kind == "depthwise":
            w, groups = w.transpose(2, 0, 1)[:, None], op.cout
        else:
            w, groups = w[:, :, None, None], 1
        m = nn.Conv2d(op.cin, op.cout, op.kernel, op.stride, op.pad, groups=groups)
        m.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        m.bias.data.copy_(torch.from_numpy(b))
        convs[op.name] = m
    fc = nn.Linear(head[0].shape[1], head[0].shape[0])  # (K, C): the trained head, or a classifier
    fc.weight.data.copy_(torch.from_numpy(head[0]))
    fc.bias.data.copy_(torch.from_numpy(head[1]))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(convs.values())
            self.fc = fc

        def forward(self, x):
            t = {graph.input_name: x}
            for op in graph.ops:
                a = t[op.inputs[0]]
                if op.kind == "add":
                    y = a + t[op.inputs[1]]
                elif op.kind == "mean":
                    y = a.mean(dim=(2, 3))
                elif op.kind == "fc":
                    y = self.fc(a)
                else:
                    y = convs[op.name](a)
                    y = F.relu6(y) if op.act == "relu6" else (F.relu(y) if op.act == "relu" else y)
                t[op.output] = y
            return t[graph.output]

    net = Net().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    params, masks = list(net.fc.parameters()), []
    for lu in cfg.layers:
        op = graph.convs[lu.conv_index]
        m = convs[op.name]
        if lu.bias:
            params.append(m.bias)
        if lu.weight:
            params.append(m.weight)
            if lu.keep is not None:  # OIHW: input channels are axis 1, output (and depthwise) axis 0
                mask = torch.zeros_like(m.weight)
                axis = 0 if (lu.axis == "output" or op.kind == "depthwise") else 1
                mask.index_fill_(axis, torch.tensor(lu.keep), 1.0)
                masks.append((m.weight, mask))
    for p in params:
        p.requires_grad_(True)
    return net, params, masks


def torch_step(torch, net, params, masks, x, labels):
    """One SGD step (the same lr, no momentum) as a closure returning the loss."""
    opt = torch.optim.SGD(params, lr=LR)
    F = torch.nn.functional

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), labels)
        loss.backward()
        for w, mask in masks:
            w.grad.mul_(mask)
        opt.step()
        return loss.item()

    return step


# ---- per-kernel profile of one step ----------------------------------------------------------------

class _LabelledStep(TrainStep):
    """A TrainStep that remembers which op bound each forward/backward/update entry (profile labels only)."""

    def _bind_forward(self, op):
        self._label(op, super()._bind_forward)

    def _bind_backward(self, op):
        self._label(op, super()._bind_backward)

    def _label(self, op, bind):
        labels = self.__dict__.setdefault("op_of", {})
        before = {id(e) for e in self._forward + self._backward + self._updates}
        bind(op)
        for e in self._forward + self._backward + self._updates:
            if id(e) not in before:
                labels[id(e)] = op.name


def profile(name, config, mode, batch=1, repeats=5):
    """Seconds per kernel (summed over the ops it runs) and per (kernel, op) of one step, each bound entry
    timed alone, in step order: the calls of an unsplit TrainStep.run (split=1), minus its finiteness checks. (An
    int8 step of a batch runs split by default: the same kernels per group of images, microtrain/train.py.)"""
    from collections import defaultdict

    from microtrain.kernels.loss import softmax_cross_entropy_f32

    model = _model(name)
    x, labels, head = _inputs(mode, batch, model.graph.classifier.cin)
    step = _LabelledStep(model, load_config(config, model), K, TrainOptions(mode=mode, lr=LR, batch=batch),
                         head=head, split=1)
    step.run(x, labels)
    step.run(x, labels)
    totals, per_op = defaultdict(float), defaultdict(float)

    def timed(kernel, entry, call):
        t0 = time.perf_counter()
        call()
        dt = (time.perf_counter() - t0) / repeats
        totals[kernel] += dt
        per_op[(kernel, step.op_of.get(id(entry), "loss"))] += dt

    for _ in range(repeats):
        step.v(f"act:{step.graph.input_name}")[...] = x  # as TrainStep.run: both arena buffers are reused later
        step.v("labels")[...] = labels
        for e in step._forward:
            timed(e[0].__name__, e, lambda: e[0](*e[1]))
        timed("softmax_cross_entropy_f32", None, lambda: softmax_cross_entropy_f32(*step._loss_args))
        for e in step._backward + step._updates:
            if isinstance(e[0], str):  # an update: (tag, kernel, w, dw, keep_out, keep_in, coef, op name)
                timed(e[1].__name__, e, lambda: step._apply(e))
            else:
                timed(e[0].__name__, e, lambda: e[0](*e[1]))
    return dict(totals), dict(per_op)


if __name__ == "__main__":
    name, config, mode, batch = (sys.argv[1:5] + ["mcunet-5fps", "full", "fp32", "1"][len(sys.argv[1:5]):])
    totals, per_op = profile(name, config, mode, int(batch))
    step_s = sum(totals.values())
    print(f"{name} / {config} / {mode}, batch {batch}, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', '-')}: "
          f"{step_s * 1e3:.1f} ms per step (sum of kernels)")
    print("| kernel | ms | share | slowest op |")
    print("|---|---|---|---|")
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:8]:
        worst = max(((o, t) for (kk, o), t in per_op.items() if kk == k), key=lambda ot: ot[1])
        print(f"| {k} | {v * 1e3:.2f} | {100 * v / step_s:.0f}% | {worst[0]} ({worst[1] * 1e3:.2f} ms) |")
