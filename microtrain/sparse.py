"""Sparse-update configurations: which convs' weights and biases are trained, on which channels.

A SparseConfig is plain data (per conv: bias?, weight?, kept channels, channel axis) that the planner and
the training step read; the classifier head is separate and always trained. This module also builds the
baselines (full, last layer, bias only, MIT's published SparseUpdate schemes), reads and writes configs
as YAML, and counts backward compute and the two *analytic* memory conventions of the literature
(MIT tiny-training's and TinyTL's), which are for comparison with published tables, never the plan.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from microtrain.errors import ConfigError
from microtrain.reference_models import SPEC_DIR

AXES = ("input", "output")
CRITERIA = ("magnitude+", "random")
BUILTIN = ("full", "last", "last+conv", "bias")
SPARSE_DIR = SPEC_DIR / "sparse"  # MIT's published schemes, one YAML file each, in MIT's terms

_EXPLICIT_KEYS = {"format", "model", "name", "description", "head", "layers", "source"}
_LAYER_KEYS = {"conv", "bias", "weight", "keep", "axis"}
# MIT's backward_config keys (tiny-training algorithm/configs/default.yaml, compilation/mcu_ir_gen.py).
_MIT_KEYS = {"format", "model", "name", "description", "head", "source", "enable_backward_config",
             "n_bias_update", "n_weight_update", "manual_weight_idx", "weight_update_ratio",
             "weight_select_criteria", "pw1_weight_only"}
FORMAT = "microtrain-sparse/1"


# ---------------------------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------------------------

def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class LayerUpdate:
    """What is trained in one conv (tiny-training numbering: every conv in model order, 0 = first conv).

    keep: the kept channel indices along `axis`, sorted ascending; None = every channel of the axis.
    axis: "input" updates W[..., c] for kept input channels c and lets the training step save only those
    channels of the layer's input (MIT's choice, memory-saving); "output" updates W[c] for kept output
    channels (the whole input must be saved). For a depthwise conv the two coincide (channel c has one
    input and one output); configs built here normalise depthwise layers to "input".
    The bias, when updated, is always updated for every output channel.
    """

    conv_index: int
    bias: bool = True
    weight: bool = False
    keep: tuple = None
    axis: str = "input"

    def __post_init__(self):
        if not _is_int(self.conv_index):
            raise ConfigError(f"conv index must be an integer, got {self.conv_index!r}")
        object.__setattr__(self, "conv_index", int(self.conv_index))
        for key in ("bias", "weight"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                raise ConfigError(f"conv {self.conv_index}: '{key}' must be true or false, got {getattr(self, key)!r}")
            object.__setattr__(self, key, bool(getattr(self, key)))
        if self.keep is not None:
            try:
                keep = list(self.keep)
            except TypeError:
                raise ConfigError(f"conv {self.conv_index}: keep must be a list of channel indices or null, "
                                  f"got {self.keep!r}") from None
            bad = [c for c in keep if not _is_int(c)]
            if bad:
                raise ConfigError(f"conv {self.conv_index}: kept channels must be integers, got {bad[0]!r}")
            object.__setattr__(self, "keep", tuple(sorted(int(c) for c in keep)))


@dataclass(frozen=True)
class SparseConfig:
    """A whole sparse update: the updated convs (sorted by conv_index, each updating something) + the head.

    `model` is the graph name the config was made for; conv indices and channel counts only make sense
    there, so `validate(graph)` refuses another model.
    """

    model: str
    layers: tuple = ()
    head: bool = True
    name: str = "custom"
    description: str = ""

    def __post_init__(self):
        layers = tuple(self.layers)
        for lu in layers:
            if not isinstance(lu, LayerUpdate):
                raise ConfigError(f"layers must be LayerUpdate objects, got {lu!r}")
        object.__setattr__(self, "layers", tuple(sorted(layers, key=lambda lu: lu.conv_index)))

    # ---- queries ------------------------------------------------------------------------------
    def earliest(self):
        """Smallest conv index whose weight or bias is updated (backward stops there), or None."""
        return self.layers[0].conv_index if self.layers else None

    def earliest_weight(self):
        """Smallest conv index whose weight is updated, or None."""
        return next((lu.conv_index for lu in self.layers if lu.weight), None)

    def updated(self, conv_index):
        """The LayerUpdate of conv `conv_index`, or None when that conv is frozen."""
        return next((lu for lu in self.layers if lu.conv_index == conv_index), None)

    # ---- checking -----------------------------------------------------------------------------
    def validate(self, graph):
        """Raise ConfigError (what is wrong, what to do) unless this config fits `graph`."""
        if self.model != graph.name:
            raise ConfigError(f"sparse config {self.name!r} is for {self.model} but the model is {graph.name}; "
                              f"load the config made for {graph.name}")
        if self.head is not True:
            raise ConfigError(f"sparse config {self.name!r}: the classifier head is always trained (head: true); "
                              f"to freeze it, there is nothing left to train")
        convs = graph.convs
        seen = set()
        for lu in self.layers:
            i = lu.conv_index
            if not 0 <= i < len(convs):
                raise ConfigError(f"conv {i} does not exist: {graph.name} has convs 0..{len(convs) - 1}")
            if i in seen:
                raise ConfigError(f"conv {i} is listed twice; merge its entries into one")
            seen.add(i)
            op = convs[i]
            where = f"conv {i} ({op.name})"
            if lu.axis not in AXES:
                raise ConfigError(f"{where}: axis {lu.axis!r} is not 'input' or 'output'")
            if not (lu.bias or lu.weight):
                raise ConfigError(f"{where} updates neither bias nor weight; set bias and/or weight to true, "
                                  f"or remove the entry")
            if lu.keep is None:
                continue
            if not lu.weight:
                raise ConfigError(f"{where}: keep is given but weight is false; set weight: true or drop keep")
            if not lu.keep:
                raise ConfigError(f"{where}: keep is empty; set weight: false to update no weights")
            n = axis_channels(op, lu.axis)
            axis = "" if op.kind == "depthwise" else f"{lu.axis} "
            for c in lu.keep:
                if not 0 <= c < n:
                    raise ConfigError(f"{where}: kept {axis}channel {c} is out of range: this layer has "
                                      f"{n} {axis}channels (0..{n - 1})")
            dup = sorted({c for c in lu.keep if lu.keep.count(c) > 1})
            if dup:
                raise ConfigError(f"{where}: channel {dup[0]} is kept twice; list each channel once")

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self):
        return {
            "format": FORMAT,
            "model": self.model,
            "name": self.name,
            "description": self.description,
            "head": True,
            "layers": [{"conv": lu.conv_index, "bias": lu.bias, "weight": lu.weight,
                        "keep": None if lu.keep is None else list(lu.keep), "axis": lu.axis}
                       for lu in self.layers],
        }

    def to_yaml(self):
        """The explicit per-layer form; `from_yaml` reads it back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    @classmethod
    def from_dict(cls, d, graph, *, criterion=None, seed=0, where="sparse config"):
        """A config from a mapping in microtrain's explicit form (`layers:`) or in MIT's terms
        (`n_bias_update`, `manual_weight_idx`, `weight_update_ratio`). `graph` may be a Model: MIT-form
        partial ratios with the magnitude+ criterion need its weights. criterion=None takes the mapping's
        `weight_select_criteria`, else magnitude+."""
        graph, model = _graph_and_model(graph)
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping with 'layers' (explicit form) or 'n_bias_update' "
                              f"(MIT form), got {type(d).__name__}")
        if "layers" in d:
            return _from_explicit(d, graph, where)
        if any(k in d for k in ("n_bias_update", "manual_weight_idx", "n_weight_update")):
            return _from_mit(d, graph, model, criterion, seed, where)
        raise ConfigError(f"{where}: neither 'layers' (microtrain's explicit form) nor 'n_bias_update' "
                          f"(MIT's form) is given; see reference_models/sparse/*.yaml for examples")

    @classmethod
    def from_yaml(cls, text_or_path, graph, *, criterion=None, seed=0):
        """Read a config from YAML text or a .yaml file (safe_load only), resolve it against `graph`
        (a Graph, or the Model when channels are chosen by weight magnitude) and validate it."""
        text, where = _read_text(text_or_path)
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{where} is not valid YAML ({e}); fix the file") from None
        return cls.from_dict(d, graph, criterion=criterion, seed=seed, where=where)

    # ---- display ------------------------------------------------------------------------------
    def summary(self, graph):
        """One line per updated layer: conv index, op name, kind, what is updated, kept/total channels."""
        convs = graph.convs
        nw = sum(lu.weight for lu in self.layers)
        stop = "nothing to propagate" if not self.layers else f"backward stops at conv {self.earliest()}"
        lines = [f"{self.name} on {self.model}: head + {len(self.layers)} convs ({nw} with weights); {stop}",
                 f"  {'conv':>4}  {'op':<24}{'kind':<11}{'update':<13}channels"]
        for lu in self.layers:
            op = convs[lu.conv_index]
            what = "bias+weight" if lu.bias and lu.weight else ("weight" if lu.weight else "bias")
            if lu.weight:
                n = axis_channels(op, lu.axis)
                k = n if lu.keep is None else len(lu.keep)
                chans = f"{k}/{n}" if op.kind == "depthwise" else f"{lu.axis} {k}/{n}"
            else:
                chans = "-"
            lines.append(f"  {lu.conv_index:>4}  {op.name:<24}{op.kind:<11}{what:<13}{chans}")
        head = graph.classifier
        if head is not None:
            lines.append(f"  {'head':>4}  {head.name:<24}{head.kind:<11}{'bias+weight':<13}all (always trained)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the readers and the counters
# ---------------------------------------------------------------------------------------------

def axis_channels(op, axis):
    """Number of channels of conv `op` along `axis` (depthwise: its C for both axes)."""
    if op.kind == "depthwise":
        return op.cout
    return op.cin if axis == "input" else op.cout


def kept_channels(op, lu):
    """(kept, total) channels of a weight-updated layer along its axis."""
    n = axis_channels(op, lu.axis)
    return (n if lu.keep is None else len(lu.keep)), n


def _graph_and_model(x):
    """Accept a Graph or a Model: (graph, model or None)."""
    if hasattr(x, "params") and hasattr(x, "graph"):
        return x.graph, x
    return x, None


def _is_file(p):
    try:
        return Path(p).is_file()
    except (OSError, ValueError):  # a YAML text too long or odd to be a file name
        return False


def _read_text(source):
    """(text, where) of YAML given as text, a str path ending in .yaml/.yml, or a Path."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and (source.endswith((".yaml", ".yml")) or _is_file(source))):
        p = Path(source)
        try:
            return p.read_text(), str(p)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read sparse config {p}: {e}") from None
    if not isinstance(source, str):
        raise ConfigError(f"a sparse config is YAML text or a path, got {type(source).__name__}")
    return source, "sparse config"


def _build(graph, layers, name, description, where="sparse config"):
    """Normalise (depthwise axis -> input; a keep of every channel -> None), order and validate."""
    convs = graph.convs
    out = []
    for lu in layers:
        if 0 <= lu.conv_index < len(convs) and lu.axis in AXES:
            op = convs[lu.conv_index]
            axis = "input" if op.kind == "depthwise" else lu.axis
            keep = lu.keep
            if keep is not None and keep == tuple(range(axis_channels(op, axis))):
                keep = None
            lu = LayerUpdate(lu.conv_index, lu.bias, lu.weight, keep, axis)
        out.append(lu)
    cfg = SparseConfig(graph.name, tuple(out), True, str(name), str(description or ""))
    try:
        cfg.validate(graph)
    except ConfigError as e:
        if where == "sparse config":
            raise
        raise ConfigError(f"{where}: {e}") from None  # name the file the bad entry came from
    return cfg


def _check_keys(d, allowed, where):
    extra = sorted(str(k) for k in d if k not in allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}; allowed keys are {', '.join(sorted(allowed))}")


def _check_header(d, graph, where):
    if "model" in d and d["model"] != graph.name:
        raise ConfigError(f"{where} is for {d['model']} but the model is {graph.name}; "
                          f"load the config made for {graph.name}")
    if d.get("head", True) is not True:
        raise ConfigError(f"{where}: the classifier head is always trained; remove 'head: {d['head']}'")
    name = d.get("name", Path(where).stem if where.endswith((".yaml", ".yml")) else "custom")
    return str(name), str(d.get("description") or "")


def _from_explicit(d, graph, where):
    _check_keys(d, _EXPLICIT_KEYS, where)
    name, description = _check_header(d, graph, where)
    entries = d["layers"]
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'layers' must be a list of {{conv, bias, weight, keep, axis}} entries")
    layers = []
    for j, e in enumerate(entries):
        ew = f"{where}: layers[{j}]"
        if not isinstance(e, dict) or "conv" not in e:
            raise ConfigError(f"{ew} must be a mapping with at least 'conv', e.g. "
                              f"{{conv: 21, bias: true, weight: true, keep: null, axis: input}}")
        _check_keys(e, _LAYER_KEYS, ew)
        try:
            layers.append(LayerUpdate(e["conv"], e.get("bias", True), e.get("weight", False),
                                      e.get("keep"), e.get("axis", "input")))
        except ConfigError as err:
            raise ConfigError(f"{ew}: {err}") from None
    return _build(graph, layers, name, description, where)


def _int_list(v, what, where):
    """MIT writes lists as '21-24-27' on the command line; accept that, a YAML list or one number."""
    if isinstance(v, str):
        try:
            return [float(p) if what == "weight_update_ratio" else int(p) for p in v.split("-")]
        except ValueError:
            raise ConfigError(f"{where}: cannot read {what} {v!r}; use a list such as [21, 24, 27]") from None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [v]
    if isinstance(v, list):
        return v
    raise ConfigError(f"{where}: {what} must be a list, got {v!r}")


def _from_mit(d, graph, model, criterion, seed, where):
    """MIT's backward_config (tiny-training algorithm/core/utils/partial_backward.py,
    parsed_backward_config / prepare_model_for_backward_config / apply_backward_config) -> SparseConfig."""
    _check_keys(d, _MIT_KEYS, where)
    name, description = _check_header(d, graph, where)
    convs = graph.convs
    n_conv = len(convs)
    if d.get("enable_backward_config", 1) != 1:
        raise ConfigError(f"{where}: enable_backward_config 0 means MIT trains the whole network; "
                          f"use the 'full' config instead")
    nb = d.get("n_bias_update", 0)
    if nb == "all":
        nb = n_conv
    if not _is_int(nb) or not 0 <= nb <= n_conv:
        raise ConfigError(f"{where}: n_bias_update must be 'all' or an integer in 0..{n_conv} "
                          f"({graph.name} has {n_conv} convs), got {nb!r}")
    bias_range = range(n_conv - nb, n_conv)  # biases of the last nb convs
    if d.get("manual_weight_idx") is not None:
        idx = _int_list(d["manual_weight_idx"], "manual_weight_idx", where)
    else:  # n_weight_update: the last n convs ('all' = as many as get a bias update)
        nw = d.get("n_weight_update", 0) or 0
        if nw == "all":
            nw = nb
        if not _is_int(nw) or not 0 <= nw <= n_conv:
            raise ConfigError(f"{where}: n_weight_update must be 'all' or an integer in 0..{n_conv}, got {nw!r}")
        idx = list(range(n_conv - nw, n_conv))
    for i in idx:
        if not _is_int(i):
            raise ConfigError(f"{where}: manual_weight_idx entries must be conv indices, got {i!r}")
        if not 0 <= i < n_conv:
            raise ConfigError(f"{where}: conv {i} does not exist: {graph.name} has convs 0..{n_conv - 1}")
    if len(set(idx)) != len(idx):
        raise ConfigError(f"{where}: manual_weight_idx lists a conv twice: {idx}")
    if idx != sorted(idx):  # MIT asserts sorted indices: the ratios are matched to them in order
        raise ConfigError(f"{where}: manual_weight_idx must be ascending (ratios follow its order), got {idx}")
    if d.get("pw1_weight_only"):  # MIT's _is_pw1: a 1x1 conv that expands channels
        idx = [i for i in idx if convs[i].kind == "pointwise" and convs[i].cout > convs[i].cin]
    for i in idx:
        if i not in bias_range:
            raise ConfigError(f"{where}: conv {i} updates its weight but is outside the last {nb} convs "
                              f"({n_conv - nb}..{n_conv - 1}) whose biases are updated; MIT requires both: "
                              f"raise n_bias_update to {n_conv - i} or drop conv {i}")
    ratios = d.get("weight_update_ratio")
    if ratios is None:
        ratios = [None] * len(idx)
    elif isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        ratios = [ratios] * len(idx)
    else:
        ratios = _int_list(ratios, "weight_update_ratio", where)
    if len(ratios) != len(idx):
        raise ConfigError(f"{where}: {len(ratios)} weight_update_ratio values for {len(idx)} manual_weight_idx "
                          f"convs; give one ratio per listed conv")
    crit = criterion if criterion is not None else d.get("weight_select_criteria", "magnitude+")
    if crit not in CRITERIA:
        raise ConfigError(f"{where}: channel criterion {crit!r} is not one of {', '.join(CRITERIA)}")
    rng = np.random.default_rng(seed)
    weights = {}
    for i, r in zip(idx, ratios):
        op = convs[i]
        c = axis_channels(op, "input")  # MIT: input channels (dim 1), channels for depthwise (dim 0)
        if r is None:
            n_keep = c
        elif isinstance(r, bool) or not isinstance(r, (int, float)) or r < 0:
            raise ConfigError(f"{where}: weight_update_ratio {r!r} for conv {i} must be a number >= 0")
        elif r <= 1:
            n_keep = int(c * r)  # floor, as MIT: int(in_channels * ratio)
        elif float(r).is_integer() and r <= c:  # MIT: a ratio > 1 is an absolute channel count
            n_keep = int(r)
        else:
            raise ConfigError(f"{where}: weight_update_ratio {r} for conv {i} is above 1 but not a channel count "
                              f"in 2..{c}; use a fraction of the {c} channels")
        if n_keep == 0:
            continue  # ratio 0: listed, but MIT's keep mask is all zero, so the weight never changes
        keep = None if n_keep == c else select_channels(model if model is not None else graph, i, n_keep,
                                                        "input", crit, rng)
        weights[i] = keep
    layers = [LayerUpdate(i, True, i in weights, weights.get(i), "input") for i in bias_range]
    return _build(graph, layers, name, description, where)


# ---------------------------------------------------------------------------------------------
# Channel choice
# ---------------------------------------------------------------------------------------------

def channel_norms(model, conv_index, axis="input"):
    """L2 norm of each channel's weight slice along `axis`, in real units (float64, shape (C,)).

    Real weights = int8 weight x per-output-channel scale w_scales, i.e. what MIT's float model holds
    (its magnitude+ criterion, tiny-training partial_backward.py _get_conv_w_norm, runs on the
    fake-quantized float weights; the int8 values alone differ from those by the per-output scale, which
    changes the ranking of input channels). Slices: conv2d OHWI W[:, :, :, c] (input) or W[c] (output);
    pointwise W[:, c] or W[c]; depthwise (KH, KW, C) W[:, :, c] for either axis.
    """
    op = model.graph.convs[conv_index]
    p = model.params[op.name]
    w = p["weight"].astype(np.float64)
    s = p["w_scales"].astype(np.float64)
    if op.kind == "depthwise":
        return np.sqrt(((w * s) ** 2).sum(axis=(0, 1)))
    real = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    if axis == "input":
        return np.sqrt((real ** 2).reshape(-1, real.shape[-1]).sum(axis=0))
    return np.sqrt((real ** 2).reshape(real.shape[0], -1).sum(axis=1))


def select_channels(model, conv_index, n_keep, axis="input", criterion="magnitude+", rng=None):
    """Sorted tuple of n_keep channel indices of conv `conv_index` along `axis`.

    magnitude+: the n_keep largest `channel_norms` (ties: lower index first), computed once from the
    weights, as MIT's static L2-norm selection. random: a uniform draw from `rng` (a numpy Generator);
    needs only the Graph, so `model` may be a Graph for it.
    """
    graph, m = _graph_and_model(model)
    op = graph.convs[conv_index]
    c = axis_channels(op, axis)
    if not 0 <= n_keep <= c:
        raise ConfigError(f"conv {conv_index} ({op.name}): cannot keep {n_keep} of {c} channels")
    if criterion == "magnitude+":
        if m is None:
            raise ConfigError(f"conv {conv_index} ({op.name}): magnitude+ chooses channels by weight norm; "
                              f"pass the Model (weights), not only the Graph, or use criterion 'random'")
        order = np.argsort(-channel_norms(m, conv_index, axis), kind="stable")
        return tuple(sorted(int(i) for i in order[:n_keep]))
    if criterion == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        return tuple(sorted(int(i) for i in rng.permutation(c)[:n_keep]))
    raise ConfigError(f"channel criterion {criterion!r} is not one of {', '.join(CRITERIA)}")


# ---------------------------------------------------------------------------------------------
# Ready-made configs
# ---------------------------------------------------------------------------------------------

def full_train(graph):
    """FullTrain: every conv's weight (all channels) and bias, plus the head."""
    graph, _ = _graph_and_model(graph)
    layers = [LayerUpdate(op.conv_index, True, True) for op in graph.convs]
    return _build(graph, layers, "full", "FullTrain: every conv's weight and bias, and the head")


