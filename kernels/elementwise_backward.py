"""Elementwise backward pieces: gradient accumulation and scaling (per tensor and per channel), and the 1-bit clamp
(ReLU6) mask.

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
the saved in-range mask). The mask layout (byte-aligned image rows) is in kernels/mask.py; it costs
mask_bytes(N, H, W, C) = N * H * ceil(W * C / 8) bytes, about 1/8 of an int8 activation and 1/32 of an fp32 one.
In int8 mode the forward kernels write it (from the value before the clamp); in fp32 mode mask_pack_f32 derives it
from the clamped output.
C twins: mt_accumulate_f32, mt_scale_f32, mt_scale_channels_f32, mt_mask_pack_f32, mt_mask_unpack_backward_f32.
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from .mask import mask_flush_row, mask_pack_row, mask_put_bit
from .scratch import SCRATCH_W8, scratch_w_i8
from .threads import ROW_ELEMENTS, STREAM_ELEMENTS, threads_for, threads_restore


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
def scale_channels_f32(dy, s):
    """dy[..., c] *= s[c] in place, per channel: folds a per-channel scale into a gradient, `=` overwrite (in place).

    Used in int8 training mode before the backward-input kernels, which then take the frozen int8 weights: with
    w_real[co] = s_w[co] * w_int[co], sum_co dy[co] * w_real[co] = sum_co (dy[co] * s_w[co]) * w_int[co].
    Layout:    dy (N, H, W, C) float32 (or float64); s (C,) float, each s[c] cast to dy's dtype first, then one
               multiply per element. A 2-D gradient (N, C) (the fully connected head) goes through its (N, 1, 1, C)
               view (`dy.reshape(N, 1, 1, C)`, no copy), as for accumulate_f32.
    Ownership: reads s, rewrites every element of dy; allocates nothing.
    C twin:    mt_scale_channels_f32.
    """
    N, H, W, C = dy.shape
    if s.shape[0] != C:
        raise ValueError("scale_channels_f32: s must have one entry per channel")
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    dy[n, h, w, c] = dy[n, h, w, c] * dy.dtype.type(s[c])


@njit(**NJIT_PARALLEL)
def mask_pack_f32(mask, y, lo, hi):
    """mask bit (n, h, w, c) = 1 iff lo < y[n, h, w, c] < hi (the gradient passes), `=` overwrite; 1 bit per element.

    Forward:   y = clamp(x, lo, hi) in fp32 mode (ReLU6: lo = 0, hi = 6, fused in the conv kernels' act_min/act_max).
    Saves:     this mask instead of x or y. A value strictly inside (lo, hi) was not clamped, so y == x there and the
               derivative is 1; y == lo or y == hi is treated as clamped (derivative 0). On y this is exactly
               PyTorch's hardtanh/relu6 backward on x (grad passes iff lo < x < hi). NaN gives 0.
               (int8 mode: the int8 forward kernels emit their mask themselves, from the pre-clamp value.)
    Layout:    mask (N * H, ceil(W * C / 8)) uint8 out, the layout of kernels/mask.py (row n * H + h; element (w, c)
               is bit j = w * C + c at bit j % 8 of byte j // 8; a row's unused high bits are 0); y (N, H, W, C),
               C-contiguous.
               lo, hi are cast to y's dtype first, as the forward kernels cast act_min/act_max.
    Method:    per image row, the W * C in-range flags (0/1) into a per-thread stack row in one flat, branch-free
               loop, then packed eight at a time (mask.mask_pack_row); a row longer than the stack row
               (W * C > SCRATCH_W8) bit by bit. The same bytes as the bit-by-bit loop of the C twin: (25, 64, 64, 16)
               5.6 -> 0.15 ms, (25, 32, 32, 48) 4.3 -> 0.11 ms on one thread.
    Ownership: writes every byte of mask (`=`); allocates nothing.
    C twin:    mt_mask_pack_f32.
    """
    N, H, W, C = y.shape
    if mask.shape[0] != N * H or mask.shape[1] != (W * C + 7) // 8:
        raise ValueError("mask_pack_f32: mask must have shape (N * H, ceil(W * C / 8))")
    lo_t = y.dtype.type(lo)
    hi_t = y.dtype.type(hi)
    L = W * C
    prev = threads_for(y.size // STREAM_ELEMENTS)
    for r in prange(N * H):  # image rows start on a byte: rows in parallel never share one
        n = r // H
        h = r - n * H
        if L <= SCRATCH_W8:
            flag = scratch_w_i8()  # (SCRATCH_W8,) per thread
            y_r = y[n, h].reshape(L)
            for j in range(L):  # flat and branch-free: vectorised
                v = y_r[j]
                flag[j] = np.int8(v > lo_t) & np.int8(v < hi_t)  # NaN: 0
            mask_pack_row(mask, r, flag, L)
        else:
            j = 0
            byte = 0
            for w in range(W):
                for c in range(C):
                    v = y[n, h, w, c]
                    byte = mask_put_bit(mask, r, j, byte, v > lo_t and v < hi_t)
                    j += 1
            mask_flush_row(mask, r, j, byte)
    threads_restore(prev)


# Each mask byte's 8 bits as 8 lanes of 0 or all ones (bit i -> lane i): _LANES32[byte] (8 x uint32), and the same
# bytes as 4 x uint64 (lanes 2k and 2k + 1 in one word, in memory order, so the AND below is the same whatever the
# byte order). 8 KiB each, read-only constants.
_LANES32 = np.zeros((256, 8), np.uint32)
for _b in range(256):
    for _i in range(8):
        _LANES32[_b, _i] = 0xFFFFFFFF if (_b >> _i) & 1 else 0
_LANES64 = np.ascontiguousarray(_LANES32).view(np.uint64)  # (256, 4)
del _b, _i


@njit(**NJIT)
def _select_bytes(x, y, lanes, m_r, full, per):
    """x[b * per + i] = y[b * per + i] & lanes[m_r[b], i] for b < full, i < per: mask byte b selects its `per` words
    (called with a literal per, so after inlining the inner loop has a constant trip count and is vectorised)."""
    for b in range(full):
        row = lanes[m_r[b]]
        xs = x[b * per:b * per + per]
        ys = y[b * per:b * per + per]
        for i in range(per):
            xs[i] = ys[i] & row[i]


@njit(**NJIT_PARALLEL)
def mask_unpack_backward_f32(dx, dy, mask):
    """dx = dy where the mask bit is set, else 0: the backward of the clamp, `=` overwrite.

    Forward:   y = clamp(x, lo, hi), with the mask saved by an int8 forward kernel (bit = lo <= pre-clamp <= hi) or
               by mask_pack_f32 (bit = lo < y < hi).
    So now:    dL/dx = dL/dy * bit.
    Layout:    dx, dy (N, H, W, C) same shape, C-contiguous; mask (N * H, ceil(W * C / 8)) uint8, the layout of
               kernels/mask.py.
    Method:    a select, not a product (dy * 0 would give -0.0 for negative dy and NaN for inf): for float32, each
               mask byte selects 8 elements at once as a bitwise AND of their bits with the byte's lanes of 0 or
               all ones (_LANES64: two elements per uint64 where both rows start on 8 bytes, else _LANES32), the
               row's last W * C % 8 elements bit by bit; other dtypes (float64 in the gradient checks) bit by bit.
               (25, 64, 64, 16) in place, one thread: 1.29 ms with a branch per element, 0.43-0.47 ms (0.68 with
               _LANES32 only).
    Ownership: writes every element of dx; allocates nothing. In place allowed: dx may be dy (each element is
               read before it is written, by the same thread).
    C twin:    mt_mask_unpack_backward_f32 (bit by bit; the same values).
    """
    N, H, W, C = dx.shape
    if (dy.shape[0] != N or dy.shape[1] != H or dy.shape[2] != W or dy.shape[3] != C
            or mask.shape[0] != N * H or mask.shape[1] != (W * C + 7) // 8):
        raise ValueError("mask_unpack_backward_f32: inconsistent shapes")
    L = W * C
    full = L >> 3  # whole mask bytes per row
    prev = threads_for(dy.size // ROW_ELEMENTS)
    for r in prange(N * H):  # rows in parallel: disjoint elements of dx (in place: each reads only its own dy)
        n = r // H
        h = r - n * H
        m_r = mask[r]
        if dx.itemsize == 4:
            x_u = dx[n, h].reshape(L).view(np.uint32)
            y_u = dy[n, h].reshape(L).view(np.uint32)
            if full > 0 and (x_u.ctypes.data | y_u.ctypes.data) & 7 == 0:
                _select_bytes(x_u[:full * 8].view(np.uint64), y_u[:full * 8].view(np.uint64), _LANES64, m_r, full, 4)
            else:
                _select_bytes(x_u, y_u, _LANES32, m_r, full, 8)
            for j in range(full * 8, L):  # the row's last, partial byte
                x_u[j] = y_u[j] & _LANES32[m_r[j >> 3], j & 7]
        else:
            j = 0
            for w in range(W):
                for c in range(C):
                    if (m_r[j >> 3] >> (j & 7)) & 1:
                        dx[n, h, w, c] = dy[n, h, w, c]
                    else:
                        dx[n, h, w, c] = 0
                    j += 1
    threads_restore(prev)
