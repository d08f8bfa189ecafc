"""Pointwise (1x1, stride 1) convolution backward, fp32 (float64 also accepted): input and sparse weight gradient.

Differentiates `pointwise_conv_f32` / `pointwise_conv_s8` (NHWC, weights (Co, Ci)). Same sparse conventions as
`conv2d_backward` (input-channel axis = compacted saved input + all output rows; output axis = full input + kept
rows). QAS scaling happens in the optimizer. C twins: mt_pointwise_conv_f32_backward_input,
mt_pointwise_conv_f32_backward_weight.
"""

from numba import njit, prange

from microtrain.config import NJIT_PARALLEL


@njit(**NJIT_PARALLEL)
def pointwise_conv_f32_backward_input(dx, dy, w):
    """dx = dL/dx of y = pointwise_conv(x, w), i.e. dx[n, h, w, :] = dy[n, h, w, :] @ w, `=` overwrite.

    Forward:   y[n, h, x, co] = sum_ci x[n, h, x, ci] * w[co, ci].
    So now:    dx[n, h, x, ci] = sum_co dy[n, h, x, co] * w[co, ci].
    Layout:    dx (N, H, W, Ci) out; dy (N, H, W, Co); w (Co, Ci).
    Reads:     dy and the weights only.
    Ownership: writes every element of dx (`=`); allocates nothing. No aliasing.
    Order:     per element, sum over co in increasing order, in the dtype of dx.
    Parallel:  prange over (batch x rows); disjoint writes (deterministic).
    C twin:    mt_pointwise_conv_f32_backward_input.
    """
    N, H, W, CI = dx.shape
    CO = dy.shape[3]
    if (dy.shape[0] != N or dy.shape[1] != H or dy.shape[2] != W
            or w.shape[0] != CO or w.shape[1] != CI):
        raise ValueError("pointwise_conv_f32_backward_input: inconsistent shapes")
    for r in prange(N * H):
        n = r // H
        h = r - n * H
        for x in range(W):
            for ci in range(CI):
                dx[n, h, x, ci] = 0
            for co in range(CO):
                g = dy[n, h, x, co]
                for ci in range(CI):
                    dx[n, h, x, ci] += w[co, ci] * g


@njit(**NJIT_PARALLEL)
def pointwise_conv_f32_backward_weight(dw, x, dy, keep_out):
    """dw = dL/dw of y = pointwise_conv(x, w) restricted to kept channels, `=` overwrite.

    Forward:   y[n, h, x, co] = sum_ci x[n, h, x, ci] * w[co, ci].
    So now:    dw[k, j] = sum_{n, h, x} x[n, h, x, j] * dy[n, h, x, keep_out[k]].
    Layout:    dw (K, Ci') out; x (N, H, W, Ci') saved in forward: all Ci channels, or only the kept input
               channels compacted in the caller's keep order; dy (N, H, W, Co); keep_out (K,) int32 in [0, Co).
    Sparse:    input axis = (x compacted, keep_out = arange(Co)) -> dw[:, j] = dW[:, keep_in[j]];
               output axis = (x full, keep_out = kept) -> dw[k] = dW[keep_out[k]].
    Reads:     x (saved from forward, possibly channel-compacted) and dy; not the weights.
    Exactness: each element is one sum over (n, h, x) in that fixed order, so sparse == dense slice bit for bit.
    Ownership: writes every element of dw (`=`); allocates nothing.
    Parallel:  prange over k; each writes the disjoint row dw[k], serial reduction inside (deterministic).
    C twin:    mt_pointwise_conv_f32_backward_weight.
    """
    K, CI = dw.shape
    N, H, W, CX = x.shape
    CO = dy.shape[3]
    if (CX != CI or dy.shape[0] != N or dy.shape[1] != H or dy.shape[2] != W
            or keep_out.shape[0] != K):
        raise ValueError("pointwise_conv_f32_backward_weight: inconsistent shapes")
    for k in range(K):
        if keep_out[k] < 0 or keep_out[k] >= CO:
            raise ValueError("pointwise_conv_f32_backward_weight: keep_out index out of range")
    for k in prange(K):
        co = keep_out[k]
        for ci in range(CI):
            dw[k, ci] = 0
        for n in range(N):
            for h in range(H):
                for px in range(W):
                    g = dy[n, h, px, co]
                    for ci in range(CI):
                        dw[k, ci] += x[n, h, px, ci] * g
