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


# ---- OpenBLAS's thread count, for batch-split runs (microtrain/batch_split.py) ------------------------------------
# OpenBLAS exports openblas_get_num_threads / openblas_set_num_threads; NumPy's wheels rename the library's symbols
# (scipy-openblas: a "scipy_" prefix and, for the 64-bit integer build, a "64_" suffix). Tried in this order.
_THREAD_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                   ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                   ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                   ("openblas_get_num_threads", "openblas_set_num_threads"))


class BlasThreads:
    """get() / set(n) of the OpenBLAS library NumPy links (process-wide, like OpenBLAS's own setting)."""

    def __init__(self, path, get_fn, set_fn):
        self.path = path
        self._get = get_fn
        self._set = set_fn

    def get(self):
        return int(self._get())

    def set(self, n):
        self._set(int(n))


def _mapped_openblas():
    """Paths of the OpenBLAS libraries mapped into this process, NumPy's own first (a wheel vendors it beside
    numpy, e.g. numpy.libs/; SciPy may map another), or [] where /proc/self/maps cannot be read."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line and "openblas" in line.lower()}
    except OSError:
        return []
    return sorted(paths, key=lambda p: ("numpy" not in p, p))


_BLAS_THREADS = []  # [BlasThreads or None], found once


def blas_threads():
    """The BlasThreads of NumPy's OpenBLAS, or None (another BLAS, no /proc, or symbols not found). Looked up once,
    after NumPy has loaded its BLAS (NumPy is imported here if it was not)."""
    if not _BLAS_THREADS:
        import ctypes

        import numpy  # noqa: F401  (its BLAS must be mapped before the lookup)
        found = None
        for path in _mapped_openblas():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get_name, set_name in _THREAD_SYMBOLS:
                if hasattr(lib, get_name) and hasattr(lib, set_name):
                    get_fn, set_fn = getattr(lib, get_name), getattr(lib, set_name)
                    get_fn.restype, get_fn.argtypes = ctypes.c_int, []
                    set_fn.restype, set_fn.argtypes = None, [ctypes.c_int]
                    found = BlasThreads(path, get_fn, set_fn)
                    break
            if found is not None:
                break
        _BLAS_THREADS.append(found)
    return _BLAS_THREADS[0]
