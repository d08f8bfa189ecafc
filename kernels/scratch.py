"""Fixed-size per-thread scratch on the stack, for kernels that vectorise across channels.

A jitted kernel may not allocate (tests/test_kernels_noalloc.py counts NRT allocations), yet vectorising an NHWC
kernel across channels needs a row of accumulators (int32 for int8 MACs) or a transposed weight tile. These helpers
give a kernel such a buffer as a C stack array: `alloca` in the entry block of the function that calls them (for a
`prange` loop: the outlined parallel body, so one buffer per thread, reused by every iteration that thread runs), no
heap, no NRT MemInfo. The C twin declares the same array on its stack (`int32_t acc[SCRATCH_ACC]`).

Sizes are compile-time constants; a kernel handles longer rows in blocks of at most that many channels. With
NUMBA_DISABLE_JIT=1 the helpers return small NumPy arrays (plain Python has no stack arrays; the no-allocation
contract is about the compiled kernels).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from microtrain.config import NJIT

# Elements of each scratch kind. SCRATCH_ACC accumulators (int32 or float32: 16 KiB) and a SCRATCH_W-element weight
# tile (int8: 64 KiB; float32: 16,384 elements = 64 KiB): ~80 KiB of stack per thread at most, far below the 2-8 MiB
# of a worker thread's stack.
SCRATCH_ACC = 4096
# Channels per explicitly unrolled inner block (8 int32 / float32 = one AVX2 register): loops with a runtime trip
# count this short are left scalar by LLVM's loop vectoriser, a constant-trip block is vectorised as straight code.
LANES = 8
SCRATCH_W8 = 65536
SCRATCH_WF = 16384


def _alloca_intrinsic(nbtype, lltype, n):
    @intrinsic
    def _alloca(typingctx):
        def codegen(context, builder, signature, args):
            # entry block, once per function call. `alloca T, n` (an array allocation), not `alloca [n x T]`:
            # LLVM's SROA tries to split an aggregate alloca into its elements, which for the 65,536-element int8
            # tile made pointwise_conv_s8 take 221 s to compile cold (8 s like this)
            return cgutils.alloca_once(builder, lltype, size=context.get_constant(types.intp, n))
        return types.CPointer(nbtype)(), codegen
    return _alloca


@intrinsic
def _acc_like(typingctx, arr):
    dtype = arr.dtype

    def codegen(context, builder, signature, args):
        lltype = context.get_data_type(dtype)
        return cgutils.alloca_once(builder, lltype, size=context.get_constant(types.intp, SCRATCH_ACC))
    return types.CPointer(dtype)(arr), codegen


_acc_i32 = _alloca_intrinsic(types.int32, ir.IntType(32), SCRATCH_ACC)
_acc_f32 = _alloca_intrinsic(types.float32, ir.FloatType(), SCRATCH_ACC)
_w_i8 = _alloca_intrinsic(types.int8, ir.IntType(8), SCRATCH_W8)
_w_f32 = _alloca_intrinsic(types.float32, ir.FloatType(), SCRATCH_WF)

if config.DISABLE_JIT:
    def scratch_acc_i32():
        """(SCRATCH_ACC,) int32 stack array, contents undefined."""
        return np.empty(SCRATCH_ACC, np.int32)

    def scratch_acc_f32():
        """(SCRATCH_ACC,) float32 stack array, contents undefined."""
        return np.empty(SCRATCH_ACC, np.float32)

    def scratch_acc_like(a):
        """(SCRATCH_ACC,) stack array of a's dtype (float32 kernels, float64 gradient checks), contents undefined."""
        return np.empty(SCRATCH_ACC, a.dtype)

    def scratch_w_i8():
        """(SCRATCH_W8,) int8 stack array, contents undefined."""
        return np.empty(SCRATCH_W8, np.int8)

    def scratch_w_f32():
        """(SCRATCH_WF,) float32 stack array, contents undefined."""
        return np.empty(SCRATCH_WF, np.float32)
else:
    # inline='always': the alloca must land in the caller's frame, not in a helper frame that returns.
    @njit(inline="always", **NJIT)
    def scratch_acc_i32():
        return numba.carray(_acc_i32(), SCRATCH_ACC)

    @njit(inline="always", **NJIT)
    def scratch_acc_f32():
        return numba.carray(_acc_f32(), SCRATCH_ACC)

    @njit(inline="always", **NJIT)
    def scratch_acc_like(a):
        return numba.carray(_acc_like(a), SCRATCH_ACC)

    @njit(inline="always", **NJIT)
    def scratch_w_i8():
        return numba.carray(_w_i8(), SCRATCH_W8)

    @njit(inline="always", **NJIT)
    def scratch_w_f32():
        return numba.carray(_w_f32(), SCRATCH_WF)


@njit(**NJIT)
def chunk_bounds(total, chunks, t):
    """[lo, hi) of chunk t when `total` items are split into `chunks` contiguous chunks as evenly as possible."""
    return (total * t) // chunks, (total * (t + 1)) // chunks
