"""Average pooling backward, fp32 (float64 also accepted): windowed (padding excluded from the count) and global.

Differentiates `avgpool_f32` / `global_mean_f32` (and the int8 forms, whose gradient is the same in real units:
input and output share one scale). No weights, nothing saved from forward but the shapes.
C twins: mt_avgpool_f32_backward, mt_global_mean_f32_backward.
"""

from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from .threads import threads_for, threads_restore


@njit(**NJIT)
def global_mean_f32_backward(dx, dy):
    """dx[n, h, w, c] = dy[n, c] / (H * W), `=` overwrite.

    Forward:   y[n, c] = (sum_{h, w} x[n, h, w, c]) / (H * W).
    So now:    every input pixel of channel c receives dy[n, c] / (H * W) (one division in the dtype of dx).
    Layout:    dx (N, H, W, C) out; dy (N, C).
    Reads:     dy only (the count follows from the shapes).
    Ownership: writes every element of dx (`=`); allocates nothing.
    C twin:    mt_global_mean_f32_backward.
    """
    N, H, W, C = dx.shape
    if dy.shape[0] != N or dy.shape[1] != C:
        raise ValueError("global_mean_f32_backward: inconsistent shapes")
    count = dx.dtype.type(H * W)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    dx[n, h, w, c] = dy[n, c] / count


@njit(**NJIT_PARALLEL)
def avgpool_f32_backward(dx, dy, kh, kw, stride, pad):
    """dx = dL/dx of the kh x kw average pool with padding excluded from the divisor, `=` overwrite.

    Forward:   y[n, oy, ox, c] = (sum of x over the window clipped to the image) / count(oy, ox), with
               count = number of in-image taps (TFLM reference_ops::AveragePool; TFLM's float path).
    So now:    dx[n, iy, ix, c] = sum over the windows (oy, ox) containing (iy, ix) of dy[n, oy, ox, c] / count(oy, ox).
    Layout:    dx (N, H, W, C) out; dy (N, OH, OW, C); OH = (H + 2*pad - kh)//stride + 1; pad < kh, pad < kw.
    Reads:     dy only (the counts follow from the shapes).
    Ownership: writes every element of dx (`=`); pixels in no window get 0; allocates nothing. No aliasing.
    Order:     per element, windows in (tap fy, tap fx) order; each term is one division dy / count in dx's dtype.
    Parallel:  prange over (batch x input rows); disjoint writes (deterministic).
    C twin:    mt_avgpool_f32_backward.
    """
    N, H, W, C = dx.shape
    OH = dy.shape[1]
    OW = dy.shape[2]
    if (dy.shape[0] != N or dy.shape[3] != C or pad >= kh or pad >= kw or stride < 1
            or OH != (H + 2 * pad - kh) // stride + 1 or OW != (W + 2 * pad - kw) // stride + 1):
        raise ValueError("avgpool_f32_backward: inconsistent shapes, or pad >= kernel size")
    prev = threads_for(dx.size)
    for r in prange(N * H):
        n = r // H
        iy = r - n * H
        for ix in range(W):
            for c in range(C):
                dx[n, iy, ix, c] = 0
            for fy in range(kh):
                ty = iy + pad - fy  # = oy * stride if window row oy holds input row iy at tap fy
                if ty < 0 or ty % stride != 0:
                    continue
                oy = ty // stride
                if oy >= OH:
                    continue
                y0 = oy * stride - pad
                count_y = min(kh, H - y0) - max(0, -y0)  # in-image rows of this window, as in the forward
                for fx in range(kw):
                    tx = ix + pad - fx
                    if tx < 0 or tx % stride != 0:
                        continue
                    ox = tx // stride
                    if ox >= OW:
                        continue
                    x0 = ox * stride - pad
                    count = dx.dtype.type(count_y * (min(kw, W - x0) - max(0, -x0)))
                    for c in range(C):
                        dx[n, iy, ix, c] += dy[n, oy, ox, c] / count
    threads_restore(prev)
