"""Every C kernel in firmware/ against its Python twin in kernels/, on hypothesis-generated cases.

The kernels are compiled once per module with gcc (export_c.CFLAGS: -std=c99 -O2 -Wall -Wextra -Werror) into a
shared library in a tmp dir and called through ctypes with the argument list export_c.kernel_call builds (the same
table the exporter uses, checked against the prototypes of firmware/microtrain.h). Both twins run on copies of the
same arrays and every array argument is compared afterwards byte for byte: int8 outputs, masks, int8/int32 updates
and also the fp32 kernels, whose C loops keep the Python loop order (no FMA, no -ffast-math), so float results are
bit-identical too. The one stated tolerance: the softmax loss uses libm expf/logf, whose last bit may differ
between Numba's and the C library's implementation (relative 1e-6; the gradient it feeds is compared exactly when
the two libraries agree, which they do on glibc).
"""

import copy
import ctypes

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain import export_c
from microtrain.kernels import update as upd
from microtrain.kernels.add import add_f32, add_s8
from microtrain.kernels.bias_backward import bias_f32_backward, bias_f32_backward_2d
from microtrain.kernels.clamp_backward import clamp_f32_backward
from microtrain.kernels.conv2d import conv2d_f32, conv2d_s8
from microtrain.kernels.conv2d_backward import conv2d_f32_backward_input, conv2d_f32_backward_weight
from microtrain.kernels.depthwise import depthwise_conv_f32, depthwise_conv_s8
from microtrain.kernels.depthwise_backward import depthwise_conv_f32_backward_input, depthwise_conv_f32_backward_weight
from microtrain.kernels.elementwise_backward import (accumulate_f32, mask_pack_f32, mask_unpack_backward_f32,
                                                     scale_channels_f32, scale_f32)
from microtrain.kernels.fully_connected import fully_connected_f32, fully_connected_s8
from microtrain.kernels.fully_connected_backward import (fully_connected_f32_backward_input,
                                                         fully_connected_f32_backward_weight)
from microtrain.kernels.gather import gather_channels
from microtrain.kernels.loss import softmax_cross_entropy_f32
from microtrain.kernels.mask import NO_MASK, mask_shape
from microtrain.kernels.normalize import l2_normalize_rows_f32, l2_normalize_rows_f32_backward
from microtrain.kernels.pointwise import pointwise_conv_f32, pointwise_conv_s8
from microtrain.kernels.pointwise_backward import pointwise_conv_f32_backward_input, pointwise_conv_f32_backward_weight
from microtrain.kernels.pool import avgpool_f32, avgpool_s8, global_mean_f32, global_mean_s8
from microtrain.kernels.pool_backward import avgpool_f32_backward, global_mean_f32_backward
from microtrain.kernels.quantize import dequantize_s8, quantize_s8
from microtrain.kernels.requant import add_multipliers, mbqm, rdbpot, srdhm
from settings import kernel_settings

pytestmark = pytest.mark.skipif(export_c.find_cc() is None, reason="no C compiler (gcc) on PATH: the C twins of "
                                                                   "the kernels cannot be built")

I32 = np.int32
F32 = np.float32


# ---- building and calling the C twins --------------------------------------------------------------

@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    """(ctypes library, prototypes) of every firmware kernel, built once for this module."""
    sources, header = export_c.firmware_sources()
    out = tmp_path_factory.mktemp("c_kernels") / "libmicrotrain.so"
    # -pedantic on top of CFLAGS: strict ISO C99, no GNU extension sneaks into the kernels
    export_c.compile_c(sources, out, include_dirs=[header.parent], shared=True, extra_flags=("-pedantic",))
    return ctypes.CDLL(str(out)), export_c.parse_prototypes(header.read_text())


_PTR = {"int8_t *": np.int8, "uint8_t *": np.uint8, "int32_t *": np.int32, "float *": np.float32, "void *": None}
_RET = {"void": None, "int32_t": ctypes.c_int32, "double": ctypes.c_double}


