"""Backward kernels against finite differences of the float64 references in tests/naive_grad.py.

Per kernel: (a) float64 kernel == central differences (tight), float32 kernel within a rigorous summation bound of
the float64 kernel; (b) sparse (kept-channel) gradients equal the dense gradients' slices bit for bit; (c) named
edge cases plus hypothesis-generated shapes; then (d) a whole small network chained by hand against finite
differences of its loss, and (e) the kernels allocate nothing.
"""

import tracemalloc

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.kernels.bias_backward import bias_f32_backward, bias_f32_backward_2d
from microtrain.kernels.clamp_backward import clamp_f32_backward, f32_open_bounds
from microtrain.kernels.conv2d_backward import conv2d_f32_backward_input, conv2d_f32_backward_weight
from microtrain.kernels.depthwise_backward import (depthwise_conv_f32_backward_input,
                                                   depthwise_conv_f32_backward_weight)
from microtrain.kernels.depthwise_host import depthwise_conv_f32_backward_input_host
from microtrain.kernels.elementwise_backward import (accumulate_f32, mask_pack_f32, mask_unpack_backward_f32,
                                                     scale_channels_f32, scale_f32)
from microtrain.kernels.fully_connected_backward import (fully_connected_f32_backward_input,
                                                         fully_connected_f32_backward_weight)
from microtrain.kernels.gather import gather_channels
from microtrain.kernels.loss import softmax_cross_entropy_f32
from microtrain.kernels.mask import mask_bytes, mask_pack_row, mask_shape
from microtrain.kernels.pointwise_backward import (pointwise_conv_f32_backward_input,
                                                   pointwise_conv_f32_backward_weight)
from microtrain.kernels.pool_backward import avgpool_f32_backward, global_mean_f32_backward
from microtrain.kernels.scratch import SCRATCH_W8
import naive_grad as ng
from settings import JIT_DISABLED, kernel_settings

# Every loss below is linear in the perturbed argument (except softmax-CE and the network), so central
# differences are exact up to rounding: |error| <~ 2^-52 * sum|terms| / eps ~ 1e-9 for these sizes.
FD_RTOL = 1e-6
FD_ATOL = 1e-7
U32 = 2.0 ** -24  # unit roundoff of float32


def assert_fd(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=FD_ATOL)


def assert_f32_within(g32, g64, abs64, n_terms):
    """float32 kernel vs the float64 kernel on the same (float32-representable) inputs.

    Each output is a float32 recursive sum of n_terms rounded products (or quotients), so (Higham, Accuracy and
    Stability, §3.1) |g32 - g64| <= gamma_{n+1} * sum|terms| with gamma_m = m u / (1 - m u); abs64 is that sum of
    absolute terms, obtained by running the float64 kernel on absolute values. (n + 2) u covers gamma_{n+1}.
    """
    assert g32.dtype == np.float32 and not np.isnan(g32).any()
    bound = (n_terms + 2) * U32 * abs64
    err = np.abs(g32.astype(np.float64) - g64)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)} (n_terms {n_terms})"


def f64(rng, *shape):
    """Standard normal values that are exactly representable in float32 (so the f32 and f64 runs see equal inputs)."""
    return rng.standard_normal(shape).astype(np.float32).astype(np.float64)


def nans(shape, dtype=np.float64):
    """Output buffers start as NaN: a kernel that does not overwrite every element (`=`) fails the comparison."""
    return np.full(shape, np.nan, dtype)


def keep_subset(rng, c):
    """A non-empty subset of range(c) in a random (unsorted) order, int32: the caller's keep list."""
    return rng.permutation(c)[:rng.integers(1, c + 1)].astype(np.int32)


def arange32(c):
    return np.arange(c, dtype=np.int32)


def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


# ---------------------------------------------------------------------------------------------------------------
# conv2d

def check_conv2d(n, h, w, ci, co, k, stride, pad, seed):
    rng = np.random.default_rng(seed)
    oh, ow = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    x, wt, b, dy = f64(rng, n, h, w, ci), f64(rng, co, k, k, ci), f64(rng, co), f64(rng, n, oh, ow, co)
    allc = arange32(co)

    # (a) float64 kernels == finite differences of L = sum(conv2d(x, w, b) * dy)
    dx, dw, db = nans(x.shape), nans(wt.shape), nans(co)
    conv2d_f32_backward_input(dx, dy, wt, stride, pad)
    conv2d_f32_backward_weight(dw, x, 0.0, dy, allc, stride, pad)
    bias_f32_backward(db, dy, allc)
    loss = lambda: float(np.sum(ng.conv2d(x, wt, b, stride, pad) * dy))  # noqa: E731
    assert_fd(dx, ng.numerical_gradient(loss, x))
    assert_fd(dw, ng.numerical_gradient(loss, wt))
    assert_fd(db, ng.numerical_gradient(loss, b))

    # float32 within the summation bound of the float64 result
    x32, w32, dy32 = x.astype(np.float32), wt.astype(np.float32), dy.astype(np.float32)
    dx32, dw32, db32 = nans(x.shape, np.float32), nans(wt.shape, np.float32), nans(co, np.float32)
    conv2d_f32_backward_input(dx32, dy32, w32, stride, pad)
    conv2d_f32_backward_weight(dw32, x32, 0.0, dy32, allc, stride, pad)
    bias_f32_backward(db32, dy32, allc)
    adx, adw, adb = np.empty_like(dx), np.empty_like(dw), np.empty_like(db)
    conv2d_f32_backward_input(adx, np.abs(dy), np.abs(wt), stride, pad)
    conv2d_f32_backward_weight(adw, np.abs(x), 0.0, np.abs(dy), allc, stride, pad)
    bias_f32_backward(adb, np.abs(dy), allc)
    assert_f32_within(dx32, dx, adx, k * k * co)
    assert_f32_within(dw32, dw, adw, n * oh * ow)
    assert_f32_within(db32, db, adb, n * oh * ow)

    # (b) sparse == dense slice, bit for bit (float32, the precision that runs)
    keep_in, keep_out = keep_subset(rng, ci), keep_subset(rng, co)
    x_saved = np.ascontiguousarray(x32[..., keep_in])  # forward saved only the kept input channels
    dw_in = nans((co, k, k, len(keep_in)), np.float32)
    conv2d_f32_backward_weight(dw_in, x_saved, 0.0, dy32, allc, stride, pad)
    np.testing.assert_array_equal(dw_in, dw32[..., keep_in])
    dw_out = nans((len(keep_out), k, k, ci), np.float32)
    conv2d_f32_backward_weight(dw_out, x32, 0.0, dy32, keep_out, stride, pad)
    np.testing.assert_array_equal(dw_out, dw32[keep_out])
    dw_both = nans((len(keep_out), k, k, len(keep_in)), np.float32)
    conv2d_f32_backward_weight(dw_both, x_saved, 0.0, dy32, keep_out, stride, pad)
    np.testing.assert_array_equal(dw_both, dw32[keep_out][..., keep_in])
    db_s = nans(len(keep_out), np.float32)
    bias_f32_backward(db_s, dy32, keep_out)
    np.testing.assert_array_equal(db_s, db32[keep_out])
    c0 = int(rng.integers(0, co))  # a run of consecutive channels not starting at 0: the slice path
    run = np.arange(c0, co, dtype=np.int32)
    db_r = nans(len(run), np.float32)
    bias_f32_backward(db_r, dy32, run)
    np.testing.assert_array_equal(db_r, db32[run])
    return dx32


CONV_CASES = {  # name: (n, h, w, ci, co, k, stride, pad)
    "k3_s2_p1_oddw": (2, 6, 7, 3, 4, 3, 2, 1),
    "k3_s2_p0_lastrow_unread": (1, 6, 6, 2, 3, 3, 2, 0),
    "k7_s1_p3_c1": (1, 7, 7, 1, 1, 7, 1, 3),
    "k7_s2_p3_oddhw": (1, 9, 7, 2, 2, 7, 2, 3),
    "k1_s2_p0_skips_pixels": (2, 5, 5, 2, 3, 1, 2, 0),
    "k3_s1_p1_1x1image": (2, 1, 1, 3, 2, 3, 1, 1),
    "k5_s2_p2_batch1": (1, 5, 6, 3, 2, 5, 2, 2),
    "k2_s1_p0_even_kernel": (1, 4, 5, 2, 2, 2, 1, 0),
    "k3_s2_p1_stem": (1, 8, 8, 3, 4, 3, 2, 1),
}


