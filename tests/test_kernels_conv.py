"""conv2d_s8 / conv2d_f32 against tests/naive.py: int8 bit-exact (assert_array_equal), fp32 within
config.F32_RTOL / F32_ATOL (1e-5 / 1e-5) of a float64 reference."""

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.config import F32_ATOL, F32_RTOL
from microtrain.kernels.conv2d import conv2d_f32, conv2d_s8
from microtrain.kernels.mask import NO_MASK, mask_shape
import naive
from settings import kernel_settings

# name -> geometry (k is KH = KW unless kh/kw are given) and layer options of naive.make_s8_layer.
CASES = {
    "k3_s1_p1_basic": dict(n=1, h=5, w=5, ci=3, co=4, k=3, stride=1, pad=1),
    "k3_s2_p1_oddw": dict(n=1, h=6, w=7, ci=2, co=3, k=3, stride=2, pad=1),
    "stride2_odd_input": dict(n=1, h=9, w=9, ci=3, co=2, k=3, stride=2, pad=1),
    "k7_s2_p3_c1": dict(n=1, h=9, w=8, ci=1, co=1, k=7, stride=2, pad=3),
    "k5_s1_p2_image_smaller_than_kernel": dict(n=1, h=3, w=2, ci=2, co=2, k=5, stride=1, pad=2),
    "k3_s1_p0_valid": dict(n=1, h=5, w=6, ci=4, co=3, k=3, stride=1, pad=0),
    "k3_p1_image_1x1_centre_tap_only": dict(n=1, h=1, w=1, ci=5, co=3, k=3, stride=1, pad=1),
    "k1_s1_p0_like_pointwise": dict(n=1, h=3, w=4, ci=6, co=5, k=1, stride=1, pad=0),
    "k1_s2_p0_subsample": dict(n=1, h=5, w=5, ci=2, co=2, k=1, stride=2, pad=0),
    "kh1_kw3_p1_nonsquare": dict(n=1, h=4, w=5, ci=2, co=3, kh=1, kw=3, stride=1, pad=1),
    "batch3": dict(n=3, h=4, w=4, ci=2, co=3, k=3, stride=1, pad=1),
    # MCUNet / MbV2 / Proxyless stem: 3 -> 16 channels, k3 s2 p1 (real input 96-176 px; 12 px here).
    "mcunet_stem_3to16_k3_s2": dict(n=1, h=12, w=12, ci=3, co=16, k=3, stride=2, pad=1),
    # wide and deep: KH*KW*Ci = 3136 taps, 45 output channels (an odd count past any 8- or 16-wide channel block a
    # vectorised kernel would use, with a tail)
    "output_channel_blocks_k7_ci64": dict(n=1, h=4, w=5, ci=64, co=45, k=7, stride=1, pad=3),
    "mcunet_stem_relu6_range": dict(n=1, h=8, w=8, ci=3, co=16, k=3, stride=2, pad=1, act="relu6"),
    "saturate_small_y_scale": dict(n=1, h=6, w=6, ci=4, co=4, k=3, stride=1, pad=1, saturate=True),
    "positive_shift_effective_scale_4": dict(n=1, h=5, w=5, ci=2, co=3, k=3, stride=1, pad=1, eff_scale=4.0),
    "narrow_random_act_range": dict(n=1, h=5, w=5, ci=3, co=4, k=3, stride=2, pad=1, act="random"),
    "y_zp_extreme_127": dict(n=1, h=5, w=5, ci=3, co=4, k=3, stride=1, pad=1, y_zp=127),
    # acc + bias overflows int32 and wraps, as TFLM's int32 accumulator does (real tiny-training dead channels)
    "bias_int32_extremes_wrap": dict(n=1, h=9, w=9, ci=3, co=16, k=3, stride=2, pad=1, act="relu6",
                                     extreme_bias=True),
}
GEOM = ("n", "h", "w", "ci", "co", "k", "kh", "kw", "stride", "pad")


def split(case):
    geom = {k: v for k, v in case.items() if k in GEOM}
    opts = {k: v for k, v in case.items() if k not in GEOM}
    kh = geom.pop("kh", geom.get("k"))
    kw = geom.pop("kw", geom.get("k"))
    geom.pop("k", None)
    return geom, kh, kw, opts


def run_s8(seed, n, h, w, ci, co, kh, kw, stride, pad, **opts):
    rng = np.random.default_rng(seed)

    def real_fn(xr, wr, br):
        return naive.conv2d_f32(xr, wr, br, -np.inf, np.inf, stride, pad)

    p = naive.make_s8_layer(rng, (n, h, w, ci), (co, kh, kw, ci), 0, real_fn, **opts)
    expected, in_range = naive.conv2d_s8(**p, stride=stride, pad=pad, with_mask=True)
    # y bit-exact with and without the training mask; the mask equal to the naive pre-clamp in-range bits
    y = naive.check_s8_kernel(conv2d_s8, expected, in_range, p["x"], p["w"], p["bias"], p["mult"], p["shift"],
                              p["x_zp"], p["y_zp"], p["act_min"], p["act_max"], stride, pad)
    return y, p, in_range


