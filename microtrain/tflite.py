"""Emit a microtrain int8 Model as a TFLite flatbuffer that TFLite Micro runs bit for bit like microtrain.

Built with tflite-micro's `model_editor` (no TensorFlow needed; `pip install microtrain[oracle]`).
The same module wraps TFLM's host interpreter (`TFLMRunner`), the external oracle of the conformance tests.

Mapping (one microtrain op -> TFLite operators; every tensor keeps our tensor name):

  conv2d     PAD (H and W by op.pad each side; int8 PAD fills with the input's zero point, which is what
             our kernels' "skip out-of-image taps" means) -> CONV_2D VALID, filter OHWI (Co, KH, KW, Ci).
             The padded tensor is named "<op>/pad".
  depthwise  PAD -> DEPTHWISE_CONV_2D VALID, filter (1, KH, KW, C), quantized_dimension 3,
             depth_multiplier 1.
  pointwise  CONV_2D 1x1 VALID, filter (Co, 1, 1, Ci); no PAD.
  add        ADD (TFLM's left-shift-20 fixed-point scheme), no fused activation.
  mean       AVERAGE_POOL_2D with filter (H, W), stride 1, VALID -> (N, 1, 1, C) named "<op>/avgpool",
             then RESHAPE to (N, C). AVERAGE_POOL_2D, not MEAN: TFLM's MEAN rescales the sum with a
             fixed-point multiplier and rounds differently, while its average pool rounds the integer
             sum half away from zero, which is our global_mean_s8.
  fc         FULLY_CONNECTED with per-channel weights (Co, Ci), keep_num_dims False. TFLM's
             FullyConnectedPerChannel path (weights zero point 0, one scale per output channel).

Two more kinds exist only for single-op tests of kernels that no graph op uses: "avgpool" (AVERAGE_POOL_2D,
VALID, or SAME where TFLite's SAME padding is our symmetric padding) and "quantize" (QUANTIZE, float32 in).

Weights are per-channel symmetric int8 (zero point 0, one scale per output channel); biases int32 with
scale s_x * s_w[c] and zero point 0 (TFLM does not read the bias scale; it is written for other tools).
Fused activations: op.act 'relu6' -> RELU6, 'relu' -> RELU, None -> NONE; TFLM then derives the clamp
with CalculateActivationRangeQuantized, the same computation as kernels.requant.activation_range_s8.

Operator codes carry both `builtin_code` and `deprecated_builtin_code` (min(code, 127), the schema's
backward-compatible field), so readers that only know the old field see the right operator too. (A
model_editor model leaves the old field at 0; TFLM reads the max of the two fields, so it runs either.)
"""

from pathlib import Path

import numpy as np

from microtrain.errors import MicrotrainError

_ACT_CODES = {None: 0, "none": 0, "relu": 1, "relu6": 3}  # schema ActivationFunctionType NONE, RELU, RELU6
_DEPRECATED_PLACEHOLDER = 127  # schema: PLACEHOLDER_FOR_GREATER_OP_CODES


def _modules():
    """(model_editor, schema) from tflite-micro, imported on first use."""
    try:
        from tflite_micro.tensorflow.lite.micro.compression import model_editor
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    except ImportError as e:
        raise MicrotrainError(
            f"exporting or running .tflite models needs the tflite-micro package ({e}); "
            "install it with: pip install microtrain[oracle]") from None
    return model_editor, schema


