"""Few-shot adaptation and its evaluation (DESIGN §5–6): every method of TinyTrain's comparison run through the
same engine on the same episodes. `adapt_episode` adapts one model to one episode with one method;
`evaluate` runs methods x episodes (serially, or as dask tasks) and tabulates mean accuracy ± 95% CI, memory,
compute and time.

Per episode (P>M>F recipe, Hu et al. 2022, background/tinytrain-paper.md §2.2; TinyTrain does not publish
its own): a cosine prototype head W[k] = 10 · c_k / |c_k| (c_k the mean pooled feature of class k over the
un-augmented support set), b = 0, on the L2-normalised features (TrainOptions(head="cosine")); then `steps`
steps on augmented support mini-batches; accuracy on the query set before and after.

Our choices where the paper is silent (see `adapt_episode`): the optimizer and learning rate per mode, the
mini-batch, the prototypes fixed at initialisation and then trained as ordinary head weights (P>M>F
recomputes them from the current backbone every step), and memory reported for the batch-1 step a device runs.
"""

import functools
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from microtrain.episodes import augment, mean_ci95, sample_meta_dataset, sample_nway_kshot
from microtrain.errors import ArenaOverflowError, ConfigError, DataError, InputError, MicrotrainError
from microtrain.graph import with_classes
from microtrain.preprocess import quantize_table
from microtrain.sparse import backward_macs, bias_only, full_train, last_layer, load_config
from microtrain.train import TrainStep
from microtrain.tinytrain import cosine_prototypes  # noqa: F401  (re-exported: the few-shot head)
from microtrain.train_plan import MODES, TrainOptions, plan_training_step

METHODS = ("none", "fulltrain", "lastlayer", "biasonly", "sparseupdate", "tinytrain", "tinytrain-l2",
           "tinytrain-random")
TINYTRAIN_CHANNELS = {"tinytrain": "fisher", "tinytrain-l2": "l2", "tinytrain-random": "random"}
SAMPLERS = ("nway", "meta-dataset")

PROTO_SCALE = 10.0  # P>M>F's initial cosine-classifier scale (models/protonet.py: scale_cls = 10)
MAX_BATCH = 25  # support images per fine-tuning step (fewer when the support set is smaller)
DEFAULT_MEMORY_BUDGET = 262_144  # bytes: the 256 KB SRAM of MIT's and TinyTrain's MCU targets
# Our defaults (the paper publishes none), per (mode, optimizer); see adapt_episode for how they were chosen.
# int8: SGD with QAS (tiny-training's on-device optimizer); fp32: Adam (P>M>F). fp32 SGD was not tuned: QAS
# makes an int8 SGD step the fp32 SGD step in real units, so it gets the same lr.
DEFAULT_OPTIMIZER = {"int8": "sgd", "fp32": "adam"}
DEFAULT_LR = {("int8", "sgd"): 0.005, ("fp32", "sgd"): 0.005, ("int8", "adam"): 1e-3, ("fp32", "adam"): 1e-3}
# Learning rates tried per method on probe episodes (tune_lr), per (mode, optimizer): P>M>F picks its lr per
# domain from {1e-4, 1e-3, 1e-2} on a few validation episodes (background/tinytrain-paper.md §2.2); int8 SGD+QAS
# steps in real units like fp32 SGD. On MCUNet + Omniglot probes (batch 5), int8 FullTrain collapsed to chance
# at 0.02 and 0.05 and in one of two probes at 0.005, hence a grid reaching down to 0.001.
LR_GRID = {("int8", "sgd"): (0.001, 0.005, 0.02, 0.05), ("fp32", "sgd"): (0.001, 0.005, 0.02, 0.05),
           ("int8", "adam"): (1e-4, 1e-3, 1e-2), ("fp32", "adam"): (1e-4, 1e-3, 1e-2)}
PROBE_SEED = 1000  # probe episodes for tune_lr: drawn with this seed, never the evaluation's (seed 0 by default)


# ---------------------------------------------------------------------------------------------
# Inputs and the prototype head
# ---------------------------------------------------------------------------------------------

def model_input(images, model, mode="int8"):
    """uint8 (N, H, W, 3) RGB -> the model's input: int8 (N, H, W, 3) quantized with the first layer's
    (x_scale, x_zero) (real = 2u/255 - 1, exact table, see preprocess.py), or float32 real values 2u/255 - 1.
    The images must already have the model's input size (parse the dataset at that size)."""
    x = np.asarray(images)
    want = tuple(model.graph.input_shape)
    if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise InputError(f"episode images must be uint8 (N, {', '.join(map(str, want))}) for {model.name}, got "
                         f"{x.dtype} {x.shape}; load the dataset at the model's input size ({want[0]})")
    if mode == "int8":
        return _input_table(*model.input_quant())[x]
    if mode == "fp32":
        return fp32_input(x)
    raise ConfigError(f"mode {mode!r}: use one of {', '.join(MODES)}")


