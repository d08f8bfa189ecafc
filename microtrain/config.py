"""Numba options and numeric tolerances, in one place (house style: never sprinkled per function).

Kernels import NJIT / NJIT_PARALLEL from here. `cache=True` keeps compiled code on disk so a second
process starts warm; no `fastmath` anywhere, so fp32 kernels keep C's (non -ffast-math) operation order.

Threading layer: Numba's default on this stack is GNU OpenMP, whose worker threads spin and then sleep between
the many short parallel kernels of a step; on a machine whose cores are shared with other processes a descheduled
worker stalls every kernel, and 2-thread runs measured up to 1.5x *slower* than 1 thread (int8 pointwise layers of
MCUNet at batch 25 under load: 206 ms on 2 threads vs 138 ms on 1; workqueue on 2 threads: 140 ms). The
`workqueue` layer (Numba's own, no OpenMP) did not degrade that way, so it is the default here unless the user
sets NUMBA_THREADING_LAYER. Its limit: it does not support parallel kernels launched concurrently from several
Python threads of one process (microtrain never does; `evaluate --workers` uses processes with one thread each).
Results do not depend on the layer or the thread count (every parallel kernel has a fixed reduction order).
"""

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

NJIT = dict(cache=True, nogil=True)
NJIT_PARALLEL = dict(cache=True, nogil=True, parallel=True)

# Relative/absolute tolerance of fp32 kernels against the float64 naive references in tests.
F32_RTOL = 1e-5
F32_ATOL = 1e-5
