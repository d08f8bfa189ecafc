"""TinyTrain's task-adaptive sparse update (Kwon et al., ICML 2024; DESIGN.md §5): the Fisher potential of
every conv from the support set, run as its own planned pass that fits a memory budget, then the layer
criterion s_i and a greedy layer/channel selection checked against the real training plan.

Fisher pass (paper §1.1, BlockSwap's formula): Δ_o = 1/(2N) Σ_n (Σ_d a_nd g_nd)², P_i = Σ_o Δ_o. It is not a
training step (nothing is updated, no weight gradient is formed), so it has its own plan: forward, per-sample
loss, backward of input gradients only, with each conv's output and its clamp mask kept for the Σ_d a·g
reduction. To fit a budget it (1) processes the support set in chunks (Δ is a sum over samples, so chunking
is exact), (2) keeps only segment-boundary activations and recomputes each segment's forward when the
backward reaches it (checkpointing), (3) optionally stops the backward at a later conv (`first_conv`), so
layers below it get no Δ and cannot be selected.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from microtrain.arena import Arena, read_only
from microtrain.errors import ArenaOverflowError, ConfigError, InputError
from microtrain.graph import CONV_KINDS, with_classes
from microtrain.kernels.add import add_f32
from microtrain.kernels.clamp_backward import clamp_f32_backward
from microtrain.kernels.conv2d import conv2d_f32, conv2d_s8
from microtrain.kernels.conv2d_backward import conv2d_f32_backward_input
from microtrain.kernels.depthwise import depthwise_conv_f32, depthwise_conv_s8
from microtrain.kernels.depthwise_backward import depthwise_conv_f32_backward_input
from microtrain.kernels.depthwise_host import depthwise_conv_f32_backward_input_host, depthwise_f32_host_fits
from microtrain.kernels.elementwise_backward import (accumulate_f32, mask_unpack_backward_f32, scale_channels_f32,
                                                     scale_f32)
from microtrain.kernels.fisher import channel_fisher_f32
from microtrain.kernels.fully_connected import fully_connected_f32
from microtrain.kernels.fully_connected_backward import fully_connected_f32_backward_input
from microtrain.kernels.loss import softmax_cross_entropy_f32
from microtrain.kernels.mask import NO_MASK
from microtrain.kernels.pointwise import pointwise_conv_f32, pointwise_conv_s8
from microtrain.kernels.pointwise_backward import pointwise_conv_f32_backward_input
from microtrain.kernels.pool import global_mean_f32, global_mean_s8
from microtrain.kernels.pool_backward import global_mean_f32_backward
from microtrain.kernels.quantize import dequantize_s8
from microtrain.kernels.requant import activation_range_s8, add_multipliers, conv_multipliers
from microtrain.planner import PlanBuilder
from microtrain.sparse import LayerUpdate, SparseConfig, axis_channels, backward_macs, select_channels
from microtrain.train import dequantized_weights
from microtrain.train_gemm import HostGemm
from microtrain.train_plan import MODES, TrainOptions, has_clamp, mask_shape, plan_training_step

F32 = np.float32
CHANNELS = ("fisher", "l2", "random")

ACTIVATION = (
    "a = the conv's (or residual add's) output tensor before its activation/clamp, g = dL_n/da for the per-sample "
    "loss L_n. The engine keeps only the clamped output y (int8 mode: dequantized, s_y (y - zp_y)) and the clamp's "
    "mask; the backward gives g = mask * dL_n/dy, the gradient w.r.t. the pre-clamp value. Where the mask is 1 the "
    "clamp did not bind, so y equals the pre-clamp value; where it is 0, g = 0. Hence sum_d y_d g_d equals "
    "sum_d z_d g_d for the pre-activation output z exactly, without saving z.")


# ---------------------------------------------------------------------------------------------
# The plan of the Fisher pass
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FisherPlan:
    """Every buffer of one Fisher-pass chunk, and the order of its kernel calls.

    cuts: op indices j after which a segment ends (empty: no checkpointing); recompute: op indices whose
    forward runs again when the backward reaches their segment. events: ("fwd", k), ("loss",), ("re", k),
    ("bwd", k) in run order; scope = position. specs: buffer name -> (layout, per-sample shape, dtype), layout
    "batch" (N leading), "mask" (row-aligned 1-bit mask of an (N, H, W, C) tensor) or "fixed".
    MACs are per sample.
    """

    plan: object
    graph: object
    mode: str
    chunk: int
    first_conv: int
    cuts: tuple
    recompute: frozenset
    events: tuple
    specs: dict
    fisher_tensors: tuple
    forward_macs: int
    recompute_macs: int
    backward_macs: int
    fisher_macs: int

    @property
    def peak(self):
        return self.plan.peak

    @property
    def segments(self):
        return len(self.cuts) + 1


def _nbytes(layout, shape, dtype, n):
    if layout == "mask":
        r, c = mask_shape(n, *shape)
        return r * c
    lead = (n,) if layout == "batch" else ()
    return int(np.prod(lead + tuple(shape), dtype=np.int64)) * np.dtype(dtype).itemsize


def _topology(graph):
    ops = graph.ops
    index = {op.name: k for k, op in enumerate(ops)}
    prod = {graph.input_name: -1}
    readers = {graph.input_name: []}
    for k, op in enumerate(ops):
        prod[op.output] = k
        readers.setdefault(op.output, [])
        for t in op.inputs:
            readers[t].append(k)
    return index, prod, readers


def plan_fisher_pass(graph, mode="int8", chunk=1, first_conv=0, cuts=(), check=True):
    """The FisherPlan of one chunk of `chunk` samples on `graph` (with its n-way head). Planning only.

    first_conv: the backward stops at this conv (Δ for convs >= first_conv and the residual adds after it).
    cuts: segment ends (op indices); the last segment (containing pool and head) is never recomputed.
    """
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ConfigError(f"chunk {chunk!r} must be a positive integer")
    ops, convs, head = graph.ops, graph.convs, graph.classifier
    if not 0 <= first_conv < len(convs):
        raise ConfigError(f"first_conv {first_conv} does not exist: {graph.name} has convs 0..{len(convs) - 1}")
    index, prod, readers = _topology(graph)
    n_ops = len(ops)
    stop = index[convs[first_conv].name]
    pool_k = prod[head.inputs[0]]
    cuts = tuple(sorted({int(j) for j in cuts}))
    for j in cuts:
        if not 0 <= j < pool_k - 1:
            raise ConfigError(f"cut after op {j}: cuts must lie in 0..{pool_k - 2} (pool and head stay in the last "
                              f"segment)")
    seg = [sum(1 for j in cuts if j < k) for k in range(n_ops)]
    last_seg = len(cuts)
    seg_ops = [[k for k in range(n_ops) if seg[k] == s] for s in range(last_seg + 1)]
    needs_grad = {t: p >= stop for t, p in prod.items()}
    fisher_t = [op.output for k, op in enumerate(ops) if k >= stop and (op.kind in CONV_KINDS or op.kind == "add")]
    fisher_set = set(fisher_t)

    # recompute: ops of a non-last segment that reaches the backward, whose output stays inside the segment
    # and is needed there (by its own backward, or as the input of another recomputed op)
    def crosses(t):
        p = prod[t]
        return any(seg[k] > seg[p] for k in readers[t])

    recompute = set()
    for s in range(last_seg):
        if max(seg_ops[s]) < stop:
            continue
        for k in reversed(seg_ops[s]):
            t = ops[k].output
            if crosses(t):
                continue
            if k >= stop or any(r in recompute for r in readers[t]):
                recompute.add(k)

    events = [("fwd", k) for k in range(n_ops)] + [("loss",)]
    for s in range(last_seg, -1, -1):
        events += [("re", k) for k in seg_ops[s] if k in recompute]
        events += [("bwd", k) for k in reversed(seg_ops[s]) if k >= stop]
    scope = {e: i + 1 for i, e in enumerate(events)}  # scope 0: the inputs are written
    fwd = lambda k: scope[("fwd", k)]
    bwd = lambda k: scope[("bwd", k)]

    pb, specs = PlanBuilder(), {}
    act_dtype = np.int8 if mode == "int8" else F32

    def req(name, layout, shape, dtype, first, last, category, region="head", alias_of=None):
        specs[name] = (layout, tuple(int(d) for d in shape), np.dtype(dtype))
        pb.request(name, _nbytes(layout, shape, dtype, chunk), first, last, category, region=region, alias_of=alias_of)

    # ---- activations: forward instance act:t, and re:t for recomputed ops
    for t, p in prod.items():
        if p >= 0 and ops[p] is head:
            continue
        fwd_last = max([fwd(k) for k in readers[t]], default=fwd(p) if p >= 0 else 0)
        re_reads = [scope[("re", k)] for k in readers[t] if k in recompute]
        bwd_read = [bwd(p)] if t in fisher_set else []
        first = fwd(p) if p >= 0 else 0
        shape = graph.shapes[t]
        if p in recompute:
            req(f"act:{t}", "batch", shape, act_dtype, first, fwd_last, "activation")
            req(f"re:{t}", "batch", shape, act_dtype, scope[("re", p)], max(re_reads + bwd_read + [scope[("re", p)]]),
                "recomputed")
        else:
            last = max([fwd_last] + re_reads + bwd_read)
            cat = ("input" if p < 0 else "checkpoint" if re_reads and crosses(t) else
                   "saved" if last > scope[("loss",)] else "activation")
            req(f"act:{t}", "batch", shape, act_dtype, first, last, cat)
    req("labels", "batch", (), np.int32, 0, scope[("loss",)], "input")
    # ---- int8 masks of the clamps the backward passes through
    if mode == "int8":
        for k, op in enumerate(ops):
            if k >= stop and op is not head and has_clamp(op, mode):
                made = scope[("re", k)] if k in recompute else fwd(k)
                req(f"mask:{op.name}", "mask", graph.shapes[op.output], np.uint8, made, bwd(k), "saved")
    # ---- head (fp32, frozen here): features, logits, per-sample loss gradient
    C, K = head.cin, head.cout
    hk = index[head.name]
    if mode == "int8":
        req("head:feat", "batch", (C,), F32, fwd(hk), fwd(hk), "activation")
    req("head:logits", "batch", (K,), F32, fwd(hk), scope[("loss",)], "activation")
    req("grad:logits", "batch", (K,), F32, scope[("loss",)], bwd(hk), "act_grad")
    # ---- activation gradients (float32, real units), as in the training step (train_plan)
    for e in events:
        if e[0] != "bwd":
            continue
        k = e[1]
        op = ops[k]
        b = bwd(k)
        if op is head:
            feat = op.inputs[0]
            req(f"grad:{feat}", "batch", (C,), F32, b, bwd(prod[feat]), "act_grad")
            continue
        if op.output in fisher_set:
            req(f"fisher:s:{op.output}", "fixed", (graph.shapes[op.output][-1],), F32, b, b, "scratch")
        if op.kind == "add":
            sc, br = op.inputs
            if needs_grad[br]:
                req(f"grad:{br}", "batch", graph.shapes[br], F32, b, bwd(prod[br]), "act_grad",
                    alias_of=f"grad:{op.output}")
            if needs_grad[sc]:
                req(f"grad:{sc}", "batch", graph.shapes[sc], F32, b, bwd(prod[sc]), "act_grad")
            continue
        x = op.inputs[0]
        if not needs_grad[x]:
            continue
        if f"grad:{x}" in specs:  # the residual shortcut's gradient, started by the add: accumulate via a temp
            req(f"tmp:{op.name}", "batch", graph.shapes[x], F32, b, b, "scratch")
        else:
            req(f"grad:{x}", "batch", graph.shapes[x], F32, b, bwd(prod[x]), "act_grad")
    # ---- tail: the Δ accumulators and the fp32 head, for the whole pass
    end = scope[events[-1]]
    for t in fisher_t:
        req(f"fisher:{t}", "fixed", (graph.shapes[t][-1],), F32, 0, end, "fisher", region="tail")
    req("head:w", "fixed", (K, C), F32, 0, end, "head", region="tail")
    req("head:b", "fixed", (K,), F32, 0, end, "head", region="tail")
    plan = pb.build(check=check)

    fwd_macs = graph.conv_macs() + C * K
    re_macs = sum(graph.op_macs(ops[k]) for k in recompute)
    bwd_macs = C * K + sum(graph.op_macs(op) for k, op in enumerate(ops)
                           if op.kind in CONV_KINDS and k >= stop and needs_grad[op.inputs[0]])
    fisher_macs = sum(graph.numel(t) for t in fisher_t)
    return FisherPlan(plan, graph, mode, int(chunk), int(first_conv), cuts, frozenset(recompute), tuple(events),
                      specs, tuple(fisher_t), fwd_macs, re_macs, bwd_macs, fisher_macs)


# ---------------------------------------------------------------------------------------------
# Fitting the pass into a budget
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PassOption:
    """One way to run the Fisher pass that the budget search planned: what it costs and whether it fits."""

    kind: str  # "plain" | "checkpoint"
    chunk: int
    first_conv: int
    segments: int
    peak_bytes: int
    recompute_macs: int  # extra forward MACs per sample
    fits: bool


def _option(fp, budget):
    return PassOption("checkpoint" if fp.recompute else "plain", fp.chunk, fp.first_conv, fp.segments, fp.peak,
                      fp.recompute_macs, budget is None or fp.peak <= budget)


def checkpoint_candidates(graph, first_conv=0):
    """Cut positions the checkpoint search considers: op j (stop - 1 <= j < pool - 1) after which exactly one
    tensor is live (block boundaries, and inside blocks without a residual), plus the op just before the
    backward's last op (the forward below it never runs again)."""
    index, prod, readers = _topology(graph)
    stop = index[graph.convs[first_conv].name]
    pool_k = prod[graph.classifier.inputs[0]]
    out = set([stop - 1] if stop > 0 else [])
    for j in range(max(stop, 0), pool_k - 1):
        live = [t for t, p in prod.items() if p <= j and any(k > j for k in readers[t])]
        if len(live) == 1:
            out.add(j)
    return sorted(out)


