"""Elementwise backward pieces: gradient accumulation and scaling, and the 1-bit clamp (ReLU6) mask.

Residual ADD, y = a + b (`add_f32` / `add_s8`), has dL/da = dL/db = dL/dy: its backward is a copy, and no kernel
is needed for it. In a block out = x + F(x) the training step
  1. hands dy (the gradient of `out`) to F's backward as its upstream gradient, unchanged (an alias, no copy);
  2. lets F's backward write dL/dx through the branch into its own buffer dx;
  3. calls `accumulate_f32(dx, dy)`: the shortcut's gradient is the sum of both paths.
Where a separate copy is really needed, `scale_f32(dst, dy, 1.0)` is exact (x * 1 == x in IEEE arithmetic).
In int8 mode gradients are taken with respect to real values, so the same holds; a caller that differentiates
with respect to the quantized integers scales each input's gradient by s_in / s_out with `scale_f32`.

ReLU6 / clamp: instead of saving the activation (8 bits per element in int8 mode, 32 in fp32) the forward saves
1 bit per element, "did the gradient pass" (MIT tiny-training §3.5(e); TinyEngine USE_BIT_MASK). That is all the
backward of a clamp needs: its derivative is 1 inside the range and 0 where the value was clamped, which is how
tiny-training's straight-through estimator works (`_TruncateActivationRange.backward` multiplies the gradient by
the saved in-range mask). The mask costs ceil(numel / 8) bytes, 1/8 of an int8 activation and 1/32 of an fp32 one.
C twins: mt_accumulate_f32, mt_scale_f32, mt_mask_pack_f32, mt_mask_pack_s8, mt_mask_unpack_backward_f32.
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT


def mask_pack_bytes(numel):
    """Bytes of a 1-bit mask over `numel` elements: ceil(numel / 8) (the caller plans a uint8 buffer of this size)."""
    return (numel + 7) // 8


@njit(**NJIT)
def accumulate_f32(dst, src):
    """dst += src, elementwise over 4-D arrays (the residual add's shortcut gradient), `+=` accumulate.

    Layout:    dst, src (N, H, W, C), same shape (2-D gradients: pass (N, 1, 1, C) views).
    Ownership: reads src, accumulates into dst; allocates nothing. dst may alias src (dst = 2 * dst).
    C twin:    mt_accumulate_f32.
    """
    N, H, W, C = dst.shape
    if src.shape[0] != N or src.shape[1] != H or src.shape[2] != W or src.shape[3] != C:
        raise ValueError("accumulate_f32: inconsistent shapes")
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    dst[n, h, w, c] += src[n, h, w, c]


@njit(**NJIT)
def scale_f32(dst, src, s):
    """dst = src * s, elementwise over 4-D arrays with one per-tensor scale, `=` overwrite.

    Used to fold a requantization scale into a gradient (s cast once to dst's dtype, then one multiply per element).
    Layout:    dst, src (N, H, W, C), same shape; s a Python/NumPy float.
    Ownership: writes every element of dst; allocates nothing. In place allowed (dst may be src).
    C twin:    mt_scale_f32.
    """
    N, H, W, C = dst.shape
    if src.shape[0] != N or src.shape[1] != H or src.shape[2] != W or src.shape[3] != C:
        raise ValueError("scale_f32: inconsistent shapes")
    sv = dst.dtype.type(s)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    dst[n, h, w, c] = src[n, h, w, c] * sv


@njit(**NJIT)
def _mask_pack(mask, y, lo, hi):
    """Shared body of mask_pack_f32 / mask_pack_s8: bit i = (lo < y_flat[i] < hi); lo, hi already typed."""
    N, H, W, C = y.shape
    if mask.shape[0] != (N * H * W * C + 7) // 8:
        raise ValueError("mask_pack: mask must hold ceil(numel / 8) bytes")
    i = 0
    byte = 0
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    v = y[n, h, w, c]
                    if v > lo and v < hi:
                        byte |= 1 << (i & 7)
                    if (i & 7) == 7:
                        mask[i >> 3] = byte
                        byte = 0
                    i += 1
    if (i & 7) != 0:
        mask[i >> 3] = byte  # last, partial byte; its unused high bits are 0


@njit(**NJIT)
def mask_pack_f32(mask, y, lo, hi):
    """mask bit i = 1 iff lo < y_flat[i] < hi (the gradient passes), `=` overwrite; 1 bit per element.

    Forward:   y = clamp(x, lo, hi) (ReLU6 in fp32: lo = 0, hi = 6, fused in the conv kernels' act_min/act_max).
    Saves:     this mask instead of x or y. A value strictly inside (lo, hi) was not clamped, so y == x there and the
               derivative is 1; y == lo or y == hi is treated as clamped (derivative 0). On y this is exactly
               PyTorch's hardtanh/relu6 backward on x (grad passes iff lo < x < hi). NaN gives 0.
    Layout:    mask (ceil(numel / 8),) uint8 out; y (N, H, W, C) flattened in C order, element i -> bit i % 8
               (little-endian within the byte) of byte i // 8; unused high bits of the last byte are 0.
               lo, hi are cast to y's dtype first, as the forward kernels cast act_min/act_max.
    Ownership: writes every byte of mask (`=`); allocates nothing.
    C twin:    mt_mask_pack_f32.
    """
    _mask_pack(mask, y, y.dtype.type(lo), y.dtype.type(hi))


@njit(**NJIT)
def mask_pack_s8(mask, q, lo, hi):
    """mask bit i = 1 iff lo < q_flat[i] < hi for an int8 output q and integer bounds, `=` overwrite.

    Forward:   q = clamp(requantized accumulator, act_min, act_max) (fused ReLU6 or the int8 range).
    Saves:     this mask instead of q; same bit layout and strict rule as mask_pack_f32 (lo, hi are the quantized
               act_min / act_max, compared after widening to int64).
    Sharp edge: from the output alone a value equal to a bound is ambiguous (in range, or clamped), so the strict
               rule blocks it. tiny-training's `_TruncateActivationRange` instead tests the pre-clamp value with
               lo <= x <= hi, passing the gradient where the unclamped value landed exactly on a bound; the two
               differ only on those elements. A forward kernel that emits the mask from its pre-clamp value would be
               needed to reproduce tiny-training's mask bit for bit.
    Layout:    mask (ceil(numel / 8),) uint8 out; q (N, H, W, C) int8, C order, bit i % 8 of byte i // 8.
    Ownership: writes every byte of mask (`=`); allocates nothing.
    C twin:    mt_mask_pack_s8.
    """
    _mask_pack(mask, q, np.int64(lo), np.int64(hi))


@njit(**NJIT)
def mask_unpack_backward_f32(dx, dy, mask):
    """dx = dy where the mask bit is set, else 0: the backward of the clamp, `=` overwrite.

    Forward:   y = clamp(x, lo, hi), with the mask saved by mask_pack_f32 / mask_pack_s8.
    So now:    dL/dx = dL/dy * [lo < y < hi].
    Layout:    dx, dy (N, H, W, C) same shape; mask (ceil(numel / 8),) uint8, bit i % 8 of byte i // 8 for
               C-order element i.
    Ownership: writes every element of dx; allocates nothing. In place allowed: dx may be dy.
    C twin:    mt_mask_unpack_backward_f32.
    """
    N, H, W, C = dx.shape
    if (dy.shape[0] != N or dy.shape[1] != H or dy.shape[2] != W or dy.shape[3] != C
            or mask.shape[0] != (N * H * W * C + 7) // 8):
        raise ValueError("mask_unpack_backward_f32: inconsistent shapes")
    i = 0
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    if (mask[i >> 3] >> (i & 7)) & 1:
                        dx[n, h, w, c] = dy[n, h, w, c]
                    else:
                        dx[n, h, w, c] = 0
                    i += 1