def last_layer(graph, with_last_conv=False):
    """LastLayer: the head only; with_last_conv adds the last conv's weight and bias."""
    graph, _ = _graph_and_model(graph)
    if not with_last_conv:
        return _build(graph, [], "last", "LastLayer: the classifier head only")
    last = graph.convs[-1].conv_index
    return _build(graph, [LayerUpdate(last, True, True)], "last+conv",
                  "LastLayer + the last conv's weight and bias")


def bias_only(graph):
    """Bias-only update of every conv (TinyTL-style, without its lite residual modules), plus the head."""
    graph, _ = _graph_and_model(graph)
    layers = [LayerUpdate(op.conv_index, True, False) for op in graph.convs]
    return _build(graph, layers, "bias", "bias-only: every conv's bias, and the head (TinyTL-style)")


def mit_schemes():
    """Names of the MIT SparseUpdate schemes shipped in reference_models/sparse/."""
    return tuple(sorted(p.stem for p in SPARSE_DIR.glob("*.yaml")))


def _resolve_scheme(name, graph_name):
    names = mit_schemes()
    if name in names:
        return name
    if f"{graph_name}-{name}" in names:  # short budget name ("100kb") resolved against the model
        return f"{graph_name}-{name}"
    return None


def mit_scheme(name, model, criterion="magnitude+", seed=0):
    """One of MIT tiny-training's published SparseUpdate schemes (reference_models/sparse/<name>.yaml,
    in MIT's terms) resolved for `model` (a Model; a Graph suffices with criterion 'random')."""
    graph, _ = _graph_and_model(model)
    full = _resolve_scheme(name, graph.name)
    if full is None:
        raise ConfigError(f"unknown MIT scheme {name!r}; available: {', '.join(mit_schemes())}")
    return SparseConfig.from_yaml(SPARSE_DIR / f"{full}.yaml", model, criterion=criterion, seed=seed)


