"""Real layer shapes of the three reference models, deduplicated, with random int8 parameters."""

import numpy as np

from microtrain.graph import load_graph
from microtrain.kernels.requant import conv_multipliers
from microtrain.reference_models import NAMES


def unique_layers(kind):
    """[(id, model, op, in_shape, out_shape)] for every distinct layer shape of `kind` over the models."""
    seen, out = set(), []
    for model in NAMES:
        g = load_graph(model)
        for op in g.ops:
            if op.kind != kind:
                continue
            xin, yout = g.shapes[op.inputs[0]], g.shapes[op.output]
            key = (xin, yout, op.kernel, op.stride)
            if key in seen:
                continue
            seen.add(key)
            lid = f"{model}:{op.name}:{'x'.join(map(str, xin))}-k{op.kernel}s{op.stride}-{yout[2]}"
            out.append((lid, model, op, xin, yout, g.op_macs(op)))
    return out


def random_conv_args(op, xin, batch, seed=0):
    """(x, w, bias, mult, shift, x_zp, y_zp, lo, hi) for a conv-like op at batch `batch`."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(batch,) + tuple(xin), dtype=np.int16).astype(np.int8)
    w = rng.integers(-127, 128, size=op.weight_shape(), dtype=np.int16).astype(np.int8)
    fan_in = op.kernel * op.kernel * (1 if op.kind == "depthwise" else op.cin)
    ws = (rng.uniform(0.5, 1.5, op.cout) / (73 * np.sqrt(fan_in))).astype(np.float32)
    bias = rng.integers(-3000, 3000, size=op.cout).astype(np.int32)
    mult, shift = conv_multipliers(0.05, ws, 0.05)
    return x, w, bias, mult, shift, 3, -5, -128, 127
