"""Backward of an fp32 clamp (ReLU6 / ReLU) from the saved fp32 output, for steps run without 1-bit masks.

C twin: mt_clamp_f32_backward. The memory-saving alternative is the 1-bit mask (elementwise_backward.py);
both pass the gradient exactly where lo < y < hi (PyTorch's hardtanh backward), so they agree bit for bit.
"""

from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .threads import threads_for, threads_restore


@njit(**NJIT_PARALLEL)
def clamp_f32_backward(dx, dy, y, lo, hi):
    """dx = dy where lo < y < hi, else 0.

    Layout:    dx, dy, y (N, H, W, C) float32 (dx may be dy: in place).
    Ownership: writes dx (`=`); reads the forward output y (a saved activation); allocates nothing.
    Forward:   y = min(max(z, lo), hi); so dz = dy where the clamp did not bind.
    Parallel:  prange over (batch x rows), disjoint writes.
    C twin:    mt_clamp_f32_backward
    """
    N, H, W, C = dy.shape
    if dx.shape != dy.shape or y.shape != dy.shape:
        raise ValueError("clamp_f32_backward: inconsistent shapes")
    prev = threads_for(dy.size)
    for r in prange(N * H):
        n = r // H
        h = r - n * H
        for w in range(W):
            for c in range(C):
                v = y[n, h, w, c]
                if v > lo and v < hi:
                    dx[n, h, w, c] = dy[n, h, w, c]
                else:
                    dx[n, h, w, c] = 0.0
    threads_restore(prev)