def fp32_input(images):
    """uint8 images (any shape) -> float32 real values 2u/255 - 1, the models' fp32 input convention."""
    return (np.asarray(images).astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _input_table(scale, zero_point):
    """quantize_table, computed once per input quantization (exact rational arithmetic: ~10 ms a call)."""
    t = quantize_table(scale, zero_point)
    t.setflags(write=False)
    return t


def _chunked(fn, x, batch):
    """fn applied to x in chunks of exactly `batch` rows (the step's fixed batch), the last chunk padded by
    repeating its own images; the padded rows of the result are dropped."""
    out = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        n = xb.shape[0]
        if n < batch:
            xb = np.concatenate([xb, xb[np.arange(batch - n) % n]])
        out.append(fn(xb)[:n])
    return np.concatenate(out)


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


# ---------------------------------------------------------------------------------------------
# Methods -> sparse configs
# ---------------------------------------------------------------------------------------------

def _check_method(method):
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


def static_config(model, graph, method, scheme="49kb"):
    """The SparseConfig of a method that does not look at the data (all but tinytrain*). `graph` is the
    model's graph with the episode's n-way head. sparseupdate: MIT's published scheme `scheme` for the model
    (a short name such as "49kb" resolved to "<model>-49kb", a full name, or a YAML file), channels by
    magnitude+ (static L2 norm) as MIT."""
    if method in ("none", "lastlayer"):
        return last_layer(graph)
    if method == "fulltrain":
        return full_train(graph)
    if method == "biasonly":
        return bias_only(graph)
    if method == "sparseupdate":
        return load_config(scheme, model)
    raise ConfigError(f"method {method!r} chooses its config from the support set (see adapt_episode)")


# ---------------------------------------------------------------------------------------------
# One episode
# ---------------------------------------------------------------------------------------------

@dataclass
class EpisodeResult:
    """One method on one episode.

    shots: support images per class; queries: query images in all. acc_before: the prototype head on the
    query set before any training (= the "none" method's result); acc_after: after fine-tuning.
    peak_bytes: the arena peak of the training plan at batch 1, the step a device runs and the one the memory
    budget constrains (None for "none": nothing is trained); run_peak_bytes: the plan this simulation ran, at
    `batch` images per step. grad_accum_bytes: the fp32 weight/bias gradients a batch-1 device would have to
    keep between samples to reproduce the batch-`batch` mean gradient (not in peak_bytes; 0 at batch 1).
    backward_macs: per sample, engine convention (sparse.backward_macs); a step costs batch x that.
    fisher_peak_bytes / fisher_seconds: the Fisher pass (tinytrain* only, else None). seconds: the whole
    adaptation (features, Fisher pass and selection, training, query evaluation). config: the SparseConfig's
    name; selection: the selection table (tinytrain* only); selected: conv indices trained (weight or bias).
    losses: the training loss of every step (before its update).
    """

    method: str
    ways: int
    shots: tuple
    queries: int
    acc_before: float
    acc_after: float
    peak_bytes: object
    run_peak_bytes: object
    grad_accum_bytes: int
    backward_macs: int
    seconds: float
    config: str
    mode: str
    optimizer: str
    lr: float
    steps: int
    batch: int
    fisher_peak_bytes: object = None
    fisher_seconds: object = None
    selection: object = None
    selected: tuple = ()
    losses: tuple = ()
    episode: int = -1

    def to_dict(self):
        d = asdict(self)
        d["shots"] = [int(s) for s in self.shots]
        d["selected"] = [int(s) for s in self.selected]
        d["losses"] = [float(v) for v in self.losses]
        return d


def _grad_accum_bytes(step):
    """fp32 bytes of the weight and bias gradients of one step (dw:*, db:* buffers of its plan)."""
    return int(sum(int(np.prod(shape)) * dt.itemsize for name, (shape, dt) in step.specs.items()
                   if name.startswith(("dw:", "db:"))))


def _fisher_and_selection(model, xs, ys, feats, n_classes, method, mode, opts1, memory_budget, compute_budget,
                          channel_ratio, axis, seed):
    from microtrain.tinytrain import fisher_potential, prototype_head, select

    if memory_budget is None:
        raise ConfigError(f"{method} selects layers under a memory budget; give one (bytes)")
    # The Fisher pass has a linear head (it is a planned pass of its own): prototype_head is the cosine
    # head's linear stand-in, W / mean |f| (the same prototypes; logits O(10) as with the cosine head).
    head = prototype_head(feats, ys, n_classes, scale=PROTO_SCALE)
    fisher = fisher_potential(model, xs, ys, n_classes, head=head, mode=mode, memory_budget=memory_budget,
                              first_conv="auto")
    sel = select(model, fisher, memory_budget, compute_budget, channel_ratio=channel_ratio,
                 channels=TINYTRAIN_CHANNELS[method], axis=axis, n_classes=n_classes, options=opts1, seed=seed)
    return fisher, sel


def adapt_episode(model, episode, method, *, mode="int8", steps=40, lr=None, batch=None,
                  memory_budget=DEFAULT_MEMORY_BUDGET, compute_budget=None, channel_ratio=0.5, optimizer=None, seed=0,
                  augment_kw=None, progress=None, scheme="49kb", axis="input", backend="blas", return_step=False):
    """Adapt `model` (int8 Model, any classifier) to `episode` (episodes.Episode) with `method`; EpisodeResult
    (with return_step=True: (EpisodeResult, the TrainStep holding the adapted weights and head)).

    1. Support and query images become the model's input (model_input: int8, or fp32 real values).
    2. A TrainStep with the method's SparseConfig and a cosine head runs at `batch` images per step
       (default min(25, support size)). Its forward gives the un-augmented support features, from which
       the cosine prototype head is set (cosine_prototypes, scale 10, b = 0); acc_before is that head on
       the query set. "none" stops here (acc_after = acc_before).
    3. tinytrain, tinytrain-l2, tinytrain-random: the Fisher pass on the un-augmented support set under
       memory_budget (tinytrain.fisher_potential, first_conv="auto": convs whose training cannot fit the
       budget get no potential), then tinytrain.select with "fisher", "l2" or "random" channels (ratio
       channel_ratio, axis `axis`) under memory_budget and compute_budget (backward MACs per sample).
       Both budgets refer to the batch-1 step a device runs (TrainOptions(batch=1) with this run's mode,
       optimizer and head), as do peak_bytes and backward_macs of every method.
    4. `steps` steps: each takes the next `batch` support images of a seeded permutation (a new permutation
       when one is used up), augments them (episodes.augment(**augment_kw); pass flip=dataset.flip_ok:
       characters must not be mirrored; None means augment's defaults with flip=False) and runs
       TrainStep.run. The rng is np.random.default_rng(seed), so every method of an episode sees the
       same mini-batches and augmentations.
    5. acc_after: TrainStep.forward_logits on the query set in chunks of `batch` (the last padded).

    Defaults (our choices; TinyTrain publishes no fine-tuning hyper-parameters): int8 mode SGD with QAS
    (tiny-training's on-device optimizer) at lr 0.005, fp32 mode Adam at lr 1e-3 (P>M>F's optimizer); head and
    backbone share the lr. 40 steps (P>M>F's argparse default). Better: a per-method lr from tune_lr on probe
    episodes (docs/results.md). There, on MCUNet-5fps + Omniglot 5-way 5-shot (25 steps x batch 5, int8 SGD,
    grid 0.001 / 0.005 / 0.02 / 0.05), tinytrain and its static-channel variants did best at 0.005, fulltrain
    and biasonly at 0.001 (FullTrain collapsed to chance at 0.02 and 0.05 and in one of two probes at 0.005),
    sparseupdate at 0.05; 0.005 is the default because it keeps the sparse methods near their best. In fp32
    FullTrain collapses at Adam 1e-2; 1e-4 gains less than 1e-3. The prototypes are set once and then trained
    as head weights (P>M>F recomputes them from the current backbone every step: that needs a support forward
    per step, which a device would not spend). A batch-`batch` step has the same mean gradient a device gets
    by accumulating `batch` batch-1 passes (grad_accum_bytes more memory); its arena is run_peak_bytes.
    progress: optional callable(step, steps, loss) after every training step.
    """
    t_start = time.perf_counter()
    _check_method(method)
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    optimizer = optimizer or DEFAULT_OPTIMIZER[mode]
    lr = DEFAULT_LR.get((mode, optimizer), 1e-3) if lr is None else lr
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ConfigError(f"steps {steps!r} must be an integer >= 0")
    n_classes = int(episode.ways)
    ns = int(episode.support_x.shape[0])
    if ns < 1 or episode.query_x.shape[0] < 1:
        raise DataError(f"an episode needs support and query images, got {ns} and {episode.query_x.shape[0]}")
    batch = min(MAX_BATCH, ns) if batch is None else batch
    xs = model_input(episode.support_x, model, mode)
    xq = model_input(episode.query_x, model, mode)
    ys = np.asarray(episode.support_y, np.int64)
    yq = np.asarray(episode.query_y, np.int64)
    graph = with_classes(model.graph, n_classes)
    opts = TrainOptions(mode=mode, optimizer=optimizer, lr=lr, batch=batch, head="cosine", backend=backend).validate()
    opts1 = TrainOptions(mode=mode, optimizer=optimizer, lr=lr, batch=1, head="cosine")

    fisher = sel = None
    if method in TINYTRAIN_CHANNELS:
        # features for the Fisher pass's head come from a head-only step (the cheapest plan); the same
        # features initialise the trained head below (the backbone is identical until training starts)
        probe = TrainStep(model, last_layer(graph), n_classes, opts)
        feats = _chunked(probe.features, xs, batch)
        del probe
        fisher, sel = _fisher_and_selection(model, xs, ys, feats, n_classes, method, mode, opts1, memory_budget,
                                            compute_budget, channel_ratio, axis, seed)
        cfg = sel.config
        step = TrainStep(model, cfg, n_classes, opts)
    else:
        cfg = static_config(model, graph, method, scheme)
        step = TrainStep(model, cfg, n_classes, opts)
        feats = _chunked(step.features, xs, batch)
    step.set_head(*cosine_prototypes(feats, ys, n_classes))
    acc_before = _accuracy(_chunked(step.forward_logits, xq, batch), yq)

    rng = np.random.default_rng(seed)
    akw = {"flip": False, **(augment_kw or {})}
    losses = []
    if method != "none":
        perm, pos = rng.permutation(ns), 0
        for t in range(steps):
            idx = np.empty(batch, np.int64)
            for j in range(batch):  # cycle through permutations of the support set
                if pos == ns:
                    perm, pos = rng.permutation(ns), 0
                idx[j] = perm[pos]
                pos += 1
            xb = model_input(augment(episode.support_x[idx], rng, **akw), model, mode)
            losses.append(step.run(xb, ys[idx]))
            if progress is not None:
                progress(t + 1, steps, losses[-1])
        acc_after = _accuracy(_chunked(step.forward_logits, xq, batch), yq)
    else:
        acc_after = acc_before

    trains = method != "none"
    result = EpisodeResult(
        method=method, ways=n_classes, shots=tuple(int(v) for v in np.bincount(ys, minlength=n_classes)),
        queries=int(yq.size), acc_before=acc_before, acc_after=acc_after,
        peak_bytes=plan_training_step(graph, cfg, opts1)[0].peak if trains else None,
        run_peak_bytes=step.plan.peak if trains else None,
        grad_accum_bytes=_grad_accum_bytes(step) if trains and batch > 1 else 0,
        backward_macs=backward_macs(graph, cfg, convention="engine", batch=1) if trains else 0,
        seconds=time.perf_counter() - t_start, config=cfg.name if trains else "none", mode=mode,
        optimizer=optimizer, lr=float(lr), steps=int(steps) if trains else 0, batch=int(batch),
        fisher_peak_bytes=None if fisher is None else int(fisher.peak_bytes),
        fisher_seconds=None if fisher is None else float(fisher.seconds),
        selection=None if sel is None else sel.format_table(),
        selected=tuple(lu.conv_index for lu in cfg.layers) if trains else (),
        losses=tuple(losses))
    return (result, step) if return_step else result


# ---------------------------------------------------------------------------------------------
# Many episodes
# ---------------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """Results of `evaluate`: settings, every EpisodeResult (episode-major, methods in the order given), and
    per-method rows (rows()). Everything but the timing fields is identical for identical settings, serial
    or distributed."""

    settings: dict
    methods: tuple
    results: list = field(default_factory=list)

    def of(self, method):
        return [r for r in self.results if r.method == method]

    def rows(self):
        """One dict per method: accuracy (after) and accuracy before, each mean and 95% CI half-width over
        episodes (nan for one episode), peak bytes (max over episodes; tinytrain's varies per episode),
        backward MACs per sample (mean), Fisher-pass peak (max) and seconds per episode (mean)."""
        out = []
        for m in self.methods:
            rs = self.of(m)
            acc, ci = mean_ci95([r.acc_after for r in rs])
            before, ci_b = mean_ci95([r.acc_before for r in rs])
            peaks = [r.peak_bytes for r in rs if r.peak_bytes is not None]
            fpk = [r.fisher_peak_bytes for r in rs if r.fisher_peak_bytes is not None]
            out.append({
                "method": m, "config": rs[0].config if len({r.config for r in rs}) == 1 else f"{m} (per episode)",
                "episodes": len(rs), "acc": acc, "ci95": ci, "acc_before": before, "ci95_before": ci_b,
                "peak_bytes": max(peaks) if peaks else None,
                "backward_macs": float(np.mean([r.backward_macs for r in rs])),
                "fisher_peak_bytes": max(fpk) if fpk else None,
                "seconds": float(np.mean([r.seconds for r in rs])),
                "lr": None if m == "none" else rs[0].lr,
            })
        return out

    def format(self):
        """Plain-text table."""
        s = self.settings
        head = (f"{s['model']} on {s['data']}: {s['episodes']} episodes ({_episode_desc(s)}), {s['mode']}, "
                f"{s['steps']} steps, memory budget {_fmt_int(s['memory_budget'])} B")
        lines = [head, f"{'method':<18}{'accuracy %':>16}{'before %':>16}{'lr':>8}{'peak bytes':>13}"
                       f"{'bwd MACs/sample':>17}{'s/episode':>11}"]
        for r in self.rows():
            lines.append(f"{r['method']:<18}{_pct(r['acc'], r['ci95']):>16}{_pct(r['acc_before'], r['ci95_before']):>16}"
                         f"{_fmt_lr(r['lr']):>8}{_fmt_int(r['peak_bytes']):>13}{_fmt_int(round(r['backward_macs'])):>17}"
                         f"{r['seconds']:>11.2f}")
        lines.append("peak bytes: the training plan's arena at batch 1 (the device step; max over episodes); "
                     "backward MACs per sample, engine convention")
        return "\n".join(lines)

    def to_markdown(self):
        s = self.settings
        lines = [f"# Few-shot evaluation: {s['model']}", "",
                 f"- data: `{s['data']}`; {s['episodes']} episodes, {_episode_desc(s)}; seed {s['seed']}",
                 f"- mode {s['mode']}, {s['steps']} steps, optimizer {s['optimizer']}, "
                 f"lr {'per method (column lr)' if isinstance(s['lr'], dict) else s['lr']}, "
                 f"batch {s['batch'] or 'min(25, support)'}",
                 f"- memory budget {_fmt_int(s['memory_budget'])} bytes"
                 + (f", compute budget {_fmt_int(s['compute_budget'])} backward MACs/sample"
                    if s.get("compute_budget") is not None else ""), "",
                 "| method | config | accuracy (%) | before (%) | lr | peak bytes | backward MACs / sample | "
                 "Fisher pass peak | s / episode |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows():
            lines.append(f"| {r['method']} | {r['config']} | {_pct(r['acc'], r['ci95'])} | "
                         f"{_pct(r['acc_before'], r['ci95_before'])} | {_fmt_lr(r['lr'])} | {_fmt_int(r['peak_bytes'])} | "
                         f"{_fmt_int(round(r['backward_macs']))} | {_fmt_int(r['fisher_peak_bytes'])} | "
                         f"{r['seconds']:.2f} |")
        lines += ["", "Accuracy: mean ± 95% CI over episodes. Peak bytes: the training plan's arena for the batch-1 "
                  "step a device runs (max over episodes). Backward MACs: per sample, engine convention."]
        return "\n".join(lines) + "\n"

    def to_dict(self):
        return _jsonable({"settings": self.settings, "rows": self.rows(),
                          "episodes": [r.to_dict() for r in self.results]})


def _jsonable(v):
    """nan / inf -> None (strict JSON), recursively; numpy scalars -> Python."""
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt_int(v):
    return "-" if v is None else f"{int(v):,}"


def _fmt_lr(v):
    return "-" if v is None else f"{v:g}"


def _pct(m, ci):
    return f"{100 * m:.2f}" + ("" if not math.isfinite(ci) else f" ± {100 * ci:.2f}")


def _episode_desc(s):
    if s["sampler"] == "meta-dataset":
        return "Meta-Dataset varying-way varying-shot"
    return f"{s['ways']}-way {s['shots']}-shot, {s['queries']} queries per class"


class _Progress:
    """A text progress bar on stderr, redrawn in place with \\r (no dependency)."""

    def __init__(self, total, enabled, stream=None, width=30):
        self.total, self.enabled, self.width = total, enabled, width
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.done = 0

    def update(self, label=""):
        self.done += 1
        if not self.enabled:
            return
        frac = self.done / max(self.total, 1)
        bar = "#" * int(round(frac * self.width))
        now = time.perf_counter()
        el = now - self.t0
        if self.done == 1:
            # the rate is measured from the first item on: what comes before it (the Fisher pass, the first
            # run's kernel compilation) would make the estimate far too long
            self.t1 = now
            left = "estimating time left"
        else:
            left = f"~{(now - self.t1) / (self.done - 1) * (self.total - self.done):.0f} s left"
        self.stream.write(f"\r[{bar:<{self.width}}] {self.done}/{self.total} {label:<24.24} "
                          f"{el:7.0f} s elapsed, {left} ")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def close(self):
        """End a bar left unfinished (an error), so the next message starts on its own line."""
        if self.enabled and 0 < self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()


def _sampler(dataset, sampler, ways, shots, queries):
    if sampler == "nway":
        return lambda rng: sample_nway_kshot(dataset, ways, shots, queries, rng)
    if sampler == "meta-dataset":
        return lambda rng: sample_meta_dataset(dataset, rng)
    raise ConfigError(f"sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")


def _check_budget(model, ways, adapt_kw):
    """Fail before any episode runs when the memory budget is below the smallest training plan (the head
    only, batch 1) that tinytrain* would need."""
    budget = adapt_kw.get("memory_budget", DEFAULT_MEMORY_BUDGET)
    if budget is None:
        return
    mode = adapt_kw.get("mode", "int8")
    optimizer = adapt_kw.get("optimizer") or DEFAULT_OPTIMIZER.get(mode, "sgd")
    graph = with_classes(model.graph, ways)
    opts = TrainOptions(mode=mode, optimizer=optimizer, batch=1, head="cosine")
    low = plan_training_step(graph, last_layer(graph), opts)[0].peak
    if budget < low:
        raise ArenaOverflowError(f"a memory budget of {budget:,} bytes is below the smallest training plan of "
                                 f"{graph.name} ({mode}, batch 1, {ways}-way head only), {low:,} bytes; raise the "
                                 f"budget to at least {low:,}")


def evaluate(model, dataset, methods, episodes, *, ways=5, shots=5, queries=15, sampler="nway", seed=0, workers=None,
             scheduler=None, progress=True, **adapt_kw):
    """Run every method on `episodes` episodes of `dataset`; returns an Evaluation (rows(), format(), ...).

    Episode i is sampled from np.random.default_rng([seed, i]) ("nway": ways-way shots-shot with `queries`
    queries per class; "meta-dataset": Meta-Dataset's varying-way varying-shot sampler), so episodes are
    independent of each other and identical across methods and across serial / distributed runs; each
    method adapts with seed=[seed, i] folded into one integer (its mini-batches and augmentation).
    adapt_kw go to adapt_episode (mode, steps, lr, batch, memory_budget, ...); augment_kw defaults to
    {"flip": dataset.flip_ok}.

    workers=N runs each (method, episode) as a task on a local dask.distributed cluster of N single-threaded
    worker processes; scheduler="tcp://host:port" uses an existing cluster (its workers need microtrain
    installed). Results are put back in episode-major, method order, so the table equals the serial one.
    Needs `pip install "dask[distributed]"` (microtrain[distributed]); worker processes are spawned, so a
    script that calls this with workers needs the `if __name__ == "__main__":` guard (the CLI has it).
    progress: a bar on stderr.
    """
    methods = tuple(methods)
    if not methods:
        raise ConfigError(f"no methods given; use some of {', '.join(METHODS)}")
    for m in methods:
        _check_method(m)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"a method is listed twice: {', '.join(methods)}")
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ConfigError(f"episodes {episodes!r} must be a positive integer")
    if workers is not None and scheduler is not None:
        raise ConfigError("give workers (a local cluster) or scheduler (an existing one), not both")
    if workers is not None:
        _check_workers(workers)
    unknown = set(adapt_kw) - set(_ADAPT_KEYS)
    if unknown:
        raise ConfigError(f"unknown adapt_episode option(s): {', '.join(sorted(unknown))}")
    lr = adapt_kw.get("lr")
    if isinstance(lr, dict):
        stray = set(lr) - set(methods)
        if stray:
            raise ConfigError(f"learning rates given for method(s) not evaluated: {', '.join(sorted(stray))}")
        for m, v in lr.items():
            _check_lr(v, m)
    elif lr is not None:
        _check_lr(lr, "all methods")
    side = model.graph.input_shape[0]
    if dataset.size != side or model.graph.input_shape[1] != side:
        raise DataError(f"{dataset.name} is loaded at {dataset.size}x{dataset.size} but {model.name} takes "
                        f"{model.graph.input_shape[0]}x{model.graph.input_shape[1]}; parse the dataset at size {side}")
    draw = _sampler(dataset, sampler, ways, shots, queries)
    # episode 0 first: a request the dataset cannot meet fails here, before anything else runs
    first = draw(np.random.default_rng([seed, 0]))
    adapt_kw.setdefault("augment_kw", {"flip": dataset.flip_ok})
    if any(m in TINYTRAIN_CHANNELS for m in methods):
        _check_budget(model, ways if sampler == "nway" else 5, adapt_kw)
    if "sparseupdate" in methods:  # an unknown scheme fails here, not in a task
        static_config(model, with_classes(model.graph, ways), "sparseupdate", adapt_kw.get("scheme", "49kb"))
    mode = adapt_kw.get("mode", "int8")
    opt = adapt_kw.get("optimizer") or DEFAULT_OPTIMIZER.get(mode)
    settings = {"model": model.name, "data": dataset.name, "episodes": int(episodes), "sampler": sampler,
                "ways": ways, "shots": shots, "queries": queries, "seed": seed, "mode": mode,
                "steps": adapt_kw.get("steps", 40), "optimizer": opt,
                "lr": _lr_setting(adapt_kw.get("lr"), methods, DEFAULT_LR.get((mode, opt))),
                "batch": adapt_kw.get("batch"), "memory_budget": adapt_kw.get("memory_budget", DEFAULT_MEMORY_BUDGET),
                "compute_budget": adapt_kw.get("compute_budget"), "channel_ratio": adapt_kw.get("channel_ratio", 0.5),
                "scheme": adapt_kw.get("scheme", "49kb"), "backend": adapt_kw.get("backend", "blas")}
    bar = _Progress(len(methods) * episodes, progress)
    try:
        if workers is None and scheduler is None:
            results = []
            for i in range(episodes):
                ep = first if i == 0 else draw(np.random.default_rng([seed, i]))
                for m in methods:
                    results.append(_run_task(model, ep, m, i, _episode_seed(seed, i), adapt_kw))
                    bar.update(f"{m} #{i}")
        else:
            results = _evaluate_dask(model, draw, first, methods, episodes, seed, workers, scheduler, adapt_kw, bar)
    finally:
        bar.close()
    return Evaluation(settings, methods, results)


@dataclass
class LrTuning:
    """Result of `tune_lr`: the chosen lr per method, and every probe evaluation's mean query accuracy."""

    chosen: dict
    grid: tuple
    accuracy: dict  # method -> [(lr, mean accuracy, 95% CI half-width)] in grid order
    settings: dict

    def format(self):
        s = self.settings
        lines = [f"learning rate per method on {s['probes']} probe episodes (seed {s['probe_seed']}) of {s['data']}, "
                 f"{s['mode']} {s['optimizer']}, {s['steps']} steps",
                 f"{'method':<18}" + "".join(f"{'lr ' + _fmt_lr(v):>16}" for v in self.grid) + f"{'chosen':>10}"]
        for m, accs in self.accuracy.items():
            lines.append(f"{m:<18}" + "".join(f"{_pct(a, ci):>16}" for _, a, ci in accs)
                         + f"{_fmt_lr(self.chosen[m]):>10}")
        return "\n".join(lines)

    def to_markdown(self):
        lines = ["| method | " + " | ".join(f"lr {_fmt_lr(v)}" for v in self.grid) + " | chosen |",
                 "|---|" + "---:|" * (len(self.grid) + 1)]
        for m, accs in self.accuracy.items():
            lines.append(f"| {m} | " + " | ".join(_pct(a, ci) for _, a, ci in accs)
                         + f" | {_fmt_lr(self.chosen[m])} |")
        return "\n".join(lines) + "\n"

    def to_dict(self):
        return _jsonable({"chosen": self.chosen, "grid": list(self.grid), "settings": self.settings,
                          "accuracy": {m: [list(t) for t in v] for m, v in self.accuracy.items()}})


def tune_lr(model, dataset, methods, *, grid=None, probes=3, probe_seed=PROBE_SEED, seed=None, **kw):
    """Choose each method's learning rate on probe episodes, as P>M>F chooses its lr per domain on a few
    validation episodes: for every lr of `grid` (default LR_GRID[(mode, optimizer)]) run
    evaluate(model, dataset, methods, probes, seed=probe_seed, lr=lr, **kw) and keep, per method, the lr with
    the highest mean query accuracy (ties: the smaller lr). The probe episodes come from probe_seed, so they
    are not the evaluation's episodes (evaluate's default seed is 0; `seed` here is refused to avoid mixing
    them up). "none" trains nothing and gets no lr. Returns an LrTuning; pass `tuning.chosen` as evaluate's
    lr= to run each method at its own lr. kw: evaluate's keywords (ways, shots, queries, sampler, workers,
    mode, steps, memory_budget, ...), but not lr."""
    if seed is not None:
        raise ConfigError("tune_lr draws its probe episodes from probe_seed; give probe_seed, not seed")
    if "lr" in kw:
        raise ConfigError("tune_lr chooses the lr; do not pass one")
    mode = kw.get("mode", "int8")
    opt = kw.get("optimizer") or DEFAULT_OPTIMIZER.get(mode)
    grid = tuple(LR_GRID.get((mode, opt), ()) if grid is None else grid)
    if not grid:
        raise ConfigError(f"no learning-rate grid for mode {mode!r} with optimizer {opt!r}; give grid=")
    for v in grid:
        _check_lr(v, "the grid")
    if len(set(grid)) != len(grid):
        raise ConfigError(f"the lr grid lists a value twice: {grid}")
    if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or probes < 1:
        raise ConfigError(f"probes {probes!r} must be a positive integer")
    trained = tuple(m for m in methods if m != "none")
    if not trained:
        raise ConfigError("tune_lr needs at least one method that trains (all but none)")
    accuracy = {m: [] for m in trained}
    workers = kw.pop("workers", None)
    # with workers: one local cluster for the whole grid (its worker processes stay warm), not one per lr
    cluster = local_cluster(workers) if workers is not None and kw.get("scheduler") is None else None
    if cluster is not None:
        kw["scheduler"] = cluster.scheduler_address
    elif workers is not None:
        kw["workers"] = workers  # evaluate refuses workers with a scheduler, and says so
    try:
        for v in grid:
            ev = evaluate(model, dataset, trained, probes, seed=probe_seed, lr=float(v), **kw)
            for row in ev.rows():
                accuracy[row["method"]].append((float(v), row["acc"], row["ci95"]))
    finally:
        if cluster is not None:
            cluster.close()
    chosen = {}
    for m, accs in accuracy.items():
        best = max(a for _, a, _ in accs)
        chosen[m] = min(v for v, a, _ in accs if a == best)
    settings = {"data": dataset.name, "model": model.name, "probes": int(probes), "probe_seed": int(probe_seed),
                "mode": mode, "optimizer": opt, "steps": kw.get("steps", 40),
                **{k: kw[k] for k in ("ways", "shots", "queries", "sampler") if k in kw}}
    return LrTuning(chosen, grid, accuracy, settings)


_ADAPT_KEYS = ("mode", "steps", "lr", "batch", "memory_budget", "compute_budget", "channel_ratio", "optimizer",
               "augment_kw", "scheme", "axis", "backend")


def _check_lr(v, who):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (
            math.isfinite(float(v)) and float(v) > 0):
        raise ConfigError(f"learning rate {v!r} for {who} must be a positive finite number")


def _lr_setting(lr, methods, default):
    """The lr of the settings record: one number, or {method: lr} for the trained methods."""
    if lr is None:
        return default
    if isinstance(lr, dict):
        return {m: float(lr.get(m, default)) for m in methods if m != "none"}
    return float(lr)


def _episode_seed(seed, i):
    """One integer seed per episode for adapt_episode's rng (mini-batches, augmentation, random channels)."""
    return int(np.random.default_rng([seed, i, 1]).integers(2 ** 63))


def _method_kw(adapt_kw, method):
    """adapt_kw for one method: an lr given per method ({method: lr}) becomes that method's lr (a method
    without an entry gets the default)."""
    lr = adapt_kw.get("lr")
    if not isinstance(lr, dict):
        return adapt_kw
    return {**adapt_kw, "lr": lr.get(method)}


def _run_task(model, episode, method, index, seed, adapt_kw):
    """adapt_episode, tagged with the episode index; an error names the method and episode."""
    try:
        r = adapt_episode(model, episode, method, seed=seed, **_method_kw(adapt_kw, method))
    except MicrotrainError as e:
        raise type(e)(f"{method}, episode {index}: {e}") from None
    r.episode = index
    return r


def _check_workers(workers):
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers {workers!r} must be a positive integer")


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise MicrotrainError('distributed evaluation (workers / scheduler) needs dask: pip install '
                              '"dask[distributed]" (or microtrain[distributed]); or run serially') from None
    return distributed


def local_cluster(workers):
    """A dask LocalCluster of `workers` single-threaded worker processes on the loopback interface (close it)."""
    import logging

    _check_workers(workers)
    distributed = _import_distributed()
    # loopback only; the scheduler's HTTP endpoint on a free port (its default, 8787, may be taken).
    # One Numba thread per worker: N workers already fill N cores, and oversubscribed OpenMP barriers
    # spin (milliseconds per parallel kernel call). Results do not depend on the thread count (the
    # parallel kernels write disjoint slices).
    return distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=":0", silence_logs=logging.ERROR,
                                    env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                                         "OPENBLAS_NUM_THREADS": "1"})


def _evaluate_dask(model, draw, first, methods, episodes, seed, workers, scheduler, adapt_kw, bar):
    distributed = _import_distributed()
    Client, as_completed = distributed.Client, distributed.as_completed
    cluster = None
    try:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise MicrotrainError(f"cannot reach the dask scheduler at {scheduler} ({e})") from None
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        else:
            cluster = local_cluster(workers)
            client = Client(cluster)
            n_workers = int(workers)
        try:
            model_f = client.scatter(model, broadcast=True)
            # keep a bounded number of episodes in flight (Meta-Dataset episodes reach tens of MB each)
            window = max(2, math.ceil(2 * n_workers / len(methods)))
            ac, out, left, ep_f = as_completed(), {}, {}, {}
            nxt = 0

            def feed():
                nonlocal nxt
                while nxt < episodes and len(ep_f) < window:
                    i = nxt
                    ep = first if i == 0 else draw(np.random.default_rng([seed, i]))
                    ep_f[i] = client.scatter(ep)
                    left[i] = len(methods)
                    for m in methods:
                        ac.add(client.submit(_run_task, model_f, ep_f[i], m, i, _episode_seed(seed, i), adapt_kw,
                                             pure=False, key=f"microtrain-{m}-{i}-{time.monotonic_ns()}"))
                    nxt += 1

            feed()
            for fut in ac:
                r = fut.result()  # re-raises a task's error (its MicrotrainError type and message)
                out[(r.episode, methods.index(r.method))] = r
                bar.update(f"{r.method} #{r.episode}")
                left[r.episode] -= 1
                if left[r.episode] == 0:
                    ep_f.pop(r.episode).release()
                feed()
            return [out[k] for k in sorted(out)]
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------

def plot_accuracy_vs_memory(evaluation, path):
    """PNG: accuracy (mean ± 95% CI) against the training plan's peak bytes (log axis), one point per method
    that trains. Needs matplotlib (MicrotrainError without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise MicrotrainError("the accuracy-vs-memory picture needs matplotlib: pip install matplotlib") from None
    rows = evaluation.rows()
    s = evaluation.settings
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ci = 0.0 if not math.isfinite(r["ci95"]) else 100 * r["ci95"]
        if r["peak_bytes"] is None:  # "none": a horizontal reference line
            ax.axhline(100 * r["acc"], color="grey", linestyle="--", linewidth=1)
            ax.text(0.01, 100 * r["acc"], f" {r['method']} (no training)", transform=ax.get_yaxis_transform(),
                    va="bottom", fontsize=8, color="grey")
            continue
        ax.errorbar([r["peak_bytes"] / 1024], [100 * r["acc"]], yerr=[ci], fmt="o", capsize=3)
        ax.annotate(r["method"], (r["peak_bytes"] / 1024, 100 * r["acc"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    if s.get("memory_budget"):
        ax.axvline(s["memory_budget"] / 1024, color="red", linestyle=":", linewidth=1)
        ax.text(s["memory_budget"] / 1024, 0.01, " memory budget", transform=ax.get_xaxis_transform(), color="red",
                fontsize=8, rotation=90, va="bottom")
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("training plan peak, batch 1 (KiB, log scale)")
    ax.set_ylabel("query accuracy (%), mean ± 95% CI")
    ax.set_title(f"{s['model']} on {s['data'][-40:]}: {s['episodes']} episodes, {s['mode']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