def load_config(name_or_path, model, criterion="magnitude+", seed=0):
    """A SparseConfig by name ("full", "last", "last+conv", "bias", an MIT scheme such as
    "mcunet-5fps-100kb" or just "100kb" for the model at hand) or from a YAML file."""
    graph, _ = _graph_and_model(model)
    builders = {"full": full_train, "last": last_layer, "last+conv": lambda g: last_layer(g, True),
                "bias": bias_only}
    if name_or_path in builders:
        return builders[name_or_path](graph)
    if isinstance(name_or_path, str) and _resolve_scheme(name_or_path, graph.name) is not None:
        return mit_scheme(name_or_path, model, criterion, seed)
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or _is_file(p):
        if not _is_file(p):
            raise ConfigError(f"sparse config file {p} does not exist")
        return SparseConfig.from_yaml(p, model, criterion=criterion, seed=seed)
    short = sorted({s.split("-")[-1] for s in mit_schemes() if s.startswith(graph.name + "-")})
    raise ConfigError(f"unknown sparse config {name_or_path!r}; use one of {', '.join(BUILTIN)}, "
                      f"{', '.join(mit_schemes())}"
                      + (f" (or {', '.join(short)} for {graph.name})" if short else "")
                      + ", or a path to a .yaml file")


# ---------------------------------------------------------------------------------------------
# Compute: backward MACs (DESIGN.md section 7)
# ---------------------------------------------------------------------------------------------

