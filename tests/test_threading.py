"""microtrain.config's choice of Numba threading layer, each case in a fresh process (the choice is made once, when
microtrain.config is imported, and depends on the environment and on the libraries already loaded)."""

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from settings import JIT_DISABLED

LINUX = sys.platform.startswith("linux")

# Imports microtrain.config (optionally after loading a library), runs one parallel kernel, reports the state.
PROBE = """
import ctypes, json, os, sys
if len(sys.argv) > 1:
    ctypes.CDLL(sys.argv[1])  # an OpenMP runtime loaded before microtrain, as PyTorch would
import numpy as np
import microtrain.config as c
from microtrain.kernels.gemm_io import widen_s8_f32
import numba
xf = np.empty((64, 3), np.float32)
x = (np.arange(192) - 96).astype(np.int8).reshape(64, 3)
widen_s8_f32(xf, x, 2)
assert np.array_equal(xf, x - 2.0)
print(json.dumps({"threading": c.THREADING, "layer": numba.threading_layer(),
                  "policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _omppool_loads():
    r = subprocess.run([sys.executable, "-c", "import numba.np.ufunc.omppool"], capture_output=True, cwd="/")
    return r.returncode == 0


def _probe(env_set=None, env_drop=("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY"), preload=None):
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env.update(env_set or {})
    args = [sys.executable, "-c", PROBE] + ([preload] if preload else [])
    r = subprocess.run(args, env=env, capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(JIT_DISABLED, reason="no parallel kernels without the JIT")


@pytest.mark.skipif(not LINUX, reason="the OpenMP default needs /proc/self/maps (Linux); elsewhere it is workqueue")
def test_default_is_passive_openmp_where_it_loads():
    got = _probe()
    if _omppool_loads():
        assert got == {"threading": "omp (OMP_WAIT_POLICY=passive)", "layer": "omp", "policy": "passive"}
    else:
        assert got["layer"] == "workqueue" and got["policy"] is None, got


def test_numba_threading_layer_set_by_the_user_is_left_alone():
    got = _probe({"NUMBA_THREADING_LAYER": "workqueue"})
    assert got == {"threading": "workqueue (NUMBA_THREADING_LAYER)", "layer": "workqueue", "policy": None}


@pytest.mark.skipif(not LINUX, reason="Linux only (see above)")
def test_a_wait_policy_set_by_the_user_is_kept():
    if not _omppool_loads():
        pytest.skip("Numba's OpenMP pool does not load on this machine")
    got = _probe({"OMP_WAIT_POLICY": "active"})
    assert got == {"threading": "omp (OMP_WAIT_POLICY=active)", "layer": "omp", "policy": "active"}


@pytest.mark.skipif(not LINUX, reason="Linux only (see above)")
def test_an_empty_wait_policy_counts_as_unset():
    if not _omppool_loads():
        pytest.skip("Numba's OpenMP pool does not load on this machine")
    got = _probe({"OMP_WAIT_POLICY": ""})  # libgomp rejects an empty value; passive replaces it
    assert got == {"threading": "omp (OMP_WAIT_POLICY=passive)", "layer": "omp", "policy": "passive"}


@pytest.mark.skipif(not LINUX, reason="Linux only (see above)")
def test_openmp_already_loaded_falls_back_to_workqueue():
    gomp = ctypes.util.find_library("gomp")
    if gomp is None:
        pytest.skip("no GNU OpenMP runtime on this machine to preload")
    got = _probe(preload=gomp)
    assert got == {"threading": "workqueue (an OpenMP runtime was already loaded)", "layer": "workqueue",
                   "policy": None}


FORK = """
import os, sys
import numpy as np
import microtrain.config
from microtrain.kernels.gemm_io import widen_s8_f32
xf = np.empty((64, 3), np.float32)
pid = os.fork()
if pid == 0:
    widen_s8_f32(xf, np.ones((64, 3), np.int8), 0)
    os._exit(0 if xf.min() == 1.0 else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_importing_starts_no_thread_so_a_fork_before_any_kernel_is_safe():
    """GNU OpenMP is not fork-safe once its threads run; microtrain.config loads the pool without starting them."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")}
    r = subprocess.run([sys.executable, "-c", FORK], env=env, capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", r.stderr


# ---- kernels/threads.py: small kernels stay on the calling thread ------------------------------------------------

def _probe_kernel():
    import numba
    from numba import njit, prange

    from microtrain.kernels.threads import threads_for, threads_restore

    @njit(parallel=True)
    def probe(ids, work):  # which thread ran each iteration, bracketed like every microtrain kernel
        prev = threads_for(work)
        for i in prange(ids.shape[0]):
            ids[i] = numba.get_thread_id()
        threads_restore(prev)
    return probe


def _two_threads():
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    numba.set_num_threads(2)
    return numba


def test_small_work_runs_on_the_calling_thread_and_large_work_on_all():
    import numpy as np

    from microtrain.kernels.threads import SERIAL_WORK
    numba = _two_threads()
    probe = _probe_kernel()
    ids = np.full(1000, -1, np.int64)
    probe(ids, SERIAL_WORK - 1)
    assert set(ids.tolist()) == {0}
    assert numba.get_num_threads() == 2  # restored
    probe(ids, SERIAL_WORK)
    assert set(ids.tolist()) == {0, 1}  # static schedule: each thread takes a block of iterations
    assert numba.get_num_threads() == 2


def test_kernels_leave_the_callers_width_as_it_was():
    import numpy as np

    from microtrain.kernels.gemm_io import widen_s8_f32
    from microtrain.kernels.threads import SERIAL_WORK
    numba = _two_threads()
    for width in (2, 1):  # a caller that asked for one thread keeps it, even for large work
        numba.set_num_threads(width)
        for p in (3, SERIAL_WORK // 4 + 1):
            x = np.ones((p, 4), np.int8)
            xf = np.empty((p, 4), np.float32)
            widen_s8_f32(xf, x, 1)
            assert numba.get_num_threads() == width and not xf.any()
    numba.set_num_threads(2)


WARM = """
import numba
from microtrain.kernels.threads import threads_for, threads_restore
prev = threads_for(10)  # before any parallel kernel ran in this process: the layer's symbols must be there
print(prev, numba.get_num_threads())
threads_restore(prev)
print(numba.get_num_threads())
"""


def test_threads_for_works_from_the_cache_in_a_fresh_process(tmp_path):
    _two_threads()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_NUM_THREADS="2")
    for run in ("cold", "warm"):  # the second process loads threads_for from tmp_path's cache
        r = subprocess.run([sys.executable, "-c", WARM], env=env, capture_output=True, text=True, cwd="/")
        assert r.returncode == 0, (run, r.returncode, r.stderr)
        assert r.stdout.split() == ["2", "1", "2"], (run, r.stdout)


NO_INTERNALS = """
import numba, numpy as np
import numba.core.typed_passes as tp
saved = tp._reload_parfors
del tp._reload_parfors  # hidden from microtrain's import, as a later Numba might rename it (Numba itself needs it)
from microtrain.kernels import threads
from microtrain.kernels.gemm_io import widen_s8_f32
tp._reload_parfors = saved
x = (np.arange(3 * 200000) % 256 - 128).astype(np.int8).reshape(-1, 3)
for p in (5, x.shape[0]):  # below and above SERIAL_WORK
    xf = np.empty((p, 3), np.float32)
    widen_s8_f32(xf, x[:p], -7)
    assert np.array_equal(xf, x[:p].astype(np.float32) + 7)
print(numba.get_num_threads(), threads.MISSING)
"""


def test_kernels_still_run_when_numbas_internals_are_missing(tmp_path):
    """pyproject allows any numba >= 0.59: if one drops an internal threads.py uses, the kernels must still import
    and compute (every loop on the caller's width), and threads.MISSING must say why."""
    _two_threads()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", NO_INTERNALS], env=env, capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    width, reason = r.stdout.strip().split(" ", 1)
    assert width == "2" and "_reload_parfors" in reason, r.stdout


def test_numbas_internals_are_found_on_the_installed_numba():
    from microtrain.kernels import threads
    assert threads.MISSING == "" and threads._launch_threads is not None


# ---- parallel_chunks: the chunk count is read at run time, not frozen into Numba's cache --------------------------

CHUNK_PROBE = """
import numba
from numba import njit, prange
from microtrain.kernels.threads import parallel_chunks, threads_for, threads_restore

@njit(parallel=True, cache=True)
def probe(ids):
    prev = threads_for(1 << 30)  # large work: the caller's width
    chunks = parallel_chunks(ids.shape[0])
    for t in prange(chunks):
        ids[t] = numba.get_thread_id()
    threads_restore(prev)
    return chunks
"""

RUN_PROBE = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from chunk_probe import probe
from microtrain.kernels.gemm_io import widen_s8_f32
ids = np.full(8, -1)
chunks = probe(ids)
widen_s8_f32(np.empty((3000, 100), np.float32), np.ones((3000, 100), np.int8), 0)
print(chunks, sorted(set(ids[:chunks].tolist())), probe.stats.cache_hits.get(probe.signatures[0], 0),
      sum(widen_s8_f32.stats.cache_hits.values()))
"""


def test_a_cache_filled_by_a_one_thread_process_still_runs_on_every_thread(tmp_path):
    """A kernel compiled by a process with NUMBA_NUM_THREADS=1 and loaded from the cache by one with 2 threads must
    split its work 2 ways: Numba freezes a global into the compiled code, so a chunk count read from a module
    global at import (as kernels did before parallel_chunks) ran every later process's loop on one thread."""
    _two_threads()
    (tmp_path / "chunk_probe.py").write_text(CHUNK_PROBE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    got = []
    for threads in ("1", "2"):
        r = subprocess.run([sys.executable, "-c", RUN_PROBE, str(tmp_path)], env=dict(env, NUMBA_NUM_THREADS=threads),
                           capture_output=True, text=True, cwd="/")
        assert r.returncode == 0, r.stderr
        got.append(r.stdout.strip())  # chunks, thread ids, probe's cache hits, widen_s8_f32's cache hits
    assert got[0].startswith("1 [0] 0 0"), got  # compiled here
    assert got[1].startswith("2 [0, 1] 1 "), got  # loaded from the cache, and split over both threads
    assert int(got[1].split()[-1]) >= 1, got  # the real kernel came from the cache too


def test_no_kernel_freezes_a_thread_count():
    """Every kernel that splits its work into per-thread chunks takes their number from parallel_chunks, and no
    kernel module reads the thread count at import (threads.py's STATIC_WIDTH is only for JIT-off / MISSING)."""
    import pathlib

    import microtrain.kernels as k
    root = pathlib.Path(k.__file__).parent
    for path in sorted(root.glob("*.py")):
        src = path.read_text()
        if path.name in ("threads.py", "scratch.py"):
            continue
        assert "NUMBA_NUM_THREADS" not in src and "get_num_threads" not in src, path.name
        if "chunk_bounds(" in src:
            assert src.count("parallel_chunks(") >= src.count("for t in prange(chunks)"), path.name


# ---- microtrain.blas_env: OpenBLAS's idle wait, set before NumPy loads it ------------------------------------------

BLAS_PROBE = """
import ctypes, glob, json, os, sys
if len(sys.argv) > 1:
    import numpy  # a user who imports NumPy first
import microtrain
from microtrain import blas_env
import numpy
read = None  # what OpenBLAS itself read from the environment when it loaded (NumPy's wheels bundle it)
libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "*openblas*"))
if libs:
    fn = getattr(ctypes.CDLL(libs[0]), "openblas_thread_timeout", None)
    read = fn() if fn is not None else None
print(json.dumps({"env": os.environ.get("OPENBLAS_THREAD_TIMEOUT"), "wait": blas_env.BLAS_WAIT, "read": read}))
"""


def _blas_probe(env_set=None, numpy_first=False):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(env_set or {})
    r = subprocess.run([sys.executable, "-c", BLAS_PROBE] + (["numpy first"] if numpy_first else []), env=env,
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_importing_microtrain_first_shortens_openblas_spinning():
    got = _blas_probe()
    assert got["env"] == "12" and got["wait"] == "OPENBLAS_THREAD_TIMEOUT=12", got
    assert got["read"] in (None, 12), got  # OpenBLAS loaded after the variable was set (None: not NumPy's OpenBLAS)


def test_a_users_openblas_timeout_is_kept():
    got = _blas_probe({"OPENBLAS_THREAD_TIMEOUT": "20"})
    assert got["env"] == "20" and "set by the user" in got["wait"], got
    assert got["read"] in (None, 20), got


def test_numpy_imported_first_is_reported_and_left_alone():
    got = _blas_probe(numpy_first=True)
    assert got["env"] is None and "NumPy was imported before microtrain" in got["wait"], got
    assert got["read"] in (None, 0), got  # OpenBLAS's own default (0: none given)
