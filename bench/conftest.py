import os

# Same thread count for every peer in a run; NUMBA_NUM_THREADS must be set before numba is imported.
os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))
# NumPy's BLAS (OpenBLAS in NumPy's wheels; the "blas" inference backend's GEMMs) reads its thread count when NumPy
# is first imported: the same count again.
os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ["NUMBA_NUM_THREADS"])

import microtrain  # noqa: E402,F401  (before NumPy, so microtrain.blas_env can set OpenBLAS's idle-thread wait)
from microtrain import blas_env  # noqa: E402
from microtrain import config as mt_config  # noqa: E402


def pytest_benchmark_update_machine_info(config, machine_info):
    """The two thread pools' settings and the vector width go into every benchmark JSON (bench/report.py prints
    them)."""
    machine_info["microtrain_threading"] = mt_config.THREADING
    machine_info["microtrain_vector_width"] = mt_config.VECTOR_WIDTH
    machine_info["microtrain_blas_wait"] = blas_env.BLAS_WAIT
