"""The network as data: ops in execution order over named NHWC tensors, built from a YAML spec.

Op names follow tiny-training's model dict (`first_conv`, `blocks.{i}.pointwise1|depthwise|pointwise2`,
`classifier`), plus `blocks.{i}.add` (residual), `pool` (global average). Conv numbering (`conv_index`)
is tiny-training's: every conv in model order, 0 = first conv; the classifier is separate.
Shapes are per sample; the batch dimension is added when a phase is planned.
"""

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from microtrain.errors import SpecError, UnknownModelError
from microtrain.reference_models import NAMES as REFERENCE_NAMES
from microtrain.reference_models import SPEC_DIR

CONV_KINDS = ("conv2d", "depthwise", "pointwise")
WEIGHTED_KINDS = CONV_KINDS + ("fc",)
ACTIVATIONS = (None, "relu", "relu6")


@dataclass(frozen=True)
class Op:
    """One operator. `inputs`/`output` are tensor names; the output tensor is named like the op."""

    name: str
    kind: str  # conv2d | depthwise | pointwise | add | mean | fc
    inputs: tuple
    output: str
    cin: int = 0
    cout: int = 0
    kernel: int = 1
    stride: int = 1
    pad: int = 0  # symmetric explicit padding, k // 2 (PyTorch semantics, as the models were trained)
    act: str = None  # fused activation: None, "relu" or "relu6"
    conv_index: int = None  # tiny-training numbering, conv kinds only

    @property
    def has_weights(self):
        return self.kind in WEIGHTED_KINDS

    def weight_shape(self):
        """Canonical int8 weight layout of this op (NHWC world, converted once at load time)."""
        if self.kind == "conv2d":
            return (self.cout, self.kernel, self.kernel, self.cin)  # OHWI
        if self.kind == "depthwise":
            return (self.kernel, self.kernel, self.cout)  # (KH, KW, C)
        if self.kind in ("pointwise", "fc"):
            return (self.cout, self.cin)
        return None


@dataclass
class Graph:
    name: str
    input_shape: tuple  # (H, W, C)
    ops: list
    shapes: dict = field(default_factory=dict)  # tensor name -> per-sample shape
    source: str = ""

    input_name = "input"

    @property
    def output(self):
        return self.ops[-1].output

    @property
    def convs(self):
        """Conv ops in tiny-training order (index i is conv_index i)."""
        return [op for op in self.ops if op.kind in CONV_KINDS]

    @property
    def classifier(self):
        return self.ops[-1] if self.ops[-1].kind == "fc" else None

    def op(self, name):
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(name)

    def producer(self, tensor):
        for o in self.ops:
            if o.output == tensor:
                return o
        return None

    # ---- counts -------------------------------------------------------------------------------
    def op_params(self, op):
        """Weights + biases of one op (elements)."""
        if op.kind == "depthwise":
            return op.kernel * op.kernel * op.cout + op.cout
        if op.kind == "conv2d":
            return op.cout * op.kernel * op.kernel * op.cin + op.cout
        if op.kind in ("pointwise", "fc"):
            return op.cout * op.cin + op.cout
        return 0

    def op_macs(self, op):
        """Forward multiply-accumulates of one op, per sample."""
        out = self.shapes[op.output]
        if op.kind == "conv2d":
            return out[0] * out[1] * op.cout * op.kernel * op.kernel * op.cin
        if op.kind == "depthwise":
            return out[0] * out[1] * op.cout * op.kernel * op.kernel
        if op.kind == "pointwise":
            return out[0] * out[1] * op.cout * op.cin
        if op.kind == "fc":
            return op.cout * op.cin
        return 0

    def conv_params(self):
        return sum(self.op_params(o) for o in self.convs)

    def conv_macs(self):
        return sum(self.op_macs(o) for o in self.convs)

    def numel(self, tensor):
        n = 1
        for d in self.shapes[tensor]:
            n *= d
        return n


# ---------------------------------------------------------------------------------------------
# Spec reading
# ---------------------------------------------------------------------------------------------

def resolve_spec_path(model):
    """A reference model name or a path to a YAML spec -> Path. Raises UnknownModelError."""
    if model in REFERENCE_NAMES:
        return SPEC_DIR / f"{model}.yaml"
    p = Path(model)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    raise UnknownModelError(
        f"unknown model {model!r}: use one of {', '.join(REFERENCE_NAMES)} or a path to a .yaml spec"
    )