@pytest.mark.parametrize("shape", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d_backward_cases(shape):
    check_conv2d(*shape, seed=1)


def test_conv2d_backward_input_unread_pixels_are_zero():
    # H = W = 6, k3 s2 p0: the windows start at 0 and 2 and end at index 4, so row 5 and column 5 get no gradient;
    # k1 s2 reads only the even pixels.
    dx = check_conv2d(*CONV_CASES["k3_s2_p0_lastrow_unread"], seed=2)
    assert np.all(dx[:, 5, :, :] == 0) and np.all(dx[:, :, 5, :] == 0)
    dx = check_conv2d(*CONV_CASES["k1_s2_p0_skips_pixels"], seed=2)
    assert np.all(dx[:, 1::2] == 0) and np.all(dx[:, :, 1::2] == 0)
    assert np.all(dx[:, ::2, ::2] != 0)


@st.composite
def window_shapes(draw, max_k=7):
    """(n, h, w, k, stride, pad) with symmetric padding pad <= k // 2 and at least one output pixel."""
    k = draw(st.integers(1, max_k))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, k // 2))
    lo = max(1, k - 2 * pad)
    h = draw(st.integers(lo, lo + 4))
    w = draw(st.integers(lo, lo + 4))
    return draw(st.integers(1, 2)), h, w, k, stride, pad


@kernel_settings(50)
@given(window_shapes(), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2 ** 32 - 1))
def test_conv2d_backward_hypothesis(win, ci, co, seed):
    n, h, w, k, stride, pad = win
    check_conv2d(n, h, w, ci, co, k, stride, pad, seed)


# ---------------------------------------------------------------------------------------------------------------
# depthwise

def check_depthwise(n, h, w, c, k, stride, pad, seed):
    rng = np.random.default_rng(seed)
    oh, ow = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    x, wt, b, dy = f64(rng, n, h, w, c), f64(rng, k, k, c), f64(rng, c), f64(rng, n, oh, ow, c)
    allc = arange32(c)

    dx, dw, db = nans(x.shape), nans(wt.shape), nans(c)
    depthwise_conv_f32_backward_input(dx, dy, wt, stride, pad)
    depthwise_conv_f32_backward_weight(dw, x, 0.0, dy, allc, stride, pad)
    bias_f32_backward(db, dy, allc)
    loss = lambda: float(np.sum(ng.depthwise(x, wt, b, stride, pad) * dy))  # noqa: E731
    assert_fd(dx, ng.numerical_gradient(loss, x))
    assert_fd(dw, ng.numerical_gradient(loss, wt))
    assert_fd(db, ng.numerical_gradient(loss, b))

    x32, w32, dy32 = x.astype(np.float32), wt.astype(np.float32), dy.astype(np.float32)
    dx32, dw32 = nans(x.shape, np.float32), nans(wt.shape, np.float32)
    depthwise_conv_f32_backward_input(dx32, dy32, w32, stride, pad)
    depthwise_conv_f32_backward_weight(dw32, x32, 0.0, dy32, allc, stride, pad)
    adx, adw = np.empty_like(dx), np.empty_like(dw)
    depthwise_conv_f32_backward_input(adx, np.abs(dy), np.abs(wt), stride, pad)
    depthwise_conv_f32_backward_weight(adw, np.abs(x), 0.0, np.abs(dy), allc, stride, pad)
    assert_f32_within(dx32, dx, adx, k * k)
    assert_f32_within(dw32, dw, adw, n * oh * ow)

    keep = keep_subset(rng, c)
    dw_s = nans((k, k, len(keep)), np.float32)
    depthwise_conv_f32_backward_weight(dw_s, np.ascontiguousarray(x32[..., keep]), 0.0, dy32, keep, stride, pad)
    np.testing.assert_array_equal(dw_s, dw32[:, :, keep])
    return dx32


DW_CASES = {  # name: (n, h, w, c, k, stride, pad)
    "k3_s2_p1_oddw": (2, 6, 7, 4, 3, 2, 1),
    "k3_s2_p0_lastrow_unread": (1, 6, 6, 3, 3, 2, 0),
    "k7_s1_p3_c1": (1, 7, 7, 1, 7, 1, 3),
    "k7_s2_p3_oddhw": (1, 9, 7, 2, 7, 2, 3),
    "k5_s1_p2_batch2": (2, 5, 5, 3, 5, 1, 2),
    "k3_s1_p1_1x1image": (1, 1, 1, 5, 3, 1, 1),
    "k5_s2_p2_2x2image": (1, 2, 2, 2, 5, 2, 2),
}


@pytest.mark.parametrize("shape", DW_CASES.values(), ids=DW_CASES.keys())
def test_depthwise_backward_cases(shape):
    check_depthwise(*shape, seed=3)


def test_depthwise_backward_input_unread_pixels_are_zero():
    dx = check_depthwise(*DW_CASES["k3_s2_p0_lastrow_unread"], seed=4)
    assert np.all(dx[:, 5] == 0) and np.all(dx[:, :, 5] == 0)


@kernel_settings(50)
@given(window_shapes(), st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_depthwise_backward_hypothesis(win, c, seed):
    n, h, w, k, stride, pad = win
    check_depthwise(n, h, w, c, k, stride, pad, seed)


# ---------------------------------------------------------------------------------------------------------------
# pointwise and fully connected

def check_pointwise(n, h, w, ci, co, seed):
    rng = np.random.default_rng(seed)
    x, wt, b, dy = f64(rng, n, h, w, ci), f64(rng, co, ci), f64(rng, co), f64(rng, n, h, w, co)
    allc = arange32(co)
    dx, dw = nans(x.shape), nans(wt.shape)
    pointwise_conv_f32_backward_input(dx, dy, wt)
    pointwise_conv_f32_backward_weight(dw, x, 0.0, dy, allc)
    loss = lambda: float(np.sum(ng.pointwise(x, wt, b) * dy))  # noqa: E731
    assert_fd(dx, ng.numerical_gradient(loss, x))
    assert_fd(dw, ng.numerical_gradient(loss, wt))

    x32, w32, dy32 = x.astype(np.float32), wt.astype(np.float32), dy.astype(np.float32)
    dx32, dw32 = nans(x.shape, np.float32), nans(wt.shape, np.float32)
    pointwise_conv_f32_backward_input(dx32, dy32, w32)
    pointwise_conv_f32_backward_weight(dw32, x32, 0.0, dy32, allc)
    adx, adw = np.empty_like(dx), np.empty_like(dw)
    pointwise_conv_f32_backward_input(adx, np.abs(dy), np.abs(wt))
    pointwise_conv_f32_backward_weight(adw, np.abs(x), 0.0, np.abs(dy), allc)
    assert_f32_within(dx32, dx, adx, co)
    assert_f32_within(dw32, dw, adw, n * h * w)

    keep_in, keep_out = keep_subset(rng, ci), keep_subset(rng, co)
    dw_in = nans((co, len(keep_in)), np.float32)
    pointwise_conv_f32_backward_weight(dw_in, np.ascontiguousarray(x32[..., keep_in]), 0.0, dy32, allc)
    np.testing.assert_array_equal(dw_in, dw32[:, keep_in])
    dw_out = nans((len(keep_out), ci), np.float32)
    pointwise_conv_f32_backward_weight(dw_out, x32, 0.0, dy32, keep_out)
    np.testing.assert_array_equal(dw_out, dw32[keep_out])


PW_CASES = {  # name: (n, h, w, ci, co)
    "c1_to_c1": (1, 3, 3, 1, 1),
    "batch1_1x1image": (1, 1, 1, 4, 3),
    "oddhw_expand": (2, 3, 5, 2, 6),
    "project": (2, 4, 4, 6, 2),
}


@pytest.mark.parametrize("shape", PW_CASES.values(), ids=PW_CASES.keys())
def test_pointwise_backward_cases(shape):
    check_pointwise(*shape, seed=5)


@kernel_settings(50)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5),
       st.integers(0, 2 ** 32 - 1))
def test_pointwise_backward_hypothesis(n, h, w, ci, co, seed):
    check_pointwise(n, h, w, ci, co, seed)


