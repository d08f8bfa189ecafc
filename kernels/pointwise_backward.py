"""Pointwise (1x1, stride 1) convolution backward, fp32 (float64 also accepted): input and sparse weight gradient.

Differentiates `pointwise_conv_f32` / `pointwise_conv_s8` (NHWC, weights (Co, Ci)). Same sparse conventions as
`conv2d_backward` (input-channel axis = compacted saved input + all output rows; output axis = full input + kept
rows). QAS scaling happens in the optimizer. C twins: mt_pointwise_conv_f32_backward_input,
mt_pointwise_conv_f32_backward_weight.
"""

from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .threads import threads_for, threads_restore


@njit(**NJIT_PARALLEL)
def pointwise_conv_f32_backward_input(dx, dy, w):
    """dx = dL/dx of y = pointwise_conv(x, w), i.e. dx[n, h, w, :] = dy[n, h, w, :] @ w, `=` overwrite.

    Forward:   y[n, h, x, co] = sum_ci x[n, h, x, ci] * w[co, ci].
    So now:    dx[n, h, x, ci] = sum_co dy[n, h, x, co] * w[co, ci].
    Layout:    dx (N, H, W, Ci) out; dy (N, H, W, Co); w (Co, Ci).
    Reads:     dy and the weights only. w may be the frozen int8 weights (int8 mode: dy pre-scaled by s_w per output
               channel with scale_channels_f32); int8 * float32 stays float32.
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
    prev = threads_for(dx.size * w.shape[0])
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
    threads_restore(prev)


@njit(**NJIT_PARALLEL)
def pointwise_conv_f32_backward_weight(dw, x, x_zp, dy, keep_out):
    """dw = dL/dw of y = pointwise_conv(x, w) restricted to kept channels, `=` overwrite.

    Forward:   y[n, h, x, co] = sum_ci x[n, h, x, ci] * w[co, ci].
    So now:    dw[k, j] = sum_{n, h, x} (x[n, h, x, j] - x_zp) * dy[n, h, x, keep_out[k]].
    Layout:    dw (K, Ci') out, float32 (float64 in the gradient checks); x (N, H, W, Ci') saved in forward, int8 or
               of dw's dtype: all Ci channels, or only the kept input channels compacted in the caller's keep order;
               x_zp scalar; dy (N, H, W, Co) of dw's dtype; keep_out (K,) int32 in [0, Co).
    int8 mode: x may be the int8 activation saved by the int8 forward, x_zp its zero point; the kernel then returns
               sum dy * (x_int - x_zp), and the caller multiplies by s_x (dL/dw_real = s_x * dw) or folds s_x into
               the update's coefficient. Pass x_zp as a float of dw's dtype (np.float32(zp)); it is cast to dw's
               dtype anyway, and x_int - x_zp is exact in float32 (|x_int - x_zp| <= 255). fp32 mode: float x,
               x_zp = 0.0 (x - 0.0 == x exactly, so the result is the plain sum dy * x).
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
    xz = dw.dtype.type(x_zp)
    CO = dy.shape[3]
    if (CX != CI or dy.shape[0] != N or dy.shape[1] != H or dy.shape[2] != W
            or keep_out.shape[0] != K):
        raise ValueError("pointwise_conv_f32_backward_weight: inconsistent shapes")
    for k in range(K):
        if keep_out[k] < 0 or keep_out[k] >= CO:
            raise ValueError("pointwise_conv_f32_backward_weight: keep_out index out of range")
    prev = threads_for(dy.size * x.shape[3])
    for k in prange(K):
        co = keep_out[k]
        for ci in range(CI):
            dw[k, ci] = 0
        for n in range(N):
            for h in range(H):
                for px in range(W):
                    g = dy[n, h, px, co]
                    for ci in range(CI):
                        dw[k, ci] += (x[n, h, px, ci] - xz) * g
    threads_restore(prev)