def _weight_grad_macs(graph, op, lu):
    """Weight-gradient MACs of the kept channels: kept fraction x forward MACs (exact: forward MACs
    are a multiple of the axis size)."""
    k, n = kept_channels(op, lu)
    return graph.op_macs(op) // n * k


def backward_macs(graph, cfg, convention="engine", batch=1):
    """Backward multiply-accumulates of one training step on `batch` samples.

    engine: what our backward executes. Input gradients (MACs = forward MACs) of every conv strictly
      after the earliest updated conv (weight or bias: a bias gradient needs the gradient at that conv's
      output, so everything above it is propagated through, but not the conv itself), plus the kept
      fraction x forward MACs of each weight gradient, plus the head's weight gradient (cin x cout) and,
      when any conv is updated, the head's input gradient (cin x cout).
    paper: TinyTrain's Table 2 convention (not a rule the paper states; fitted to its numbers).
      Input gradients of the convs strictly after the earliest *weight*-updated conv plus the kept
      fraction x forward MACs of the weight-updated convs; biases and the head are ignored. When conv 0's
      weights are updated (FullTrain) the table counts conv 0's input gradient too, i.e. exactly
      2 x forward MACs. Reproduces MCUNet's FullTrain 44,907,008 and SparseUpdate 11,882,240 ("11.9M").
    """
    graph, _ = _graph_and_model(graph)
    convs = graph.convs
    total = 0
    if convention == "engine":
        e = cfg.earliest()
        if e is not None:
            total += sum(graph.op_macs(op) for op in convs[e + 1:])
        total += sum(_weight_grad_macs(graph, convs[lu.conv_index], lu) for lu in cfg.layers if lu.weight)
        head = graph.classifier
        if head is not None:
            total += head.cin * head.cout * (2 if cfg.layers else 1)
    elif convention == "paper":
        e = cfg.earliest_weight()
        if e is not None:
            first = 0 if e == 0 else e + 1  # FullTrain: the table also counts conv 0's input gradient
            total += sum(graph.op_macs(op) for op in convs[first:])
            total += sum(_weight_grad_macs(graph, convs[lu.conv_index], lu) for lu in cfg.layers if lu.weight)
    else:
        raise ConfigError(f"unknown MAC convention {convention!r}; use 'engine' or 'paper'")
    return total * batch


