"""Bias gradient of every layer with a per-output-channel bias (conv2d, depthwise, pointwise, fully connected).

db is the sum of the layer's output gradient over everything but the channel axis; only the kept channels are
computed (bias-only / TinyTL-style updates and MIT's "biases of the last N convs"). In int8 mode the optimizer
applies QAS (x (s_w s_x)^-2); the bias itself is int32 there, its gradient fp32.
C twins: mt_bias_f32_backward, mt_bias_f32_backward_2d.
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from microtrain.kernels.scratch import PARALLEL_CHUNKS, chunk_bounds
from microtrain.kernels.threads import threads_for, threads_restore


@njit(**NJIT_PARALLEL)
def bias_f32_backward(db, dy, keep):
    """db[k] = sum_{n, h, w} dy[n, h, w, keep[k]], `=` overwrite (4-D output gradient of a convolution).

    Forward:   y[n, h, w, c] = (...) + bias[c].
    So now:    dL/dbias[c] = sum over n, h, w of dL/dy[n, h, w, c], for c = keep[k].
    Layout:    db (K,) out; dy (N, H, W, C) (after the activation's mask); keep (K,) int32 in [0, C).
    Reads:     dy only; nothing saved from forward.
    Exactness: one sum per k in (n, h, w) order, so a sparse keep equals the dense db at those channels bit for bit.
               The pixel loop is outside the channel loop (each pixel's row of dy is read once, in memory order, and
               the adds vectorise across k); every db[k] still adds its terms in (n, h, w) order.
    Ownership: writes every element of db (`=`); allocates nothing.
    Parallel:  prange over contiguous chunks of k; each thread owns its db[k] (deterministic, any thread count).
    C twin:    mt_bias_f32_backward.
    """
    K = db.shape[0]
    N, H, W, C = dy.shape
    if keep.shape[0] != K:
        raise ValueError("bias_f32_backward: inconsistent shapes")
    for k in range(K):
        if keep[k] < 0 or keep[k] >= C:
            raise ValueError("bias_f32_backward: keep index out of range")
    chunks = min(PARALLEL_CHUNKS, K)
    prev = threads_for(dy.size)
    for t in prange(chunks):
        k0, k1 = chunk_bounds(K, chunks, t)
        d = db[k0:k1]  # this thread's channels; slices indexed from 0 and an unsigned gather index (keep was
        kp = keep[k0:k1]  # checked >= 0 above) carry no wraparound branch, so the k loop vectorises
        for k in range(k1 - k0):
            d[k] = 0
        for n in range(N):
            for h in range(H):
                for w in range(W):
                    row = dy[n, h, w]
                    for k in range(k1 - k0):
                        d[k] += row[np.uint32(kp[k])]
    threads_restore(prev)


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
