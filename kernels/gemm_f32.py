"""The ends of the host GEMM path for fp32 convs in a training step (TrainOptions(backend="blas")).

An fp32 1x1 conv is y (P, Co) = x (P, Ci) @ w.T (Ci, Co) + bias, P = N * H * W pixels; a KxK conv is the same
product over im2col patches (P, KH * KW * Ci). NumPy's float32 BLAS (sgemm) computes the product into a
preallocated `out`; gemm_io.im2col_f32 forms a KxK conv's patches before it, bias_add_clamp_f32 finishes after it.

Not bit-exact with the loop kernels: sgemm sums the Ci (or KH * KW * Ci) products in its own blocked order, with
FMA, where pointwise_conv_f32 / conv2d_f32 sum them one after another (the order the C twins mirror). Both are
float32 sums of the same products; they differ by float32 rounding (tests bound the difference against a float64
reference like the loop kernels'). Host only: firmware runs the loop kernels.
"""

from numba import njit, prange

from microtrain.config import NJIT_PARALLEL


@njit(**NJIT_PARALLEL)
def bias_add_clamp_f32(y, bias, lo, hi):
    """y[p, co] = min(max(y[p, co] + bias[co], lo), hi), in place: the tail of an fp32 conv after its GEMM.

    Layout:    y (P, Co) f32 in/out (the GEMM's result, an NHWC activation viewed as pixels x channels);
               bias (Co,) f32; lo, hi floats ((-inf, inf) none, (0, 6) ReLU6), as pointwise_conv_f32 applies them.
    Ownership: rewrites every element of y; allocates nothing.
    Parallel:  prange over rows; disjoint writes.
    """
    P, CO = y.shape
    if bias.shape[0] != CO:
        raise ValueError("bias_add_clamp_f32: inconsistent shapes")
    for p in prange(P):
        for co in range(CO):
            v = y[p, co] + bias[co]
            if v < lo:
                v = lo
            if v > hi:
                v = hi
            y[p, co] = v