# ---------------------------------------------------------------------------------------------
# Analytic memory conventions of the literature (for comparison with published tables; NOT the plan)
# ---------------------------------------------------------------------------------------------

def mit_analytic_breakdown(graph, cfg, batch=1):
    """MIT tiny-training's analytic count of memory saved for backward, in bits (NOT microtrain's plan).

    Rule of `nelem_saved_for_backward` (tiny-training algorithm/core/utils/partial_backward.py), per
    updated conv: 1-bit mask per output element; int32 bias; if the weight is updated, int8 input
    activations of the kept channels (H_in x W_in x kept) and int8 weights of the kept channels
    (Cout x kept x k x k; depthwise kept x k x k); momentum 0 bits. Classifier: its int8 input (cin)
    counted, its weights not (fc_bits = 0). Activations scale with `batch` (MIT used 1).
    Extensions for configs MIT cannot express: a weight-only layer has no bias term; axis "output" needs
    the whole input (Cin channels) and kept x Cin x k x k weights. Like MIT, frozen layers between updated
    ones are not counted (MIT's schemes have none: every conv after the first updated one gets a bias).
    Returns {"activation_bits", "weight_bits", "layers": [(conv_index, activation_bits, weight_bits)]},
    the classifier's input being in activation_bits only.
    """
    graph, _ = _graph_and_model(graph)
    convs = graph.convs
    rows = []
    for lu in cfg.layers:
        op = convs[lu.conv_index]
        a = graph.numel(op.output)  # 1-bit mask per output element
        w = 32 * op.cout if lu.bias else 0
        if lu.weight:
            h, wd, cin = graph.shapes[op.inputs[0]]
            k, _ = kept_channels(op, lu)
            kk = op.kernel * op.kernel
            if op.kind == "depthwise":
                a += 8 * h * wd * k
                w += 8 * k * kk
            elif lu.axis == "input":
                a += 8 * h * wd * k
                w += 8 * op.cout * k * kk
            else:
                a += 8 * h * wd * cin
                w += 8 * k * cin * kk
        rows.append((lu.conv_index, a * batch, w))
    head = graph.classifier
    head_bits = 8 * head.cin * batch if head is not None else 0
    return {"activation_bits": head_bits + sum(r[1] for r in rows),
            "weight_bits": sum(r[2] for r in rows), "layers": rows}


