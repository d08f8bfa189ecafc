"""Bias gradient of every layer with a per-output-channel bias (conv2d, depthwise, pointwise, fully connected).

db is the sum of the layer's output gradient over everything but the channel axis; only the kept channels are
computed (bias-only / TinyTL-style updates and MIT's "biases of the last N convs"). In int8 mode the optimizer
applies QAS (x (s_w s_x)^-2); the bias itself is int32 there, its gradient fp32.
C twins: mt_bias_f32_backward, mt_bias_f32_backward_2d.
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT


@njit(**NJIT)
def bias_f32_backward(db, dy, keep):
    """db[k] = sum_{n, h, w} dy[n, h, w, keep[k]], `=` overwrite (4-D output gradient of a convolution).

    Forward:   y[n, h, w, c] = (...) + bias[c].
    So now:    dL/dbias[c] = sum over n, h, w of dL/dy[n, h, w, c], for c = keep[k].
    Layout:    db (K,) out; dy (N, H, W, C), C-contiguous (after the activation's mask); keep (K,) int32 in [0, C).
    Reads:     dy only; nothing saved from forward.
    Exactness: one sum per k in (n, h, w) order, so a sparse keep equals the dense db at those channels bit for bit.
               The pixel loop is outside the channel loop (each pixel's row of dy is read once, in memory order, and
               the adds vectorise across k); every db[k] still adds its terms in (n, h, w) order.
    Method:    when keep is a run of consecutive channels (every channel: full and bias-only updates) each pixel
               adds a contiguous slice of its row; otherwise the kept channels are gathered (an unsigned index:
               keep was checked >= 0, so the loop carries no wraparound branch and vectorises).
    Threads:   one. The sum's order must not depend on the thread count, so threads could only split the channels,
               and each would then stream all of dy: measured slower at 2 threads than at 1 for every MCUNet shape
               (e.g. (25, 64, 64, 32): 0.74 vs 0.53 ms; the gather path 3.4 vs 2.3 ms).
    Ownership: writes every element of db (`=`); allocates nothing.
    C twin:    mt_bias_f32_backward.
    """
    K = db.shape[0]
    N, H, W, C = dy.shape
    if keep.shape[0] != K:
        raise ValueError("bias_f32_backward: inconsistent shapes")
    for k in range(K):
        if keep[k] < 0 or keep[k] >= C:
            raise ValueError("bias_f32_backward: keep index out of range")
    for k in range(K):
        db[k] = 0
    if K == 0:
        return
    P = N * H * W
    d2 = dy.reshape(P, C)
    c0 = keep[0]
    run = True
    for k in range(K):
        if keep[k] != c0 + k:
            run = False
    if run:
        for p in range(P):
            r_s = d2[p, c0:c0 + K]
            for k in range(K):  # contiguous: vectorised
                db[k] += r_s[k]
    else:
        for p in range(P):
            row = d2[p]
            for k in range(K):
                db[k] += row[np.uint32(keep[k])]


@njit(**NJIT)
def bias_f32_backward_2d(db, dy, keep):
    """db[k] = sum_n dy[n, keep[k]], `=` overwrite (2-D output gradient of the fully connected head).

    Forward:   y[n, c] = sum_ci x[n, ci] * w[c, ci] + bias[c].
    So now:    dL/dbias[c] = sum_n dL/dy[n, c], for c = keep[k].
    Layout:    db (K,) out; dy (N, C); keep (K,) int32 in [0, C).
    Reads:     dy only; nothing saved from forward.
    Exactness: one sum per k in increasing n, sparse == dense at kept channels bit for bit.
    Ownership: writes every element of db (`=`); allocates nothing.
    C twin:    mt_bias_f32_backward_2d.
    """
    K = db.shape[0]
    N, C = dy.shape
    if keep.shape[0] != K:
        raise ValueError("bias_f32_backward_2d: inconsistent shapes")
    for k in range(K):
        if keep[k] < 0 or keep[k] >= C:
            raise ValueError("bias_f32_backward_2d: keep index out of range")
    for k in range(K):
        c = keep[k]
        db[k] = 0
        for n in range(N):
            db[k] += dy[n, c]
