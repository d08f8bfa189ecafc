"""float32 backward kernels at the real layer shapes of the three reference models, batch 1: the input and weight
gradients the partial backward runs, against the obvious vectorised NumPy implementation (bench/numpy_ref.py).
Each kernel's result is checked against NumPy's (float32 sums in another order: within 1e-4 relative) before it
is timed; kernels compile outside the timer; MACs in extra_info (one multiply-add per forward MAC, all channels
kept; a sparse update computes the kept slice only).

Impls: "microtrain" is the loop kernel firmware mirrors (kernels/*_backward.py, docs/porting.md); "host" is what
the training step's default "blas" backend runs instead where it has its own kernel (the stride-1 depthwise input
gradient, kernels/depthwise_host.py, bit-identical to the loop kernel; the 1x1 and standard convs' gradients are
NumPy sgemm calls there, microtrain/train_gemm.py, timed whole-step in bench_train.py). The stem's input gradient
(conv2d_f32_backward_input) is left out: no training step computes the gradient of the input image."""

import numpy as np
import pytest

import numpy_ref
from layers import unique_layers
from microtrain.kernels.conv2d_backward import conv2d_f32_backward_weight
from microtrain.kernels.depthwise_backward import depthwise_conv_f32_backward_input, depthwise_conv_f32_backward_weight
from microtrain.kernels.depthwise_host import depthwise_conv_f32_backward_input_host, depthwise_f32_host_fits
from microtrain.kernels.pointwise_backward import pointwise_conv_f32_backward_input, pointwise_conv_f32_backward_weight


def _tensors(op, xin, yout, seed=0):
    """x (1, H, W, Ci), dy (1, OH, OW, Co), w (the op's weight shape), float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (1,) + tuple(xin)).astype(np.float32)
    dy = rng.normal(0, 1, (1,) + tuple(yout)).astype(np.float32)
    w = rng.normal(0, 0.1, op.weight_shape()).astype(np.float32)
    return x, dy, w


def _cases(kind, grads):
    out = []
    for lid, model, op, xin, yout, macs in unique_layers(kind):
        for grad in grads:
            impls = ["microtrain", "numpy"]
            if kind == "depthwise" and grad == "input" and depthwise_f32_host_fits(op.kernel, op.cout, op.stride):
                impls.append("host")
            out += [pytest.param(kind, grad, lid, model, op, xin, yout, macs, impl, id=f"{lid}-{grad}-{impl}")
                    for impl in impls]
    return out


CASES = (_cases("depthwise", ("input", "weight")) + _cases("pointwise", ("input", "weight"))
         + _cases("conv2d", ("weight",)))


def _bind(kind, grad, op, x, dy, w, impl):
    """(kernel, its arguments with a preallocated output, out) for the microtrain / host impl; (numpy fn, args)."""
    geo = (op.stride, op.pad) if kind != "pointwise" else ()
    all_out = np.arange(op.cout, dtype=np.int32)
    if impl == "numpy":
        if kind == "depthwise":
            return ((numpy_ref.depthwise_backward_input, (dy, w, x.shape) + geo) if grad == "input"
                    else (numpy_ref.depthwise_backward_weight, (x, dy, op.kernel) + geo))
        if kind == "pointwise":
            return ((numpy_ref.pointwise_backward_input, (dy, w)) if grad == "input"
                    else (numpy_ref.pointwise_backward_weight, (x, dy)))
        return numpy_ref.conv2d_backward_weight, (x, dy, op.kernel) + geo
    if grad == "input":
        dx = np.empty_like(x)
        if impl == "host":
            return depthwise_conv_f32_backward_input_host, (dx, dy, w, op.pad), dx
        fn = depthwise_conv_f32_backward_input if kind == "depthwise" else pointwise_conv_f32_backward_input
        return fn, (dx, dy, w) + geo, dx
    dw = np.empty(w.shape, np.float32)
    if kind == "depthwise":
        return depthwise_conv_f32_backward_weight, (dw, x, np.float32(0), dy, all_out) + geo, dw
    if kind == "pointwise":
        return pointwise_conv_f32_backward_weight, (dw, x, np.float32(0), dy, all_out), dw
    return conv2d_f32_backward_weight, (dw, x, np.float32(0), dy, all_out) + geo, dw


@pytest.mark.parametrize("kind,grad,lid,model,op,xin,yout,macs,impl", CASES)
def test_backward_f32(benchmark, kind, grad, lid, model, op, xin, yout, macs, impl):
    x, dy, w = _tensors(op, xin, yout)
    if kind == "pointwise":
        w = w.reshape(op.cout, op.cin)  # (Co, 1, 1, Ci) -> (Co, Ci): the kernels' 1x1 layout
    ref_fn, ref_args = _bind(kind, grad, op, x, dy, w, "numpy")
    expect = ref_fn(*ref_args)
    benchmark.group = f"{kind}_backward_{grad}"
    benchmark.extra_info.update(macs=macs, model=model, layer=op.name)
    if impl == "numpy":
        benchmark(ref_fn, *ref_args)
        return
    fn, args, out = _bind(kind, grad, op, x, dy, w, impl)
    fn(*args)  # compile outside the timer
    scale = float(np.abs(expect).max()) or 1.0
    np.testing.assert_allclose(out, np.asarray(expect).reshape(out.shape), rtol=1e-4, atol=1e-4 * scale)
    benchmark(fn, *args)