def search_checkpoints(graph, mode, chunk, first_conv, budget, n_thresholds=24):
    """Segmentations of the pass by a byte threshold: walking the ops from the backward's last op, a segment
    ends at the first candidate cut after its outputs (activations + masks) reach T bytes. T sweeps a
    geometric grid from the smallest output to the sum of all (plus T = 0: cut at every candidate).
    Returns (best, options): best = the fitting plan with the least recompute (ties: lower peak), or, when
    none fits or budget is None, the plan with the lowest peak. A heuristic: the minimum it finds is not
    proven optimal (the segmentations are not searched exhaustively)."""
    index, prod, _ = _topology(graph)
    stop = index[graph.convs[first_conv].name]
    cand = checkpoint_candidates(graph, first_conv)
    cset = set(cand)
    ops = graph.ops
    pool_k = prod[graph.classifier.inputs[0]]
    item = 1 if mode == "int8" else 4
    size = {k: graph.numel(ops[k].output) * chunk * item + (graph.numel(ops[k].output) * chunk + 7) // 8
            for k in range(stop, pool_k)}
    total = sum(size.values())
    lo = max(min(size.values()), 1)
    grid = [0] + [lo * (total / lo) ** (i / (n_thresholds - 1)) for i in range(n_thresholds)]
    seen, options, best = set(), [], None
    for T in grid:
        cuts = {stop - 1} if stop > 0 else set()
        acc = 0
        for k in range(stop, pool_k - 1):
            acc += size[k]
            if k in cset and acc >= T:
                cuts.add(k)
                acc = 0
        key = tuple(sorted(cuts))
        if key in seen:
            continue
        seen.add(key)
        fp = plan_fisher_pass(graph, mode, chunk, first_conv, key, check=False)
        options.append(fp)
        if best is None or _better(fp, best, budget):
            best = fp
    return best, options