def check_fully_connected(n, ci, co, seed):
    rng = np.random.default_rng(seed)
    x, wt, b, dy = f64(rng, n, ci), f64(rng, co, ci), f64(rng, co), f64(rng, n, co)
    allc = arange32(co)
    dx, dw, db = nans(x.shape), nans(wt.shape), nans(co)
    fully_connected_f32_backward_input(dx, dy, wt)
    fully_connected_f32_backward_weight(dw, x, 0.0, dy, allc)
    bias_f32_backward_2d(db, dy, allc)
    loss = lambda: float(np.sum(ng.fully_connected(x, wt, b) * dy))  # noqa: E731
    assert_fd(dx, ng.numerical_gradient(loss, x))
    assert_fd(dw, ng.numerical_gradient(loss, wt))
    assert_fd(db, ng.numerical_gradient(loss, b))

    x32, w32, dy32 = x.astype(np.float32), wt.astype(np.float32), dy.astype(np.float32)
    dx32, dw32, db32 = nans(x.shape, np.float32), nans(wt.shape, np.float32), nans(co, np.float32)
    fully_connected_f32_backward_input(dx32, dy32, w32)
    fully_connected_f32_backward_weight(dw32, x32, 0.0, dy32, allc)
    bias_f32_backward_2d(db32, dy32, allc)
    adx, adw, adb = np.empty_like(dx), np.empty_like(dw), np.empty_like(db)
    fully_connected_f32_backward_input(adx, np.abs(dy), np.abs(wt))
    fully_connected_f32_backward_weight(adw, np.abs(x), 0.0, np.abs(dy), allc)
    bias_f32_backward_2d(adb, np.abs(dy), allc)
    assert_f32_within(dx32, dx, adx, co)
    assert_f32_within(dw32, dw, adw, n)
    assert_f32_within(db32, db, adb, n)

    keep_in, keep_out = keep_subset(rng, ci), keep_subset(rng, co)
    dw_in = nans((co, len(keep_in)), np.float32)
    fully_connected_f32_backward_weight(dw_in, np.ascontiguousarray(x32[:, keep_in]), 0.0, dy32, allc)
    np.testing.assert_array_equal(dw_in, dw32[:, keep_in])
    dw_out = nans((len(keep_out), ci), np.float32)
    fully_connected_f32_backward_weight(dw_out, x32, 0.0, dy32, keep_out)
    np.testing.assert_array_equal(dw_out, dw32[keep_out])
    db_s = nans(len(keep_out), np.float32)
    bias_f32_backward_2d(db_s, dy32, keep_out)
    np.testing.assert_array_equal(db_s, db32[keep_out])


FC_CASES = {"n1_ci1_co1": (1, 1, 1), "n1_head": (1, 8, 5), "n3_wide": (3, 2, 7)}


@pytest.mark.parametrize("shape", FC_CASES.values(), ids=FC_CASES.keys())
def test_fully_connected_backward_cases(shape):
    check_fully_connected(*shape, seed=6)


@kernel_settings(50)
@given(st.integers(1, 4), st.integers(1, 8), st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_fully_connected_backward_hypothesis(n, ci, co, seed):
    check_fully_connected(n, ci, co, seed)


# ---------------------------------------------------------------------------------------------------------------
# pooling

def check_avgpool(n, h, w, c, kh, kw, stride, pad, seed):
    rng = np.random.default_rng(seed)
    oh, ow = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    x, dy = f64(rng, n, h, w, c), f64(rng, n, oh, ow, c)
    dx = nans(x.shape)
    avgpool_f32_backward(dx, dy, kh, kw, stride, pad)
    assert_fd(dx, ng.numerical_gradient(lambda: float(np.sum(ng.avgpool(x, kh, kw, stride, pad) * dy)), x))
    dx32, adx = nans(x.shape, np.float32), np.empty_like(dx)
    avgpool_f32_backward(dx32, dy.astype(np.float32), kh, kw, stride, pad)
    avgpool_f32_backward(adx, np.abs(dy), kh, kw, stride, pad)
    assert_f32_within(dx32, dx, adx, kh * kw + 1)  # + 1: each term is a rounded quotient dy / count
    return dx32


POOL_CASES = {  # name: (n, h, w, c, kh, kw, stride, pad)
    "k3_s2_p1_oddw": (2, 6, 7, 2, 3, 3, 2, 1),
    "k3_s1_p1_clipped_counts": (1, 4, 5, 3, 3, 3, 1, 1),
    "k3_s2_p0_lastrow_unread": (1, 6, 6, 1, 3, 3, 2, 0),
    "k7_s1_p3_c1": (1, 7, 7, 1, 7, 7, 1, 3),
    "k2_s3_p1_gaps": (1, 7, 7, 2, 2, 2, 3, 1),
    "k2x3_rect": (2, 5, 6, 2, 2, 3, 1, 0),
    "global_as_window": (2, 3, 4, 3, 3, 4, 1, 0),
}


@pytest.mark.parametrize("shape", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_avgpool_backward_cases(shape):
    check_avgpool(*shape, seed=7)


def test_avgpool_backward_pixels_in_no_window_are_zero():
    dx = check_avgpool(*POOL_CASES["k2_s3_p1_gaps"], seed=8)
    # windows cover rows {0}, {2, 3}, {5, 6} (origin 3*o - 1, size 2): rows 1 and 4 are in no window
    assert np.all(dx[:, [1, 4]] == 0) and np.all(dx[:, :, [1, 4]] == 0)


@kernel_settings(50)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 3), st.integers(1, 2),
       st.integers(0, 5), st.integers(0, 5), st.integers(0, 2 ** 32 - 1))
def test_avgpool_backward_hypothesis(kh, kw, stride, pad, c, dh, dw, seed):
    pad = min(pad, kh - 1, kw - 1)  # the forward requires pad < kernel size
    h, w = max(1, kh - 2 * pad) + dh, max(1, kw - 2 * pad) + dw
    check_avgpool(1 + seed % 2, h, w, c, kh, kw, stride, pad, seed)


@pytest.mark.parametrize("n, h, w, c", [(1, 1, 1, 1), (2, 3, 5, 4), (1, 7, 7, 3)], ids=["1x1", "3x5", "7x7"])
def test_global_mean_backward(n, h, w, c):
    rng = np.random.default_rng(9)
    x, dy = f64(rng, n, h, w, c), f64(rng, n, c)
    dx = nans(x.shape)
    global_mean_f32_backward(dx, dy)
    assert_fd(dx, ng.numerical_gradient(lambda: float(np.sum(ng.global_mean(x) * dy)), x))
    dx32 = nans(x.shape, np.float32)
    global_mean_f32_backward(dx32, dy.astype(np.float32))
    # one correctly rounded float32 division per element: equal to NumPy's
    expect = dy.astype(np.float32)[:, None, None, :] / np.float32(h * w)
    np.testing.assert_array_equal(dx32, np.broadcast_to(expect, x.shape))


# ---------------------------------------------------------------------------------------------------------------
# elementwise: residual accumulation, scaling, 1-bit clamp masks

def test_accumulate_and_scale_f32():
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((2, 3, 5, 3)).astype(np.float32), rng.standard_normal((2, 3, 5, 3)).astype(np.float32)
    dst = a.copy()
    accumulate_f32(dst, b)
    np.testing.assert_array_equal(dst, a + b)
    accumulate_f32(dst, dst)  # aliasing: doubles
    np.testing.assert_array_equal(dst, 2 * (a + b))
    out = nans(a.shape, np.float32)
    scale_f32(out, a, 0.1)
    np.testing.assert_array_equal(out, a * np.float32(0.1))  # s cast once to float32, one multiply
    scale_f32(out, a, 1.0)  # the residual add's "copy"
    np.testing.assert_array_equal(out, a)
    scale_f32(a, a, -2.0)  # in place
    np.testing.assert_array_equal(a, -2 * out)


def packed_reference(passes):
    """The mask layout of kernels/mask.py from a boolean (N, H, W, C) array: each image row packed on its own."""
    n, h, w, c = passes.shape
    return np.packbits(passes.reshape(n * h, w * c), axis=1, bitorder="little")


@kernel_settings(40)
@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2 ** 32 - 1))
def test_mask_pack_unpack_f32(n, h, w, c, seed):
    rng = np.random.default_rng(seed)
    # ReLU6 outputs with exact boundary values, clamped values and interior values
    y = np.clip(rng.uniform(-2, 8, (n, h, w, c)), 0, 6).astype(np.float32)
    y.reshape(-1)[rng.integers(0, y.size, 2)] = [0.0, 6.0][rng.integers(0, 2)]
    mask = np.full(mask_shape(n, h, w, c), 0xAB, np.uint8)  # garbage: the kernel must overwrite every byte
    mask_pack_f32(mask, y, 0.0, 6.0)
    np.testing.assert_array_equal(mask, packed_reference((y > 0) & (y < 6)))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = nans(y.shape, np.float32)
    mask_unpack_backward_f32(dx, dy, mask)
    np.testing.assert_array_equal(dx, np.where((y > 0) & (y < 6), dy, 0))
    mask_unpack_backward_f32(dy, dy, mask)  # in place
    np.testing.assert_array_equal(dy, dx)