def call_c(clib, fn, args):
    """Run the C twin of the Python kernel call fn(*args) on the same arrays (in place); returns its result."""
    lib, protos = clib
    c_name, cargs = export_c.kernel_call(fn, args)
    ret, params = protos[c_name]
    assert len(params) == len(cargs), f"{c_name}: {len(cargs)} arguments for {len(params)} parameters"
    argtypes, values = [], []
    for p, a in zip(params, cargs):
        p = p.replace("const ", "")
        if p.endswith("*"):
            argtypes.append(ctypes.c_void_p)
            if a is None:
                values.append(None)
                continue
            assert isinstance(a, np.ndarray) and a.flags.c_contiguous, f"{c_name}: {p} needs a contiguous array"
            assert _PTR[p] is None or a.dtype == _PTR[p], f"{c_name}: {p} given {a.dtype}"
            values.append(a.ctypes.data)
        elif p == "float":
            argtypes.append(ctypes.c_float)
            values.append(float(a))
        elif p == "double":
            argtypes.append(ctypes.c_double)
            values.append(float(a))
        else:
            argtypes.append(ctypes.c_int32)
            values.append(int(a))
    f = getattr(lib, c_name)
    f.argtypes, f.restype = argtypes, _RET[ret]
    return f(*values)


def assert_twins_equal(clib, fn, args, ret_rtol=0.0):
    """Run fn on copies of args in Python and in C; every array must match byte for byte, and the results."""
    py_args = copy.deepcopy(list(args))
    c_args = copy.deepcopy(list(args))
    r_py = fn(*py_args)
    r_c = call_c(clib, fn, c_args)
    for i, (a, b) in enumerate(zip(py_args, c_args)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(b, a, err_msg=f"{export_c.kernel_name(fn)}: argument {i} differs")
            assert a.tobytes() == b.tobytes(), f"{export_c.kernel_name(fn)}: argument {i} differs in its bits"
    if r_py is not None:
        if isinstance(r_py, (bool, np.bool_)):
            assert bool(r_c) == bool(r_py)
        elif ret_rtol:
            assert r_c == pytest.approx(float(r_py), rel=ret_rtol)
        else:
            assert r_c == r_py


# ---- random cases ------------------------------------------------------------------------------------

def s8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, size=shape).astype(np.int8)


def f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def requant_params(rng, co, draw):
    """Per-channel (mult, shift, bias): multipliers in [2^30, 2^31), shifts from saturating to fine; int32 bias at
    the extremes sometimes (the wrap of acc + bias), positive shifts only with small biases (pre-shift fits int32)."""
    mult = rng.integers(1 << 30, (1 << 31) - 1, size=co).astype(I32)
    shift = rng.integers(-18, 1, size=co).astype(I32)
    if draw(st.booleans()):
        bias = rng.integers(-(1 << 31), 1 << 31, size=co, dtype=np.int64).astype(I32)
    else:
        bias = rng.integers(-5000, 5000, size=co).astype(I32)
        shift[rng.random(co) < 0.2] = 1
    return mult, shift, bias


def act_range(draw):
    lo = draw(st.integers(-128, 0))
    return lo, draw(st.integers(lo, 127))