def run_f32(seed, n, h, w, ci, co, kh, kw, stride, pad, act=(-np.inf, np.inf)):
    rng = np.random.default_rng(seed)
    x = naive.rand_f32(rng, (n, h, w, ci), 2.0)
    wt = naive.rand_f32(rng, (co, kh, kw, ci), 1.0 / np.sqrt(kh * kw * ci))
    b = naive.rand_f32(rng, (co,), 0.5)
    expected = naive.conv2d_f32(x, wt, b, act[0], act[1], stride, pad)
    y = np.full(expected.shape, np.nan, np.float32)
    conv2d_f32(y, x, wt, b, act[0], act[1], stride, pad)
    np.testing.assert_allclose(y, expected, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name", CASES)
def test_conv2d_s8_cases(name):
    geom, kh, kw, opts = split(CASES[name])
    y, p, in_range = run_s8(1234, kh=kh, kw=kw, **geom, **opts)
    if opts.get("saturate") or "eff_scale" in opts:
        assert np.mean((y == p["act_min"]) | (y == p["act_max"])) > 0.3  # the case does what its name says
        assert np.mean(~in_range) > 0.3  # the mask blocks the clamped values (zero gradient there)
    if name == "positive_shift_effective_scale_4":
        assert p["shift"].max() > 0
    if name == "k3_s1_p1_basic":
        assert len(np.unique(y)) > 10  # not vacuous: outputs spread over the int8 range


@pytest.mark.parametrize("name", [n for n in CASES if not set(CASES[n]) - set(GEOM)])
@pytest.mark.parametrize("act", [(-np.inf, np.inf), (0.0, 6.0)], ids=["none", "relu6"])
def test_conv2d_f32_cases(name, act):
    geom, kh, kw, _ = split(CASES[name])
    run_f32(99, kh=kh, kw=kw, **geom, act=act)


@st.composite
def geometry(draw):
    """Small random conv geometry: odd sizes, 1 channel, batch 1-2, stride 2 on odd inputs, k up to 7; up to 20
    output channels (past one 8- or 16-wide channel block, with a tail)."""
    k = draw(st.sampled_from([1, 3, 5, 7]))
    pad = draw(st.integers(0, k // 2))
    lo = max(1, k - 2 * pad)  # at least one output position
    return dict(n=draw(st.integers(1, 2)), h=draw(st.integers(lo, 11)), w=draw(st.integers(lo, 11)),
                ci=draw(st.integers(1, 8)), co=draw(st.integers(1, 20)), kh=k, kw=k,
                stride=draw(st.sampled_from([1, 2])), pad=pad)


@kernel_settings(30)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.booleans(), st.sampled_from([None, "relu6", "random"]),
       st.one_of(st.none(), st.integers(-128, 127)))
def test_conv2d_s8_hypothesis(geom, seed, saturate, act, y_zp):
    run_s8(seed, **geom, saturate=saturate, act=act, y_zp=y_zp)


@kernel_settings(25)
@given(geometry(), st.integers(0, 2 ** 32 - 1), st.sampled_from([(-np.inf, np.inf), (0.0, 6.0)]))
def test_conv2d_f32_hypothesis(geom, seed, act):
    run_f32(seed, **geom, act=act)


def test_conv2d_s8_rejects_wrong_output_shape():
    x = np.zeros((1, 5, 5, 2), np.int8)
    w = np.zeros((3, 3, 3, 2), np.int8)
    c = np.zeros(3, np.int32)
    y = np.zeros((1, 4, 5, 3), np.int8)  # OH should be 5 with pad 1
    with pytest.raises(ValueError):
        conv2d_s8(y, NO_MASK, x, w, c, c, c, 0, 0, -128, 127, 1, 1)


def test_conv2d_s8_rejects_wrong_mask_shape():
    x = np.zeros((2, 5, 5, 2), np.int8)
    w = np.zeros((3, 3, 3, 2), np.int8)
    c = np.zeros(3, np.int32)
    y = np.zeros((2, 5, 5, 3), np.int8)
    conv2d_s8(y, np.zeros(mask_shape(2, 5, 5, 3), np.uint8), x, w, c, c, c, 0, 0, -128, 127, 1, 1)
    with pytest.raises(ValueError):  # one flat mask over the tensor instead of byte-aligned rows
        conv2d_s8(y, np.zeros((1, (2 * 5 * 5 * 3 + 7) // 8), np.uint8), x, w, c, c, c, 0, 0, -128, 127, 1, 1)


def test_s8_kernels_with_masks_are_deterministic_across_thread_counts():
    # The parallel int8 kernels write y and the mask by image rows; mask rows are byte-aligned, so no two iterations
    # share a byte and the result cannot depend on the thread count. W * C = 5 * 3 = 15 bits: rows end mid-byte.
    from microtrain.kernels.depthwise import depthwise_conv_s8
    from microtrain.kernels.pointwise import pointwise_conv_s8
    rng = np.random.default_rng(21)
    s8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    c = 3
    q = (np.zeros(c, np.int32), np.full(c, 1 << 30, np.int32), np.full(c, -6, np.int32), 3, -5, -20, 40)
    calls = [(conv2d_s8, (s8(2, 9, 9, 2), s8(c, 3, 3, 2)) + q + (2, 1), (2, 5, 5, c)),
             (depthwise_conv_s8, (s8(2, 9, 5, c), s8(3, 3, c)) + q + (1, 1), (2, 9, 5, c)),
             (pointwise_conv_s8, (s8(2, 7, 5, 4), s8(c, 4)) + q, (2, 7, 5, c))]
    threads = numba.get_num_threads()
    for kernel, args, shape in calls:
        outs = []
        for t in sorted({1, threads}):
            y, mask = np.zeros(shape, np.int8), np.zeros(mask_shape(*shape), np.uint8)
            numba.set_num_threads(t)
            try:
                kernel(y, mask, *args)
            finally:
                numba.set_num_threads(threads)
            outs.append((y, mask))
        assert 0 < np.unpackbits(outs[0][1]).sum() < outs[0][0].size  # the mask is not trivial
        for y, mask in outs[1:]:
            np.testing.assert_array_equal(y, outs[0][0])
            np.testing.assert_array_equal(mask, outs[0][1])
