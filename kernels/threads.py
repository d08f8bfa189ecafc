"""Small kernels run on the calling thread: waking the pool costs more than their work.

Every parallel kernel brackets its prange loop with

    prev = threads_for(work)      # work: element operations (MACs for convs, elements otherwise; streaming
                                  # kernels: elements // STREAM_ELEMENTS)
    chunks = parallel_chunks(n)   # only a kernel that gives each thread one contiguous chunk of n items
    for r in prange(...): ...
    threads_restore(prev)

so a call whose work is below SERIAL_WORK runs its loop on the calling thread alone (the thread-local parallel
width Numba's set_num_threads sets: no worker is woken) and a larger one on every thread the caller allows.
Results do not depend on the thread count (every parallel kernel has a fixed reduction order), so this changes
time only.

Why (2-thread VM, GNU OpenMP with passive waiting, microtrain.config): a parallel launch that wakes a sleeping
worker costs ~100 us (an empty prange kernel: median 98 us with 2 threads, 1.7 us with 1), while at batch 1 most
kernels do 1-50 us of work. MCUNet's int8 inference at b1 went 3.9-4.7 ms -> 2.8-3.2 ms with the bound at 2^16
elements of the largest array (all three models alike; b25 unchanged within this VM's noise). SERIAL_WORK = 2^17
element operations is ~40-130 us of serial work at 0.3-1 ns each, about what one wake-up costs here; on a machine
with faster wake-ups a lower bound would pay more, a higher one would lose at most a wake-up's worth per call.
Firmware runs single-threaded: its C twins have no counterpart of this.

Serial calls. A prange loop launched at width 1 still goes through the threading layer's scheduler: ~1.2-1.7 us per
call (requantize_acc_f32_s8 on one 8-channel pixel: 1.8-2.4 us as a prange kernel, 0.69 us with the loop called
directly), and batch-1 inference makes ~80 such calls. So the kernels most called at batch 1 (widen, im2col,
requantize, the host depthwise and add) put their chunk body in a plain function and call it directly when
parallel_chunks gives one chunk, else once per chunk from the prange loop: the same code, so the same results.
Those chunk functions are inlined in Numba's IR (inline="always"): as separate functions their bodies were
compiled and optimised three times (alone, in the kernel, in the prange loop's outlined body), which took the cold
compile of bench/compile_time.py's kernels from 45.7 s to 59.5 s; inlined, 52.0 s.

The width is read and set through the threading layer's C entry points `get_num_threads` / `set_num_threads` (the
symbols Numba's own parfor lowering calls), not numba.get_num_threads / set_num_threads inside the kernels: those
go through ctypes pointers, which Numba cannot cache.
"""

from llvmlite import ir
from numba import __version__ as numba_version
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from microtrain.config import NJIT

SERIAL_WORK = 1 << 17  # element operations below which a kernel's loop stays on the calling thread
# Elements per unit of work for the streaming kernels (widen_s8_f32, bias_add_clamp_f32, mask_pack_f32: one load,
# a compare or convert, one store; clamp_f32_backward counts half as many): at ~0.07-0.1 ns per element they only
# gain from a second thread above ~1.5-2 M elements on the 2-core VM (below, the wake-up costs more: e.g. widening
# 524,288 elements took 34.6 us on one thread and 77.3 us on two; 3,276,800 took 215 and 156 us).
STREAM_ELEMENTS = 16
# Elements per unit for the row kernels at ~0.25-0.6 ns per element on one thread (the float64 requantization with
# or without its mask, mask_unpack_backward_f32): a second thread pays from ~250-400 k elements (medians of 300 calls,
# one thread / two: requantize_acc_f32_s8_mask 196,608 elements 116 / 128 us, 262,144 154 / 118 us;
# requantize_acc_f32_s8 262,144 81 / 85 us, 524,288 162 / 128 us; mask_unpack_backward_f32 196,608 76 / 120 us,
# 393,216 150 / 119 us), so they pass elements // ROW_ELEMENTS (a threshold of 262,144 elements).
ROW_ELEMENTS = 2
# MACs per unit for the fp32 depthwise kernels (the host forward and stride-1 input gradient of depthwise_host.py at
# ~0.1 ns per MAC on one thread; the loop kernels' strided forward, input gradient and weight gradient at ~0.15-0.25):
# a second thread pays from ~1 M MACs (medians of 150 calls, one thread / two: host forward 3x3 (1, 32, 32, 48)
# 0.44 M MACs 52 / 74 us, (1, 64, 64, 32) 1.18 M 143 / 138 us, 5x5 (1, 32, 32, 48) 1.23 M 173 / 112 us; host input
# gradient 3x3 (1, 64, 64, 16) 0.59 M 63 / 75 us; loop weight gradient (1, 64, 64, 16) 3x3 0.59 M 154 / 212 us,
# (4, 64, 64, 16) 2.36 M 610 / 384 us; loop strided forward (1, 8, 8, 240) 7x7 0.19 M 13 / 63 us, (4, 32, 32, 48) 7x7
# 2.41 M 412 / 252 us), so they pass MACs // DW_F32_MACS (a threshold of 1,048,576 MACs).
DW_F32_MACS = 8