def geometry(draw, max_k=5):
    k_h = draw(st.integers(1, max_k))
    k_w = draw(st.integers(1, max_k))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, min(k_h, k_w) - 1))
    h = draw(st.integers(max(1, k_h - 2 * pad), 7))
    w = draw(st.integers(max(1, k_w - 2 * pad), 7))
    return dict(n=draw(st.integers(1, 2)), h=h, w=w, kh=k_h, kw=k_w, stride=stride, pad=pad,
                oh=(h + 2 * pad - k_h) // stride + 1, ow=(w + 2 * pad - k_w) // stride + 1)


def conv_s8_case(draw, rng, kind):
    g = geometry(draw, max_k=1 if kind == "pointwise" else 5)
    if kind == "pointwise":
        g.update(kh=1, kw=1, stride=1, pad=0, oh=g["h"], ow=g["w"])
    ci = draw(st.integers(1, 9))
    co = ci if kind == "depthwise" else draw(st.integers(1, 9))
    x = s8(rng, (g["n"], g["h"], g["w"], ci))
    w = {"conv2d": lambda: s8(rng, (co, g["kh"], g["kw"], ci), -127),
         "depthwise": lambda: s8(rng, (g["kh"], g["kw"], co), -127),
         "pointwise": lambda: s8(rng, (co, ci), -127)}[kind]()
    mult, shift, bias = requant_params(rng, co, draw)
    lo, hi = act_range(draw)
    y = np.zeros((g["n"], g["oh"], g["ow"], co), np.int8)
    mask = np.zeros(mask_shape(g["n"], g["oh"], g["ow"], co), np.uint8) if draw(st.booleans()) else NO_MASK
    zp = (draw(st.integers(-128, 127)), draw(st.integers(-128, 127)))
    geo = () if kind == "pointwise" else (g["stride"], g["pad"])
    fn = {"conv2d": conv2d_s8, "depthwise": depthwise_conv_s8, "pointwise": pointwise_conv_s8}[kind]
    return fn, (y, mask, x, w, bias, mult, shift, *zp, lo, hi, *geo)


def conv_f32_case(draw, rng, kind):
    g = geometry(draw, max_k=1 if kind == "pointwise" else 5)
    if kind == "pointwise":
        g.update(kh=1, kw=1, stride=1, pad=0, oh=g["h"], ow=g["w"])
    ci = draw(st.integers(1, 9))
    co = ci if kind == "depthwise" else draw(st.integers(1, 9))
    x = f32(rng, (g["n"], g["h"], g["w"], ci))
    w = f32(rng, {"conv2d": (co, g["kh"], g["kw"], ci), "depthwise": (g["kh"], g["kw"], co),
                  "pointwise": (co, ci)}[kind], 0.5)
    lo, hi = draw(st.sampled_from([(-np.inf, np.inf), (0.0, 6.0), (0.0, np.inf)]))
    y = np.zeros((g["n"], g["oh"], g["ow"], co), F32)
    geo = () if kind == "pointwise" else (g["stride"], g["pad"])
    fn = {"conv2d": conv2d_f32, "depthwise": depthwise_conv_f32, "pointwise": pointwise_conv_f32}[kind]
    return fn, (y, x, w, f32(rng, co), lo, hi, *geo)


def conv_backward_case(draw, rng, kind, which):
    g = geometry(draw, max_k=1 if kind == "pointwise" else 5)
    if kind == "pointwise":
        g.update(kh=1, kw=1, stride=1, pad=0, oh=g["h"], ow=g["w"])
    ci = draw(st.integers(1, 8))
    co = ci if kind == "depthwise" else draw(st.integers(1, 8))
    int8 = draw(st.booleans())  # int8 mode: frozen int8 weights / saved int8 activations
    dy = f32(rng, (g["n"], g["oh"], g["ow"], co))
    geo = () if kind == "pointwise" else (g["stride"], g["pad"])
    if which == "input":
        wshape = {"conv2d": (co, g["kh"], g["kw"], ci), "depthwise": (g["kh"], g["kw"], co),
                  "pointwise": (co, ci)}[kind]
        w = s8(rng, wshape, -127) if int8 else f32(rng, wshape)
        dx = np.full((g["n"], g["h"], g["w"], ci), np.nan, F32)  # every element must be written
        fn = {"conv2d": conv2d_f32_backward_input, "depthwise": depthwise_conv_f32_backward_input,
              "pointwise": pointwise_conv_f32_backward_input}[kind]
        return fn, (dx, dy, w, *geo)
    keep = np.sort(rng.choice(co, size=draw(st.integers(1, co)), replace=False)).astype(I32)
    cx = len(keep) if kind == "depthwise" else ci
    x = s8(rng, (g["n"], g["h"], g["w"], cx)) if int8 else f32(rng, (g["n"], g["h"], g["w"], cx))
    x_zp = F32(draw(st.integers(-128, 127))) if int8 else F32(0.0)
    dw = np.full({"conv2d": (len(keep), g["kh"], g["kw"], ci), "depthwise": (g["kh"], g["kw"], len(keep)),
                  "pointwise": (len(keep), ci)}[kind], np.nan, F32)
    fn = {"conv2d": conv2d_f32_backward_weight, "depthwise": depthwise_conv_f32_backward_weight,
          "pointwise": pointwise_conv_f32_backward_weight}[kind]
    return fn, (dw, x, x_zp, dy, keep, *geo)


def _nhwc(draw, max_c=9):
    return (draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, max_c)))


def add_s8_case(draw, rng):
    shape = _nhwc(draw)
    scales = [float(np.exp(rng.uniform(-5, 0))) for _ in range(3)]
    (am, ash), (bm, bsh), (ym, ysh) = add_multipliers(*scales)
    lo, hi = act_range(draw)
    mask = np.zeros(mask_shape(*shape), np.uint8) if draw(st.booleans()) else NO_MASK
    zps = [draw(st.integers(-128, 127)) for _ in range(3)]
    return add_s8, (np.zeros(shape, np.int8), mask, s8(rng, shape), s8(rng, shape), zps[0], am, ash, zps[1], bm, bsh,
                    zps[2], ym, ysh, lo, hi)


