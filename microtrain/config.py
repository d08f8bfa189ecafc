"""Numba options and numeric tolerances, in one place (house style: never sprinkled per function).

Kernels import NJIT / NJIT_PARALLEL from here. `cache=True` keeps compiled code on disk so a second
process starts warm; no `fastmath` anywhere, so fp32 kernels keep C's (non -ffast-math) operation order.
"""

NJIT = dict(cache=True, nogil=True)
NJIT_PARALLEL = dict(cache=True, nogil=True, parallel=True)

# Relative/absolute tolerance of fp32 kernels against the float64 naive references in tests.
F32_RTOL = 1e-5
F32_ATOL = 1e-5