def _find_internals():
    """The three Numba internals this module needs (as Numba 0.68 has them), or the reason they are not there.

    _launch_threads starts the threading layer (so its C symbols exist), typed_passes._reload_parfors is the hook a
    prange kernel's cached library runs when it is loaded, and CodeLibrary._reload_init is where that hook is
    registered. pyproject allows any numba >= 0.59, so a later Numba may rename them: then the kernels keep working
    with every loop on the caller's width (the behaviour before this module) instead of failing at import. (A
    Numba upgrade also invalidates Numba's on-disk cache, so kernels compiled with the other variant are not
    reused.)"""
    try:
        from numba.core.registry import cpu_target
        from numba.core.typed_passes import _reload_parfors
        from numba.np.ufunc.parallel import _launch_threads
        library = cpu_target.target_context.codegen().create_library("microtrain_threads_probe")
        if not isinstance(getattr(library, "_reload_init", None), set):
            return None, None, "numba %s: CodeLibrary has no _reload_init set" % numba_version
    except (ImportError, AttributeError) as e:  # a renamed module or function
        return None, None, "numba %s: %s" % (numba_version, e)
    return _launch_threads, _reload_parfors, ""


_launch_threads, _reload_parfors, MISSING = _find_internals()
# MISSING: "" when small kernels run on the calling thread, else why they cannot (threads_for is then a no-op)


def _needs_layer(context):
    """The threading layer's symbols must be registered with LLVM before this code links against them: launch it
    now (compiling), and when the code is loaded from Numba's cache (what Numba does for a prange kernel's
    library), else a warm process calling threads_for before any parallel kernel would jump to an unresolved
    symbol."""
    _launch_threads()
    context.active_code_library._reload_init.add(_reload_parfors)


@intrinsic
def _get_width(typingctx):
    def codegen(context, builder, signature, args):
        _needs_layer(context)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "get_num_threads")
        return builder.sext(builder.call(fn, []), ir.IntType(64))
    return types.int64(), codegen


@intrinsic
def _set_width(typingctx, n):
    def codegen(context, builder, signature, args):
        _needs_layer(context)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                                            "set_num_threads")
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32))])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


# The thread count as of import, for where the width cannot be read at run time (JIT off, or MISSING: there it is
# baked into cached kernels, as before parallel_chunks). Never used otherwise: Numba freezes a global into the
# compiled code, so a kernel first compiled by a process with NUMBA_NUM_THREADS=1 would split its work into one
# chunk in every later process that loads it from the cache (its loop then ran on one thread at any width:
# requantizing MCUNet's (102400, 32) 1x1 output at b25 took 1.52 ms on 2 threads instead of 0.80, and its int8
# inference 30 ms instead of 21.5).
STATIC_WIDTH = max(1, int(config.NUMBA_NUM_THREADS))

if config.DISABLE_JIT:
    def threads_for(work):
        """Pure Python (NUMBA_DISABLE_JIT): prange is range, there is no width to set."""
        return 0

    def threads_restore(prev):
        """Pure Python: nothing to restore."""

    def parallel_chunks(limit):
        """Pure Python: STATIC_WIDTH chunks (at most limit, at least 1), so the chunked loops run as compiled."""
        return max(1, min(STATIC_WIDTH, limit))
elif MISSING:
    @njit(**NJIT)
    def threads_for(work):
        """Numba's internals are not there (MISSING says why): every loop runs on the caller's width."""
        return 0

    @njit(**NJIT)
    def threads_restore(prev):
        """Nothing to restore (see threads_for)."""

    @njit(**NJIT)
    def parallel_chunks(limit):
        """No width to read (MISSING): STATIC_WIDTH chunks, at most limit, at least 1."""
        return max(1, min(STATIC_WIDTH, limit))
else:
    @njit(**NJIT)
    def threads_for(work):
        """Set this thread's parallel width for the following prange loop: 1 if work < SERIAL_WORK, else unchanged.
        Returns the width to restore with threads_restore."""
        prev = _get_width()
        if work < SERIAL_WORK and prev > 1:
            _set_width(1)
        return prev

    @njit(**NJIT)
    def threads_restore(prev):
        """Restore the width threads_for returned (after the prange loop)."""
        if _get_width() != prev:
            _set_width(prev)

    @njit(**NJIT)
    def parallel_chunks(limit):
        """Chunks for a prange loop that gives each thread one contiguous chunk: the width the loop will run at (call
        it after threads_for, so a serial call gets one chunk), at most limit, at least 1. Read at run time, never
        from a global (see STATIC_WIDTH). Results never depend on it: every chunked kernel keeps a fixed
        per-element order."""
        return max(1, min(_get_width(), limit))