def fc_s8_case(draw, rng):
    n, ci, co = draw(st.integers(1, 3)), draw(st.integers(1, 40)), draw(st.integers(1, 12))
    mult, shift, bias = requant_params(rng, co, draw)
    lo, hi = act_range(draw)
    return fully_connected_s8, (np.zeros((n, co), np.int8), s8(rng, (n, ci)), s8(rng, (co, ci), -127), bias, mult,
                                shift, draw(st.integers(-128, 127)), draw(st.integers(-128, 127)), lo, hi)


def pool_case(draw, rng, dtype):
    kh, kw, stride = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    pad = draw(st.integers(0, min(kh, kw) - 1))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    h, w = draw(st.integers(max(1, kh - 2 * pad), 8)), draw(st.integers(max(1, kw - 2 * pad), 8))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    if dtype == "s8":
        lo, hi = act_range(draw)
        return avgpool_s8, (np.zeros((n, oh, ow, c), np.int8), s8(rng, (n, h, w, c)), kh, kw, stride, pad, lo, hi)
    if dtype == "f32":
        return avgpool_f32, (np.zeros((n, oh, ow, c), F32), f32(rng, (n, h, w, c)), kh, kw, stride, pad)
    return avgpool_f32_backward, (np.full((n, h, w, c), np.nan, F32), f32(rng, (n, oh, ow, c)), kh, kw, stride, pad)


def quantize_case(draw, rng):
    shape = _nhwc(draw)
    scale = float(np.float32(np.exp(rng.uniform(-6, 0))))
    x = (rng.integers(-300, 300, size=shape) + rng.choice([0.0, 0.5, -0.5, 0.25], size=shape)) * np.float32(scale)
    x = x.astype(F32)
    if draw(st.booleans()):  # non-finite values saturate (NaN -> -128, as on x86)
        x.flat[0], x.flat[-1] = np.nan, np.inf
    return quantize_s8, (np.zeros(shape, np.int8), x, scale, draw(st.integers(-128, 127)))


def update_case(draw, rng, kind, opt):
    int8 = kind.endswith("s8") or kind.endswith("s32")
    co, ci, k = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.sampled_from([1, 3]))
    if kind.startswith("ohwi"):
        wshape = (co, k, k, ci)
        keep_out = np.sort(rng.choice(co, draw(st.integers(1, co)), replace=False)).astype(I32)
        keep_in = rng.permutation(ci)[:draw(st.integers(1, ci))].astype(I32)
        dshape = (len(keep_out), k, k, len(keep_in))
        keeps = (keep_out, keep_in)
        nch = co
    elif kind.startswith("hwc"):
        wshape = (k, k, co)
        keep = rng.permutation(co)[:draw(st.integers(1, co))].astype(I32)
        dshape = (k, k, len(keep))
        keeps = (keep,)
        nch = co
    else:
        wshape = (co,)
        keep = rng.permutation(co)[:draw(st.integers(1, co))].astype(I32)
        dshape = (len(keep),)
        keeps = (keep,)
        nch = co
    if kind.endswith("s8"):
        w = s8(rng, wshape, -127)
        w.flat[0] = draw(st.sampled_from([-127, 127, 0]))  # saturation at the int8 weight range
    elif kind.endswith("s32"):
        w = rng.integers(-(1 << 31), 1 << 31, size=wshape, dtype=np.int64).astype(I32)
        w.flat[0] = draw(st.sampled_from([-(1 << 31), (1 << 31) - 1, 0]))
    else:
        w = f32(rng, wshape)
    if int8 and opt == "sgd" and draw(st.booleans()):  # exact ties of lr * coef * dw: +-0.5, +-1.5, ...
        dw = (rng.integers(-4, 4, size=dshape) + 0.5).astype(F32)
        coef, lr = np.ones(nch, F32), 1.0
    else:
        dw = f32(rng, dshape, draw(st.sampled_from([1.0, 1e3, 1e9])))
        coef = np.exp(rng.uniform(-3, 3, nch)).astype(F32)
        lr = draw(st.sampled_from([0.5, 0.01, 3.0]))
    suffix = {"ohw": "ohwi", "hwc": "hwc", "bia": "bias"}[kind[:3]]
    dt = kind.split("_")[-1]
    fn = getattr(upd, f"{opt}_update_{suffix}_{dt}")
    if opt == "sgd":
        return fn, (w, dw, *keeps, *((coef,) if int8 else ()), lr)
    m, v = f32(rng, dshape, 0.1), np.abs(f32(rng, dshape, 0.1))
    t = draw(st.integers(1, 5))
    return fn, (w, dw, m, v, *keeps, *((coef,) if int8 else ()), lr, t)


