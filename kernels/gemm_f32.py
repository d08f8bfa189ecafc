"""The ends of the host GEMM path for fp32 convs in a training step (TrainOptions(backend="blas")).

An fp32 1x1 conv is y (P, Co) = x (P, Ci) @ w.T (Ci, Co) + bias, P = N * H * W pixels; a KxK conv is the same
product over im2col patches (P, KH * KW * Ci). NumPy's float32 BLAS (sgemm) computes the product into a
preallocated `out`; gemm_io.im2col_f32 forms a KxK conv's patches before it, bias_add_clamp_f32 finishes after it.

Not bit-exact with the loop kernels: sgemm sums the Ci (or KH * KW * Ci) products in its own blocked order, with
FMA, where pointwise_conv_f32 / conv2d_f32 sum them one after another (the order the C twins mirror). Both are
float32 sums of the same products; they differ by float32 rounding (tests bound the difference against a float64
reference like the loop kernels'). Host only: firmware runs the loop kernels.
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from .scratch import SCRATCH_ACC, chunk_bounds, scratch_acc_f32
from .threads import STREAM_ELEMENTS, parallel_chunks, threads_for, threads_restore


@njit(**NJIT)
def _clamp(v, lo, hi):
    """v clamped into [lo, hi] as pointwise_conv_f32 does it (a NaN stays NaN)."""
    if v < lo:
        v = lo
    if v > hi:
        v = hi
    return v


@njit(**NJIT_PARALLEL)
def bias_add_clamp_f32(y, bias, lo, hi):
    """y[p, co] = min(max(y[p, co] + bias[co], lo), hi), in place: the tail of an fp32 conv after its GEMM.

    Layout:    y (P, Co) f32 in/out, C-contiguous (the GEMM's result, an NHWC activation viewed as pixels x
               channels); bias (Co,) f32; lo, hi floats ((-inf, inf) none, (0, 6) ReLU6), as pointwise_conv_f32
               applies them.
    Method:    the bias is laid out along B = SCRATCH_ACC // Co pixels on the stack, once per thread chunk, so each
               block of B pixels is one flat loop of B * Co elements (a loop over Co alone, 8-48 in MCUNet's early
               blocks, is too short for LLVM's vectorised loop). Same single add and clamp per element.
    Ownership: rewrites every element of y; allocates nothing.
    Parallel:  prange over one contiguous chunk of rows per thread; disjoint writes.
    """
    P, CO = y.shape
    if bias.shape[0] != CO:
        raise ValueError("bias_add_clamp_f32: inconsistent shapes")
    if P == 0 or CO == 0:
        return
    B = max(1, SCRATCH_ACC // CO)  # pixels per block (CO > SCRATCH_ACC: one pixel, the bias row in blocks)
    yf = y.reshape(P * CO)
    lo32 = np.float32(lo)
    hi32 = np.float32(hi)
    prev = threads_for(y.size // STREAM_ELEMENTS)
    chunks = parallel_chunks(P)
    for t in prange(chunks):
        bt = scratch_acc_f32()  # (SCRATCH_ACC,) bt[q * CO + co] = bias[co]
        p0, p1 = chunk_bounds(P, chunks, t)
        if CO <= SCRATCH_ACC:
            for q in range(B):
                b_s = bt[q * CO:q * CO + CO]
                for co in range(CO):
                    b_s[co] = bias[co]
            for q0 in range(p0, p1, B):
                q1 = min(p1, q0 + B)
                y_s = yf[q0 * CO:q1 * CO]
                for j in range(y_s.shape[0]):  # flat block: vectorised
                    y_s[j] = _clamp(y_s[j] + bt[j], lo32, hi32)
        else:
            for p in range(p0, p1):
                y_s = yf[p * CO:p * CO + CO]
                for co in range(CO):
                    y_s[co] = _clamp(y_s[co] + bias[co], lo32, hi32)
    threads_restore(prev)
