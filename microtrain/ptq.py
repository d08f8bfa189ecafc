"""Post-training quantization: fp32 weights of a Graph -> an int8 Model in TFLite Micro's format.

Weights per output channel, symmetric: s_w[c] = max|w[c]| / 127, w_q = round(w / s_w[c]) in [-127, 127]
(TFLite's int8 quantization spec: per-axis symmetric weights, zero point 0, -128 unused). Biases int32 with
scale s_x * s_w[c], zero point 0. Activations per tensor, asymmetric: the calibrated [min, max] widened to
hold 0, scale (max - min) / 255, zero point round(-128 - min / scale) (the converter's min/max calibration).
ReLU6 outputs take the fixed range [0, 6] (scale 6/255, zero point -128) as tiny-training's int8 models do,
so the int8 clamp equals the fp32 one; ReLU outputs their calibrated [0, max]. Global average pooling keeps
its input's quantization (TFLite's MEAN with equal scales). Rounding is half away from zero (std::round).

Weights dict: op name -> (w, b) float32, w in the engine's layouts: conv2d (Co, KH, KW, Ci) OHWI, depthwise
(KH, KW, C), pointwise and fc (Co, Ci); b (Co,).
"""

import numpy as np

from microtrain.errors import InputError, NumericError
from microtrain.kernels.add import add_f32
from microtrain.kernels.conv2d import conv2d_f32
from microtrain.kernels.depthwise import depthwise_conv_f32
from microtrain.kernels.fully_connected import fully_connected_f32
from microtrain.kernels.pointwise import pointwise_conv_f32
from microtrain.kernels.pool import global_mean_f32
from microtrain.model import Model

F32 = np.float32
INT32_MAX = np.iinfo(np.int32).max
# fp32 input convention of microtrain and tiny-training: real = 2u/255 - 1 for u in 0..255, int8 q = real/s.
INPUT_QUANT = (2.0 / 255.0, 0)
RELU6_QUANT = (6.0 / 255.0, -128)


