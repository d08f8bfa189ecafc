"""Host only: a batch run as concurrent groups of whole images, one Python thread per group.

Why. Within one kernel, microtrain's host kernels split work over Numba's threads, and every parallel launch
wakes a sleeping worker (~50-100 us on the 2-core VM, kernels/threads.py), between kernels that take 0.1-1 ms at
batch 25; NumPy's sgemm splits the same way over OpenBLAS's threads. Images of a batch are independent in a
forward pass, so instead each thread can run the whole network on its own images, serially, with no launch and no
hand-over between layers: one hand-over per run. Measured (Inference, int8, 2 threads, median of 30 runs, one
process each): MCUNet b25 18.2-19.5 -> 15.1-15.3 ms, MbV2 b25 18.2-18.9 -> 14.7-14.8, Proxyless b25 18.2-21.7 ->
15.2-15.4; MCUNet b2 3.8 -> 1.9 ms, b8 7.4 -> 5.1 (bench/README.md has the benchmark runs).

Same results: every group runs the same kernels on its images; int8 inference is integer arithmetic (exact
whatever the grouping, and the "blas" GEMMs are exact: kernels/gemm_io.py), so the output is the same bits.

Training steps (microtrain/train.py, "Batch split") run forward and backward per group. Their groups are part of
the arithmetic (a gradient is summed per group, then over the groups), so their count is a constant by default
(STEP_GROUPS, resolve_step_groups), not the thread count, and where the groups cannot run concurrently they run in
turn on the calling thread (run_in_turn_or_concurrently): the same bits either way.

Conditions for the default (`available`; auto_groups splits only where they hold):
  - Numba's threading layer must allow parallel kernels launched from several threads at once: "omp" (what
    microtrain.config picks) or "tbb". The "workqueue" layer aborts the process on concurrent launches, so there
    no split runs at all, even when asked for (`unsafe`). Each group thread runs its kernels at width 1
    (numba.set_num_threads is per thread), so most take their serial path and launch nothing;
  - NumPy's BLAS must be OpenBLAS with its thread-count entry points reachable (blas_env.blas_threads): during a
    split run OpenBLAS is set to one thread (each group's sgemm runs on its own thread), then restored. Without it
    two groups' multi-threaded sgemms would oversubscribe the cores (an explicit split still runs, slower);
  - the JIT is on (with NUMBA_DISABLE_JIT the kernels are Python, which holds the GIL: an explicit split runs,
    the tests use that, but nothing is gained).
Process-wide effects while a split run is in flight: OpenBLAS runs single-threaded for every caller. A split run is
not reentrant (one at a time: a lock serialises them).
"""

import os
import queue
import threading

import numba

from microtrain import blas_env
from microtrain.errors import InputError
from microtrain.config import THREADING  # noqa: F401  (chooses Numba's threading layer before it is read here)

SPLIT_LAYERS = ("omp", "tbb", "threadsafe")  # numba.config.THREADING_LAYER values that allow concurrent launches


def threading_layer():
    """The threading layer Numba runs (or, before its first parallel launch, the one it is configured to pick)."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return str(numba.config.THREADING_LAYER)


def layer_allows_split():
    """True if Numba's threading layer runs parallel kernels launched from several threads at once."""
    return threading_layer() in SPLIT_LAYERS


def unsafe():
    """'' if groups may run concurrently here, else why not: the "workqueue" layer aborts the process when parallel
    kernels are launched from two threads at once (with the JIT off nothing is launched, so anything goes)."""
    if numba.config.DISABLE_JIT or layer_allows_split():
        return ""
    return f"Numba's threading layer is {threading_layer()!r}; concurrent kernel launches need 'omp' or 'tbb'"


def available():
    """'' if batch splitting pays here (the default, auto_groups, uses it), else why not (module docstring,
    "Conditions")."""
    if numba.config.DISABLE_JIT:
        return "the JIT is off (NUMBA_DISABLE_JIT): kernels are Python and hold the GIL"
    if unsafe():
        return unsafe()
    if blas_env.blas_threads() is None:
        return "NumPy's BLAS thread count cannot be set (not OpenBLAS, or its entry points were not found)"
    return ""


def auto_groups(batch):
    """Groups for a batch run by default: one per Numba thread (at most one per image) where splitting is
    available, else 1."""
    if batch < 2 or available():
        return 1
    return max(1, min(int(numba.get_num_threads()), int(batch)))