class _Emitter:
    """Accumulates TFLite tensors and operators for a sequence of microtrain ops (one subgraph)."""

    def __init__(self, batch, description="microtrain int8 export"):
        self.me, self.fb = _modules()
        self.batch = int(batch)
        self.model = self.me.Model(description=description)
        self.sg = self.model.add_subgraph(name="main")
        self.tensors = {}  # our tensor name -> model_editor Tensor
        self.opcodes = {}

    # ---- tensors ------------------------------------------------------------------------------
    def activation(self, name, shape, q):
        """An activation tensor (N, ...): int8 with per-tensor (scale, zero point), or float32 if q is None."""
        if name not in self.tensors:
            if q is None:
                dtype, quantization = self.fb.TensorType.FLOAT32, None
            else:
                scale, zp = q
                dtype = self.fb.TensorType.INT8
                quantization = self.me.Quantization(scales=[float(np.float32(scale))], zero_points=[int(zp)])
            self.tensors[name] = self.sg.add_tensor(shape=(self.batch,) + tuple(shape), dtype=dtype, name=name,
                                                    quantization=quantization)
        return self.tensors[name]

    def const(self, name, array, dtype, quantization=None):
        array = np.ascontiguousarray(array, dtype=dtype)
        return self.sg.add_tensor(shape=array.shape, dtype=_dtype_code(self.fb, array.dtype), name=name,
                                  data=array.tobytes(), quantization=quantization)

    def per_channel(self, scales, axis):
        scales = [float(s) for s in np.asarray(scales, np.float32)]
        return self.me.Quantization(scales=scales, zero_points=[0] * len(scales), axis=axis)

    # ---- operators ----------------------------------------------------------------------------
    def operator(self, code, inputs, outputs, options_type=0, options=None):
        if code not in self.opcodes:
            oc = self.me.OperatorCode(builtin_code=code)
            oc._fb.deprecatedBuiltinCode = min(code, _DEPRECATED_PLACEHOLDER)
            self.model.operator_codes.append(oc)
            self.opcodes[code] = oc
        op_fb = self.fb.OperatorT()
        op_fb.builtinOptionsType = options_type
        op_fb.builtinOptions = options
        self.sg.operators.append(self.me.Operator(opcode=code, inputs=inputs, outputs=outputs, _fb=op_fb))

    def pad(self, name, x, pad):
        """PAD H and W by `pad` each side; output keeps x's quantization (int8 PAD fills with its zp)."""
        n, h, w, c = x.shape
        paddings = np.array([[0, 0], [pad, pad], [pad, pad], [0, 0]], np.int32)
        p = self.const(f"{name}/paddings", paddings, np.int32)
        q = x.quantization
        y = self.activation(f"{name}/pad", (h + 2 * pad, w + 2 * pad, c), (q.scales[0], q.zero_points[0]))
        self.operator(self.fb.BuiltinOperator.PAD, [x, p], [y], self.fb.BuiltinOptions.PadOptions,
                      self.fb.PadOptionsT())
        return y

    def emit(self, op, params, quant, shapes):
        """Append the TFLite operators of one microtrain op. `shapes`: per-sample shapes by tensor name."""
        B, O = self.fb.BuiltinOperator, self.fb.BuiltinOptions
        ins = [self.activation(t, shapes[t], quant[t]) for t in op.inputs]
        y = self.activation(op.output, shapes[op.output], quant[op.output])
        act = _ACT_CODES[op.act]
        if op.kind in ("conv2d", "depthwise", "pointwise", "fc"):
            x = ins[0]
            w, b, ws = params["weight"], params["bias"], np.asarray(params["w_scales"], np.float32)
            bias_q = self.per_channel(np.float32(quant[op.inputs[0]][0]) * ws, 0)
            bias = self.const(f"{op.name}/bias", b, np.int32, bias_q)
            if op.kind == "depthwise":
                x = self.pad(op.name, x, op.pad) if op.pad else x
                filt = self.const(f"{op.name}/weight", np.asarray(w)[None], np.int8, self.per_channel(ws, 3))
                opts = self.fb.DepthwiseConv2DOptionsT()
                opts.padding, opts.strideH, opts.strideW = self.fb.Padding.VALID, op.stride, op.stride
                opts.depthMultiplier, opts.fusedActivationFunction = 1, act
                opts.dilationHFactor = opts.dilationWFactor = 1
                self.operator(B.DEPTHWISE_CONV_2D, [x, filt, bias], [y], O.DepthwiseConv2DOptions, opts)
            elif op.kind == "fc":
                filt = self.const(f"{op.name}/weight", w, np.int8, self.per_channel(ws, 0))
                opts = self.fb.FullyConnectedOptionsT()
                opts.fusedActivationFunction, opts.keepNumDims = act, False
                self.operator(B.FULLY_CONNECTED, [x, filt, bias], [y], O.FullyConnectedOptions, opts)
            else:
                if op.kind == "conv2d":
                    x = self.pad(op.name, x, op.pad) if op.pad else x
                    w4 = np.asarray(w)
                else:
                    w4 = np.asarray(w)[:, None, None, :]  # (Co, Ci) -> OHWI (Co, 1, 1, Ci)
                filt = self.const(f"{op.name}/weight", w4, np.int8, self.per_channel(ws, 0))
                opts = self.fb.Conv2DOptionsT()
                opts.padding, opts.strideH, opts.strideW = self.fb.Padding.VALID, op.stride, op.stride
                opts.fusedActivationFunction = act
                opts.dilationHFactor = opts.dilationWFactor = 1
                self.operator(B.CONV_2D, [x, filt, bias], [y], O.Conv2DOptions, opts)
        elif op.kind == "add":
            opts = self.fb.AddOptionsT()
            opts.fusedActivationFunction = act
            self.operator(B.ADD, ins, [y], O.AddOptions, opts)
        elif op.kind == "mean":
            x = ins[0]
            n, h, w, c = x.shape
            pooled = self.activation(f"{op.name}/avgpool", (1, 1, c), quant[op.output])
            opts = self.fb.Pool2DOptionsT()
            opts.padding, opts.strideH, opts.strideW = self.fb.Padding.VALID, 1, 1
            opts.filterHeight, opts.filterWidth, opts.fusedActivationFunction = h, w, act
            self.operator(B.AVERAGE_POOL_2D, [x], [pooled], O.Pool2DOptions, opts)
            shape = self.const(f"{op.name}/shape", np.array(y.shape, np.int32), np.int32)
            opts = self.fb.ReshapeOptionsT()
            opts.newShape = list(y.shape)
            self.operator(B.RESHAPE, [pooled, shape], [y], O.ReshapeOptions, opts)
        elif op.kind == "avgpool":  # kernels.pool.avgpool_s8; not a graph op kind, used by the kernel tests
            x = ins[0]
            opts = self.fb.Pool2DOptionsT()
            opts.padding = self.fb.Padding.VALID if op.pad == 0 else _same_padding(op, x.shape, y.shape, self.fb)
            opts.strideH = opts.strideW = op.stride
            opts.filterHeight = opts.filterWidth = op.kernel
            opts.fusedActivationFunction = act
            self.operator(B.AVERAGE_POOL_2D, [x], [y], O.Pool2DOptions, opts)
        elif op.kind == "quantize":  # float32 -> int8 (kernels.quantize.quantize_s8); input quant is None
            self.operator(B.QUANTIZE, ins, [y], O.QuantizeOptions, self.fb.QuantizeOptionsT())
        else:
            raise MicrotrainError(f"cannot export op {op.name}: no TFLite mapping for kind {op.kind!r}")

    def finish(self, inputs, outputs, path):
        self.sg.inputs = [self.tensors[t] for t in inputs]
        self.sg.outputs = [self.tensors[t] for t in outputs]
        data = bytes(self.model.build())
        if path is not None:
            Path(path).write_bytes(data)
        return data