def _better(a, b, budget):
    """Is plan a preferable to plan b? Fitting beats not fitting; among fitting plans the least recomputation
    wins, among the others (or without a budget) the lowest peak."""
    fa = budget is not None and a.peak <= budget
    fb = budget is not None and b.peak <= budget
    if fa != fb:
        return fa
    if fa:
        return (a.recompute_macs, a.peak) < (b.recompute_macs, b.peak)
    return (a.peak, a.recompute_macs) < (b.peak, b.recompute_macs)


def _largest_chunk(graph, mode, cmax, first_conv, budget):
    """Largest chunk in [1, cmax] whose plain plan fits (bisection: the peak grows with the chunk), or None."""
    if plan_fisher_pass(graph, mode, 1, first_conv, check=False).peak > budget:
        return None
    lo, hi = 1, cmax
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if plan_fisher_pass(graph, mode, mid, first_conv, check=False).peak <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _smallest_trainable_conv(graph, mode, budget):
    """Lowest conv whose bias-only update alone (batch 1, the smallest step that uses its gradient) fits the
    budget: convs below it can never be selected, so the pass need not reach them."""
    opts = TrainOptions(mode=mode, batch=1)
    for op in graph.convs:
        cfg = SparseConfig(graph.name, (LayerUpdate(op.conv_index, bias=True, weight=False),), name="probe")
        if plan_training_step(graph, cfg, opts)[0].peak <= budget:
            return op.conv_index
    return None


