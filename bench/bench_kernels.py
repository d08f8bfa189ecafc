"""int8 forward kernels at the real layer shapes of the three reference models, batch 1 (residual ADDs also
batch 25), against the obvious vectorised NumPy implementation (bench/numpy_ref.py). Correctness is asserted
before timing; the kernel is compiled outside the timer; MACs are in extra_info (GMAC/s = macs / mean time).

Depthwise: "microtrain" is the kernel the default "blas" backends run (kernels/depthwise_host.py), "reference"
the loop kernel firmware mirrors (depthwise_conv_s8); likewise for the residual ADD (kernels/add_host.py against
add_s8); conv2d and pointwise: "microtrain" is the loop kernel (their "blas" path is a NumPy matmul, timed
whole-model in bench_inference.py)."""

import numpy as np
import pytest

import numpy_ref
from layers import random_conv_args, unique_layers
from microtrain.graph import load_graph
from microtrain.kernels.add import add_s8
from microtrain.kernels.add_host import add_s8_host, add_table
from microtrain.kernels.conv2d import conv2d_s8
from microtrain.kernels.depthwise import depthwise_conv_s8
from microtrain.kernels.depthwise_host import depthwise_conv_s8_host
from microtrain.kernels.gemm_io import requant_f64_params, weight_reach
from microtrain.kernels.mask import NO_MASK
from microtrain.kernels.pointwise import pointwise_conv_s8
from microtrain.kernels.requant import add_multipliers
from microtrain.reference_models import NAMES

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


# ---- int8 residual ADD -----------------------------------------------------------------------------

def _residual_shapes():
    """[(id, shape (H, W, C))] of the distinct residual ADD shapes over the three models."""
    seen, out = set(), []
    for model in NAMES:
        g = load_graph(model)
        for op in g.ops:
            shape = tuple(g.shapes[op.output])
            if op.kind == "add" and shape not in seen:
                seen.add(shape)
                out.append((f"{model}:{op.name}:{'x'.join(map(str, shape))}", shape))
    return out


ADD_IMPLS = [pytest.param(lid, shape, batch, impl, id=f"{lid}-b{batch}-{impl}")
             for lid, shape in _residual_shapes() for batch in (1, 25) for impl in ("microtrain", "reference", "numpy")]


@pytest.mark.parametrize("lid,shape,batch,impl", ADD_IMPLS)
def test_add_s8(benchmark, lid, shape, batch, impl):
    """add_s8_host (the table of add_s8's outputs, kernels/add_host.py; the table is built once, outside the
    timer, as the backends build it at bind) against the loop kernel add_s8 and NumPy's vectorised AddFunc."""
    rng = np.random.default_rng(0)
    a, b = (rng.integers(-128, 128, (batch,) + shape, dtype=np.int16).astype(np.int8) for _ in range(2))
    (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(0.05, 0.08, 0.09)
    params = (3, am, ash, -7, bm, bsh, 2, ym, ysh, -128, 127)
    expect = numpy_ref.add_s8(a, b, *params)
    y = np.empty(a.shape, np.int8)
    if impl == "microtrain":
        table = add_table({}, *params)
        args = (y, NO_MASK, a, b, table)
        fn = add_s8_host
    elif impl == "reference":
        fn, args = add_s8, (y, NO_MASK, a, b) + params
    if impl != "numpy":
        fn(*args)  # compile outside the timer
        np.testing.assert_array_equal(y, expect)  # never time a wrong kernel
    benchmark.group = f"add_s8_b{batch}"
    benchmark.extra_info.update(elements=int(a.size), model=lid.split(":")[0], layer=lid.split(":")[1],
                                bytes_in=2 * int(a.size), bytes_out=int(a.size))
    if impl == "numpy":
        benchmark(numpy_ref.add_s8, a, b, *params)
    else:
        benchmark(fn, *args)
