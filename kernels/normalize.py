"""Row-wise L2 normalisation and its backward: the feature normalisation of a cosine classifier head.

C twins: mt_l2_normalize_rows_f32, mt_l2_normalize_rows_f32_backward. A cosine (ProtoNet-style) head,
as P>M>F (Hu et al., CVPR 2022) and TinyTrain use it, is logits = W . (f / |f|) + b.
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT

NORM_EPS = 1e-12  # |f| is floored here, so an all-zero feature row maps to zeros instead of NaN


@njit(**NJIT)
def l2_normalize_rows_f32(y, norm, x):
    """y[n] = x[n] / max(|x[n]|_2, eps); norm[n] = that divisor (saved for the backward).

    Layout:    y, x (N, C) float32 (y may be x); norm (N,) float32 out.
    Ownership: writes y and norm (`=`); allocates nothing. The sum of squares is accumulated in float64.
    C twin:    mt_l2_normalize_rows_f32
    """
    N, C = x.shape
    if y.shape[0] != N or y.shape[1] != C or norm.shape[0] != N:
        raise ValueError("l2_normalize_rows_f32: inconsistent shapes")
    for n in range(N):
        s = 0.0
        for c in range(C):
            v = np.float64(x[n, c])
            s += v * v
        r = np.sqrt(s)
        if r < NORM_EPS:
            r = NORM_EPS
        norm[n] = r
        inv = 1.0 / r
        for c in range(C):
            y[n, c] = np.float64(x[n, c]) * inv


@njit(**NJIT)
def l2_normalize_rows_f32_backward(dx, dy, y, norm):
    """dx[n] = (dy[n] - y[n] * (y[n] . dy[n])) / norm[n].

    Forward this was y = x / |x|; its Jacobian is (I - y y^T) / |x|, so dx = (dy - y (y . dy)) / |x|.
    Layout:    dx, dy, y (N, C) float32 (dx may be dy); norm (N,) float32 from the forward.
    Ownership: writes dx (`=`); reads the saved y and norm; allocates nothing.
    C twin:    mt_l2_normalize_rows_f32_backward
    """
    N, C = dy.shape
    if dx.shape[0] != N or dx.shape[1] != C or y.shape[0] != N or y.shape[1] != C or norm.shape[0] != N:
        raise ValueError("l2_normalize_rows_f32_backward: inconsistent shapes")
    for n in range(N):
        d = 0.0
        for c in range(C):
            d += np.float64(y[n, c]) * np.float64(dy[n, c])
        inv = 1.0 / np.float64(norm[n])
        for c in range(C):
            dx[n, c] = (np.float64(dy[n, c]) - np.float64(y[n, c]) * d) * inv