def test_mask_layout_rows_start_on_byte_boundaries():
    # (N, H, W, C) = (2, 3, 5, 3): 15 bits per image row -> 2 bytes per row, 6 rows = 12 bytes;
    # (1, 3, 3, 1): 3 rows of 1 byte = 3 bytes, where a flat mask of 9 bits would need 2.
    assert mask_shape(2, 3, 5, 3) == (6, 2) and mask_bytes(2, 3, 5, 3) == 12
    assert mask_shape(1, 3, 3, 1) == (3, 1) and mask_bytes(1, 3, 3, 1) == 3
    assert mask_shape(1, 4, 4, 16) == (4, 8) and mask_bytes(1, 4, 4, 16) == 32  # W * C % 8 == 0: no padding
    y = np.zeros((2, 3, 5, 3), np.float32)
    y[1, 2, 4, 2] = 1.0  # the last element of the last row: bit 14 of row 5
    y[0, 1, 0, 0] = 1.0  # the first element of row 1: bit 0 of byte 0 of row 1
    mask = np.full((6, 2), 0xFF, np.uint8)
    mask_pack_f32(mask, y, 0.0, 6.0)
    expect = np.zeros((6, 2), np.uint8)
    expect[5, 1] = 1 << 6
    expect[1, 0] = 1
    np.testing.assert_array_equal(mask, expect)


@pytest.mark.parametrize("w,c", [(1, SCRATCH_W8), (1, SCRATCH_W8 + 9), (3, 5)])
def test_mask_pack_f32_rows_at_and_beyond_the_stack_row(w, c):
    """A row of W * C flags up to SCRATCH_W8 is packed from the per-thread flag row, a longer one bit by bit: both
    give the reference's bytes (NaN and the bounds themselves: 0)."""
    rng = np.random.default_rng(w * c)
    y = rng.uniform(-1, 7, (2, 1, w, c)).astype(np.float32)
    y.reshape(-1)[:4] = [np.nan, 0.0, 6.0, 3.0]
    mask = np.full(mask_shape(2, 1, w, c), 0xAB, np.uint8)
    mask_pack_f32(mask, y, 0.0, 6.0)
    np.testing.assert_array_equal(mask, packed_reference((y > 0) & (y < 6)))


def _bits_of(mask, shape):
    """(N, H, W, C) bool: the mask's bits in kernels/mask.py's layout (independent of the kernels)."""
    n, h, w, c = shape
    return np.unpackbits(mask, axis=1, bitorder="little")[:, :w * c].reshape(shape).astype(bool)


@kernel_settings(60)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 1),
       st.booleans(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 32 - 1))
def test_mask_unpack_is_an_exact_select_on_any_row_alignment(n, h, w, c, offset, in_place, dtype, seed):
    """dx = dy where the bit is set, +0.0 elsewhere, bit for bit (NaN, inf, -0.0 pass unchanged; a product would
    give -0.0 or NaN), on rows that start on 8 bytes or not (offset: one element into a buffer; odd W * C: rows
    alternate), with a last partial byte, in place or not, float32 (the lane path) and float64 (bit by bit)."""
    rng = np.random.default_rng(seed)
    shape = (n, h, w, c)
    size = n * h * w * c
    specials = np.array([np.nan, -0.0, np.inf, -np.inf, -1.5, 0.0], dtype)
    buf = rng.standard_normal(size + 1).astype(dtype)
    buf[1 + rng.integers(0, size, 3)] = specials[rng.integers(0, 6, 3)]
    dy = buf[offset:offset + size].reshape(shape)
    mask = rng.integers(0, 256, mask_shape(*shape)).astype(np.uint8)
    want = np.where(_bits_of(mask, shape), dy, np.zeros((), dtype))
    if in_place:
        dx = dy
    else:
        dx = nans(shape, dtype) if offset == 0 else np.full(size + 1, np.nan, dtype)[1:].reshape(shape)
    mask_unpack_backward_f32(dx, dy, mask)
    assert dx.tobytes() == want.tobytes()


def test_mask_bit_order_and_tail():
    y = np.array([1, 0, 1, 1, 6, 1, 0, 0, 1, 7, 1], np.float32).reshape(1, 1, 11, 1)
    mask = np.full((1, 2), 0xFF, np.uint8)
    mask_pack_f32(mask, y, 0.0, 6.0)
    # element j -> bit j % 8 of byte j // 8; bits 3..7 of the last byte unused and 0
    assert mask.tolist() == [[0b00101101, 0b101]]


BOUNDS = [0.0, 6.0, 0.1, -0.1, 5.999999999, 1e-50, -1e-50, 1e300, -1e300, np.inf, -np.inf, np.nan,
          float(np.float32(0.1)), float(np.nextafter(np.float32(6), np.float32(7)))]


def _near(bounds):
    """Every bound's float32 rounding and both its float32 neighbours, with a few ordinary values."""
    near = []
    for b in bounds:
        with np.errstate(over="ignore"):
            f = np.float32(b)  # may overflow to inf: a neighbour like any other
        near += [f, np.nextafter(f, np.float32(-np.inf)), np.nextafter(f, np.float32(np.inf))]
    return np.array(near + [0.0, -0.0, 3.0, -2.0, 7.0, np.inf, -np.inf, np.nan], np.float32)


@pytest.mark.parametrize("lo", BOUNDS)
def test_clamp_backward_compares_like_float64(lo):
    """dx = dy exactly where float64(y) lies in (lo, hi) (the C twin's double comparison), for every pair of
    bounds: not float32 values, beyond float32's range, infinite or NaN; y at every bound's float32 neighbours
    (rows of 5 * 11 elements: a vectorised body and a remainder)."""
    rng = np.random.default_rng(3)
    pool = _near(BOUNDS)
    for hi in BOUNDS:
        y = rng.choice(pool, (2, 3, 5, 11)).astype(np.float32)
        y.reshape(-1)[:pool.size] = pool  # each value at least once
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = np.full_like(dy, np.nan)
        clamp_f32_backward(dx, dy, y, lo, hi)
        y64 = y.astype(np.float64)
        want = np.where((y64 > lo) & (y64 < hi), dy, np.float32(0.0))
        assert dx.tobytes() == want.tobytes(), (lo, hi)
        clamp_f32_backward(dy, dy, y, lo, hi)  # in place, as the training step calls it
        assert dy.tobytes() == want.tobytes(), (lo, hi)


def test_f32_open_bounds_round_outward():
    with np.errstate(over="ignore"):
        assert f32_open_bounds(0.1, 0.1) == (np.nextafter(np.float32(0.1), np.float32(0)), np.float32(0.1))
        assert f32_open_bounds(0.0, 6.0) == (0.0, 6.0)
        assert f32_open_bounds(-1e300, 1e300) == (-np.inf, np.inf)


def test_mask_pack_row_every_byte_pattern_and_tail():
    """The packed row equals NumPy's packbits (little bit order) for all 256 patterns of eight flags, in order, and
    for every tail length: the uint64 product of the jitted version must not carry between bits."""
    flags = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.int8).reshape(-1)  # pattern b at bytes 8b..
    for n in (2048, 2047, 2041, 9, 8, 7, 1, 0):
        mask = np.full((2, 257), 0xAA, np.uint8)
        mask_pack_row(mask, 1, flags, n)
        want = np.packbits(flags[:n].astype(np.uint8), bitorder="little")
        np.testing.assert_array_equal(mask[1, :want.size], want, err_msg=str(n))
        assert (mask[0] == 0xAA).all() and (mask[1, want.size:] == 0xAA).all()  # nothing else written
        if n == 2048:
            np.testing.assert_array_equal(mask[1, :256], np.arange(256))


def test_mask_bounds_cast_to_float32_like_the_forward():
    # The forward clamps to float32(act_min); comparing with the float64 bound would let clamped values pass.
    lo = 0.1
    y = np.full((1, 1, 1, 3), np.float32(lo), np.float32)
    y[0, 0, 0, 1] = 0.5
    mask = np.zeros((1, 1), np.uint8)
    mask_pack_f32(mask, y, lo, 6.0)
    assert mask[0, 0] == 0b010