def _round_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def check_weights(graph, weights):
    """Raise InputError unless `weights` has a finite float32 (w, b) of the right shapes for every weighted op."""
    for op in graph.ops:
        if not op.has_weights:
            continue
        if op.name not in weights:
            raise InputError(f"fp32 weights: none for {op.name} of {graph.name}")
        w, b = weights[op.name]
        for what, a, shape in (("weight", w, tuple(op.weight_shape())), ("bias", b, (op.cout,))):
            if not isinstance(a, np.ndarray) or a.dtype != F32 or a.shape != shape:
                raise InputError(f"fp32 weights: {op.name}/{what} must be float32 {shape}, got "
                                 f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
            if not np.all(np.isfinite(a)):
                raise NumericError(f"fp32 weights: {op.name}/{what} holds NaN or inf; nothing to quantize")


def float_forward(graph, weights, x, ranges=None):
    """fp32 forward of x (N, H, W, C) float32 through the engine's fp32 kernels; returns the logits (N, K).

    ranges: optional dict tensor -> [min, max], widened in place with every tensor's values (calibration).
    Host-side tool: allocates each activation (not a device step; microtrain.train.TrainStep is).
    """
    check_weights(graph, weights)
    want = tuple(graph.input_shape)
    if not isinstance(x, np.ndarray) or x.dtype != F32 or x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise InputError(f"input must be float32 (N, {', '.join(map(str, want))}), got "
                         f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
    if not np.all(np.isfinite(x)):
        raise NumericError("input holds NaN or inf")
    n = x.shape[0]
    acts = {graph.input_name: x}

    def note(t, a):
        if ranges is not None:
            lo, hi = float(a.min()), float(a.max())
            r = ranges.setdefault(t, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)

    note(graph.input_name, x)
    for op in graph.ops:
        a = acts[op.inputs[0]]
        if op.kind == "mean":
            y = np.empty((n, op.cin), F32)  # pool: (N, C)
            global_mean_f32(y, a)
        elif op.kind == "add":
            y = np.empty_like(a)
            add_f32(y, a, acts[op.inputs[1]])
        elif op.kind == "fc":
            w, b = weights[op.name]
            y = np.empty((n, op.cout), F32)
            fully_connected_f32(y, a, w, b)
        else:
            w, b = weights[op.name]
            lo, hi = (0.0, 6.0) if op.act == "relu6" else ((0.0, np.inf) if op.act == "relu" else (-np.inf, np.inf))
            y = np.empty((n,) + tuple(graph.shapes[op.output]), F32)
            if op.kind == "conv2d":
                conv2d_f32(y, a, w, b, lo, hi, op.stride, op.pad)
            elif op.kind == "depthwise":
                depthwise_conv_f32(y, a, w, b, lo, hi, op.stride, op.pad)
            else:
                pointwise_conv_f32(y, a, w, b, lo, hi)
        acts[op.output] = y
        note(op.output, y)
    return acts[graph.output]


def calibrate(graph, weights, batches):
    """Per-tensor [min, max] over the fp32 forward of every batch (float32 (N, H, W, C) arrays)."""
    ranges = {}
    for x in batches:
        float_forward(graph, weights, x, ranges)
    if not ranges:
        raise InputError("calibration needs at least one batch")
    return ranges


def activation_quant(lo, hi):
    """(scale, zero_point) of int8 covering [min(lo, 0), max(hi, 0)] (0 exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise NumericError(f"activation range [{lo}, {hi}] is not finite")
    if hi - lo < 1e-6:  # a constant-zero tensor: any scale represents it; keep it positive
        hi = lo + 1e-6
    scale = (hi - lo) / 255.0
    zp = int(np.clip(_round_away(-128.0 - lo / scale), -128, 127))
    return float(np.float32(scale)), zp


def quantize_weights(op, w, b, x_scale):
    """(int8 weight, int32 bias, float32 w_scales) of one op; see the module docstring."""
    axes = {"conv2d": (1, 2, 3), "depthwise": (0, 1), "pointwise": (1,), "fc": (1,)}[op.kind]
    amax = np.max(np.abs(w.astype(np.float64)), axis=axes)
    s_x = float(np.float32(x_scale))
    # A channel whose weights are all (nearly) zero (a dead channel) still needs its bias in int32 at scale
    # s_x * s_w: its scale is raised until |b| / (s_x s_w) <= 2^30; with zero weight and bias, any positive
    # scale represents it, 1/127 is taken.
    s = np.maximum(amax / 127.0, np.abs(b.astype(np.float64)) / (s_x * 2.0 ** 30))
    s_w = np.where(s > 0, s, 1.0 / 127.0).astype(F32)
    s = s_w.astype(np.float64)
    shape = (1, 1, -1) if op.kind == "depthwise" else (-1,) + (1,) * (w.ndim - 1)
    w_q = np.clip(_round_away(w.astype(np.float64) / s.reshape(shape)), -127, 127).astype(np.int8)
    b_q = _round_away(b.astype(np.float64) / (s_x * s))
    if np.any(np.abs(b_q) > INT32_MAX):
        raise NumericError(f"{op.name}: a bias does not fit int32 at scale s_x * s_w; the input range is too narrow")
    return w_q, b_q.astype(np.int32), s_w


def quantize_model(graph, weights, ranges, input_quant=INPUT_QUANT, meta=None):
    """The int8 Model of fp32 `weights` with activation quantization from calibrated `ranges` (calibrate())."""
    check_weights(graph, weights)
    quant = {graph.input_name: (float(input_quant[0]), int(input_quant[1]))}
    params = {}
    for op in graph.ops:
        if op.kind == "mean":
            quant[op.output] = quant[op.inputs[0]]
            continue
        if op.output not in ranges:
            raise InputError(f"no calibrated range for {op.output}; calibrate with the same graph")
        if op.act == "relu6":
            quant[op.output] = RELU6_QUANT
        else:
            lo, hi = ranges[op.output]
            quant[op.output] = activation_quant(0.0 if op.act == "relu" else lo, hi)
        if op.has_weights:
            w, b = weights[op.name]
            w_q, b_q, s_w = quantize_weights(op, w, b, quant[op.inputs[0]][0])
            params[op.name] = {"weight": w_q, "bias": b_q, "w_scales": s_w}
    m = Model(graph, params, quant, dict(meta or {}))
    m.validate("quantize_model")
    return m.freeze()
