"""An int8 model: a Graph plus per-op weights and per-tensor quantization, in TFLite Micro's format.

Weights: per-channel symmetric int8 (zero point 0, range [-127, 127]) with float32 scales `w_scales`;
biases int32 with scale s_x * s_w[c]; activations asymmetric int8 with (scale, zero_point) per tensor.
Frozen weights are read-only arrays ("flash"); the training engine copies trainable ones into SRAM.
"""

from dataclasses import dataclass, field

import numpy as np

from microtrain.errors import WeightFileError
from microtrain.graph import CONV_KINDS, Graph, load_graph


@dataclass
class Model:
    graph: Graph
    params: dict  # op name -> {"weight": int8, "bias": int32, "w_scales": float32 (Cout,)}
    quant: dict  # tensor name -> (scale: float, zero_point: int)
    meta: dict = field(default_factory=dict)

    @property
    def name(self):
        return self.graph.name

    def input_quant(self):
        return self.quant[self.graph.input_name]

    def validate(self, where="weights"):
        """Check every array against the graph: shapes, dtypes, ranges, finite positive scales.

        Raises WeightFileError saying which entry is wrong (weights for another model, a corrupt file).
        """
        g = self.graph
        for op in g.ops:
            if not op.has_weights:
                continue
            p = self.params.get(op.name)
            if p is None:
                raise WeightFileError(f"{where}: no weights for {op.name} of {g.name}; are these weights for another model?")
            checks = (("weight", op.weight_shape(), np.int8), ("bias", (op.cout,), np.int32),
                      ("w_scales", (op.cout,), np.float32))
            for key, shape, dtype in checks:
                a = p.get(key)
                if not isinstance(a, np.ndarray):
                    raise WeightFileError(f"{where}: {op.name}/{key} is missing")
                if a.dtype != dtype or a.shape != tuple(shape):
                    raise WeightFileError(
                        f"{where}: {op.name}/{key} has shape {a.shape} {a.dtype}, expected {tuple(shape)} "
                        f"{np.dtype(dtype)}; are these weights for another model than {g.name}?")
            if np.any(p["weight"] == -128):
                raise WeightFileError(f"{where}: {op.name}/weight holds -128; int8 weights are symmetric in [-127, 127]")
            s = p["w_scales"]
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise WeightFileError(f"{where}: {op.name}/w_scales must be finite and positive")
        tensors = [g.input_name] + [op.output for op in g.ops]
        for t in tensors:
            q = self.quant.get(t)
            if q is None:
                raise WeightFileError(f"{where}: no quantization for tensor {t}")
            scale, zp = q
            if not (np.isfinite(scale) and scale > 0) or not (-128 <= zp <= 127) or int(zp) != zp:
                raise WeightFileError(f"{where}: tensor {t} has invalid quantization scale={scale} zero_point={zp}")
        for op in g.ops:
            if op.kind == "mean" and self.quant[op.inputs[0]] != self.quant[op.output]:
                raise WeightFileError(f"{where}: {op.name} must keep its input's quantization (average pool)")

    def freeze(self):
        """Make every weight array read-only: frozen weights live in flash."""
        for p in self.params.values():
            for a in p.values():
                a.setflags(write=False)
        return self


def random_model(graph, seed=0):
    """A random but numerically plausible int8 model of `graph` (tests, benchmarks, conformance).

    Scales are chosen so that accumulators land in a useful part of the int8 output range:
    variance-preserving weight scales, activation scales that keep ~4 std in the int8 range.
    """
    rng = np.random.default_rng(seed)
    params, quant = {}, {}
    quant[graph.input_name] = (1.0 / 32.0, 0)
    for op in graph.ops:
        xs, _ = quant[op.inputs[0]]
        if op.kind == "mean":
            quant[op.output] = quant[op.inputs[0]]
            continue
        if op.kind == "add":
            s = max(quant[op.inputs[0]][0], quant[op.inputs[1]][0]) * float(rng.uniform(1.0, 1.5))
            quant[op.output] = (s, int(rng.integers(-20, 20)))
            continue
        shape = op.weight_shape()
        w = rng.integers(-127, 128, size=shape, dtype=np.int16).astype(np.int8)
        fan_in = op.kernel * op.kernel * (1 if op.kind == "depthwise" else op.cin)
        # int8 weights have std ~73; choose s_w so the real-valued output std is about the input's
        # (variance-preserving init); an int8 std of ~32 steps keeps 4 std inside [-128, 127], so the
        # output scale stays near the input's.
        ws = (rng.uniform(0.5, 1.5, size=op.cout) / (73.0 * np.sqrt(fan_in))).astype(np.float32)
        ys = float(xs * rng.uniform(0.8, 1.25))
        bias = rng.integers(-2000, 2000, size=op.cout).astype(np.int32)
        params[op.name] = {"weight": w, "bias": bias, "w_scales": ws}
        if op.act == "relu6" or op.act == "relu":
            quant[op.output] = (ys, -128)
        else:
            quant[op.output] = (ys, int(rng.integers(-30, 30)))
    m = Model(graph, params, quant, {"source": f"random_model(seed={seed})"})
    m.validate("random_model")
    return m.freeze()


def load_model(model, weights=None, seed=0):
    """Graph of `model` (reference name or YAML path) with weights from a .pkl (tiny-training) or
    .npz (microtrain) file; without weights, a random model (for shapes, plans and benchmarks)."""
    graph = load_graph(model)
    if weights is None:
        return random_model(graph, seed)
    from microtrain.weights import read_weights

    return read_weights(graph, weights)


def conv_ops(model):
    return [op for op in model.graph.ops if op.kind in CONV_KINDS]