def test_mask_unpack_matches_finite_differences():
    rng = np.random.default_rng(11)
    x = rng.uniform(-3, 9, (2, 3, 3, 4))
    x[np.abs(x) < 1e-3] += 2e-3  # stay off the kinks at 0 and 6 (the derivative is undefined there)
    x[np.abs(x - 6) < 1e-3] += 2e-3
    dy = f64(rng, *x.shape)
    mask = np.empty(mask_shape(*x.shape), np.uint8)
    mask_pack_f32(mask, ng.clamp(x, 0.0, 6.0), 0.0, 6.0)
    dx = nans(x.shape)
    mask_unpack_backward_f32(dx, dy, mask)
    assert_fd(dx, ng.numerical_gradient(lambda: float(np.sum(ng.clamp(x, 0.0, 6.0) * dy)), x))


@kernel_settings(40)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(0, 2 ** 32 - 1))
def test_mask_unpack_reads_the_forward_kernels_layout(n, h, w, c, seed):
    # The int8 forward kernels write the mask in the same layout (tests/test_kernels_*.py check their bits against
    # naive.pack_mask); here any bit pattern in that layout must gate exactly its own element.
    rng = np.random.default_rng(seed)
    passes = rng.random((n, h, w, c)) < 0.5
    mask = packed_reference(passes)
    dy = rng.standard_normal(passes.shape).astype(np.float32)
    dx = nans(passes.shape, np.float32)
    mask_unpack_backward_f32(dx, dy, mask)
    np.testing.assert_array_equal(dx, np.where(passes, dy, np.float32(0)))


# ---------------------------------------------------------------------------------------------------------------
# per-channel scaling, channel gather, and int8 operands (int8 training mode)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_channels_f32(dtype):
    rng = np.random.default_rng(15)
    dy = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    s = rng.uniform(0.001, 0.05, 5).astype(np.float32)
    expect = dy * s.astype(dtype)  # s[c] cast to dy's dtype, one multiply per element
    scale_channels_f32(dy, s)
    np.testing.assert_array_equal(dy, expect)
    # a 2-D (N, C) gradient through its (N, 1, 1, C) view: scaled in place, no copy
    d2 = rng.standard_normal((3, 5)).astype(np.float32)
    expect2 = d2 * s
    scale_channels_f32(d2.reshape(3, 1, 1, 5), s)
    np.testing.assert_array_equal(d2, expect2)
    with pytest.raises(ValueError):
        scale_channels_f32(d2.reshape(3, 1, 1, 5), s[:4])


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
def test_gather_channels(dtype):
    rng = np.random.default_rng(16)
    src = (rng.integers(-128, 128, (2, 3, 5, 7)) if dtype == np.int8 else rng.standard_normal((2, 3, 5, 7))
           ).astype(dtype)
    keep = np.array([6, 0, 3], np.int32)  # the caller's order, unsorted
    dst = np.full((2, 3, 5, 3), 99, dtype)
    gather_channels(dst, src, keep)
    np.testing.assert_array_equal(dst, src[..., keep])
    one = np.full((2, 3, 5, 1), 99, dtype)
    gather_channels(one, src, np.array([4], np.int32))
    np.testing.assert_array_equal(one, src[..., 4:5])
    with pytest.raises(ValueError):  # keep index out of range
        gather_channels(dst, src, np.array([6, 7, 0], np.int32))
    with pytest.raises(ValueError):  # dst has a channel per keep entry
        gather_channels(dst, src, np.array([1, 2], np.int32))
    with pytest.raises(ValueError):  # same N, H, W
        gather_channels(np.empty((2, 3, 4, 3), dtype), src, keep)


def s8_and_f32(rng, *shape):
    """An int8 array and the same values as float32 (exact)."""
    q = rng.integers(-128, 128, shape).astype(np.int8)
    return q, q.astype(np.float32)


@pytest.mark.parametrize("x_zp", [0, -128, 37, 127])
def test_weight_gradients_of_int8_saved_activations(x_zp):
    # int8 mode saves x_int and passes x_zp: the kernels compute sum dy * (x_int - x_zp), equal bit for bit to the
    # float32 kernel on the float32 array x_int - x_zp (exact in float32), and in float32 (NumPy 2 promotion of
    # int8 - float32, the same jitted and interpreted).
    rng = np.random.default_rng(200 + x_zp)
    zp = np.float32(x_zp)
    x8, x32 = s8_and_f32(rng, 2, 7, 6, 3)
    xc = x32 - zp
    dy = rng.standard_normal((2, 4, 3, 4)).astype(np.float32)
    keep = np.array([3, 0], np.int32)
    a, b = nans((2, 3, 3, 3), np.float32), nans((2, 3, 3, 3), np.float32)
    conv2d_f32_backward_weight(a, x8, zp, dy, keep, 2, 1)
    conv2d_f32_backward_weight(b, xc, np.float32(0), dy, keep, 2, 1)
    np.testing.assert_array_equal(a, b)
    # and it is the gradient of the real-valued layer: s_x * a == dL/dw for x_real = s_x * (x_int - x_zp)
    s_x = 0.05
    ref = np.empty((2, 3, 3, 3))
    conv2d_f32_backward_weight(ref, s_x * (x8.astype(np.float64) - x_zp), 0.0, dy.astype(np.float64), keep, 2, 1)
    np.testing.assert_allclose(s_x * a.astype(np.float64), ref, rtol=1e-5, atol=1e-6)

    dyd = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    kd = np.array([2, 1], np.int32)
    a, b = nans((3, 3, 2), np.float32), nans((3, 3, 2), np.float32)
    x8k = np.ascontiguousarray(x8[..., kd])
    depthwise_conv_f32_backward_weight(a, x8k, zp, dyd, kd, 1, 1)
    depthwise_conv_f32_backward_weight(b, x8k.astype(np.float32) - zp, np.float32(0), dyd, kd, 1, 1)
    np.testing.assert_array_equal(a, b)

    dyp = rng.standard_normal((2, 7, 6, 5)).astype(np.float32)
    a, b = nans((5, 3), np.float32), nans((5, 3), np.float32)
    pointwise_conv_f32_backward_weight(a, x8, zp, dyp, arange32(5))
    pointwise_conv_f32_backward_weight(b, xc, np.float32(0), dyp, arange32(5))
    np.testing.assert_array_equal(a, b)

    f8, f32 = s8_and_f32(rng, 3, 6)
    dyf = rng.standard_normal((3, 4)).astype(np.float32)
    a, b = nans((4, 6), np.float32), nans((4, 6), np.float32)
    fully_connected_f32_backward_weight(a, f8, zp, dyf, arange32(4))
    fully_connected_f32_backward_weight(b, f32 - zp, np.float32(0), dyf, arange32(4))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.all(np.isfinite(a))


def test_weight_gradient_skips_padding_taps_of_int8_input():
    # A constant input equal to its zero point is real zero everywhere, padding included: every gradient is 0.
    x8 = np.full((1, 5, 5, 2), -9, np.int8)
    dy = np.ones((1, 3, 3, 1), np.float32)
    dw = nans((1, 3, 3, 2), np.float32)
    conv2d_f32_backward_weight(dw, x8, np.float32(-9), dy, arange32(1), 2, 1)
    np.testing.assert_array_equal(dw, 0)
    # x_int = zp + 1 (real value 1 everywhere in the image, 0 in the padding): each tap counts its in-image outputs
    x8[...] = -8
    conv2d_f32_backward_weight(dw, x8, np.float32(-9), dy, arange32(1), 2, 1)
    # k3 s2 p1 on 5x5: windows start at -1, 1, 3, so taps 0 and 2 see the image twice, tap 1 three times
    counts = np.outer([2, 3, 2], [2, 3, 2]).astype(np.float32)
    np.testing.assert_array_equal(dw[0, :, :, 0], counts)


