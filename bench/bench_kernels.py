"""int8 forward kernels at the real layer shapes of the three reference models, batch 1, against the
obvious vectorised NumPy implementation (bench/numpy_ref.py). Correctness is asserted before timing;
the kernel is compiled outside the timer; MACs are in extra_info (GMAC/s = macs / mean time).

Depthwise: "microtrain" is the kernel the default "blas" backends run (kernels/depthwise_host.py), "reference"
the loop kernel firmware mirrors (depthwise_conv_s8); conv2d and pointwise: "microtrain" is the loop kernel
(their "blas" path is a NumPy matmul, timed whole-model in bench_inference.py)."""

import numpy as np
import pytest

import numpy_ref
from layers import random_conv_args, unique_layers
from microtrain.kernels.conv2d import conv2d_s8
from microtrain.kernels.depthwise import depthwise_conv_s8
from microtrain.kernels.depthwise_host import depthwise_conv_s8_host
from microtrain.kernels.gemm_io import requant_f64_params, weight_reach
from microtrain.kernels.mask import NO_MASK
from microtrain.kernels.pointwise import pointwise_conv_s8

KERNELS = {
    "conv2d": (conv2d_s8, numpy_ref.conv2d_s8, True),
    "depthwise": (depthwise_conv_s8, numpy_ref.depthwise_conv_s8, True),
    "pointwise": (pointwise_conv_s8, numpy_ref.pointwise_conv_s8, False),
}
CASES = [(kind,) + layer for kind in KERNELS for layer in unique_layers(kind)]


IMPLS = [pytest.param(c, impl, id=f"{c[1]}-{impl}") for c in CASES
         for impl in ("microtrain", "numpy") + (("reference",) if c[0] == "depthwise" else ())]


@pytest.mark.parametrize("case,impl", IMPLS)
def test_forward_s8(benchmark, case, impl):
    kind, lid, model, op, xin, yout, macs = case
    fast, ref, spatial = KERNELS[kind]
    args = random_conv_args(op, xin, batch=1)
    geo = (op.stride, op.pad) if spatial else ()
    if kind == "depthwise" and impl == "microtrain":  # the host kernel, its constants bound once as the backends do
        x, w, bias, mult, shift, *q = args
        rq = requant_f64_params(mult, shift, weight_reach(w.reshape(-1, w.shape[2]).T, q[0]))  # frozen: its own bound

        def fast(y, mask, *_):
            depthwise_conv_s8_host(y, mask, x, w, bias, rq, mult, shift, *q, *geo)
    expect = ref(*args, *geo)
    y = np.empty((1,) + tuple(yout), np.int8)
    fast(y, NO_MASK, *args, *geo)  # compile outside the timer (inference: no training mask)
    np.testing.assert_array_equal(y, expect)  # never time a wrong kernel
    benchmark.group = f"{kind}_s8"
    benchmark.extra_info.update(macs=macs, model=model, layer=op.name, bytes_in=int(np.prod(xin)),
                                bytes_out=int(np.prod(yout)))
    if impl == "numpy":
        benchmark(ref, *args, *geo)
    else:
        benchmark(fast, y, NO_MASK, *args, *geo)
