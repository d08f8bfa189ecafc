"""OpenBLAS's idle threads, set before NumPy loads it (microtrain/__init__.py imports this module first).

A "blas" training step or inference alternates NumPy sgemm calls (OpenBLAS's thread pool) with Numba kernels (Numba's
OpenMP pool, microtrain.config). After each call OpenBLAS's workers spin for 2^OPENBLAS_THREAD_TIMEOUT cycles before
they sleep, 2^28 by default (~0.1 s at 3 GHz): longer than the Numba kernels that follow, so a spinning BLAS worker
holds a core that Numba's second thread needs, or shares the calling thread's core. Measured on the 2-core VM
(MCUNet, batch 25, NUMBA_NUM_THREADS=2; whole calls, min of 8-15, three alternated rounds of fresh processes):

    OPENBLAS_THREAD_TIMEOUT        28 (default)   12             4
    int8 inference                 29.0-30.3 ms   21.4-21.6 ms   21.4-21.9 ms
    int8 49kb step                 39.0-39.6 ms   29.3-30.6 ms   28.8-30.0 ms
    fp32 49kb step                 34.7-34.9 ms   25.6-26.1 ms   25.9-26.5 ms
    fp32 full step                 85.7-86.9 ms   62.9-63.7 ms   63.0-64.6 ms
    int8 inference, batch 1        1.59-1.62 ms   1.72-1.97 ms   1.71-1.82 ms

So microtrain sets OPENBLAS_THREAD_TIMEOUT=12 (2^12 cycles, about a microsecond: long enough to catch sgemm calls
issued back to back from Python, short enough that the workers sleep before a Numba kernel starts), unless the user
set it. OpenBLAS reads it once, when it loads, so this only works if NumPy is imported after microtrain; BLAS_WAIT
says what happened. Like OMP_WAIT_POLICY it is process-wide (other NumPy BLAS calls in the process wake their workers
a little more often: batch 1 inference, whose GEMMs are small, is ~10 % slower). Other BLAS builds ignore it.
"""

import os
import sys

TIMEOUT = "12"  # log2 of the cycles an idle OpenBLAS worker spins before it sleeps (OpenBLAS clamps it to 4..30)


def _set_timeout():
    """Set OPENBLAS_THREAD_TIMEOUT where it can still take effect; returns a one-line account (BLAS_WAIT)."""
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        return f"OPENBLAS_THREAD_TIMEOUT={os.environ['OPENBLAS_THREAD_TIMEOUT']} (set by the user)"
    if "numpy" in sys.modules:
        return ("OpenBLAS's default (NumPy was imported before microtrain; for faster blas steps set "
                f"OPENBLAS_THREAD_TIMEOUT={TIMEOUT} before importing NumPy)")
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = TIMEOUT
    return f"OPENBLAS_THREAD_TIMEOUT={TIMEOUT}"


BLAS_WAIT = _set_timeout()