def test_input_gradients_with_int8_weights():
    # int8 mode hands the frozen int8 weights and dy pre-scaled by s_w per output channel: the result equals the
    # float32 kernel on float32(w_int) bit for bit, is float32, and is dL/dx of the real layer (w_real = s_w w_int).
    rng = np.random.default_rng(18)
    s_w = rng.uniform(0.001, 0.05, 4).astype(np.float32)

    w8, w32 = s8_and_f32(rng, 4, 3, 3, 3)
    dy = rng.standard_normal((2, 4, 3, 4)).astype(np.float32)
    dys = dy.copy()
    scale_channels_f32(dys, s_w)
    a, b = nans((2, 7, 6, 3), np.float32), nans((2, 7, 6, 3), np.float32)
    conv2d_f32_backward_input(a, dys, w8, 2, 1)
    conv2d_f32_backward_input(b, dys, w32, 2, 1)
    np.testing.assert_array_equal(a, b)
    ref = np.empty((2, 7, 6, 3))
    conv2d_f32_backward_input(ref, dy.astype(np.float64), w8.astype(np.float64) * s_w.astype(np.float64)[:, None,
                              None, None], 2, 1)
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)

    wd8, wd32 = s8_and_f32(rng, 5, 5, 4)
    dyd = rng.standard_normal((1, 3, 3, 4)).astype(np.float32)
    a, b = nans((1, 5, 5, 4), np.float32), nans((1, 5, 5, 4), np.float32)
    depthwise_conv_f32_backward_input(a, dyd, wd8, 2, 2)
    depthwise_conv_f32_backward_input(b, dyd, wd32, 2, 2)
    np.testing.assert_array_equal(a, b)

    wp8, wp32 = s8_and_f32(rng, 4, 6)
    dyp = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    a, b = nans((2, 3, 3, 6), np.float32), nans((2, 3, 3, 6), np.float32)
    pointwise_conv_f32_backward_input(a, dyp, wp8)
    pointwise_conv_f32_backward_input(b, dyp, wp32)
    np.testing.assert_array_equal(a, b)

    dyf = rng.standard_normal((3, 4)).astype(np.float32)
    a, b = nans((3, 6), np.float32), nans((3, 6), np.float32)
    fully_connected_f32_backward_input(a, dyf, wp8)
    fully_connected_f32_backward_input(b, dyf, wp32)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------
# softmax cross-entropy

@pytest.mark.parametrize("n, k, scale", [(1, 1, 1.0), (1, 5, 1.0), (4, 3, 3.0), (3, 10, 50.0)],
                         ids=["one_class", "batch1", "batch4", "large_logits"])
def test_softmax_cross_entropy(n, k, scale):
    rng = np.random.default_rng(12)
    logits = f64(rng, n, k) * scale
    labels = rng.integers(0, k, n).astype(np.int32)
    d = nans(logits.shape)
    loss = softmax_cross_entropy_f32(d, logits, labels)
    assert loss == pytest.approx(ng.softmax_cross_entropy(logits, labels), rel=1e-12, abs=1e-12)
    fd = ng.numerical_gradient(lambda: ng.softmax_cross_entropy(logits, labels), logits)
    np.testing.assert_allclose(d, fd, rtol=1e-6, atol=1e-8)  # O(eps^2) truncation + rounding, both ~1e-10
    d32 = nans(logits.shape, np.float32)
    loss32 = softmax_cross_entropy_f32(d32, logits.astype(np.float32), labels)
    # float32 exp/sum/divide: a few ulps of probabilities <= 1, divided by n
    np.testing.assert_allclose(d32, d, rtol=0, atol=8 * U32)
    assert loss32 == pytest.approx(loss, rel=1e-6, abs=1e-6)
    inplace = logits.astype(np.float32)
    assert softmax_cross_entropy_f32(inplace, inplace, labels) == loss32  # dlogits may alias logits
    np.testing.assert_array_equal(inplace, d32)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # -3e38 - 3e38 = -inf, exp -> 0
def test_softmax_cross_entropy_huge_logits_are_stable():
    logits = np.array([[1e4, 0.0, -1e4], [-3e38, 3e38, 0.0]], np.float32)
    d = nans(logits.shape, np.float32)
    loss = softmax_cross_entropy_f32(d, logits, np.array([0, 1], np.int32))
    assert loss == 0.0 and np.all(np.isfinite(d))
    np.testing.assert_array_equal(d, np.zeros_like(d))


def test_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(ValueError):
        softmax_cross_entropy_f32(np.empty((1, 3), np.float32), np.zeros((1, 3), np.float32), np.array([3]))


# ---------------------------------------------------------------------------------------------------------------
# shape contracts

def test_shape_mismatches_raise():
    f = np.float32
    with pytest.raises(ValueError):  # OH does not match H, k, stride, pad
        conv2d_f32_backward_input(np.empty((1, 5, 5, 2), f), np.empty((1, 4, 3, 3), f), np.empty((3, 3, 3, 2), f), 2, 1)
    with pytest.raises(ValueError):  # keep index out of range
        conv2d_f32_backward_weight(np.empty((1, 3, 3, 2), f), np.empty((1, 5, 5, 2), f), 0.0,
                                   np.empty((1, 3, 3, 3), f), np.array([3], np.int32), 2, 1)
    with pytest.raises(ValueError):
        depthwise_conv_f32_backward_weight(np.empty((3, 3, 1), f), np.empty((1, 5, 5, 1), f), 0.0,
                                           np.empty((1, 5, 5, 2), f), np.array([-1], np.int32), 1, 1)
    with pytest.raises(ValueError):
        bias_f32_backward(np.empty(2, f), np.empty((1, 2, 2, 3), f), np.array([0], np.int32))
    with pytest.raises(ValueError):  # (1, 1, 3, 3) needs a (1, 2) mask
        mask_pack_f32(np.empty((1, 1), np.uint8), np.empty((1, 1, 3, 3), f), 0.0, 6.0)
    with pytest.raises(ValueError):  # a flat mask (one row for two image rows) is not the layout
        mask_unpack_backward_f32(np.empty((1, 2, 4, 1), f), np.empty((1, 2, 4, 1), f), np.empty((1, 1), np.uint8))
    with pytest.raises(ValueError):  # pad >= kernel size
        avgpool_f32_backward(np.empty((1, 3, 3, 1), f), np.empty((1, 4, 4, 1), f), 2, 2, 1, 2)


# ---------------------------------------------------------------------------------------------------------------
# real layer shapes (MCUNet-5fps at 128x128, MIT's "100KB" sparse scheme; N = 1 as on the device).
# Resolutions 128 -> stem s2 64 -> b1 32 -> b3 16 -> b5 8 -> b10 4 (DESIGN background §4.3, mcunet-in1 blocks).

