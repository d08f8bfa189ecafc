"""kernels/depthwise_host.py (the "blas" backends' depthwise kernels).

depthwise_conv_s8_host against tests/naive.py's integer depthwise conv: y and the 1-bit mask bit for bit, on each
of its paths (row-wise weights over input rows, for stride > 1 over their stride phases; any stride per pixel),
int32-wrapping biases (the float64 requantization's integer fall-back), positive shifts and saturation; and against
the reference kernel depthwise_conv_s8 on real layer shapes. The fp32 stride-1 forward and input gradient: bit for
bit equal to the reference kernels (same per-element order), and within float32 rounding of float64 oracles."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from microtrain.graph import load_graph
from microtrain.kernels.depthwise import depthwise_conv_f32, depthwise_conv_s8
from microtrain.kernels.depthwise_backward import depthwise_conv_f32_backward_input
from microtrain.kernels.depthwise_host import (TILED_STRIDED_ROWS, depthwise_conv_f32_backward_input_host,
                                              depthwise_conv_f32_host, depthwise_conv_s8_host, depthwise_f32_host_fits,
                                              depthwise_host_fits, row_wise_fits)
from microtrain.kernels.gemm_io import requant_checked_channels, requant_f64_params, weight_reach
from microtrain.kernels.mask import NO_MASK, mask_shape
from microtrain.kernels.scratch import SCRATCH_ACC, SCRATCH_WF
from microtrain.reference_models import NAMES
from settings import JIT_DISABLED, kernel_settings


def dw_reach(w, x_zp):
    """The bound on |acc| the binders give a frozen depthwise weight (KH, KW, C): per channel over its taps."""
    return weight_reach(w.reshape(-1, w.shape[2]).T, x_zp)


def run(seed, n, h, w, c, k, stride, pad, reach=False, **opts):
    """The host kernel on a random naive.make_s8_layer layer, checked against naive.depthwise_conv_s8 (y without and
    with a mask, the mask itself). reach: bind the constants with the weights' bound on |acc| (as a frozen layer
    is bound: the per-element limit test is then skipped unless a bias is too large), else with none. Returns
    (y, layer)."""
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.depthwise_conv_f32(xr, wr, br, -np.inf, np.inf, stride, pad)

    p = naive.make_s8_layer(rng, (n, h, w, c), (k, k, c), -1, real_fn, **opts)
    want, in_range = naive.depthwise_conv_s8(**p, stride=stride, pad=pad, with_mask=True)
    rq = requant_f64_params(p["mult"], p["shift"], dw_reach(p["w"], p["x_zp"]) if reach else None)
    y = naive.check_s8_kernel(depthwise_conv_s8_host, want, in_range, p["x"], p["w"], p["bias"], rq, p["mult"],
                              p["shift"], p["x_zp"], p["y_zp"], p["act_min"], p["act_max"], stride, pad)
    return y, p


CASES = {
    "k3_s1_p1_c16_mcunet_first": dict(n=2, h=9, w=9, c=16, k=3, stride=1, pad=1),
    "k7_s1_p3_image_smaller_than_kernel": dict(n=1, h=3, w=4, c=3, k=7, stride=1, pad=3),
    "k3_p1_1x1_image": dict(n=1, h=1, w=1, c=5, k=3, stride=1, pad=1),
    "k5_s1_p0_valid": dict(n=1, h=7, w=6, c=3, k=5, stride=1, pad=0),
    "k1_s1": dict(n=1, h=4, w=3, c=7, k=1, stride=1, pad=0),
    "k3_s2_odd": dict(n=1, h=7, w=7, c=5, k=3, stride=2, pad=1),
    "k7_s2_p3_c1": dict(n=1, h=9, w=8, c=1, k=7, stride=2, pad=3),
    "k3_s3": dict(n=1, h=10, w=8, c=4, k=3, stride=3, pad=1),
    # stride 1, but (KH * KW + 1) * OW * C > SCRATCH_W8: the per-pixel path
    "k7_s1_rows_too_long_to_tile": dict(n=1, h=3, w=14, c=100, k=7, stride=1, pad=3),
    # strided with at least TILED_STRIDED_ROWS output rows: the row-wise path over the input rows' stride phases
    "k3_s2_tiled_two_images": dict(n=2, h=9, w=10, c=5, k=3, stride=2, pad=1),
    "k3_s2_p0_tiled": dict(n=2, h=9, w=9, c=3, k=3, stride=2, pad=0),
    "k7_s2_p3_tiled": dict(n=1, h=17, w=15, c=3, k=7, stride=2, pad=3),
    "k5_s3_tiled": dict(n=2, h=14, w=11, c=4, k=5, stride=3, pad=2),
    # strided, enough rows, but the row-wise weights and the ring of split rows exceed SCRATCH_W8: per pixel
    "k7_s2_rows_too_long_to_tile": dict(n=1, h=16, w=14, c=150, k=7, stride=2, pad=3),
    "saturate": dict(n=1, h=6, w=6, c=4, k=3, stride=1, pad=1, saturate=True),
    "positive_shift": dict(n=1, h=5, w=5, c=4, k=3, stride=1, pad=1, eff_scale=4.0),
    "relu6": dict(n=1, h=5, w=7, c=9, k=5, stride=1, pad=2, act="relu6"),
    "random_act_range_s2": dict(n=1, h=5, w=5, c=4, k=5, stride=2, pad=2, act="random"),
    "y_zp_minus128": dict(n=1, h=5, w=5, c=4, k=3, stride=1, pad=1, y_zp=-128),
    # acc + bias wraps int32: those elements take the integer fall-back, their neighbours the float64 path
    "bias_int32_extremes_s1": dict(n=1, h=9, w=9, c=16, k=3, stride=1, pad=1, act="relu6", extreme_bias=True),
    "bias_int32_extremes_s2": dict(n=1, h=9, w=9, c=16, k=3, stride=2, pad=1, extreme_bias=True),
}


def _tiled(n, h, w, c, k, stride, pad, **_):
    """Whether depthwise_conv_s8_host takes its row-wise path for this geometry (the kernel's own predicate)."""
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return row_wise_fits(n * oh, ow, c, k, k, w, stride)


def test_the_cases_take_the_path_their_names_say():
    for name, g in CASES.items():
        ow = (g["w"] + 2 * g["pad"] - g["k"]) // g["stride"] + 1
        assert ow * g["c"] <= SCRATCH_ACC, name
        if "too_long" in name:
            assert not _tiled(**g) and (g["stride"] == 1 or g["n"] * ((g["h"] + 2 * g["pad"] - g["k"]) // g["stride"]
                                                                      + 1) >= TILED_STRIDED_ROWS), name
        elif "tiled" in name:
            assert _tiled(**g) and g["stride"] > 1, name


@pytest.mark.parametrize("name", CASES)
def test_depthwise_host_cases(name):
    opts = dict(CASES[name])
    y, p = run(2024, **opts)
    if opts.get("saturate") or "eff_scale" in opts:
        assert np.mean((y == p["act_min"]) | (y == p["act_max"])) > 0.3
    if opts.get("extreme_bias"):
        assert np.abs(p["bias"].astype(np.int64)).max() > 1 << 30


@st.composite
def geometry(draw):
    k = draw(st.sampled_from([1, 3, 5, 7]))
    pad = draw(st.integers(0, k // 2))
    lo = max(1, k - 2 * pad)
    return dict(n=draw(st.integers(1, 2)), h=draw(st.integers(lo, 11)), w=draw(st.integers(lo, 13)),
                c=draw(st.integers(1, 20)), k=k, stride=draw(st.sampled_from([1, 1, 2, 3])), pad=pad)


@kernel_settings(40)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu6", "random"]),
       st.booleans(), st.booleans())
def test_depthwise_host_hypothesis(geom, seed, saturate, act, extreme_bias, reach):
    run(seed, **geom, saturate=saturate, act=act, extreme_bias=extreme_bias, reach=reach)


@st.composite
def strided_tiled_geometry(draw):
    """Stride 2 or 3 with at least TILED_STRIDED_ROWS output rows (the row-wise path over stride phases), odd and
    even sizes, an image boundary inside a thread's chunk when n > 1."""
    k = draw(st.sampled_from([1, 3, 5, 7]))
    pad = draw(st.integers(0, k // 2))
    stride = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, 3))
    oh = draw(st.integers(-(-TILED_STRIDED_ROWS // n), 9))  # n * oh >= TILED_STRIDED_ROWS
    h = (oh - 1) * stride + k - 2 * pad + draw(st.integers(0, stride - 1))  # any h with that many output rows
    w = draw(st.integers(max(1, k - 2 * pad), 15))
    return dict(n=n, h=h, w=w, c=draw(st.integers(1, 20)), k=k, stride=stride, pad=pad)


@kernel_settings(30)
@given(strided_tiled_geometry(), st.integers(0, 2 ** 32 - 1), st.sampled_from([None, "relu6", "random"]),
       st.booleans(), st.booleans())
def test_depthwise_host_strided_row_wise_hypothesis(geom, seed, act, extreme_bias, reach):
    assert _tiled(**geom)
    run(seed, **geom, act=act, extreme_bias=extreme_bias, reach=reach)


@pytest.mark.parametrize("name", ["k3_s1_p1_c16_mcunet_first", "k3_s2_odd", "relu6", "saturate"])
def test_depthwise_host_with_the_weights_reach_skips_the_limit_test_and_stays_exact(name):
    """Bound like a frozen layer, these cases need no per-element limit test (requant_checked_channels is 0), and
    the check-free loops give the reference's bits."""
    _, p = run(0, **CASES[name], reach=True)
    assert requant_checked_channels(requant_f64_params(p["mult"], p["shift"], dw_reach(p["w"], p["x_zp"])),
                                    p["bias"]) == 0


def _real_layers():
    out = []
    for model in NAMES:
        g = load_graph(model)
        for op in g.ops:
            if op.kind == "depthwise":
                out.append(pytest.param(g.shapes[op.inputs[0]], g.shapes[op.output], op, id=f"{model}:{op.name}"))
    return out


@pytest.mark.skipif(JIT_DISABLED, reason="real layer shapes take minutes as pure Python; the cases above cover "
                                         "both paths with the JIT off")
@pytest.mark.parametrize("xin,yout,op", _real_layers())
def test_depthwise_host_equals_reference_on_real_layers(xin, yout, op):
    rng = np.random.default_rng(7)
    n = 2
    x = rng.integers(-128, 128, (n,) + tuple(xin)).astype(np.int8)
    w = rng.integers(-127, 128, (op.kernel, op.kernel, op.cout)).astype(np.int8)
    bias = rng.integers(-20000, 20000, op.cout).astype(np.int32)
    mult = rng.integers(1 << 30, (1 << 31) - 1, op.cout).astype(np.int32)
    # output spread ~60 LSB: a sum of K^2 products of two uniform int8 has std ~ 74^2 * K, and mult ~ 0.75 * 2^31
    spread = int(np.round(np.log2(60 / (0.75 * 74 ** 2 * op.kernel))))
    shift = rng.integers(spread - 1, spread + 2, op.cout).astype(np.int32)
    assert depthwise_host_fits(yout[1], yout[2])
    shape = (n,) + tuple(yout)
    y_ref, y_host = np.empty(shape, np.int8), np.full(shape, 7, np.int8)
    m_ref, m_host = np.empty(mask_shape(*shape), np.uint8), np.full(mask_shape(*shape), 0x5A, np.uint8)
    args = (x, w, bias, mult, shift, 3, -4, -128, 100)
    depthwise_conv_s8(y_ref, m_ref, *args, op.stride, op.pad)
    rq = requant_f64_params(mult, shift, dw_reach(w, 3))  # bound as Inference and the Fisher pass bind it
    assert requant_checked_channels(rq, bias) == 0  # so the check-free loops run
    depthwise_conv_s8_host(y_host, m_host, x, w, bias, rq, mult, shift, 3, -4, -128, 100, op.stride, op.pad)
    np.testing.assert_array_equal(y_host, y_ref)
    np.testing.assert_array_equal(m_host, m_ref)
    assert 0.01 < np.mean(y_ref == 100) < 0.5  # the clamp and the mask are exercised


def test_depthwise_host_rejects_bad_shapes():
    x = np.zeros((1, 5, 5, 4), np.int8)
    c = np.zeros(4, np.int32)
    rq = requant_f64_params(c + (1 << 30), c - 1)
    y = np.zeros((1, 5, 5, 4), np.int8)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        depthwise_conv_s8_host(y, NO_MASK, x, np.zeros((3, 3, 3), np.int8), c, rq, c, c, 0, 0, -128, 127, 1, 1)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        depthwise_conv_s8_host(y, NO_MASK, x, np.zeros((3, 3, 4), np.int8), c, rq[:, :3], c, c, 0, 0, -128, 127, 1,
                               1)
    wide = SCRATCH_ACC // 4 + 1  # OW * C = 4 * wide > SCRATCH_ACC
    assert not depthwise_host_fits(wide, 4)
    xw = np.zeros((1, 1, wide, 4), np.int8)
    with pytest.raises(ValueError, match="SCRATCH_ACC"):
        depthwise_conv_s8_host(np.zeros((1, 1, wide, 4), np.int8), NO_MASK, xw, np.zeros((1, 1, 4), np.int8), c,
                               rq, c, c, 0, 0, -128, 127, 1, 0)


# ---- fp32, stride 1: forward and input gradient, bit-identical to the reference kernels ------------------------

@st.composite
def f32_geometry(draw):
    """Stride-1 geometry; wide channel counts make the row segments shorter than a row (S < OW)."""
    k = draw(st.sampled_from([1, 3, 5, 7]))
    pad = draw(st.integers(0, k // 2))
    lo = max(1, k - 2 * pad)
    c = draw(st.one_of(st.integers(1, 20), st.integers(100, SCRATCH_WF // (k * k))))
    return dict(n=draw(st.integers(1, 2)), h=draw(st.integers(lo, 9)), w=draw(st.integers(lo, 11)), c=c, k=k,
                pad=pad)


def _f32_layer(seed, n, h, w, c, k, pad):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, h, w, c)).astype(np.float32)
    wt = rng.normal(0, 0.5, (k, k, c)).astype(np.float32)
    b = rng.normal(0, 0.5, c).astype(np.float32)
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    dy = rng.normal(0, 1, (n, oh, ow, c)).astype(np.float32)
    return x, wt, b, dy


@kernel_settings(30)
@given(f32_geometry(), st.integers(0, 2 ** 32 - 1), st.sampled_from([(-np.inf, np.inf), (0.0, 6.0)]),
       st.booleans())
def test_f32_host_kernels_equal_the_reference_bit_for_bit(geom, seed, act, int8_weight):
    x, wt, b, dy = _f32_layer(seed, **geom)
    k, pad = geom["k"], geom["pad"]
    assert depthwise_f32_host_fits(k, geom["c"], 1)
    y_ref, y_host = np.empty(dy.shape, np.float32), np.full(dy.shape, np.nan, np.float32)
    depthwise_conv_f32(y_ref, x, wt, b, act[0], act[1], 1, pad)
    depthwise_conv_f32_host(y_host, x, wt, b, act[0], act[1], pad)
    assert y_host.tobytes() == y_ref.tobytes()
    # the independent oracle: float64 naive within float32 rounding
    np.testing.assert_allclose(y_host, naive.depthwise_conv_f32(x, wt, b, act[0], act[1], 1, pad), rtol=1e-5,
                               atol=1e-5)
    # input gradient, with fp32 weights or the frozen int8 weights of int8 mode
    wg = np.random.default_rng(seed).integers(-127, 128, wt.shape).astype(np.int8) if int8_weight else wt
    dx_ref, dx_host = np.empty(x.shape, np.float32), np.full(x.shape, np.nan, np.float32)
    depthwise_conv_f32_backward_input(dx_ref, dy, wg, 1, pad)
    depthwise_conv_f32_backward_input_host(dx_host, dy, wg, pad)
    assert dx_host.tobytes() == dx_ref.tobytes()
    # oracle: dx = the transposed conv of dy, in float64 (each dx element sums w * dy over the taps that read it)
    want = np.zeros(x.shape)
    h, w = x.shape[1], x.shape[2]
    for ky in range(k):
        for kx in range(k):
            for oy in range(dy.shape[1]):
                iy = oy - pad + ky
                if 0 <= iy < h:
                    for ox in range(dy.shape[2]):
                        ix = ox - pad + kx
                        if 0 <= ix < w:
                            want[:, iy, ix, :] += wg[ky, kx].astype(np.float64) * dy[:, oy, ox, :]
    np.testing.assert_allclose(dx_host, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_f32_host_kernels_refuse_what_they_cannot_run():
    x, wt, b, dy = _f32_layer(1, 1, 5, 5, 4, 3, 1)
    with pytest.raises(ValueError, match="stride 1"):
        depthwise_conv_f32_host(np.empty((1, 3, 3, 4), np.float32), x, wt, b, 0.0, 6.0, 1)  # a stride-2 output
    with pytest.raises(ValueError, match="stride 1"):
        depthwise_conv_f32_backward_input_host(x, np.empty((1, 3, 3, 4), np.float32), wt, 1)
    c = SCRATCH_WF // 9 + 1  # 3 x 3 x C floats beyond the tile
    assert not depthwise_f32_host_fits(3, c, 1) and not depthwise_f32_host_fits(3, 4, 2)
    xw, ww, bw, dyw = _f32_layer(1, 1, 3, 3, c, 3, 1)
    with pytest.raises(ValueError, match="SCRATCH_WF"):
        depthwise_conv_f32_host(np.empty(dyw.shape, np.float32), xw, ww, bw, 0.0, 6.0, 1)
    with pytest.raises(ValueError, match="SCRATCH_WF"):
        depthwise_conv_f32_backward_input_host(np.empty(xw.shape, np.float32), dyw, ww, 1)
