"""int8 residual ADD of the host "blas" backends: add_s8's output and 1-bit mask, bit for bit, by table lookup.

Host only, no C twin: firmware mirrors add_s8 (mt_add_s8). Inference, TrainStep (backend="blas") and the Fisher
pass bind every int8 ADD through bind_add_s8: add_s8_host where its image row (W * C elements) fits the per-thread
flag row (add_host_fits), add_s8 for any other.

Why a table: an ADD's output element and its mask bit depend on nothing but the two int8 input values at that
position (the zero points, multipliers, shifts and clamp bounds are the model's fixed activation parameters: they
never train). So the whole op is a function of 2^16 input pairs. add_table evaluates it once per distinct parameter
set by running the reference kernel add_s8 itself over the 256 x 256 grid of pairs, and stores
table[((a + 128) << 8) | (b + 128)] = (bit << 8) | (y + 128): y + 128 in the low byte, the in-range flag in bit 8,
int16, 128 KiB of host memory per parameter set. Every entry is add_s8's own output, so lookups reproduce it bit for bit
by construction; the tests check add_s8_host against tests/naive.py's independent TFLM AddFunc as well.
Per element the kernel then does two input loads, one table load (the table stays in L2) and two stores, in place of
add_s8_host's former per-element int64 SRDHM / RDBPOT of the sum (two 256-entry tables for the inputs' first
stage). Measured (min of 30 calls, 2-core VM): (25, 64, 64, 16) with a mask 4.0 -> 1.1 ms on one thread,
1.26 -> 0.60 ms on two; (1, 32, 32, 16) 41 -> 14 us.
Rows are one flat loop of W * C elements from index 0 (no wraparound branch: depthwise_host.py), flags packed into
the mask afterwards (mask.mask_pack_row); prange over row chunks.
"""

import numpy as np
from numba import njit, prange

from microtrain.arena import read_only
from microtrain.config import NJIT, NJIT_PARALLEL

from .add import add_s8
from .mask import mask_check, mask_pack_row, mask_shape
from .scratch import SCRATCH_W8, chunk_bounds, scratch_w_i8
from .threads import parallel_chunks, threads_for, threads_restore

ADD_TABLE_SIZE = 1 << 16  # one entry per (a, b) pair of int8 values


def add_host_fits(width, channels):
    """True if add_s8_host can run a tensor with this width and channel count: one image row's in-range flags
    (W * C int8) must fit the per-thread stack row (SCRATCH_W8)."""
    return int(width) * int(channels) <= SCRATCH_W8


def add_table(tables, a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, y_zp, y_mult, y_shift, act_min, act_max):
    """The read-only (65536,) int16 lookup table of an int8 ADD with these parameters (add_s8's, after its tensors):
    entry ((a + 128) << 8) | (b + 128) = (in_range << 8) | (y + 128), as add_s8 computes y and its mask bit for
    inputs a, b. Built once per distinct parameter set and kept in `tables` (a dict the caller owns and counts
    as host memory: 128 KiB per entry). Parameters add_s8 refuses (a positive shift) raise its ValueError."""
    key = tuple(int(v) for v in (a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, y_zp, y_mult, y_shift, act_min,
                                 act_max))
    if key not in tables:
        grid = np.arange(-128, 128).astype(np.int8)  # index i holds the int8 value i - 128
        a = np.repeat(grid, 256).reshape(1, 256, 256, 1)  # row: a + 128
        b = np.tile(grid, 256).reshape(1, 256, 256, 1)  # column: b + 128
        y = np.empty((1, 256, 256, 1), np.int8)
        mask = np.empty(mask_shape(1, 256, 256, 1), np.uint8)  # (256, 32): row a, bit b (mask.py's layout)
        add_s8(y, mask, a, b, *key)
        bits = np.unpackbits(mask, axis=1, bitorder="little")[:, :256].reshape(ADD_TABLE_SIZE)
        table = (bits.astype(np.int16) << 8) | (y.reshape(ADD_TABLE_SIZE).astype(np.int16) + 128)
        tables[key] = read_only(table)
    return tables[key]


def bind_add_s8(tables, y, mask, a, b, params):
    """(kernel, args) of an int8 ADD, as every host caller (Inference, TrainStep, FisherPass) binds it: add_s8_host
    with the table of params (add_s8's parameters after its tensors; built once into `tables`, which the caller
    counts as host memory) where the image row fits (add_host_fits), else the loop kernel add_s8."""
    if not add_host_fits(y.shape[2], y.shape[3]):
        return add_s8, (y, mask, a, b) + tuple(params)
    return add_s8_host, (y, mask, a, b, add_table(tables, *params))


@njit(**NJIT_PARALLEL)
def add_s8_host(y, mask, a, b, table):
    """add_s8 for the host, from the parameters' lookup table: identical y and mask.

    Layout:    y, a, b (N, H, W, C) s8, same shape, C-contiguous; mask (N * H, ceil(W * C / 8)) u8 out, or NO_MASK;
               table (65536,) int16 = add_table(...) of the ADD's parameters. W * C <= SCRATCH_W8 (add_host_fits).
    Ownership: writes every element of y and, unless NO_MASK, every byte of mask; y may be a or b (each element is
               read before its own slot is written); allocates nothing (a per-thread stack row of in-range flags).
    Parallel:  prange over one contiguous chunk of image rows (n, h) per thread; disjoint rows of y and mask;
               lookups, so deterministic.
    """
    N, H, W, C = y.shape
    if a.shape != y.shape or b.shape != y.shape:
        raise ValueError("add_s8_host: a, b and y must have the same shape")
    if table.shape[0] != ADD_TABLE_SIZE:
        raise ValueError("add_s8_host: the table must have 65536 entries (add_table)")
    L = W * C
    if L > SCRATCH_W8:
        raise ValueError("add_s8_host: an image row (W * C) is longer than SCRATCH_W8; use add_s8")
    write_mask = mask_check(mask, N * H, W, C)
    rows = N * H
    prev = threads_for(y.size)
    chunks = parallel_chunks(rows)
    if chunks == 1:  # one thread: no parallel launch (threads.py, "Serial calls")
        _add_chunk(y, mask, a, b, table, write_mask, 0, 1)
    else:
        for t in prange(chunks):
            _add_chunk(y, mask, a, b, table, write_mask, t, chunks)
    threads_restore(prev)


@njit(inline="always", **NJIT)
def _add_chunk(y, mask, a, b, table, write_mask, t, chunks):
    """add_s8_host's image rows of chunk t of `chunks` (its per-thread flag row lives here)."""
    N, H, W, C = y.shape
    L = W * C
    flag = scratch_w_i8()  # (SCRATCH_W8,) the row's in-range flags, 0 or 1
    r0, r1 = chunk_bounds(N * H, chunks, t)
    for r in range(r0, r1):
        n = r // H
        h = r - n * H
        ar = a[n, h].reshape(L)
        br = b[n, h].reshape(L)
        yr = y[n, h].reshape(L)
        for j in range(L):  # the index is in [0, 65536): unsigned, no wraparound branch
            v = table[(np.uint32(np.int32(ar[j]) + 128) << 8) | np.uint32(np.int32(br[j]) + 128)]
            yr[j] = np.int8((v & 0xFF) - 128)  # the low byte holds y + 128
            flag[j] = np.int8(v >> 8)
        if write_mask:
            mask_pack_row(mask, r, flag, L)