def case(name, draw, rng):
    """(fn, args) of one random call of kernel `name`."""
    if name in ("conv2d_s8", "depthwise_conv_s8", "pointwise_conv_s8"):
        return conv_s8_case(draw, rng, name.split("_")[0])
    if name in ("conv2d_f32", "depthwise_conv_f32", "pointwise_conv_f32"):
        return conv_f32_case(draw, rng, name.split("_")[0])
    if name.endswith(("_backward_input", "_backward_weight")) and not name.startswith("fully"):
        return conv_backward_case(draw, rng, name.split("_")[0], name.rsplit("_", 1)[1])
    if name.startswith(("sgd_", "adam_")):
        opt, rest = name.split("_update_")
        return update_case(draw, rng, rest, opt)
    shape = _nhwc(draw)
    n, h, w, c = shape
    if name == "add_s8":
        return add_s8_case(draw, rng)
    if name == "add_f32":
        a = f32(rng, shape)
        return add_f32, (np.zeros(shape, F32), a, f32(rng, shape))
    if name == "fully_connected_s8":
        return fc_s8_case(draw, rng)
    if name == "fully_connected_f32":
        ci, co = draw(st.integers(1, 40)), draw(st.integers(1, 12))
        return fully_connected_f32, (np.zeros((n, co), F32), f32(rng, (n, ci)), f32(rng, (co, ci)), f32(rng, co))
    if name == "fully_connected_f32_backward_input":
        ci, co = draw(st.integers(1, 40)), draw(st.integers(1, 12))
        return fully_connected_f32_backward_input, (np.full((n, ci), np.nan, F32), f32(rng, (n, co)),
                                                    f32(rng, (co, ci)))
    if name == "fully_connected_f32_backward_weight":
        ci, co = draw(st.integers(1, 40)), draw(st.integers(1, 12))
        keep = rng.permutation(co)[:draw(st.integers(1, co))].astype(I32)
        return fully_connected_f32_backward_weight, (np.full((len(keep), ci), np.nan, F32), f32(rng, (n, ci)),
                                                     F32(0.0), f32(rng, (n, co)), keep)
    if name in ("avgpool_s8", "avgpool_f32", "avgpool_f32_backward"):
        return pool_case(draw, rng, {"avgpool_s8": "s8", "avgpool_f32": "f32"}.get(name, "backward"))
    if name == "global_mean_s8":
        lo, hi = act_range(draw)
        return global_mean_s8, (np.zeros((n, c), np.int8), s8(rng, shape), lo, hi)
    if name == "global_mean_f32":
        return global_mean_f32, (np.zeros((n, c), F32), f32(rng, shape))
    if name == "global_mean_f32_backward":
        return global_mean_f32_backward, (np.full(shape, np.nan, F32), f32(rng, (n, c)))
    if name == "quantize_s8":
        return quantize_case(draw, rng)
    if name == "dequantize_s8":
        return dequantize_s8, (np.zeros(shape, F32), s8(rng, shape), float(np.exp(rng.uniform(-6, 0))),
                               draw(st.integers(-128, 127)))
    if name == "gather_channels":
        keep = rng.permutation(c)[:draw(st.integers(1, c))].astype(I32)
        src = s8(rng, shape) if draw(st.booleans()) else f32(rng, shape)
        return gather_channels, (np.zeros((n, h, w, len(keep)), src.dtype), src, keep)
    if name == "l2_normalize_rows_f32":
        x = f32(rng, (n, c))
        if draw(st.booleans()):
            x[0] = 0.0  # the eps floor
        return l2_normalize_rows_f32, (np.zeros((n, c), F32), np.zeros(n, F32), x)
    if name == "l2_normalize_rows_f32_backward":
        return l2_normalize_rows_f32_backward, (np.zeros((n, c), F32), f32(rng, (n, c)), f32(rng, (n, c)),
                                                np.abs(f32(rng, n)) + 0.1)
    if name == "bias_f32_backward":
        keep = rng.permutation(c)[:draw(st.integers(1, c))].astype(I32)
        return bias_f32_backward, (np.full(len(keep), np.nan, F32), f32(rng, shape), keep)
    if name == "bias_f32_backward_2d":
        keep = rng.permutation(c)[:draw(st.integers(1, c))].astype(I32)
        return bias_f32_backward_2d, (np.full(len(keep), np.nan, F32), f32(rng, (n, c)), keep)
    if name == "clamp_f32_backward":
        y = np.clip(f32(rng, shape, 4.0), 0, 6)
        return clamp_f32_backward, (np.zeros(shape, F32), f32(rng, shape), y, 0.0,
                                    draw(st.sampled_from([6.0, np.inf])))
    if name == "accumulate_f32":
        return accumulate_f32, (f32(rng, shape), f32(rng, shape))
    if name == "scale_f32":
        return scale_f32, (np.zeros(shape, F32), f32(rng, shape), float(np.float32(rng.uniform(-3, 3))))
    if name == "scale_channels_f32":
        return scale_channels_f32, (f32(rng, shape), f32(rng, c))
    if name == "mask_pack_f32":
        y = np.clip(f32(rng, shape, 4.0), 0, 6)
        y.flat[0] = np.nan
        return mask_pack_f32, (np.full(mask_shape(*shape), 0xAA, np.uint8), y, 0.0, 6.0)
    if name == "mask_unpack_backward_f32":
        mask = rng.integers(0, 256, size=mask_shape(*shape)).astype(np.uint8)
        return mask_unpack_backward_f32, (np.full(shape, np.nan, F32), f32(rng, shape), mask)
    if name == "softmax_cross_entropy_f32":
        k = draw(st.integers(1, 12))
        z = f32(rng, (n, k), draw(st.sampled_from([1.0, 10.0, 100.0])))
        return softmax_cross_entropy_f32, (np.zeros((n, k), F32), z, rng.integers(0, k, n).astype(I32))
    if name == "all_finite":
        a = f32(rng, shape)
        if draw(st.booleans()):
            a.flat[rng.integers(a.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return upd.all_finite, (a,)
    raise AssertionError(f"no case maker for {name}")


ARRAY_KERNELS = sorted(k for k in export_c.python_kernels() if k not in ("srdhm", "rdbpot", "mbqm"))


def test_every_c_prototype_has_a_python_twin_in_the_call_table():
    """microtrain.h and export_c's table agree: every mt_ function is reachable from a Python kernel, and every
    table entry names a declared function (variants _ws8/_xs8 included)."""
    protos = export_c.parse_prototypes(export_c.firmware_sources()[1].read_text())
    reached = {v for k in export_c.python_kernels() for v in (f"mt_{k}", f"mt_{k}_ws8", f"mt_{k}_xs8")}
    assert set(protos) <= reached
    assert {f"mt_{k}" for k in export_c.python_kernels()} <= set(protos)


@pytest.mark.parametrize("name", ARRAY_KERNELS)
@kernel_settings(15)
@given(data=st.data())
def test_c_twin_equals_python_kernel(clib, name, data):
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    fn, args = case(name, data.draw, rng)
    assert_twins_equal(clib, fn, args, ret_rtol=1e-6 if name == "softmax_cross_entropy_f32" else 0.0)


INT32 = st.integers(-(1 << 31), (1 << 31) - 1)


@kernel_settings(200)
@given(a=INT32, b=INT32, e=st.integers(0, 31))
def test_c_fixed_point_primitives_equal_python(clib, a, b, e):
    assert call_c(clib, srdhm, (a, b)) == srdhm(a, b)
    assert call_c(clib, rdbpot, (a, e)) == rdbpot(a, e)


@kernel_settings(200)
@given(x=st.integers(-(1 << 24), 1 << 24), m=st.integers(1 << 30, (1 << 31) - 1), shift=st.integers(-31, 6))
def test_c_mbqm_equals_python(clib, x, m, shift):
    if shift > 0 and abs(x) << shift >= 1 << 31:
        shift = 0  # the contract: the pre-shifted accumulator fits int32
    assert call_c(clib, mbqm, (x, m, shift)) == mbqm(x, m, shift)


def test_c_srdhm_saturates_like_python(clib):
    for a, b in ((-(1 << 31), -(1 << 31)), (-(1 << 31), 1 << 30), ((1 << 31) - 1, (1 << 31) - 1), (-1, 1)):
        assert call_c(clib, srdhm, (a, b)) == srdhm(a, b)
