"""int8 residual ADD of the host "blas" backends: add_s8's output and 1-bit mask, bit for bit, faster.

Host only, no C twin: firmware mirrors add_s8 (mt_add_s8). Inference and TrainStep with backend="blas" call this
kernel for every int8 ADD whose image row (W * C elements) fits the per-thread flag row (add_host_fits), add_s8
for any other.

What makes it faster than the reference (numbers in bench/README.md):
- Each input's first stage, u = RDBPOT(SRDHM((q - zp) * 2^20, M), -s), depends only on the int8 value q, so it is
  a table of 256 int32 per input, built once per thread chunk (512 evaluations) instead of once per element.
- One image row at a time as one flat loop of W * C elements (a loop over C alone, 16-96 in MCUNet's residual
  blocks, is too short for LLVM's vectorised loop), indices from 0 (no wraparound branch; depthwise_host.py);
  the in-range flags are packed into the mask afterwards (mask.mask_pack_row).
- prange over row chunks (add_s8 is serial).
The last stage, RDBPOT(SRDHM(u_a + u_b, M_y), -s_y) + y_zp, uses the same integer primitives as add_s8 per element.
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from .mask import mask_check, mask_pack_row
from .requant import ADD_LEFT_SHIFT, clamp, rdbpot, srdhm
from .scratch import SCRATCH_W8, chunk_bounds, scratch_acc_i32, scratch_w_i8
from .threads import parallel_chunks, threads_for, threads_restore


def add_host_fits(width, channels):
    """True if add_s8_host can run a tensor with this width and channel count: one image row's in-range flags
    (W * C int8) must fit the per-thread stack row (SCRATCH_W8)."""
    return int(width) * int(channels) <= SCRATCH_W8


@njit(**NJIT_PARALLEL)
def add_s8_host(y, mask, a, b, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, y_zp, y_mult, y_shift, act_min,
                act_max):
    """add_s8 (same arguments) for the host: identical y and mask.

    Layout:    as add_s8: y, a, b (N, H, W, C) s8, same shape, C-contiguous; mask (N * H, ceil(W * C / 8)) u8 out,
               or NO_MASK; (mult, shift) pairs from requant.add_multipliers (shifts <= 0). W * C <= SCRATCH_W8
               (add_host_fits).
    Ownership: writes every element of y and, unless NO_MASK, every byte of mask; y may be a or b (each element is
               read before its own slot is written); allocates nothing (per-thread stack rows: the two 256-entry
               tables and the row's in-range flags).
    Parallel:  prange over one contiguous chunk of image rows (n, h) per thread; disjoint rows of y and mask;
               elementwise integer arithmetic, so deterministic.
    """
    N, H, W, C = y.shape
    if a.shape != y.shape or b.shape != y.shape:
        raise ValueError("add_s8_host: a, b and y must have the same shape")
    if a_shift > 0 or b_shift > 0 or y_shift > 0:
        raise ValueError("add_s8_host: shifts must be <= 0 (QuantizeMultiplierSmallerThanOneExp)")
    L = W * C
    if L > SCRATCH_W8:
        raise ValueError("add_s8_host: an image row (W * C) is longer than SCRATCH_W8; use add_s8")
    write_mask = mask_check(mask, N * H, W, C)
    yz = np.int64(y_zp)
    ey = -np.int64(y_shift)
    rows = N * H
    prev = threads_for(y.size)
    chunks = parallel_chunks(rows)
    if chunks == 1:  # one thread: no parallel launch (threads.py, "Serial calls")
        _add_chunk(y, mask, a, b, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, yz, y_mult, ey, act_min, act_max,
                   write_mask, 0, 1)
    else:
        for t in prange(chunks):
            _add_chunk(y, mask, a, b, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, yz, y_mult, ey, act_min, act_max,
                       write_mask, t, chunks)
    threads_restore(prev)


@njit(inline="always", **NJIT)
def _add_chunk(y, mask, a, b, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, yz, y_mult, ey, act_min, act_max,
               write_mask, t, chunks):
    """add_s8_host's image rows of chunk t of `chunks` (its per-thread tables and flag row live here)."""
    N, H, W, C = y.shape
    L = W * C
    lut = scratch_acc_i32()  # [0, 256): u_a of a = q - 128; [256, 512): u_b of b = q - 128 (|u| < 2^28)
    flag = scratch_w_i8()  # (SCRATCH_W8,) the row's in-range flags, 0 or 1
    for q in range(256):
        lut[q] = np.int32(rdbpot(srdhm((np.int64(q - 128) - a_zp) << ADD_LEFT_SHIFT, a_mult), -np.int64(a_shift)))
        lut[256 + q] = np.int32(rdbpot(srdhm((np.int64(q - 128) - b_zp) << ADD_LEFT_SHIFT, b_mult),
                                       -np.int64(b_shift)))
    r0, r1 = chunk_bounds(N * H, chunks, t)
    for r in range(r0, r1):
        n = r // H
        h = r - n * H
        ar = a[n, h].reshape(L)
        br = b[n, h].reshape(L)
        yr = y[n, h].reshape(L)
        for j in range(L):  # table indices are in [0, 512): unsigned, no wraparound branch
            s = np.int64(lut[np.uint32(np.int32(ar[j]) + 128)]) + np.int64(lut[np.uint32(np.int32(br[j]) + 384)])
            v = rdbpot(srdhm(s, y_mult), ey) + yz
            flag[j] = np.int8(v >= act_min) & np.int8(v <= act_max)
            yr[j] = np.int8(clamp(v, act_min, act_max))
        if write_mask:
            mask_pack_row(mask, r, flag, L)
