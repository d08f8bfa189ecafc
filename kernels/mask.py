"""The 1-bit clamp mask: its layout, its size, and the "no mask" argument of the int8 forward kernels.

A clamp (ReLU6, or the int8 range itself) passes the gradient only where the value before clamping lay inside the
range (tiny-training's `_TruncateActivationRange` backward; MIT tiny-training §3.5(e), TinyEngine USE_BIT_MASK), so
the backward needs 1 bit per element instead of the activation. Layout, used by every producer and consumer
(`conv2d_s8`, `depthwise_conv_s8`, `pointwise_conv_s8`, `add_s8`, `elementwise_backward.mask_pack_f32`,
`elementwise_backward.mask_unpack_backward_f32`):

    mask: uint8, shape (N * H, ceil(W * C / 8)) for a tensor (N, H, W, C).
    Row r = n * H + h holds the image row (n, h); element (w, c) of that row is bit j = w * C + c, stored in
    byte j // 8 at bit j % 8 (little-endian within the byte). The unused high bits of a row's last byte are 0.

Each row starts on a byte boundary, so kernels that run image rows in parallel never write the same byte.
A mask with shape[0] == 0 (`NO_MASK`) tells a forward kernel not to write one (inference).
"""

import numpy as np
from numba import njit
from numba.core import config

from microtrain.config import NJIT

# "Don't write a mask": a (0, 0) uint8 array, the same Numba type as a real mask (2-D uint8), so inference and
# training share one compiled kernel. It has no elements, so nothing can ever be written into it.
NO_MASK = np.zeros((0, 0), np.uint8)


def mask_shape(n, h, w, c):
    """Shape of the 1-bit mask of an (n, h, w, c) tensor: (n * h, ceil(w * c / 8)), one byte-aligned row per image
    row."""
    return (int(n) * int(h), (int(w) * int(c) + 7) // 8)


def mask_bytes(n, h, w, c):
    """Bytes of that mask (what the planner reserves): n * h * ceil(w * c / 8). At most n * h bytes more than
    ceil(n * h * w * c / 8), the price of byte-aligned rows."""
    rows, cols = mask_shape(n, h, w, c)
    return rows * cols


# ----------------------------------------------------------------------------------------------
# Bit writers, called by the forward kernels once per output element, in row order (jitted)
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def mask_put_bit(mask, r, j, byte, bit):
    """Set bit j % 8 of the pending byte when `bit`; store the byte as mask[r, j // 8] once it is full (j % 8 == 7).

    Returns the pending byte (0 after a store). Called for j = 0, 1, 2, ... of row r in order; finish the row with
    mask_flush_row. Plain byte stores, so rows written by parallel iterations never share a byte.
    """
    if bit:
        byte |= 1 << (j & 7)
    if (j & 7) == 7:
        mask[r, j >> 3] = np.uint8(byte)
        return 0
    return byte


@njit(**NJIT)
def mask_flush_row(mask, r, j, byte):
    """Store the last, partial byte of row r after j bits (its unused high bits are 0); nothing if j % 8 == 0."""
    if (j & 7) != 0:
        mask[r, j >> 3] = np.uint8(byte)


@njit(**NJIT)
def mask_check(mask, rows, w, c):
    """True if a mask is to be written: mask is NO_MASK (shape[0] == 0) -> False; a (rows, ceil(w * c / 8)) mask ->
    True; any other shape raises ValueError."""
    if mask.shape[0] == 0:
        return False
    if mask.shape[0] != rows or mask.shape[1] != (w * c + 7) // 8:
        raise ValueError("mask must have shape (N * H, ceil(W * C / 8)), or be NO_MASK")
    return True


@njit(**NJIT)
def mask_zero_row(mask, r):
    """Clear row r of the mask (before mask_or_bit writes it in any order)."""
    for b in range(mask.shape[1]):
        mask[r, b] = 0


@njit(**NJIT)
def mask_or_bit(mask, r, j, bit):
    """Set bit j of row r when `bit` (random order; the row must have been cleared with mask_zero_row). For kernels
    that finish a row's elements out of order (blocks of output channels); rows still never share a byte."""
    if bit:
        mask[r, j >> 3] |= np.uint8(1 << (j & 7))


# Eight 0/1 flag bytes read as one little-endian uint64 u = sum_i f_i << 8i, times this constant: bits 56-63 of
# the (wrapping) product are sum_i f_i << i, the mask byte (bit i = flag i): the partial product of flag i and
# the constant's byte 7 - i lands on bit 56 + i, and no two partial products share a bit below 64, so nothing
# carries into the top byte (tests/test_grad_kernels.py checks all 256 patterns).
PACK8 = np.uint64(0x0102040810204080)


@njit(**NJIT)
def _mask_pack_tail(mask, r, flag, full, n):
    """The last, partial byte of row r: flags full * 8 .. n - 1, bit by bit."""
    byte = 0
    for j in range(full << 3, n):
        byte |= np.int64(flag[j]) << (j & 7)
    mask[r, full] = np.uint8(byte)

if config.DISABLE_JIT:
    def mask_pack_row(mask, r, flag, n):
        """Pure Python (NUMBA_DISABLE_JIT): the same bytes as the jitted version below, bit by bit (NumPy warns on
        the wrapping uint64 product the jitted version relies on)."""
        full = n >> 3
        for b in range(full):
            byte = 0
            for i in range(8):
                byte |= int(flag[(b << 3) + i]) << i
            mask[r, b] = np.uint8(byte)
        if n & 7:
            _mask_pack_tail(mask, r, flag, full, n)
else:
    @njit(**NJIT)
    def mask_pack_row(mask, r, flag, n):
        """Write row r of the mask from n in-range flags: bit j = flag[j] (each 0 or 1), j < n; the unused high bits
        of the last byte are 0. flag: int8 (>= n,), e.g. a kernel's per-thread stack row. For kernels that first
        compute a row's flags in a branch-free (vectorised) loop, then pack them: eight flags at a time as one
        uint64 times PACK8 (0.074 ns per flag on one thread for rows of 2048, 0.25 ns bit by bit)."""
        full = n >> 3
        if full > 0:
            words = flag[:full << 3].view(np.uint64)
            for b in range(full):
                mask[r, b] = np.uint8((words[b] * PACK8) >> np.uint64(56))
        if n & 7:
            _mask_pack_tail(mask, r, flag, full, n)