def load_graph(model):
    """Build the Graph of a reference model name or a YAML spec path."""
    path = resolve_spec_path(model)
    try:
        text = path.read_text()
    except OSError as e:
        raise UnknownModelError(f"cannot read model spec {path}: {e}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"model spec {path} is not valid YAML ({e}); fix the file or use a reference model") from None
    return graph_from_spec(spec, where=str(path))


def _int(d, key, where, minimum=1):
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SpecError(f"{where}: '{key}' must be an integer >= {minimum}, got {v!r}")
    return v


def _act(d, key, default, where):
    v = d.get(key, default)
    if v == "none":
        v = None
    if v not in ACTIVATIONS:
        raise SpecError(f"{where}: unsupported activation {v!r} (use none, relu or relu6)")
    return v


def graph_from_spec(spec, where="spec"):
    """MBConv network from a spec dict (the YAML schema is documented in reference_models/*.yaml).

    Rules (MobileNetV2 / MCUNet / ProxylessNAS): a block has a 1x1 expansion (pointwise1) unless
    expand == 1, a k x k depthwise with stride s, a linear 1x1 projection (pointwise2), and an
    identity residual when stride == 1 and in == out channels. ReLU6 follows first_conv,
    pointwise1 and depthwise. Then global average pooling and a fully connected classifier.
    """
    if not isinstance(spec, dict):
        raise SpecError(f"{where}: the spec must be a mapping with keys name, input, first_conv, blocks, classifier")
    for key in ("name", "input", "first_conv", "blocks"):
        if key not in spec:
            raise SpecError(f"{where}: missing key '{key}'")
    inp = spec["input"]
    if not (isinstance(inp, list) and len(inp) == 3 and all(isinstance(v, int) and v > 0 for v in inp)):
        raise SpecError(f"{where}: 'input' must be [height, width, channels], got {inp!r}")
    ops, shapes = [], {"input": tuple(inp)}
    conv_index = [0]

    def add_conv(name, kind, x, cin, cout, kernel, stride, act):
        h, w, c = shapes[x]
        if c != cin:
            raise SpecError(f"{where}: {name} expects {cin} input channels but its input has {c}")
        if kind == "depthwise" and cin != cout:
            raise SpecError(f"{where}: {name}: depthwise conv needs in == out channels ({cin} != {cout})")
        if kernel % 2 != 1:
            raise SpecError(f"{where}: {name}: kernel {kernel} must be odd (symmetric k//2 padding)")
        pad = kernel // 2
        oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        if oh < 1 or ow < 1:
            raise SpecError(f"{where}: {name}: input {h}x{w} is too small for kernel {kernel} stride {stride}")
        op = Op(name, kind, (x,), name, cin, cout, kernel, stride, pad, act, conv_index[0])
        conv_index[0] += 1
        ops.append(op)
        shapes[name] = (oh, ow, cout)
        return name

    fc = spec["first_conv"]
    if not isinstance(fc, dict):
        raise SpecError(f"{where}: 'first_conv' must be a mapping with out, kernel, stride")
    x = add_conv("first_conv", "conv2d", "input", inp[2], _int(fc, "out", where + ": first_conv"),
                 _int(fc, "kernel", where + ": first_conv"), _int(fc, "stride", where + ": first_conv"),
                 _act(fc, "act", "relu6", where + ": first_conv"))

    blocks = spec["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise SpecError(f"{where}: 'blocks' must be a non-empty list")
    b = 0
    for j, blk in enumerate(blocks):
        bw = f"{where}: blocks[{j}]"
        if not isinstance(blk, dict):
            raise SpecError(f"{bw} must be a mapping with expand, out, kernel, stride")
        repeat = _int(blk, "repeat", bw) if "repeat" in blk else 1
        for r in range(repeat):
            cin = shapes[x][2]
            expand = _int(blk, "expand", bw)
            cout = _int(blk, "out", bw)
            kernel = _int(blk, "kernel", bw)
            stride = _int(blk, "stride", bw) if r == 0 else 1
            mid = blk.get("mid", cin * expand)
            if not isinstance(mid, int) or mid < 1:
                raise SpecError(f"{bw}: 'mid' must be a positive integer")
            block_in = x
            if expand != 1:
                x = add_conv(f"blocks.{b}.pointwise1", "pointwise", x, cin, mid, 1, 1, "relu6")
            elif mid != cin:
                raise SpecError(f"{bw}: expand 1 needs mid == in channels ({mid} != {cin})")
            x = add_conv(f"blocks.{b}.depthwise", "depthwise", x, mid, mid, kernel, stride, "relu6")
            x = add_conv(f"blocks.{b}.pointwise2", "pointwise", x, mid, cout, 1, 1, None)
            if stride == 1 and cin == cout and blk.get("residual", True):
                name = f"blocks.{b}.add"
                ops.append(Op(name, "add", (block_in, x), name, cout, cout))
                shapes[name] = shapes[x]
                x = name
            b += 1

    if spec.get("feature_mix"):
        fm = spec["feature_mix"]
        if not isinstance(fm, dict):
            raise SpecError(f"{where}: 'feature_mix' must be a mapping with out")
        x = add_conv("feature_mix", "pointwise", x, shapes[x][2], _int(fm, "out", where + ": feature_mix"),
                     1, 1, _act(fm, "act", "relu6", where + ": feature_mix"))

    c = shapes[x][2]
    ops.append(Op("pool", "mean", (x,), "pool", c, c))
    shapes["pool"] = (c,)
    n_classes = spec.get("classifier", 1000)
    if isinstance(n_classes, dict):
        n_classes = n_classes.get("out")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise SpecError(f"{where}: 'classifier' must be the number of classes, got {n_classes!r}")
    ops.append(Op("classifier", "fc", ("pool",), "classifier", c, n_classes))
    shapes["classifier"] = (n_classes,)
    return Graph(name=str(spec["name"]), input_shape=tuple(inp), ops=ops, shapes=shapes,
                 source=str(spec.get("source", "")))


def with_classes(graph, n_classes):
    """The same backbone with an n-way classifier (few-shot heads replace the 1000-way one)."""
    ops = list(graph.ops)
    head = ops[-1]
    ops[-1] = Op(head.name, "fc", head.inputs, head.output, head.cin, n_classes)
    shapes = dict(graph.shapes)
    shapes[head.output] = (n_classes,)
    return Graph(graph.name, graph.input_shape, ops, shapes, graph.source)