@pytest.mark.skipif(JIT_DISABLED, reason="real layer shapes take minutes as interpreted Python")
@pytest.mark.parametrize("op, shape, n_keep", [
    ("conv2d", (128, 128, 3, 16, 3, 2, 1), 8),  # first conv: 3x3 s2, 3 -> 16 (output-axis keep 8)
    ("pointwise", (8, 8, 40, 160), 40),         # conv 21 = b7.pw1, ratio 1: all 40 input channels
    ("pointwise", (4, 4, 96, 384), 12),         # conv 36 = b12.pw1, ratio 0.125: 12 of 96 input channels
    ("depthwise", (8, 8, 160, 7, 1, 3), 20),    # b6.dw: 7x7 on 160 channels at 8x8, 20 kept channels
], ids=["mcunet_stem", "mcunet_b7_pw1", "mcunet_b12_pw1", "mcunet_b6_dw"])
def test_real_layer_sparse_equals_dense(op, shape, n_keep):
    rng = np.random.default_rng(13)
    f = np.float32
    if op == "conv2d":
        h, w, ci, co, k, s, p = shape
        x, dy = rng.standard_normal((1, h, w, ci)).astype(f), rng.standard_normal((1, h // s, w // s, co)).astype(f)
        dense = np.empty((co, k, k, ci), f)
        conv2d_f32_backward_weight(dense, x, 0.0, dy, arange32(co), s, p)
        keep = rng.permutation(co)[:n_keep].astype(np.int32)
        sparse = np.empty((n_keep, k, k, ci), f)
        conv2d_f32_backward_weight(sparse, x, 0.0, dy, keep, s, p)
        np.testing.assert_array_equal(sparse, dense[keep])
        abs_ref, ref = np.empty(dense.shape), np.empty(dense.shape)
        conv2d_f32_backward_weight(ref, x.astype(float), 0.0, dy.astype(float), arange32(co), s, p)
        conv2d_f32_backward_weight(abs_ref, np.abs(x.astype(float)), 0.0, np.abs(dy.astype(float)), arange32(co),
                                   s, p)
        assert_f32_within(dense, ref, abs_ref, (h // s) * (w // s))
    elif op == "pointwise":
        h, w, ci, co = shape
        x, dy = rng.standard_normal((1, h, w, ci)).astype(f), rng.standard_normal((1, h, w, co)).astype(f)
        dense = np.empty((co, ci), f)
        pointwise_conv_f32_backward_weight(dense, x, 0.0, dy, arange32(co))
        keep = rng.permutation(ci)[:n_keep].astype(np.int32)
        sparse = np.empty((co, n_keep), f)
        pointwise_conv_f32_backward_weight(sparse, np.ascontiguousarray(x[..., keep]), 0.0, dy, arange32(co))
        np.testing.assert_array_equal(sparse, dense[:, keep])
    else:
        h, w, c, k, s, p = shape
        x, dy = rng.standard_normal((1, h, w, c)).astype(f), rng.standard_normal((1, h, w, c)).astype(f)
        dense = np.empty((k, k, c), f)
        depthwise_conv_f32_backward_weight(dense, x, 0.0, dy, arange32(c), s, p)
        keep = rng.permutation(c)[:n_keep].astype(np.int32)
        sparse = np.empty((k, k, n_keep), f)
        depthwise_conv_f32_backward_weight(sparse, np.ascontiguousarray(x[..., keep]), 0.0, dy, keep, s, p)
        np.testing.assert_array_equal(sparse, dense[:, :, keep])


# ---------------------------------------------------------------------------------------------------------------
# (d) a small network from every op, backward chained by hand, against finite differences of its loss

class TinyNet:
    """x (2, 7, 7, 3) -> conv2d 3x3 s2 p1 (3 -> 4) -> ReLU6 -> a1 (2, 4, 4, 4) -> depthwise 3x3 s1 p1 -> ReLU6 -> a2
    -> pointwise (4 -> 4) -> p; z = p + a1 (residual) -> global mean -> f (2, 4) -> fc (4 -> 3) -> softmax-CE."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.x = rng.uniform(0, 3, (2, 7, 7, 3))
        self.labels = np.array([2, 0], np.int32)
        self.p = {
            "conv_w": rng.standard_normal((4, 3, 3, 3)) * 0.5, "conv_b": rng.standard_normal(4),
            "dw_w": rng.standard_normal((3, 3, 4)) * 0.8, "dw_b": rng.standard_normal(4),
            "pw_w": rng.standard_normal((4, 4)) * 0.8, "pw_b": rng.standard_normal(4),
            "fc_w": rng.standard_normal((3, 4)), "fc_b": rng.standard_normal(3),
        }

    def forward(self):
        """float64 reference forward; returns the loss and what backward saves (pre-activations for the test)."""
        p = self.p
        u1 = ng.conv2d(self.x, p["conv_w"], p["conv_b"], 2, 1)
        a1 = ng.clamp(u1, 0.0, 6.0)
        u2 = ng.depthwise(a1, p["dw_w"], p["dw_b"], 1, 1)
        a2 = ng.clamp(u2, 0.0, 6.0)
        z = ng.pointwise(a2, p["pw_w"], p["pw_b"]) + a1
        f = ng.global_mean(z)
        logits = ng.fully_connected(f, p["fc_w"], p["fc_b"])
        return ng.softmax_cross_entropy(logits, self.labels), dict(u1=u1, a1=a1, u2=u2, a2=a2, f=f, logits=logits)

    def backward(self, dtype, keep):
        """The hand-written partial backward with the kernels, in `dtype`; keep = kept channels per layer
        (conv: input-axis, saved input compacted; dw: channels; pw: output-axis; fc/biases dense)."""
        _, s = self.forward()
        c = lambda a: np.ascontiguousarray(a, dtype)  # noqa: E731
        p = {k: c(v) for k, v in self.p.items()}
        x, a1, a2, f, logits = c(self.x), c(s["a1"]), c(s["a2"]), c(s["f"]), c(s["logits"])
        # masks instead of saved ReLU6 outputs (1 bit per element)
        m1, m2 = np.empty(mask_shape(*a1.shape), np.uint8), np.empty(mask_shape(*a2.shape), np.uint8)
        mask_pack_f32(m1, a1, 0.0, 6.0)
        mask_pack_f32(m2, a2, 0.0, 6.0)
        g = {}
        dlogits = np.empty_like(logits)
        g["loss"] = softmax_cross_entropy_f32(dlogits, logits, self.labels)
        g["fc_w"], g["fc_b"] = np.empty((3, 4), dtype), np.empty(3, dtype)
        fully_connected_f32_backward_weight(g["fc_w"], f, 0.0, dlogits, arange32(3))
        bias_f32_backward_2d(g["fc_b"], dlogits, arange32(3))
        df = np.empty_like(f)
        fully_connected_f32_backward_input(df, dlogits, p["fc_w"])
        dz = np.empty_like(a1)
        global_mean_f32_backward(dz, df)
        # residual add: the pointwise branch takes dz as its upstream gradient unchanged (no copy)
        g["pw_w"], g["pw_b"] = np.empty((len(keep["pw"]), 4), dtype), np.empty(len(keep["pw"]), dtype)
        pointwise_conv_f32_backward_weight(g["pw_w"], a2, 0.0, dz, keep["pw"])
        bias_f32_backward(g["pw_b"], dz, keep["pw"])
        da2 = np.empty_like(a2)
        pointwise_conv_f32_backward_input(da2, dz, p["pw_w"])
        mask_unpack_backward_f32(da2, da2, m2)  # ReLU6 backward, in place
        g["dw_w"], g["dw_b"] = np.empty((3, 3, len(keep["dw"])), dtype), np.empty(len(keep["dw"]), dtype)
        depthwise_conv_f32_backward_weight(g["dw_w"], c(a1[..., keep["dw"]]), 0.0, da2, keep["dw"], 1, 1)
        bias_f32_backward(g["dw_b"], da2, keep["dw"])
        da1 = np.empty_like(a1)
        depthwise_conv_f32_backward_input(da1, da2, p["dw_w"], 1, 1)
        accumulate_f32(da1, dz)  # + the shortcut's path
        mask_unpack_backward_f32(da1, da1, m1)
        g["conv_w"], g["conv_b"] = np.empty((4, 3, 3, len(keep["conv"])), dtype), np.empty(4, dtype)
        conv2d_f32_backward_weight(g["conv_w"], c(x[..., keep["conv"]]), 0.0, da1, arange32(4), 2, 1)
        bias_f32_backward(g["conv_b"], da1, arange32(4))
        g["x"] = np.empty_like(x)
        conv2d_f32_backward_input(g["x"], da1, p["conv_w"], 2, 1)
        return g


def tiny_net():
    """The first seed whose ReLU6 inputs are all at least 1e-3 from the kinks 0 and 6 (finite differences are
    meaningless across a kink) while both activations clamp on both sides (so the masks matter)."""
    for seed in range(200):
        net = TinyNet(seed)
        _, s = net.forward()
        u = np.concatenate([s["u1"].ravel(), s["u2"].ravel()])
        if (np.min(np.abs(u)) > 1e-3 and np.min(np.abs(u - 6)) > 1e-3
                and all((v < 0).any() and (v > 6).any() for v in (s["u1"], s["u2"]))):
            return net
    raise AssertionError("no seed avoids the ReLU6 kinks")


def test_network_backward_matches_finite_differences():
    net = tiny_net()
    dense = {"conv": arange32(3), "dw": arange32(4), "pw": arange32(4)}
    g = net.backward(np.float64, dense)
    loss = lambda: net.forward()[0]  # noqa: E731
    assert g["loss"] == pytest.approx(loss(), rel=1e-12)
    for name, value in net.p.items():
        np.testing.assert_allclose(g[name], ng.numerical_gradient(loss, value), rtol=1e-6, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(g["x"], ng.numerical_gradient(loss, net.x), rtol=1e-6, atol=1e-8)

    # the same chain in float32 with sparse selections: close to float64, and bit-equal to the float32 dense slices
    g32 = net.backward(np.float32, dense)
    for name in net.p:
        np.testing.assert_allclose(g32[name], g[name], rtol=1e-4, atol=1e-5, err_msg=name)
    keep = {"conv": np.array([2, 0], np.int32), "dw": np.array([3, 1], np.int32), "pw": np.array([1], np.int32)}
    s32 = net.backward(np.float32, keep)
    np.testing.assert_array_equal(s32["conv_w"], g32["conv_w"][..., keep["conv"]])
    np.testing.assert_array_equal(s32["dw_w"], g32["dw_w"][:, :, keep["dw"]])
    np.testing.assert_array_equal(s32["dw_b"], g32["dw_b"][keep["dw"]])
    np.testing.assert_array_equal(s32["pw_w"], g32["pw_w"][keep["pw"]])
    np.testing.assert_array_equal(s32["pw_b"], g32["pw_b"][keep["pw"]])


# ---------------------------------------------------------------------------------------------------------------
# (e) no allocation, and determinism across thread counts

def kernel_calls():
    """(name, kernel, args) for every backward kernel on small float32 inputs (outputs preallocated)."""
    rng = np.random.default_rng(14)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, dy, w = r(2, 7, 7, 3), r(2, 4, 4, 5), r(5, 3, 3, 3)
    xd, dyd, wd = r(2, 7, 7, 4), r(2, 4, 4, 4), r(3, 3, 4)
    xp, dyp, wp = r(2, 4, 4, 3), r(2, 4, 4, 5), r(5, 3)
    k5, k4, k3 = arange32(5), np.array([3, 1], np.int32), arange32(3)
    mask = np.empty(mask_shape(*dyd.shape), np.uint8)
    logits, labels = r(2, 5), np.array([4, 0], np.int32)
    s8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    F0 = np.float32(0.0)
    w8 = s8(5, 3, 3, 3)
    x8 = s8(2, 7, 7, 3)
    return [
        ("conv2d_input", conv2d_f32_backward_input, (np.empty_like(x), dy, w, 2, 1)),
        ("conv2d_weight", conv2d_f32_backward_weight, (np.empty((5, 3, 3, 3), np.float32), x, F0, dy, k5, 2, 1)),
        ("conv2d_weight_s8x", conv2d_f32_backward_weight,
         (np.empty((5, 3, 3, 3), np.float32), x8, np.float32(-3), dy, k5, 2, 1)),
        ("conv2d_input_s8w", conv2d_f32_backward_input, (np.empty_like(x), dy, w8, 2, 1)),
        ("depthwise_input", depthwise_conv_f32_backward_input, (np.empty_like(xd), dyd, wd, 2, 1)),
        ("depthwise_weight", depthwise_conv_f32_backward_weight,
         (np.empty((3, 3, 2), np.float32), np.ascontiguousarray(xd[..., k4]), F0, dyd, k4, 2, 1)),
        ("depthwise_weight_s8x", depthwise_conv_f32_backward_weight,
         (np.empty((3, 3, 2), np.float32), s8(2, 7, 7, 2), np.float32(5), dyd, k4, 2, 1)),
        ("depthwise_input_s8w", depthwise_conv_f32_backward_input, (np.empty_like(xd), dyd, s8(3, 3, 4), 2, 1)),
        # the blas step's stride-1 host kernel (kernels/depthwise_host.py): dx (2, 4, 4, 4) from dy (2, 4, 4, 4)
        ("depthwise_input_host", depthwise_conv_f32_backward_input_host, (np.empty_like(dyd), dyd, wd, 1)),
        ("depthwise_input_host_s8w", depthwise_conv_f32_backward_input_host,
         (np.empty_like(dyd), dyd, s8(3, 3, 4), 1)),
        ("pointwise_input", pointwise_conv_f32_backward_input, (np.empty_like(xp), dyp, wp)),
        ("pointwise_weight", pointwise_conv_f32_backward_weight, (np.empty((5, 3), np.float32), xp, F0, dyp, k5)),
        ("pointwise_weight_s8x", pointwise_conv_f32_backward_weight,
         (np.empty((5, 3), np.float32), s8(2, 4, 4, 3), np.float32(1), dyp, k5)),
        ("pointwise_input_s8w", pointwise_conv_f32_backward_input, (np.empty_like(xp), dyp, s8(5, 3))),
        ("fc_input", fully_connected_f32_backward_input, (np.empty((2, 3), np.float32), r(2, 5), wp)),
        ("fc_weight", fully_connected_f32_backward_weight, (np.empty((5, 3), np.float32), r(2, 3), F0, r(2, 5), k5)),
        ("fc_weight_s8x", fully_connected_f32_backward_weight,
         (np.empty((5, 3), np.float32), s8(2, 3), np.float32(-7), r(2, 5), k5)),
        ("fc_input_s8w", fully_connected_f32_backward_input, (np.empty((2, 3), np.float32), r(2, 5), s8(5, 3))),
        ("bias", bias_f32_backward, (np.empty(2, np.float32), dy, k4)),
        ("bias_2d", bias_f32_backward_2d, (np.empty(3, np.float32), r(2, 3), k3)),
        ("global_mean", global_mean_f32_backward, (np.empty_like(xd), r(2, 4))),
        ("avgpool", avgpool_f32_backward, (np.empty_like(xd), dyd, 3, 3, 2, 1)),
        ("accumulate", accumulate_f32, (r(2, 4, 4, 4), dyd)),
        ("scale", scale_f32, (np.empty_like(dyd), dyd, 0.5)),
        ("mask_pack_f32", mask_pack_f32, (mask, dyd, 0.0, 6.0)),
        ("scale_channels", scale_channels_f32, (r(2, 4, 4, 4), r(4))),
        ("gather_channels_f32", gather_channels, (np.empty((2, 7, 7, 2), np.float32), xd, k4)),
        ("gather_channels_s8", gather_channels, (np.empty((2, 7, 7, 2), np.int8), s8(2, 7, 7, 4), k4)),
        ("mask_unpack", mask_unpack_backward_f32, (np.empty_like(dyd), dyd, mask)),
        ("clamp", clamp_f32_backward, (np.empty_like(dyd), dyd, r(*dyd.shape), 0.0, 6.0)),
        ("clamp_in_place", clamp_f32_backward, (dyd.copy(),) * 2 + (r(*dyd.shape), 0.1, 6.0)),
        ("softmax_ce", softmax_cross_entropy_f32, (np.empty_like(logits), logits, labels)),
    ]


KERNEL_CALLS = kernel_calls()


@pytest.mark.skipif(JIT_DISABLED, reason="the no-allocation contract is about the compiled kernels; interpreted, "
                    "every loop step creates Python/NumPy scalar objects")
@pytest.mark.parametrize("kernel, args", [c[1:] for c in KERNEL_CALLS], ids=[c[0] for c in KERNEL_CALLS])
def test_kernels_allocate_nothing(kernel, args):
    kernel(*args)  # compile (or load from the cache) outside the measurement
    tracemalloc.start()
    try:
        kernel(*args)
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    numpy_traces = snapshot.filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]).traces
    assert sum(t.size for t in numpy_traces) == 0

    # tracemalloc cannot see Numba's own allocator (np.empty inside a jitted function is invisible to it), so also
    # count NRT allocations; unboxing each array argument costs one, so compare with a no-op taking the same args.
    try:
        from numba.core.runtime import _nrt_python, rtsys
    except ImportError:  # pragma: no cover - private API moved
        pytest.skip("numba's NRT statistics are not available in this version")
    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        _noop(*args)
        before = rtsys.get_allocation_stats().alloc
        _noop(*args)
        baseline = rtsys.get_allocation_stats().alloc - before
        before = rtsys.get_allocation_stats().alloc
        kernel(*args)
        used = rtsys.get_allocation_stats().alloc - before
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()
    assert used == baseline, f"{used - baseline} NRT allocations inside the kernel"


@numba.njit
def _noop(*args):
    return None


@pytest.mark.parametrize("name", ["conv2d_input", "conv2d_weight", "depthwise_input", "depthwise_weight",
                                  "pointwise_input", "pointwise_weight", "avgpool", "conv2d_weight_s8x",
                                  "conv2d_input_s8w", "depthwise_weight_s8x", "pointwise_weight_s8x"])
def test_parallel_kernels_are_deterministic(name):
    kernel, args = next((k, a) for n, k, a in KERNEL_CALLS if n == name)
    threads = numba.get_num_threads()
    outs = []
    for t in sorted({1, threads}):
        numba.set_num_threads(t)
        try:
            kernel(*args)
        finally:
            numba.set_num_threads(threads)
        outs.append(args[0].copy())
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


# ---- cosine head: row-wise L2 normalisation ----------------------------------------------------

@pytest.mark.parametrize("n, c", [(1, 1), (2, 5), (3, 16)])
def test_l2_normalize_rows_matches_finite_differences(n, c):
    from microtrain.kernels.normalize import l2_normalize_rows_f32, l2_normalize_rows_f32_backward

    rng = np.random.default_rng(n * 10 + c)
    x = rng.normal(size=(n, c))
    dy = rng.normal(size=(n, c))
    y, norm = np.empty_like(x), np.empty(n)
    l2_normalize_rows_f32(y, norm, x)
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-12)
    dx = np.empty_like(x)
    l2_normalize_rows_f32_backward(dx, dy, y, norm)
    xp = x.copy()
    fd = ng.numerical_gradient(lambda: float(np.sum(dy * xp / np.linalg.norm(xp, axis=1, keepdims=True))), xp)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)


def test_l2_normalize_zero_row_gives_zeros_not_nan():
    from microtrain.kernels.normalize import l2_normalize_rows_f32

    x = np.zeros((1, 4), np.float32)
    y, norm = np.empty_like(x), np.empty(1, np.float32)
    l2_normalize_rows_f32(y, norm, x)
    assert np.all(y == 0) and norm[0] > 0