def mit_analytic_bytes(graph, cfg, batch=1):
    """Bytes of MIT tiny-training's analytic memory count (see mit_analytic_breakdown), rounded up.
    NOT the plan. MCUNet's "100KB" scheme gives 102,240 B = 99.8 KiB (MIT prints bits / 8 / 1024)."""
    b = mit_analytic_breakdown(graph, cfg, batch)
    return -(-(b["activation_bits"] + b["weight_bits"]) // 8)


def tinytl_analytic_bytes(graph, cfg, batch=8):
    """TinyTL's profiler convention (mit-han-lab/tinyml tinytl/utils/memory_cost_profiler.py,
    profile_memory_cost): peak activation size x batch + parameter size. NOT the plan.

    Walk the leaf modules in forward order; at each, current = its temporary footprint + everything
    saved for backward so far + the open residual's input; peak = max(current). Conv: temporary
    input + output / groups (depthwise: groups = C), saves its input only if its weight is trained.
    ReLU6: temporary its input, saves a 1-bit mask (TinyTL counts every ReLU's mask when training).
    Linear (head, always trained): temporary input + output, saves its input. Inside a residual block
    the block's input is held. fp32 activations; parameters 32-bit if trained, 8-bit if frozen.
    Our graphs have BatchNorm folded (as the tiny-training models), so TinyTL's BN terms are absent.
    Extension for sub-tensor updates (TinyTL has none): only the trained fraction of a weight counts
    32-bit, and an input-axis update saves only the kept input channels.
    """
    graph, _ = _graph_and_model(graph)
    f32 = 32
    residual_of = {}  # op name -> bits of its block's input, for ops inside a residual block
    for op in graph.ops:
        if op.kind == "add":
            prefix = op.name.rsplit(".", 1)[0] + "."
            bits = f32 * graph.numel(op.inputs[0])
            for o in graph.ops:
                if o.name.startswith(prefix):
                    residual_of[o.name] = bits
    peak = saved = 0
    param_bits = 0
    for op in graph.ops:
        res = residual_of.get(op.name, 0)
        if op.kind in ("conv2d", "depthwise", "pointwise"):
            x, y = graph.numel(op.inputs[0]), graph.numel(op.output)
            groups = op.cout if op.kind == "depthwise" else 1
            peak = max(peak, f32 * x + f32 * y // groups + saved + res)
            lu = cfg.updated(op.conv_index)
            n_w = graph.op_params(op) - op.cout
            trained_w = 0
            if lu is not None and lu.weight:
                k, n = kept_channels(op, lu)
                trained_w = n_w // n * k
                stored = x // n * k if (lu.axis == "input" or op.kind == "depthwise") else x
                saved += f32 * stored
            bias_bits = 32 if lu is not None and lu.bias else 8
            param_bits += 32 * trained_w + 8 * (n_w - trained_w) + bias_bits * op.cout
            if op.act is not None:  # the fused ReLU/ReLU6 as its own module
                peak = max(peak, f32 * y + saved + res)
                saved += y  # 1-bit mask
        elif op.kind == "fc":
            x, y = graph.numel(op.inputs[0]), graph.numel(op.output)
            peak = max(peak, f32 * (x + y) + saved + res)
            saved += f32 * x
            param_bits += 32 * graph.op_params(op)
    return -(-(peak * batch + param_bits) // 8)