def fit_fisher_pass(graph, mode="int8", n_samples=1, memory_budget=None, chunk=None, first_conv=0):
    """Choose how to run the pass on `graph` (with its n-way head) for n_samples support samples.

    Without a budget: one plain pass, chunk = `chunk` or all samples. With a budget: (1) the largest plain chunk
    <= `chunk` (default n_samples) that fits; else (2) checkpointing at chunk 1 (search_checkpoints), the
    fitting segmentation with the least recomputation; else ArenaOverflowError giving the smallest peak found.
    first_conv="auto" (with a budget): start at the lowest conv whose bias-only update fits the budget at all,
    and move up while neither (1) nor (2) fits.
    Returns (FisherPlan, [PassOption, ...] of what was tried).
    """
    cmax = n_samples if chunk is None else min(int(chunk), n_samples)
    cmax = max(cmax, 1)
    if memory_budget is None:
        fc = 0 if first_conv == "auto" else first_conv
        fp = plan_fisher_pass(graph, mode, cmax, fc)
        return fp, [_option(fp, None)]
    auto = first_conv == "auto"
    if auto:
        fc = _smallest_trainable_conv(graph, mode, memory_budget)
        if fc is None:
            raise ArenaOverflowError(
                f"a memory budget of {memory_budget:,} bytes cannot train any conv of {graph.name} in {mode} mode "
                f"(even one bias), so no Fisher potential is needed or computable; raise the budget")
        convs = range(fc, len(graph.convs))
    else:
        convs = [first_conv]
    tried, smallest = [], None
    for fc in convs:
        c = _largest_chunk(graph, mode, cmax, fc, memory_budget)
        if c is not None:
            fp = plan_fisher_pass(graph, mode, c, fc)
            tried.append(_option(fp, memory_budget))
            return fp, tried
        plain1 = plan_fisher_pass(graph, mode, 1, fc, check=False)
        tried.append(_option(plain1, memory_budget))
        best, _ = search_checkpoints(graph, mode, 1, fc, memory_budget)
        tried.append(_option(best, memory_budget))
        if best.peak <= memory_budget:
            return plan_fisher_pass(graph, mode, 1, fc, best.cuts), tried
        low = min((plain1, best), key=lambda f: f.peak)
        if smallest is None or low.peak < smallest.peak:
            smallest = low
    what = (f"chunk 1, {smallest.segments} segments" if smallest.recompute else "chunk 1, no checkpointing")
    where = (f"stopping at conv {smallest.first_conv}, the last conv" if auto else f"down to conv {first_conv}")
    raise ArenaOverflowError(
        f"the Fisher pass of {graph.name} ({mode}, backward {where}) needs at least {smallest.peak:,} bytes (the "
        f"smallest plan the search found: {what}) but the budget is {memory_budget:,} bytes; raise the budget"
        + ("" if auto else " or pass first_conv='auto' to compute Δ only for the layers above what fits"))


# ---------------------------------------------------------------------------------------------
# Running the pass
# ---------------------------------------------------------------------------------------------

def cosine_prototypes(features, labels, n_classes, scale=10.0):
    """Cosine prototype head (P>M>F): W[k] = scale · c_k / |c_k|, c_k the mean of class k's features (N, C),
    b = 0. With the engine's cosine head, logits = W (f / |f|) = scale · cos(f, c_k). A class without
    samples, or with a zero mean, gets a zero row. Returns float32 (W (K, C), b (K,))."""
    f = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    W = np.zeros((n_classes, f.shape[1]))
    for k in range(n_classes):
        sel = labels == k
        if sel.any():
            c = f[sel].mean(axis=0)
            n = float(np.linalg.norm(c))
            if n > 0:
                W[k] = scale * c / n
    return W.astype(np.float32), np.zeros(n_classes, np.float32)



def prototype_head(features, labels, n_classes, scale=10.0):
    """Few-shot head from support features (N, C): W[k] = scale * c_k / (|c_k| * r), b = 0, with c_k the mean
    feature of class k and r the mean feature norm. A linear stand-in for P>M>F's cosine prototype classifier
    (logits = scale * cos(f, c_k)), which divides by |f|: a linear head cannot, so the support set's mean |f|
    is used; logits stay O(scale), so the softmax does not saturate (a ProtoNet squared-distance head does
    on support samples, and its gradients then underflow). A class without samples gets a zero row."""
    r = float(np.mean(np.linalg.norm(np.asarray(features, np.float64), axis=1))) or 1.0
    W, b = cosine_prototypes(features, labels, n_classes, scale)
    return (W / np.float32(r)).astype(F32), b


