"""Numba kernels: pure functions on preallocated NHWC arrays, int8 (`_s8`) and fp32 (`_f32`).

Installed as `microtrain.kernels`. Every kernel writes into outputs it is handed and allocates nothing.
"""
