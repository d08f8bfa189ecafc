"""`microtrain adapt`: one few-shot episode, adapted under a device memory budget and reported the way a user
reads it: which layers and channels were trained, query accuracy before (prototype head only) and after,
the training plan's peak SRAM against the 1 MB MCU envelope and 256 KB, backward MACs and time; optionally
the adapted weights written to a .npz that loads again (load_adapted).

The episode is episode 0 of `microtrain evaluate` with the same seed, ways, shots and queries, so a user can
compare one run with the evaluation table.
"""

import time
from dataclasses import dataclass

import numpy as np

from microtrain.episodes import sample_nway_kshot
from microtrain.errors import ConfigError, WeightFileError
from microtrain.fewshot import (DEFAULT_MEMORY_BUDGET, TINYTRAIN_CHANNELS, _check_budget, _episode_seed, _Progress,
                                adapt_episode)
from microtrain.model import Model
from microtrain.weights import load_npz, save_npz

# Envelopes the report compares the plan with: the SRAM of an MCU-class device (TinyTrain's "1 MB memory
# envelope") and the 256 KB of MIT's and TinyTrain's smallest targets.
ENVELOPES = (("1 MB", 1 << 20), ("256 KB", 256 << 10))


@dataclass
class AdaptReport:
    """One adaptation: the EpisodeResult plus what the report prints about it."""

    model: str
    data: str
    class_names: tuple
    result: object  # fewshot.EpisodeResult
    flash_bytes: int
    seconds: float

    def format(self):
        r = self.result
        lines = [f"{self.model} adapted to {r.ways} classes of {self.data} ({', '.join(self.class_names)}), "
                 f"{min(r.shots)}-shot, {r.queries} queries, method {r.method} ({r.mode}, {r.optimizer} lr {r.lr:g}, "
                 f"{r.steps} steps x batch {r.batch})"]
        if r.selection:
            lines += ["", r.selection]
        elif r.method != "none":
            lines += ["", f"trained (static config {r.config}): convs {list(r.selected) or 'none'} and the head"]
        lines += ["", f"query accuracy: {100 * r.acc_before:.1f}% before (prototype head only) -> "
                      f"{100 * r.acc_after:.1f}% after adaptation"]
        if r.peak_bytes is not None:
            fits = ", ".join(f"{'fits' if r.peak_bytes <= b else 'exceeds'} {name}" for name, b in ENVELOPES)
            lines.append(f"training plan (batch-1 device step): peak SRAM {r.peak_bytes:,} bytes ({fits}); "
                         f"frozen weights in flash {self.flash_bytes:,} bytes")
            lines.append(f"backward MACs per sample: {r.backward_macs:,}")
        if r.fisher_peak_bytes is not None:
            lines.append(f"Fisher pass (selection): peak {r.fisher_peak_bytes:,} bytes, {r.fisher_seconds:.2f} s")
        lines.append(f"time: {self.seconds:.1f} s (adaptation {r.seconds:.1f} s)")
        return "\n".join(lines)

    def to_dict(self):
        from microtrain.fewshot import _jsonable

        return _jsonable({"model": self.model, "data": self.data, "classes": list(self.class_names),
                          "flash_bytes": self.flash_bytes, "seconds": self.seconds,
                          "envelopes": {name: b for name, b in ENVELOPES}, "result": self.result.to_dict()})


def adapt(model, dataset, *, method="tinytrain", ways=5, shots=5, queries=15, seed=0, steps=25, batch=5,
          memory_budget=DEFAULT_MEMORY_BUDGET, progress=False, **adapt_kw):
    """Run `method` on episode 0 of `dataset` (as `evaluate` with this seed draws it); returns
    (AdaptReport, TrainStep). adapt_kw: adapt_episode's other keywords (mode, lr, optimizer, channel_ratio, ...)."""
    t0 = time.perf_counter()
    side = model.graph.input_shape[0]
    if dataset.size != side:
        raise ConfigError(f"{dataset.name} is loaded at {dataset.size}x{dataset.size}; {model.name} takes {side}")
    ep = sample_nway_kshot(dataset, ways, shots, queries, np.random.default_rng([seed, 0]))
    if method in TINYTRAIN_CHANNELS:  # a budget below the smallest plan fails here, with the minimum
        _check_budget(model, ways, {"memory_budget": memory_budget, **adapt_kw})
    bar = _Progress(steps, progress and method != "none" and steps > 0)
    try:
        result, step = adapt_episode(model, ep, method, steps=steps, batch=batch, memory_budget=memory_budget,
                                     seed=_episode_seed(seed, 0), augment_kw={"flip": dataset.flip_ok},
                                     progress=lambda t, n, loss: bar.update(f"step {t} loss {loss:.3f}"),
                                     return_step=True, **adapt_kw)
    finally:
        bar.close()
    names = tuple(dataset.class_names[int(c)] for c in ep.class_ids)
    report = AdaptReport(model.name, dataset.name, names, result, int(step.flash_bytes()),
                         time.perf_counter() - t0)
    return report, step


def save_adapted(step, base_model, path, meta=None):
    """Write the adapted model as microtrain's .npz (temporary file, then rename): the int8 backbone with the
    trained weights and biases, the base model's own classifier (so the file loads as a normal model of that
    graph), and the adapted fp32 cosine head as `head/weight` (ways, features) and `head/bias` (ways,).
    Read it back with load_adapted. Needs an int8-mode step."""
    trained, (hw, hb) = step.trained_model()
    params = dict(trained.params)
    cls = base_model.graph.classifier.name
    params[cls] = base_model.params[cls]
    out = Model(base_model.graph, params, trained.quant, dict(base_model.meta or {}))
    info = {"adapted": dict(meta or {}), "head": "cosine", "head_classes": int(hw.shape[0])}
    head = {"head/weight": np.ascontiguousarray(hw, np.float32), "head/bias": np.ascontiguousarray(hb, np.float32)}
    return save_npz(out, path, extra_meta=info, extra_arrays=head)


def load_adapted(graph, path):
    """(Model, (head_weight, head_bias)) from a file written by save_adapted."""
    model = load_npz(graph, path)
    try:
        with np.load(path, allow_pickle=False) as z:
            hw, hb = z["head/weight"], z["head/bias"]
    except KeyError:
        raise WeightFileError(f"{path} holds no adapted head (head/weight, head/bias); it is a plain weight "
                              "file, written by save_npz rather than `microtrain adapt --save`") from None
    if hw.dtype != np.float32 or hb.dtype != np.float32 or hw.ndim != 2 or hb.shape != (hw.shape[0],):
        raise WeightFileError(f"{path}: head/weight {hw.dtype} {hw.shape} and head/bias {hb.dtype} {hb.shape} "
                              "must be float32 (ways, features) and (ways,)")
    return model, (hw, hb)