class FisherPass:
    """A FisherPlan bound to one arena of exactly plan.peak bytes, with every kernel call prepared.

    Kernels: the loop kernels the device runs, except where a host kernel gives the same bits faster
    (int8 depthwise and ADD, stride-1 depthwise input gradient: kernels/depthwise_host.py, add_host.py; the int8
    1x1 and standard convs' forward as exact float32 GEMMs, train_gemm.HostGemm, whose float32 operands are
    host buffers outside the arena); the arena, plan and results are the device's either way.

    model: the int8 Model; fp: its FisherPlan; head: (W (K, C), b (K,)) float32 written into the tail.
    Calls for a shorter last chunk are bound on demand (views of the first n samples of each buffer).
    """

    def __init__(self, model, fp, head=None):
        self.model, self.fp, self.graph = model, fp, fp.graph
        self.arena = Arena(fp.plan)
        self.flash = {}
        # int8 convs' forward on the host kernels TrainStep's blas backend binds (exact GEMMs, the host depthwise;
        # same bits as the loop kernels), their float32 operands and constants in host buffers sized for a chunk
        self._gemm = HostGemm(self.graph, fp.chunk) if fp.mode == "int8" else None
        self._calls = {}
        self._index, self._prod, _ = _topology(self.graph)
        if head is not None:
            self.set_head(*head)

    def v(self, name, n=None):
        layout, shape, dtype = self.fp.specs[name]
        n = self.fp.chunk if n is None else n
        if layout == "mask":
            shp = mask_shape(n, *shape)
        elif layout == "batch":
            shp = (n,) + shape
        else:
            shp = shape
        return self.arena.view(name, shp, dtype)

    def set_head(self, W, b):
        W, b = np.asarray(W, F32), np.asarray(b, F32)
        if W.shape != self.fp.specs["head:w"][1] or b.shape != self.fp.specs["head:b"][1]:
            raise InputError(f"head must be W {self.fp.specs['head:w'][1]} and b {self.fp.specs['head:b'][1]}, "
                             f"got {W.shape} and {b.shape}")
        self.v("head:w")[...] = W
        self.v("head:b")[...] = b

    # ---- binding --------------------------------------------------------------------------------
    def _weights(self, op):
        if self.fp.mode == "int8":
            p = self.model.params[op.name]
            return read_only(p["weight"]), read_only(p["bias"])
        if f"w:{op.name}" not in self.flash:
            w, b = dequantized_weights(self.model, op)
            w.setflags(write=False)
            b.setflags(write=False)
            self.flash[f"w:{op.name}"], self.flash[f"b:{op.name}"] = w, b
        return self.flash[f"w:{op.name}"], self.flash[f"b:{op.name}"]

    def _inst(self, t, ctx):
        """Buffer holding tensor t: the forward instance, or in the backward the recomputed one if its op was."""
        return f"re:{t}" if ctx == "back" and self._prod[t] in self.fp.recompute else f"act:{t}"

    def _forward_calls(self, k, ctx, n):
        fp, m, op = self.fp, self.model, self.graph.ops[k]
        int8 = fp.mode == "int8"
        if op is self.graph.classifier:
            feat = op.inputs[0]
            calls = []
            if int8:
                s, zp = m.quant[feat]
                x4 = self.arena.view(f"act:{feat}", (n, 1, 1, op.cin), np.int8)
                f4 = self.arena.view("head:feat", (n, 1, 1, op.cin), F32)
                calls.append((dequantize_s8, (f4, x4, float(np.float32(s)), int(zp))))
                xin = self.v("head:feat", n)
            else:
                xin = self.v(f"act:{feat}", n)
            calls.append((fully_connected_f32, (self.v("head:logits", n), xin, self.v("head:w"), self.v("head:b"))))
            return calls
        out = f"re:{op.output}" if ctx == "re" else f"act:{op.output}"
        y = self.v(out, n)
        src = "back" if ctx == "re" else "fwd"
        xs = [self.v(self._inst(t, src), n) for t in op.inputs]
        made_here = (ctx == "re") == (k in fp.recompute)
        mask = self.v(f"mask:{op.name}", n) if int8 and made_here and f"mask:{op.name}" in fp.specs else NO_MASK
        if op.kind == "mean":
            return [(global_mean_s8, (y, xs[0], -128, 127))] if int8 else [(global_mean_f32, (y, xs[0]))]
        if op.kind == "add":
            if not int8:
                return [(add_f32, (y, xs[0], xs[1]))]
            (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(m.quant[op.inputs[0]][0], m.quant[op.inputs[1]][0],
                                                              m.quant[op.output][0])
            params = (m.quant[op.inputs[0]][1], am, ash, m.quant[op.inputs[1]][1], bm, bsh, m.quant[op.output][1], ym,
                      ysh, -128, 127)
            return [self._gemm.bind_add(y, mask, xs[0], xs[1], params)]  # same bits; int8 mode has self._gemm
        w, b = self._weights(op)
        geo = (op.stride, op.pad) if op.kind in ("conv2d", "depthwise") else ()
        if int8:
            xq, yq = m.quant[op.inputs[0]], m.quant[op.output]
            key = f"mult:{op.name}"
            if key not in self.flash:  # flash constants: read-only (arena.read_only)
                mult, shift = conv_multipliers(xq[0], m.params[op.name]["w_scales"], yq[0])
                self.flash[key], self.flash[f"shift:{op.name}"] = read_only(mult), read_only(shift)
            lo, hi = activation_range_s8(op.act, *yq)
            mult, shift = self.flash[key], self.flash[f"shift:{op.name}"]
            host = self._gemm.forward_s8(op, y, mask, xs[0], w, False, b, mult, shift, xq[1], yq[1], lo, hi)
            if host is not None:  # same y and mask as the loop kernel, bound as TrainStep binds it
                return [host]
            fn = {"conv2d": conv2d_s8, "depthwise": depthwise_conv_s8, "pointwise": pointwise_conv_s8}[op.kind]
            return [(fn, (y, mask, xs[0], w, b, mult, shift, xq[1], yq[1], lo, hi) + geo)]
        lo, hi = _f32_range(op.act)
        fn = {"conv2d": conv2d_f32, "depthwise": depthwise_conv_f32, "pointwise": pointwise_conv_f32}[op.kind]
        return [(fn, (y, xs[0], w, b, lo, hi) + geo)]

    def _backward_calls(self, k, n):
        fp, m, g_, op = self.fp, self.model, self.graph, self.graph.ops[k]
        int8 = fp.mode == "int8"
        stop = self._index[g_.convs[fp.first_conv].name]
        needs = lambda t: self._prod[t] >= stop
        if op is g_.classifier:
            return [(fully_connected_f32_backward_input, (self.v(f"grad:{op.inputs[0]}", n), self.v("grad:logits", n),
                                                          self.v("head:w")))]
        g = self.v(f"grad:{op.output}", n)
        if op.kind == "mean":
            return [(global_mean_f32_backward, (self.v(f"grad:{op.inputs[0]}", n), g))]
        calls = []
        y = self.v(self._inst(op.output, "back"), n)
        if int8:  # every requantized output (conv, add) passed a clamp: its 1-bit mask, in place
            calls.append((mask_unpack_backward_f32, (g, g, self.v(f"mask:{op.name}", n))))
        elif op.act is not None:  # fp32: the saved output itself tells where ReLU6 passed
            lo, hi = _f32_range(op.act)
            calls.append((clamp_f32_backward, (g, g, y, lo, hi)))
        s, zp = m.quant[op.output] if int8 else (1.0, 0)
        calls.append((channel_fisher_f32, (self.v(f"fisher:{op.output}"), self.v(f"fisher:s:{op.output}"), y,
                                           float(zp), float(np.float32(s)), g)))
        if op.kind == "add":
            sc = op.inputs[0]
            if needs(sc):
                calls.append((scale_f32, (self.v(f"grad:{sc}", n), g, 1.0)))  # the branch gradient is g itself
            return calls
        x = op.inputs[0]
        if not needs(x):
            return calls
        w, _ = self._weights(op)
        if int8:  # dx_real = sum dy_real * s_w[c] * w_int: fold s_w into dy (its Fisher term is done)
            key = f"sw:{op.name}"
            if key not in self.flash:
                self.flash[key] = read_only(m.params[op.name]["w_scales"].astype(F32))
            calls.append((scale_channels_f32, (g, self.flash[key])))
        tmp = f"tmp:{op.name}" in fp.specs
        dx = self.v(f"tmp:{op.name}" if tmp else f"grad:{x}", n)
        geo = (op.stride, op.pad) if op.kind in ("conv2d", "depthwise") else ()
        if op.kind == "depthwise" and depthwise_f32_host_fits(op.kernel, op.cout, op.stride) and dx.dtype == F32:
            # same bits, host kernel; bound as TrainStep binds it (dy read-only: one compiled specialisation)
            calls.append((depthwise_conv_f32_backward_input_host, (dx, read_only(g), w, op.pad)))
        else:
            fn = {"conv2d": conv2d_f32_backward_input, "depthwise": depthwise_conv_f32_backward_input,
                  "pointwise": pointwise_conv_f32_backward_input}[op.kind]
            calls.append((fn, (dx, g, w) + geo))
        if tmp:
            calls.append((accumulate_f32, (self.v(f"grad:{x}", n), dx)))
        return calls

    def _bind(self, n):
        """(forward calls, loss views, backward calls) for a chunk of n <= fp.chunk samples."""
        if n in self._calls:
            return self._calls[n]
        fwd, back = [], []
        for e in self.fp.events:
            if e[0] == "fwd":
                fwd += self._forward_calls(e[1], "fwd", n)
            elif e[0] == "re":
                back += self._forward_calls(e[1], "re", n)
            elif e[0] == "bwd":
                back += self._backward_calls(e[1], n)
        dlog, logits, labels = self.v("grad:logits", n), self.v("head:logits", n), self.v("labels", n)
        # one sample at a time: the kernel divides by the rows it is given, so each row is dL_n/dlogits exactly
        loss = [(dlog[i:i + 1], logits[i:i + 1], labels[i:i + 1]) for i in range(n)]
        self._calls[n] = (fwd, loss, back)
        return self._calls[n]

    # ---- running ------------------------------------------------------------------------------
    def _chunks(self, x):
        c = self.fp.chunk
        for i in range(0, x.shape[0], c):
            yield i, min(c, x.shape[0] - i)

    def features(self, x):
        """Pooled features (N, C) float64 of x, real units (forward only, chunk by chunk, in this arena)."""
        feat = self.graph.classifier.inputs[0]
        out = np.zeros((x.shape[0], self.graph.classifier.cin))
        for i, n in self._chunks(x):
            fwd, _, _ = self._bind(n)
            self.v(f"act:{self.graph.input_name}", n)[...] = x[i:i + n]
            for fn, args in fwd:
                fn(*args)
            out[i:i + n] = self.v("head:feat", n) if self.fp.mode == "int8" else self.v(f"act:{feat}", n)
        return out

    def run(self, x, labels):
        """Accumulate Σ_n (Σ_d a g)^2 over the support set; returns the summed per-sample loss."""
        for t in self.fp.fisher_tensors:
            self.v(f"fisher:{t}")[...] = 0
        total = 0.0
        for i, n in self._chunks(x):
            fwd, loss, back = self._bind(n)
            self.v(f"act:{self.graph.input_name}", n)[...] = x[i:i + n]
            self.v("labels", n)[...] = labels[i:i + n]
            for fn, args in fwd:
                fn(*args)
            for args in loss:
                total += softmax_cross_entropy_f32(*args)
            for fn, args in back:
                fn(*args)
        return total


def _f32_range(act):
    return (0.0, 6.0) if act == "relu6" else ((0.0, np.inf) if act == "relu" else (-np.inf, np.inf))


@dataclass
class FisherResult:
    """The Fisher potential of one support set.

    delta: conv index -> Δ (C_out,) float64; potential: conv index -> P_i. Only convs >= first_conv (the
    pass's backward stops there). tensor_delta: tensor name -> Δ for every conv and residual-add output
    reached (the input-axis channel choice reads the Δ of a layer's input tensor). peak_bytes: the pass's
    own plan; seconds: wall time of the pass (forward + backward over all chunks; not planning, binding,
    or the prototype-head forward, which is head_seconds). MACs are totals over the support set:
    forward (the pass, plus the prototype-head forward when it ran), recompute (checkpointing's extra
    forward), backward (input gradients), fisher (the a·g products).
    """

    delta: dict
    potential: dict
    tensor_delta: dict = field(default_factory=dict)
    model: str = ""
    mode: str = "int8"
    n_classes: int = 0
    n_samples: int = 0
    chunk: int = 0
    first_conv: int = 0
    segments: int = 1
    cuts: tuple = ()
    peak_bytes: int = 0
    seconds: float = 0.0
    head_seconds: float = 0.0
    forward_macs: int = 0
    recompute_macs: int = 0
    backward_macs: int = 0
    fisher_macs: int = 0
    loss: float = float("nan")
    head: tuple = None
    options: list = field(default_factory=list)
    activation: str = ACTIVATION

    def summary(self):
        kind = f"checkpointed, {self.segments} segments" if self.recompute_macs else "plain"
        return (f"Fisher pass of {self.model} ({self.mode}): {self.n_samples} samples in chunks of {self.chunk}, "
                f"{kind}, backward down to conv {self.first_conv}; peak {self.peak_bytes:,} bytes; "
                f"{self.seconds:.3f} s; forward {self.forward_macs:,} MACs + recompute {self.recompute_macs:,} + "
                f"backward {self.backward_macs:,} + a*g {self.fisher_macs:,}; mean loss {self.loss:.4f}")


def _check_support(model, x, y, n_classes, mode):
    dt = np.int8 if mode == "int8" else F32
    want = tuple(model.graph.input_shape)
    if not isinstance(x, np.ndarray) or x.dtype != dt or x.ndim != 4 or x.shape[1:] != want or x.shape[0] < 1:
        raise InputError(f"support images must be {np.dtype(dt)} (N, {', '.join(map(str, want))}) in {mode} mode, got "
                         f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
    if mode == "fp32" and not np.all(np.isfinite(x)):
        raise InputError("support images hold NaN or inf")
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"support labels must be {x.shape[0]} integers, got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= n_classes:
        raise InputError(f"support labels must lie in [0, {n_classes - 1}]")
    return y.astype(np.int32)


def fisher_potential(model, support_x, support_y, n_classes, head=None, mode="int8", chunk=None, memory_budget=None,
                     first_conv=0, cuts=None):
    """Δ and P_i of every conv from the support set (DESIGN.md §5), in a planned pass (see the module docstring).

    Which tensors (also in ACTIVATION): a = each conv's output before its activation/clamp (the residual adds'
    outputs get a Δ too, for the input-axis channel choice), g = dL_n/da. The pass saves only what the
    engine has anyway: the conv's clamped output y (int8 mode: dequantized, a = s_y (y - zp_y)) and the clamp's
    1-bit mask (int8: the requantization clamp, tiny-training's STE; fp32: ReLU6, read from y itself). The
    backward yields g = mask * dL_n/dy, the gradient w.r.t. the pre-clamp value. Where the mask is 1 the clamp
    did not bind, so y equals the pre-clamp value; where it is 0, g is 0. So sum_d y_d g_d is exactly
    sum_d z_d dL_n/dz_d for the pre-activation output z, without saving z: the "conv output before the
    activation" that DESIGN.md suggests, i.e. the first-order change of L_n when channel c is scaled. The
    loss is the
    support set's summed cross-entropy L = Σ_n L_n (g_nd = dL_n/da_nd: Δ does not depend on how samples are
    batched; BlockSwap's batch-mean loss would scale Δ by 1/B²).
    head: (W (K, C), b (K,)) float32 head, or None: prototype_head of the support features, computed by one
    forward pass in the same arena (head_seconds, and its MACs in forward_macs).
    chunk: samples per chunk (default: all, or the largest that fits memory_budget). memory_budget: bytes the
    pass's plan must fit (see fit_fisher_pass). first_conv: conv index where the backward stops, or "auto".
    cuts: explicit segment ends (op indices) to force checkpointing (tests, measurements); with cuts the
    budget is only checked.
    """
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    labels = _check_support(model, support_x, support_y, n_classes, mode)
    graph = with_classes(model.graph, n_classes)
    N = support_x.shape[0]
    if cuts is not None:
        fc = 0 if first_conv == "auto" else first_conv
        fp = plan_fisher_pass(graph, mode, chunk or 1, fc, cuts)
        if memory_budget is not None and fp.peak > memory_budget:
            raise ArenaOverflowError(f"the checkpointed Fisher pass needs {fp.peak:,} bytes; budget {memory_budget:,}")
        options = [_option(fp, memory_budget)]
    else:
        fp, options = fit_fisher_pass(graph, mode, N, memory_budget, chunk, first_conv)
    fpass = FisherPass(model, fp)
    head_seconds, fwd_total = 0.0, 0
    if head is None:
        t0 = time.perf_counter()
        head = prototype_head(fpass.features(support_x), labels, n_classes)
        head_seconds = time.perf_counter() - t0
        fwd_total += fp.forward_macs * N
    fpass.set_head(*head)
    t0 = time.perf_counter()
    loss = fpass.run(support_x, labels)
    seconds = time.perf_counter() - t0
    tensor_delta = {t: fpass.v(f"fisher:{t}").astype(np.float64) / (2.0 * N) for t in fp.fisher_tensors}
    delta, potential = {}, {}
    for op in graph.convs:
        if op.output in tensor_delta:
            delta[op.conv_index] = tensor_delta[op.output]
            potential[op.conv_index] = float(tensor_delta[op.output].sum())
    return FisherResult(
        delta=delta, potential=potential, tensor_delta=tensor_delta, model=graph.name, mode=mode, n_classes=n_classes,
        n_samples=N, chunk=fp.chunk, first_conv=fp.first_conv, segments=fp.segments,
        cuts=tuple(graph.ops[j].name for j in fp.cuts), peak_bytes=fp.peak, seconds=seconds, head_seconds=head_seconds,
        forward_macs=fwd_total + fp.forward_macs * N, recompute_macs=fp.recompute_macs * N,
        backward_macs=fp.backward_macs * N, fisher_macs=fp.fisher_macs * N, loss=loss / N,
        head=(np.asarray(head[0], F32).copy(), np.asarray(head[1], F32).copy()), options=options)


# ---------------------------------------------------------------------------------------------
# Criterion and selection
# ---------------------------------------------------------------------------------------------

def criterion(potential, params, macs):
    """s_i = P_i / ((params_i / max params) x (MACs_i / max MACs)), the maxima over the arrays given (all convs).
    float64 arrays in, float64 array out (paper §1.2: the two normalised costs multiply; P is not normalised)."""
    P = np.asarray(potential, np.float64)
    p = np.asarray(params, np.float64)
    m = np.asarray(macs, np.float64)
    return P / ((p / p.max()) * (m / m.max()))


@dataclass(frozen=True)
class LayerScore:
    """One row of the selection table. kept/total count channels along `axis` (when selected)."""

    conv_index: int
    name: str
    kind: str
    potential: float
    params: int
    macs: int
    score: float
    selected: bool
    kept: int = 0
    total: int = 0
    axis: str = ""
    note: str = ""


@dataclass
class Selection:
    """A TinyTrain selection: the SparseConfig TrainStep runs, the per-layer table (every conv, by conv index),
    the real training plan's peak and the engine's backward MACs of that config, and the budgets."""

    config: SparseConfig
    table: list
    peak_bytes: int
    backward_macs: int
    min_peak_bytes: int
    memory_budget: int
    compute_budget: int = None
    channels: str = "fisher"
    channel_ratio: float = 0.5

    def to_yaml(self):
        return self.config.to_yaml()

    def selected(self):
        return [r.conv_index for r in self.table if r.selected]

    def format_table(self):
        lines = [f"{self.config.name} on {self.config.model}: {len(self.selected())} convs selected; peak "
                 f"{self.peak_bytes:,} / {self.memory_budget:,} bytes; backward {self.backward_macs:,} MACs"
                 + (f" / {self.compute_budget:,}" if self.compute_budget is not None else ""),
                 f"  {'conv':>4}  {'op':<22}{'P_i':>11}{'params':>9}{'MACs':>11}{'s_i':>11}  sel  channels"]
        for r in self.table:
            ch = f"{r.axis} {r.kept}/{r.total}" if r.selected else ""
            lines.append(f"  {r.conv_index:>4}  {r.name:<22}{r.potential:>11.3e}{r.params:>9,}{r.macs:>11,}"
                         f"{r.score:>11.3e}  {'yes' if r.selected else '   '}  {ch}{('  ' + r.note) if r.note else ''}")
        return "\n".join(lines)


def _n_keep(ratio, c):
    return max(1, min(c, math.ceil(round(ratio * c, 9))))


def _top(values, k):
    """Indices of the k largest values, ties to the lower index, sorted ascending."""
    order = np.argsort(-np.asarray(values, np.float64), kind="stable")
    return tuple(sorted(int(i) for i in order[:k]))


def _layer_update(model, graph, fisher, op, channels, axis, ratio, seed):
    """(LayerUpdate, note) for selecting conv `op` with the given channel policy.

    fisher channels: depthwise — its own output Δ (input and output channel coincide); axis "output" — its
    own output Δ; axis "input" — the Δ of its input tensor (the previous conv's or residual add's output).
    When that Δ does not exist (conv 0, whose input is the image; or a conv whose input lies below the pass's
    first_conv) the layer falls back to the output axis with its own Δ, and the note says so.
    """
    i = op.conv_index
    ax = "input" if op.kind == "depthwise" else axis
    note = ""
    if channels == "fisher":
        if op.kind == "depthwise" or ax == "output":
            score = fisher.delta[i]
        elif op.inputs[0] in fisher.tensor_delta:
            score = fisher.tensor_delta[op.inputs[0]]
        else:
            ax, score = "output", fisher.delta[i]
            note = "input Δ n/a: output axis"
        c = axis_channels(op, ax)
        keep = _top(score, _n_keep(ratio, c))
    else:
        c = axis_channels(op, ax)
        crit = "magnitude+" if channels == "l2" else "random"
        src = model if channels == "l2" else graph
        keep = select_channels(src, i, _n_keep(ratio, c), ax, crit, rng=np.random.default_rng([seed, i]))
    if len(keep) == c:
        keep = None
    return LayerUpdate(i, bias=True, weight=True, keep=keep, axis=ax), note


def select(model, fisher, memory_budget, compute_budget=None, channel_ratio=0.5, channels="fisher", axis="input",
           n_classes=None, batch=1, mode="int8", seed=0, options=None, max_layers=None):
    """TinyTrain's layer/channel selection under a memory and a compute budget (our rule; the paper leaves it open).

    Layers are ranked by s_i = criterion(P, params, MACs) (params and forward MACs per conv, normalised by the
    max over all convs) descending, ties to the lower conv index. Each is added in turn (bias + weights on
    ceil(channel_ratio x C) channels, see _layer_update) if the real training plan of the config so far
    (plan_training_step(with_classes(graph, n_classes), cfg, TrainOptions(mode, batch=batch)).peak, planning
    only) stays <= memory_budget and the engine's backward MACs <= compute_budget; a layer that would break a
    budget is skipped (its note says which) and the next one is tried. Convs without a Fisher potential (below
    the pass's first_conv) or with P_i = 0 are not candidates. options: a TrainOptions to plan with instead
    (its mode and batch then apply); max_layers: stop after that many layers (k_max). A memory budget below
    the head-only plan raises ArenaOverflowError naming that minimum; a compute budget below the head's
    backward MACs raises ConfigError.
    """
    if channels not in CHANNELS:
        raise ConfigError(f"channels {channels!r}: use one of {', '.join(CHANNELS)}")
    if axis not in ("input", "output"):
        raise ConfigError(f"axis {axis!r}: use 'input' or 'output'")
    if not 0 < channel_ratio <= 1:
        raise ConfigError(f"channel_ratio {channel_ratio!r} must lie in (0, 1]")
    n_classes = n_classes or fisher.n_classes
    if not n_classes:
        raise ConfigError("n_classes is needed (the Fisher result does not record it)")
    opts = options if options is not None else TrainOptions(mode=mode, batch=batch)
    graph = with_classes(model.graph, n_classes)
    if fisher.model and fisher.model != graph.name:
        raise ConfigError(f"the Fisher result is for {fisher.model} but the model is {graph.name}")
    convs = graph.convs
    name = f"tinytrain-{channels}"
    desc = (f"TinyTrain: greedy by s_i under {memory_budget:,} bytes"
            + (f" and {compute_budget:,} backward MACs" if compute_budget is not None else "")
            + f"; {channels} channels, ratio {channel_ratio}, axis {axis}")

    def make(layers):
        cfg = SparseConfig(graph.name, tuple(layers), True, name, desc)
        cfg.validate(graph)
        return cfg

    def cost(cfg):
        return (plan_training_step(graph, cfg, opts)[0].peak,
                backward_macs(graph, cfg, convention="engine", batch=opts.batch))

    min_peak, min_macs = cost(make([]))
    if memory_budget < min_peak:
        raise ArenaOverflowError(f"a memory budget of {memory_budget:,} bytes is below the smallest training plan of "
                                 f"{graph.name} ({opts.mode}, batch {opts.batch}: the head only), {min_peak:,} bytes; "
                                 f"raise the budget to at least {min_peak:,}")
    if compute_budget is not None and compute_budget < min_macs:
        raise ConfigError(f"a compute budget of {compute_budget:,} backward MACs is below the head's own "
                          f"{min_macs:,}; raise it to at least {min_macs:,}")
    P = np.array([fisher.potential.get(op.conv_index, np.nan) for op in convs])
    params = np.array([graph.op_params(op) for op in convs])
    macs = np.array([graph.op_macs(op) for op in convs])
    with np.errstate(invalid="ignore"):
        s = criterion(P, params, macs)
    cand = [i for i in range(len(convs)) if np.isfinite(P[i]) and P[i] > 0]
    order = sorted(cand, key=lambda i: (-s[i], i))
    chosen, notes, kept = [], {}, {}
    peak, bmacs = min_peak, min_macs
    for i in order:
        if max_layers is not None and len(chosen) >= max_layers:
            notes[i] = f"not tried: max_layers={max_layers} reached"
            continue
        lu, note = _layer_update(model, graph, fisher, convs[i], channels, axis, channel_ratio, seed)
        cfg = make(chosen + [lu])
        p, mc = cost(cfg)
        if p > memory_budget:
            notes[i] = f"skipped: peak {p:,} > budget"
        elif compute_budget is not None and mc > compute_budget:
            notes[i] = f"skipped: {mc:,} MACs > budget"
        else:
            chosen.append(lu)
            peak, bmacs = p, mc
            notes[i] = note
            kept[i] = lu
    for i in range(len(convs)):
        if i not in notes:
            notes[i] = "no Fisher potential" if not np.isfinite(P[i]) else ("P = 0" if P[i] == 0 else "")
    table = []
    for i, op in enumerate(convs):
        lu = kept.get(i)
        if lu is not None:
            k, c = ((len(lu.keep) if lu.keep is not None else axis_channels(op, lu.axis)), axis_channels(op, lu.axis))
        else:
            k = c = 0
        table.append(LayerScore(i, op.name, op.kind, float(P[i]), int(params[i]), int(macs[i]), float(s[i]),
                                lu is not None, k, c, lu.axis if lu is not None else "", notes[i]))
    return Selection(make(chosen), table, int(peak), int(bmacs), int(min_peak), int(memory_budget),
                     None if compute_budget is None else int(compute_budget), channels, channel_ratio)
