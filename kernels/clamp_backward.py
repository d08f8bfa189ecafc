"""Backward of an fp32 clamp (ReLU6 / ReLU) from the saved fp32 output, for steps run without 1-bit masks.

C twin: mt_clamp_f32_backward. The memory-saving alternative is the 1-bit mask (elementwise_backward.py);
both pass the gradient exactly where lo < y < hi (PyTorch's hardtanh backward), so they agree bit for bit.
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from .threads import STREAM_ELEMENTS, threads_for, threads_restore


@njit(**NJIT)
def f32_open_bounds(lo, hi):
    """(lo32, hi32) float32 with, for every float32 v, (v > lo32 and v < hi32) == (float64(v) > lo and
    float64(v) < hi), for float64 lo, hi.

    lo32 is the largest float32 <= lo: if lo is a float32 they are equal; if not, no float32 lies strictly
    between lo32 and the next float32 above it, which is > lo, so v > lo <=> v >= that next one <=> v > lo32. hi32
    is the smallest float32 >= hi, likewise. Bounds beyond float32's range become +-inf or +-FLT_MAX with the same
    property, and a NaN bound stays NaN (every comparison false in both forms)."""
    lo32 = np.float32(lo)
    if np.float64(lo32) > lo:
        lo32 = np.nextafter(lo32, np.float32(-np.inf))
    hi32 = np.float32(hi)
    if np.float64(hi32) < hi:
        hi32 = np.nextafter(hi32, np.float32(np.inf))
    return lo32, hi32


@njit(**NJIT_PARALLEL)
def clamp_f32_backward(dx, dy, y, lo, hi):
    """dx = dy where lo < y < hi, else 0.

    Layout:    dx, dy, y (N, H, W, C) float32, C-contiguous (dx may be dy: in place); lo, hi floats, compared
               with y as float64 (the C twin's double comparison).
    Method:    each image row is one flat loop over W * C elements (a loop over C alone, 8-48 in MCUNet's early
               blocks, is shorter than one vectorised iteration), comparing in float32 against f32_open_bounds(lo,
               hi), which gives the float64 comparison's result for every float32 y (8 lanes instead of 4).
               Measured, one thread, (25, 64, 64, 16): in place 1.05 -> 0.30 ms, out of place 1.59 -> 0.68 ms.
    Ownership: writes dx (`=`); reads the forward output y (a saved activation); allocates nothing.
    Forward:   y = min(max(z, lo), hi); so dz = dy where the clamp did not bind.
    Parallel:  prange over (batch x rows), disjoint writes.
    C twin:    mt_clamp_f32_backward
    """
    N, H, W, C = dy.shape
    if dx.shape != dy.shape or y.shape != dy.shape:
        raise ValueError("clamp_f32_backward: inconsistent shapes")
    R = N * H
    L = W * C
    dx2 = dx.reshape(R, L)
    dy2 = dy.reshape(R, L)
    y2 = y.reshape(R, L)
    lo32, hi32 = f32_open_bounds(lo, hi)
    zero = np.float32(0.0)
    # in place, the loop reads and writes one array: two arrays that LLVM must assume may overlap would fail its
    # runtime overlap check and leave the loop scalar (measured 10x slower in place than out of place)
    in_place = dx.ctypes.data == dy.ctypes.data
    prev = threads_for(dy.size // (STREAM_ELEMENTS // 2))
    for r in prange(R):
        d_s = dx2[r]
        g_s = dy2[r]
        v_s = y2[r]
        if in_place:
            for j in range(L):  # flat row: vectorised (compare, blend)
                v = v_s[j]
                d_s[j] = d_s[j] if (v > lo32) & (v < hi32) else zero
        else:
            for j in range(L):
                v = v_s[j]
                d_s[j] = g_s[j] if (v > lo32) & (v < hi32) else zero
    threads_restore(prev)
