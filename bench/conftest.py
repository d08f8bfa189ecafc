import os

# Same thread count for every peer in a run; NUMBA_NUM_THREADS must be set before numba is imported.
os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))
