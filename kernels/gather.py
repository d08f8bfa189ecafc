"""Channel gather: copy the kept input channels of an activation into a compact buffer.

MIT tiny-training's partial backward saves, for a layer whose weights are updated on input-channel slices, only the
kept input channels of its input (§3.2; DESIGN §3 "save only the kept input channels"): the weight gradient of
W[:, :, :, keep] needs x[..., keep] and nothing else. C twin: mt_gather_channels.
"""

from numba import njit

from microtrain.config import NJIT


@njit(**NJIT)
def gather_channels(dst, src, keep):
    """dst[n, h, w, k] = src[n, h, w, keep[k]], `=` overwrite.

    Layout:    dst (N, H, W, K) out; src (N, H, W, C) of dst's dtype (int8 in int8 training mode, float32 in fp32
               mode; any dtype works); keep (K,) int32, each in [0, C), in the caller's order (slot k of dst holds
               channel keep[k], the order the weight-gradient kernels and the update kernels index by).
    Ownership: writes every element of dst; reads src; allocates nothing. dst must not alias src.
    Exactness: a copy (no arithmetic), bit for bit.
    C twin:    mt_gather_channels.
    """
    N, H, W, K = dst.shape
    C = src.shape[3]
    if src.shape[0] != N or src.shape[1] != H or src.shape[2] != W or keep.shape[0] != K:
        raise ValueError("gather_channels: inconsistent shapes")
    for k in range(K):
        if keep[k] < 0 or keep[k] >= C:
            raise ValueError("gather_channels: keep index out of range")
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for k in range(K):
                    dst[n, h, w, k] = src[n, h, w, keep[k]]
