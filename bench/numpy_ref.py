"""The obvious vectorised NumPy implementation a user would write: the peer microtrain's kernels are
timed against in bench/. int8 semantics are the same as the kernels' (TFLM double rounding), computed
in int64 with broadcasting, so every benchmark first checks the kernel against it exactly.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def srdhm(a, b):
    # round-half-up high mul; the INT32_MIN*INT32_MIN case cannot occur (multipliers are > 0)
    return (a.astype(np.int64) * np.asarray(b, np.int64) + (1 << 30)) >> 31


def rdbpot(x, e):
    e = np.asarray(e, np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def mbqm(x, mult, shift):
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rdbpot(srdhm(x << left, np.asarray(mult, np.int64)), right)


def wrap_int32(acc):
    """acc + bias wraps in int32 in TFLM (C int32 arithmetic); the real tiny-training weights have
    int32-limit biases on dead channels, so the reference must wrap too."""
    return ((acc + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _requant_store(acc, mult, shift, y_zp, lo, hi):
    acc = wrap_int32(acc)
    return np.clip(mbqm(acc, mult, shift) + y_zp, lo, hi).astype(np.int8)


def _windows(x, kh, kw, stride, pad, fill):
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=fill)
    win = sliding_window_view(xp, (kh, kw), axis=(1, 2))  # (N, H', W', C, KH, KW)
    return win[:, ::stride, ::stride]


def conv2d_s8(x, w, bias, mult, shift, x_zp, y_zp, lo, hi, stride, pad):
    co, kh, kw, ci = w.shape
    win = _windows(x, kh, kw, stride, pad, x_zp).astype(np.int64) - x_zp
    acc = np.einsum("nhwcij,oijc->nhwo", win, w.astype(np.int64), optimize=True) + bias
    return _requant_store(acc, mult, shift, y_zp, lo, hi)


def depthwise_conv_s8(x, w, bias, mult, shift, x_zp, y_zp, lo, hi, stride, pad):
    kh, kw, c = w.shape
    n, h, wd, _ = x.shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=x_zp).astype(np.int64) - x_zp
    acc = np.zeros((n, oh, ow, c), np.int64) + bias
    for i in range(kh):
        for j in range(kw):
            acc += xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride] * w[i, j].astype(np.int64)
    return _requant_store(acc, mult, shift, y_zp, lo, hi)


def pointwise_conv_s8(x, w, bias, mult, shift, x_zp, y_zp, lo, hi):
    n, h, wd, ci = x.shape
    acc = (x.reshape(-1, ci).astype(np.int64) - x_zp) @ w.T.astype(np.int64) + bias
    return _requant_store(acc.reshape(n, h, wd, -1), mult, shift, y_zp, lo, hi)


def add_s8(a, b, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, y_zp, y_mult, y_shift, lo, hi):
    ua = mbqm((a.astype(np.int64) - a_zp) << 20, a_mult, a_shift)
    ub = mbqm((b.astype(np.int64) - b_zp) << 20, b_mult, b_shift)
    return _requant_store(ua + ub, y_mult, y_shift, y_zp, lo, hi)


def global_mean_s8(x, lo, hi):
    n, h, w, c = x.shape
    cnt = h * w
    s = x.astype(np.int64).sum(axis=(1, 2))
    half = cnt // 2
    # C division truncates toward zero after adding +-count/2: round half away from zero
    q = np.where(s > 0, (s + half) // cnt, -((-s + half) // cnt))
    return np.clip(q, lo, hi).astype(np.int8)


def fully_connected_s8(x, w, bias, mult, shift, x_zp, y_zp, lo, hi):
    acc = (x.astype(np.int64) - x_zp) @ w.T.astype(np.int64) + bias
    return _requant_store(acc, mult, shift, y_zp, lo, hi)


# ---- float32 backward (bench_backward.py): the gradients of the forward convs above, full channels ----------

def depthwise_backward_input(dy, w, x_shape, stride, pad):
    """dx (N, H, W, C): each tap's products dy * w[ky, kx] scattered back onto the strided input positions."""
    kh, kw, _ = w.shape
    n, oh, ow, c = dy.shape
    dxp = np.zeros((n, x_shape[1] + 2 * pad, x_shape[2] + 2 * pad, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i:i + stride * oh:stride, j:j + stride * ow:stride] += dy * w[i, j]
    return dxp[:, pad:pad + x_shape[1], pad:pad + x_shape[2]]


def depthwise_backward_weight(x, dy, k, stride, pad):
    """dw (KH, KW, C) = per tap, sum over (n, oy, ox) of the strided input times dy."""
    n, oh, ow, c = dy.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dw = np.empty((k, k, c), np.float32)
    for i in range(k):
        for j in range(k):
            dw[i, j] = np.einsum("nhwc,nhwc->c", xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride], dy)
    return dw


def pointwise_backward_input(dy, w):
    """dx (N, H, W, Ci) = dy (P, Co) @ w (Co, Ci)."""
    return (dy.reshape(-1, dy.shape[3]) @ w).reshape(dy.shape[:3] + (w.shape[1],))


def pointwise_backward_weight(x, dy):
    """dw (Co, Ci) = dy (P, Co).T @ x (P, Ci)."""
    return dy.reshape(-1, dy.shape[3]).T @ x.reshape(-1, x.shape[3])


def conv2d_backward_weight(x, dy, k, stride, pad):
    """dw (Co, KH, KW, Ci) = sum over output pixels of dy times the input window (the forward's windows)."""
    win = _windows(x, k, k, stride, pad, 0.0)  # (N, OH, OW, Ci, KH, KW)
    return np.einsum("nhwcij,nhwo->oijc", win, dy, optimize=True)
