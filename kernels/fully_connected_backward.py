"""Fully connected (classifier head) backward, fp32 (float64 also accepted): input and sparse weight gradient.

Differentiates `fully_connected_f32` (x (N, Ci), weights (Co, Ci)); its bias gradient is
`bias_backward.bias_f32_backward_2d`. The head is always trained (DESIGN §4); the keep list exists so the same
contract as the convolutions holds. C twins: mt_fully_connected_f32_backward_input,
mt_fully_connected_f32_backward_weight.
"""

from numba import njit

from microtrain.config import NJIT


@njit(**NJIT)
def fully_connected_f32_backward_input(dx, dy, w):
    """dx = dy @ w = dL/dx of y = x @ w.T, `=` overwrite.

    Forward:   y[n, co] = sum_ci x[n, ci] * w[co, ci] + bias[co].
    So now:    dx[n, ci] = sum_co dy[n, co] * w[co, ci].
    Layout:    dx (N, Ci) out; dy (N, Co); w (Co, Ci).
    Reads:     dy and the weights only. w may be int8 (dy pre-scaled by s_w per output channel with
               scale_channels_f32 on dy's (N, 1, 1, Co) view); int8 * float32 stays float32.
    Ownership: writes every element of dx (`=`); allocates nothing. No aliasing.
    Order:     per element, sum over co in increasing order, in the dtype of dx.
    C twin:    mt_fully_connected_f32_backward_input.
    """
    N, CI = dx.shape
    CO = dy.shape[1]
    if dy.shape[0] != N or w.shape[0] != CO or w.shape[1] != CI:
        raise ValueError("fully_connected_f32_backward_input: inconsistent shapes")
    for n in range(N):
        for ci in range(CI):
            dx[n, ci] = 0
        for co in range(CO):
            g = dy[n, co]
            for ci in range(CI):
                dx[n, ci] += w[co, ci] * g


@njit(**NJIT)
def fully_connected_f32_backward_weight(dw, x, x_zp, dy, keep_out):
    """dw = dL/dw of y = x @ w.T restricted to kept channels, `=` overwrite.

    Forward:   y[n, co] = sum_ci x[n, ci] * w[co, ci] + bias[co].
    So now:    dw[k, j] = sum_n (x[n, j] - x_zp) * dy[n, keep_out[k]].
    Layout:    dw (K, Ci') out, float32 (float64 in the gradient checks); x (N, Ci') saved in forward, int8 or of
               dw's dtype (all Ci, or kept input features compacted in keep order); x_zp scalar; dy (N, Co) of dw's
               dtype; keep_out (K,) int32 in [0, Co). Same sparse convention as conv2d_backward.
    int8 mode: x may be the int8 activation saved by the int8 forward, x_zp its zero point; the kernel then returns
               sum dy * (x_int - x_zp), and the caller multiplies by s_x (dL/dw_real = s_x * dw) or folds s_x into
               the update's coefficient. Pass x_zp as a float of dw's dtype (np.float32(zp)); it is cast to dw's
               dtype anyway, and x_int - x_zp is exact in float32 (|x_int - x_zp| <= 255). fp32 mode: float x,
               x_zp = 0.0 (x - 0.0 == x exactly, so the result is the plain sum dy * x).
    Reads:     x (saved from forward, possibly compacted) and dy; not the weights.
    Exactness: each element is one sum over n in increasing order, so sparse == dense slice bit for bit.
    Ownership: writes every element of dw (`=`); allocates nothing.
    C twin:    mt_fully_connected_f32_backward_weight.
    """
    K, CI = dw.shape
    N = x.shape[0]
    xz = dw.dtype.type(x_zp)
    CO = dy.shape[1]
    if x.shape[1] != CI or dy.shape[0] != N or keep_out.shape[0] != K:
        raise ValueError("fully_connected_f32_backward_weight: inconsistent shapes")
    for k in range(K):
        if keep_out[k] < 0 or keep_out[k] >= CO:
            raise ValueError("fully_connected_f32_backward_weight: keep_out index out of range")
    for k in range(K):
        co = keep_out[k]
        for ci in range(CI):
            dw[k, ci] = 0
        for n in range(N):
            g = dy[n, co]
            for ci in range(CI):
                dw[k, ci] += (x[n, ci] - xz) * g