def _same_padding(op, x_shape, y_shape, schema):
    """Padding.SAME when TFLite's SAME geometry (tensorflow/lite/kernels/padding.h: out = ceil(in / stride),
    pad_before = floor(total / 2)) equals symmetric padding by op.pad; pooling has no explicit-padding form.
    """
    for size, out in ((x_shape[1], y_shape[1]), (x_shape[2], y_shape[2])):
        total = max((out - 1) * op.stride + op.kernel - size, 0)
        if out != -(-size // op.stride) or total // 2 != op.pad:
            raise MicrotrainError(
                f"{op.name}: average pool with padding {op.pad} on size {size} (kernel {op.kernel}, stride "
                f"{op.stride}) has no TFLite equivalent; TFLite pooling only pads the SAME way")
    return schema.Padding.SAME


def _dtype_code(schema, dtype):
    """schema TensorType of a NumPy dtype (only the types the export uses)."""
    codes = {np.dtype(np.int8): schema.TensorType.INT8, np.dtype(np.int32): schema.TensorType.INT32}
    return codes[np.dtype(dtype)]


def export_tflite(model, path=None, batch=1):
    """Write `model` (a microtrain.model.Model) as a .tflite flatbuffer; returns its bytes.

    path: file to write, or None to only return the bytes. batch: the fixed batch of the input
    (N, H, W, C) int8 tensor, named "input"; the output is the logits tensor (N, classes) int8, named
    like the classifier op. Every intermediate tensor keeps microtrain's tensor name, so a TFLM run with
    preserved tensors can be compared with microtrain's layer by layer.
    """
    g = model.graph
    em = _Emitter(batch, f"microtrain int8 export of {g.name}")
    em.activation(g.input_name, g.shapes[g.input_name], model.quant[g.input_name])
    for op in g.ops:
        em.emit(op, model.params.get(op.name), model.quant, g.shapes)
    return em.finish([g.input_name], [g.output], path)


def export_single_op(op, params, quant, shapes, batch=1, path=None):
    """One microtrain op as a .tflite model (used by the per-layer conformance tests).

    op: a graph.Op; params: its {"weight", "bias", "w_scales"} in microtrain layouts (None if it has
    no weights); quant: (scale, zero_point) of every tensor in op.inputs and op.output; shapes:
    per-sample shapes of the same tensors. The model's inputs are op.inputs in order, its output op.output.
    """
    em = _Emitter(batch)
    for t in op.inputs:
        em.activation(t, shapes[t], quant[t])
    em.emit(op, params, quant, shapes)
    return em.finish(list(dict.fromkeys(op.inputs)), [op.output], path)


class TFLMRunner:
    """TFLite Micro's reference interpreter (tflite-micro's host build) on an exported flatbuffer.

    preserve_all=True uses TFLM's kPreserveAllTensors, so every intermediate tensor can be read after
    a run with `tensor(name)`. arena_size defaults to a generous bound: twice the bytes of every
    non-constant tensor plus 256 KiB for TFLM's own structures (per-channel data, scratch).
    """

    def __init__(self, data, preserve_all=False, arena_size=None):
        me, _ = _modules()
        from tflite_micro import runtime

        data = bytes(data)
        edited = me.read(data)
        sg = edited.subgraphs[0]
        self.index = {t.name: i for i, t in enumerate(sg.tensors)}
        self.input_names = [t.name for t in sg.inputs]
        self.output_names = [t.name for t in sg.outputs]
        if arena_size is None:
            act = sum(int(np.prod(t.shape)) * np.dtype(t.numpy_dtype).itemsize
                      for t in sg.tensors if t.buffer is None)
            arena_size = 2 * act + 256 * 1024
        config = (runtime.InterpreterConfig.kPreserveAllTensors if preserve_all
                  else runtime.InterpreterConfig.kAllocationRecording)
        self.preserve_all = preserve_all
        self.interpreter = runtime.Interpreter.from_bytes(data, arena_size=arena_size,
                                                          intrepreter_config=config)

    def run(self, *inputs):
        """Set the inputs (in the model's input order), invoke; returns copies of the outputs."""
        for i, x in enumerate(inputs):
            self.interpreter.set_input(np.ascontiguousarray(x), i)
        self.interpreter.invoke()
        return [np.array(self.interpreter.get_output(i)) for i in range(len(self.output_names))]

    def tensor(self, name):
        """A copy of tensor `name` after the last run (needs preserve_all=True)."""
        if not self.preserve_all:
            raise MicrotrainError("TFLMRunner.tensor needs preserve_all=True (TFLM reuses arena memory otherwise)")
        got = self.interpreter.GetTensor(self.index[name], 0)  # {"dtype", "shape", "tensor_data"}
        return np.array(got["tensor_data"], dtype=got["dtype"]).reshape(tuple(got["shape"]))


def compare_with_tflm(model, x, runner=None, backend="blas"):
    """Run `model` on x (N, H, W, C) int8 with microtrain's Inference and with TFLM; compare every tensor.

    Both sides keep all tensors (Inference(preserve_all=True), TFLM kPreserveAllTensors), so every layer's
    output is compared, not only the logits, and the first layer that differs is named. runner: a
    TFLMRunner of export_tflite(model, batch=N) built with preserve_all=True, to reuse across inputs.
    Returns [(tensor name, op kind, elements compared, elements that differ)] in execution order, the
    input first (kind "input") and the logits last. backend: Inference's ("blas" or "reference").
    """
    from microtrain.inference import Inference

    g = model.graph
    if runner is None:
        runner = TFLMRunner(export_tflite(model, batch=x.shape[0]), preserve_all=True)
    ours = Inference(model, batch=x.shape[0], preserve_all=True, backend=backend)
    ours.run(x)
    runner.run(x)
    rows = []
    for name, kind in [(g.input_name, "input")] + [(op.output, op.kind) for op in g.ops]:
        a, b = ours.view(name), runner.tensor(name)
        if a.shape != b.shape or b.dtype != np.int8:
            raise MicrotrainError(f"tensor {name}: microtrain {a.shape} int8, TFLM {b.shape} {b.dtype}")
        rows.append((name, kind, a.size, int(np.count_nonzero(a != b))))
    return rows
