import os

# Same thread count for every peer in a run; NUMBA_NUM_THREADS must be set before numba is imported.
os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))
# NumPy's BLAS (OpenBLAS in NumPy's wheels; the "blas" inference backend's GEMMs) reads its thread count when NumPy
# is first imported: the same count again.
os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ["NUMBA_NUM_THREADS"])