def resolve_groups(batch, split, default=True):
    """The group count of an engine of `batch` images asked for `split` (None: auto_groups if `default`, else 1).
    Raises InputError for a count outside [1, batch], or for a split where concurrent runs are unsafe."""
    if split is None:
        return auto_groups(batch) if default else 1
    groups = _group_count(batch, split)
    if groups > 1 and unsafe():
        raise InputError(f"cannot split the batch here: {unsafe()}; use split=1")
    return groups


STEP_GROUPS = 2  # image groups of an int8 "blas" TrainStep by default, on every machine (resolve_step_groups)


def resolve_step_groups(batch, split):
    """The image groups of an int8 "blas" training step of `batch` images asked for `split` (None: min(batch,
    STEP_GROUPS)). Unlike an Inference's groups, a step's groups are part of its arithmetic: each group's weight and
    bias gradients are float32 sums over its own images, then summed over the groups in order (microtrain/train.py,
    "Batch split"). So the default count is a constant, not the machine's thread count, and a split is allowed
    wherever concurrent launches are unsafe: the groups then run one after another (`concurrent`), with the same
    bits. Raises InputError for a count outside [1, batch]."""
    if split is None:
        return min(int(batch), STEP_GROUPS)
    return _group_count(batch, split)


def _group_count(batch, split):
    """int(split), or InputError if it is outside [1, batch]."""
    groups = int(split)
    if groups < 1 or groups > batch:
        raise InputError(f"split must be between 1 and the batch ({batch}), got {split}")
    return groups


def concurrent(groups):
    """True if a run of these groups goes concurrently now: runs_split, and the threading layer allows concurrent
    launches (else the groups run one after another on the calling thread)."""
    return runs_split(groups) and not unsafe()


def run_in_turn_or_concurrently(jobs, groups):
    """Run jobs (one per group) with run_groups where `concurrent(groups)`, else one after another on the calling
    thread at its Numba width. Every kernel's result is independent of the width, so both give the same bits."""
    if concurrent(groups):
        run_groups(jobs)
        return
    for job in jobs:
        job()


def runs_split(groups):
    """True if a run with these group engines goes split now: there are groups and the calling thread's Numba width
    is above 1 (after numba.set_num_threads(1) a run stays on one core, as asked)."""
    return bool(groups) and numba.get_num_threads() > 1


def group_bounds(batch, groups):
    """[(n0, n1)] of each group: contiguous image ranges, as even as possible, the larger ones first."""
    return [(batch * g // groups, batch * (g + 1) // groups) for g in range(groups)]


class _Worker:
    """A daemon thread that runs jobs at Numba width 1, one at a time, and reports each job's exception."""

    def __init__(self):
        self.jobs = queue.SimpleQueue()
        self.done = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="microtrain-batch-group", daemon=True).start()

    def _loop(self):
        numba.set_num_threads(1)  # this thread's width (thread-local): its kernels run serially
        while True:
            job = self.jobs.get()
            try:
                job()
                self.done.put(None)
            except BaseException as e:  # handed to the caller, which re-raises it
                self.done.put(e)


_WORKERS = []
_WORKERS_PID = [os.getpid()]  # a forked child inherits the list but not the threads: it starts its own
_RUN_LOCK = threading.Lock()


def run_groups(jobs):
    """Run jobs (callables, one per group) concurrently: jobs[0] on the calling thread, the others on worker threads,
    every one at Numba width 1 with OpenBLAS single-threaded. Returns when all have finished (so none still writes
    when an exception propagates); re-raises the first job's exception, in job order."""
    with _RUN_LOCK:
        if _WORKERS_PID[0] != os.getpid():
            _WORKERS.clear()
            _WORKERS_PID[0] = os.getpid()
        while len(_WORKERS) < len(jobs) - 1:
            _WORKERS.append(_Worker())
        api = blas_env.blas_threads()
        blas_prev = api.get() if api is not None else None
        if api is not None:
            api.set(1)
        width = numba.get_num_threads()
        errors = [None] * len(jobs)
        try:
            for w, job in zip(_WORKERS, jobs[1:]):
                w.jobs.put(job)
            numba.set_num_threads(1)
            try:
                jobs[0]()
            except BaseException as e:
                errors[0] = e
            finally:
                numba.set_num_threads(width)
                for i, w in enumerate(_WORKERS[:len(jobs) - 1]):
                    errors[i + 1] = w.done.get()
        finally:
            if api is not None:
                api.set(blas_prev)
        for e in errors:
            if e is not None:
                raise e
