"""Numba options, the threading layer, the vector width, and numeric tolerances, in one place (house style: never
sprinkled per function).

Kernels import NJIT / NJIT_PARALLEL from here. `cache=True` keeps compiled code on disk so a second
process starts warm; no `fastmath` anywhere, so fp32 kernels keep C's (non -ffast-math) operation order.

Threading layer (chosen once, when this module is imported; THREADING says which and why). A training step or an
inference runs many short parallel kernels, each between NumPy BLAS calls that have their own threads, so what a
layer costs per launch and what its idle workers do matter more than how it schedules:
  - Numba's `workqueue` layer costs 90-180 us per parallel launch on this 2-core VM, even with one thread (an empty
    prange kernel: median 175 us; GNU OpenMP: 3 us). At batch 1 most kernels do a few microseconds of work, so
    MCUNet's int8 inference spent ~8 of its 10 ms launching.
  - GNU OpenMP's workers spin after each region by default (OMP_WAIT_POLICY=active). Spinning workers and
    OpenBLAS's threads then fight for the cores: MCUNet b1 inference took 176 ms instead of 10.
  - GNU OpenMP with OMP_WAIT_POLICY=passive (idle workers sleep at once) has neither problem. Measured with 2
    threads (MCUNet, int8 inference b1 / b25; int8 49kb step b25): workqueue 10.3 / 89.9 / 127.3 ms, omp passive
    3.5 / 55.0 / 94.3 ms; with a third process spinning on one core: workqueue 22.7 / 131.7 ms, omp passive
    19.1 / 121.6 ms.
So the default here is `omp` with passive waiting. This module sets OMP_WAIT_POLICY=passive in the environment
(unless the user set it) and loads Numba's OpenMP pool (and so libgomp, which reads the variable when it loads)
right away, without starting threads. Consequences:
  - the setting is process-wide: a library that loads the same GNU OpenMP runtime later (PyTorch imported after
    microtrain) shares it and runs passive too (PyTorch's MCUNet b1 forward: 3.7 ms default, 5.7-11 ms passive);
    bench/ therefore times PyTorch in its own run (bench/README.md);
  - GNU OpenMP is not fork-safe: a process that has run a parallel kernel must not fork a child that runs one
    (Numba terminates that child with "fork() called from a process already using GNU OpenMP"). Use spawned
    processes (`evaluate --workers` does), or NUMBA_THREADING_LAYER=workqueue;
  - if an OpenMP runtime is already loaded when microtrain is imported (e.g. PyTorch imported first, with its own
    libgomp and active waiting), Numba's regions would run on it with spinning workers: `workqueue` is used then,
    and where /proc/self/maps cannot tell (not Linux), and where the OpenMP pool does not load.
NumPy's OpenBLAS threads are the other half of the same contention; microtrain.blas_env shortens their spinning
(BLAS_WAIT there says how). NUMBA_THREADING_LAYER, when set, is left to Numba and nothing here changes. Results do
not depend on the layer or the thread count (every parallel kernel has a fixed reduction order). workqueue's own
limit: it does not support parallel kernels launched concurrently from several Python threads of one process
(microtrain never does).
"""

import importlib
import os

import numba

_OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")


def _openmp_loaded():
    """True if an OpenMP runtime is mapped into this process, False if none is, None if /proc/self/maps cannot be
    read (not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            names = {os.path.basename(line.split()[-1]) for line in f if "/" in line}
    except OSError:
        return None
    return any(n.startswith(_OPENMP_RUNTIMES) for n in names)


def _choose_threading_layer():
    """Set Numba's threading layer (module docstring); returns a one-line account of the choice."""
    if "NUMBA_THREADING_LAYER" in os.environ:
        return f"{os.environ['NUMBA_THREADING_LAYER']} (NUMBA_THREADING_LAYER)"
    loaded = _openmp_loaded()
    if loaded is not False:
        numba.config.THREADING_LAYER = "workqueue"
        why = "an OpenMP runtime was already loaded" if loaded else "cannot see the loaded libraries"
        return f"workqueue ({why})"
    ours = not os.environ.get("OMP_WAIT_POLICY")  # unset or empty (libgomp would reject an empty value)
    if ours:
        os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        importlib.import_module("numba.np.ufunc.omppool")  # loads libgomp now, under the policy above; no thread
    except ImportError:
        if ours:
            del os.environ["OMP_WAIT_POLICY"]
        numba.config.THREADING_LAYER = "workqueue"
        return "workqueue (Numba's OpenMP pool did not load)"
    numba.config.THREADING_LAYER = "omp"
    return f"omp (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})"


THREADING = _choose_threading_layer()


# ---- vector width -------------------------------------------------------------------------------------------------
# LLVM tunes Intel's AVX-512 server cores (skylake-avx512 through emeraldrapids) with "prefer-256-bit": its loop
# vectoriser then emits 256-bit (ymm) code although 512-bit (zmm) instructions are there, a choice made for the
# clock drop of early AVX-512 parts. The int8 loops here are bound by instruction count, not by the clock: each
# sign extension of int8 to int32 (vpmovsxbd) is one port-5 uop on Intel (uops.info), for 8 lanes in ymm or 16 in
# zmm. Measured on a 2-vCPU Intel Xeon (emeraldrapids, Numba 0.68.1, 2 threads; bench/README.md, fifth session):
# the int8 depthwise MAC loop hot in L1, 5-9 -> 8-11 GMAC/s; batch 25, medians, three alternated process pairs,
# 256 -> 512 bits: int8 inference MCUNet 35.7-39.6 -> 29.4-34.8 ms, Proxyless 39.6-41.9 -> 27.6-33.2 ms; MCUNet's
# int8 49kb step 48.4-52.0 -> 40.3-44.3 ms; MbV2's full fp32 step 110.4-113.1 -> 88.9-110.8 ms. LLVM tunes AMD's
# znver4 without the preference (its code uses zmm already), so there the change is a no-op.
# Results are bit-identical either way: no kernel uses fastmath, so LLVM vectorises elementwise work only and
# never reorders a float reduction; integer sums are exact in any order.
# The setting is process-wide (numba.config.CPU_FEATURES, like the threading layer above): every Numba function
# compiled in this process afterwards gets the same features, and Numba's on-disk cache keys its entries on them.
_PREFER_256 = "prefer-256-bit"


def _choose_vector_width():
    """Lift LLVM's 256-bit preference on AVX-512 hosts (comment above); returns a one-line account of the choice."""
    if os.environ.get("MICROTRAIN_PREFER_256", "") not in ("", "0"):
        return "LLVM's default (MICROTRAIN_PREFER_256)"
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        return "the user's (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)"
    from numba.core import codegen, registry

    if "_toplevel_target_context" in vars(registry.cpu_target):  # Numba compiled before microtrain was imported
        return "LLVM's default (Numba had compiled before microtrain was imported)"
    features = codegen.get_host_cpu_features()  # "+avx,+avx2,-amx-bf16,...", after NUMBA_ENABLE_AVX
    if "+avx512f" not in features.split(","):
        return "LLVM's default (no AVX-512)"
    numba.config.CPU_FEATURES = f"{features},-{_PREFER_256}"
    return f"512-bit (-{_PREFER_256})"


VECTOR_WIDTH = _choose_vector_width()

NJIT = dict(cache=True, nogil=True)
NJIT_PARALLEL = dict(cache=True, nogil=True, parallel=True)

# Relative/absolute tolerance of fp32 kernels against the float64 naive references in tests.
F32_RTOL = 1e-5
F32_ATOL = 1e-5
