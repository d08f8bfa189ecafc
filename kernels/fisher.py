"""TinyTrain's per-channel Fisher information of an activation (Kwon et al., ICML 2024, §3.2, after BlockSwap,
Turner et al., ICLR 2020): Δ_c = 1/(2N) Σ_n (Σ_d a_nd g_nd)², d over the spatial positions of channel c,
n over the N support samples. The kernel forms the per-sample sums and accumulates their squares; the caller
divides by 2N once all chunks of the support set have run (microtrain.tinytrain.fisher_potential).
C twin: mt_channel_fisher_f32.
"""

from numba import njit

from microtrain.config import NJIT


@njit(**NJIT)
def channel_fisher_f32(acc, s, a, a_zp, a_scale, g):
    """acc[c] += (a_scale * sum_{h,w} (a[n,h,w,c] - a_zp) * g[n,h,w,c])^2 for every sample n, `+=` accumulate.

    The per-sample, per-channel term of Δ_c = 1/(2N) sum_n (sum_d a_nd g_nd)^2; the caller divides by 2N.
    Layout:    acc (C,) f32 accumulated; s (C,) f32 scratch, overwritten; a (N, H, W, C) int8 (int8 mode:
               a_real = a_scale * (a - a_zp)) or f32 (a_zp = 0, a_scale = 1); g (N, H, W, C) f32, the masked gradient.
    Numerics:  float32 throughout: a - a_zp is exact (|a - a_zp| <= 255); per sample, sum over (h, w) in row-major
               order into s[c], then one multiply by a_scale, square, add into acc[c]; samples in order n = 0, 1, ...
               so splitting the support set into chunks run in order gives bit-identical acc.
    Ownership: reads a and g, writes s, accumulates acc; allocates nothing. Serial (deterministic).
    C twin:    mt_channel_fisher_f32.
    """
    N, H, W, C = g.shape
    if a.shape[0] != N or a.shape[1] != H or a.shape[2] != W or a.shape[3] != C or acc.shape[0] != C \
            or s.shape[0] != C:
        raise ValueError("channel_fisher_f32: inconsistent shapes")
    zp = g.dtype.type(a_zp)
    sc = g.dtype.type(a_scale)
    for n in range(N):
        for c in range(C):
            s[c] = 0
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    s[c] += (g.dtype.type(a[n, h, w, c]) - zp) * g[n, h, w, c]
        for c in range(C):
            v = s[c] * sc
            acc[c] += v * v
