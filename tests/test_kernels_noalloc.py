"""Every forward kernel allocates nothing: it only writes into the outputs it is handed.

Two probes per kernel, each after a first (compiling) call:
  1. tracemalloc restricted to NumPy's own domain (np.lib.tracemalloc_domain): 0 bytes still held after the call.
     This sees NumPy buffers made on the Python side of a call; it cannot see a jitted kernel's own arrays,
     which Numba's runtime (NRT) mallocs outside NumPy (test_numpy_domain_probe_is_blind_to_jitted_arrays).
  2. NRT's allocation counter: a call may create exactly one NRT MemInfo per array argument (the dispatcher
     wraps each NumPy buffer at the call boundary; no data is copied); any array a kernel made inside would
     add one more (test_nrt_probe_catches_an_allocating_kernel).
With NUMBA_DISABLE_JIT=1 the kernels are plain Python: there is no NRT, and NumPy scalar arithmetic may make
transient temporaries; the contract is about the compiled kernels, so probe 2 is skipped there.
"""

import tracemalloc

import numpy as np
import pytest
from numba import njit

from microtrain.kernels.add import add_f32, add_s8
from microtrain.kernels.add_host import add_s8_host, add_table
from microtrain.kernels.conv2d import conv2d_f32, conv2d_s8
from microtrain.kernels.depthwise import depthwise_conv_f32, depthwise_conv_s8
from microtrain.kernels.depthwise_host import depthwise_conv_f32_host, depthwise_conv_s8_host
from microtrain.kernels.fully_connected import fully_connected_f32, fully_connected_s8
from microtrain.kernels.gemm_f32 import bias_add_clamp_f32
from microtrain.kernels.gemm_io import (im2col_f32, requant_f64_params, requantize_acc_f32_s8,
                                        requantize_acc_f32_s8_mask, widen_s8_f32)
from microtrain.kernels.mask import NO_MASK, mask_shape
from microtrain.kernels.pointwise import pointwise_conv_f32, pointwise_conv_s8
from microtrain.kernels.pool import avgpool_f32, avgpool_s8, global_mean_f32, global_mean_s8
from microtrain.kernels.quantize import dequantize_s8, quantize_s8
from settings import JIT_DISABLED

NO_NRT = "NUMBA_DISABLE_JIT=1: kernels run as plain Python, there is no Numba runtime (NRT) to count"


def kernel_calls():
    """(kernel, args) for every forward kernel, on small arrays with valid parameters."""
    rng = np.random.default_rng(0)
    s8 = lambda *shape: rng.integers(-128, 128, shape).astype(np.int8)  # noqa: E731
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    c = 4
    bias = rng.integers(-5000, 5000, c).astype(np.int32)
    mult = np.full(c, 1 << 30, np.int32)
    shift = np.full(c, -8, np.int32)
    q = (3, -5, -128, 127)  # x_zp, y_zp, act_min, act_max
    m = 1 << 30
    mask44 = np.zeros(mask_shape(1, 4, 4, c), np.uint8)  # training mode: the 1-bit STE mask is written too
    mask55 = np.zeros(mask_shape(1, 5, 5, c), np.uint8)
    mask33 = np.zeros(mask_shape(1, 3, 3, c), np.uint8)
    return {
        "conv2d_s8": (conv2d_s8, (np.zeros((1, 4, 4, c), np.int8), NO_MASK, s8(1, 7, 7, 3), s8(c, 3, 3, 3), bias,
                                  mult, shift, *q, 2, 1)),
        "conv2d_s8_mask": (conv2d_s8, (np.zeros((1, 4, 4, c), np.int8), mask44, s8(1, 7, 7, 3), s8(c, 3, 3, 3),
                                       bias, mult, shift, *q, 2, 1)),
        "conv2d_f32": (conv2d_f32, (np.zeros((1, 4, 4, c), np.float32), f32(1, 7, 7, 3), f32(c, 3, 3, 3), f32(c),
                                    0.0, 6.0, 2, 1)),
        "depthwise_conv_s8": (depthwise_conv_s8, (np.zeros((1, 4, 4, c), np.int8), NO_MASK, s8(1, 7, 7, c),
                                                  s8(5, 5, c), bias, mult, shift, *q, 2, 2)),
        "depthwise_conv_s8_mask": (depthwise_conv_s8, (np.zeros((1, 4, 4, c), np.int8), mask44, s8(1, 7, 7, c),
                                                       s8(5, 5, c), bias, mult, shift, *q, 2, 2)),
        "depthwise_conv_f32": (depthwise_conv_f32, (np.zeros((1, 4, 4, c), np.float32), f32(1, 7, 7, c),
                                                    f32(5, 5, c), f32(c), -np.inf, np.inf, 2, 2)),
        "pointwise_conv_s8": (pointwise_conv_s8, (np.zeros((1, 5, 5, c), np.int8), NO_MASK, s8(1, 5, 5, 6), s8(c, 6),
                                                  bias, mult, shift, *q)),
        "pointwise_conv_s8_mask": (pointwise_conv_s8, (np.zeros((1, 5, 5, c), np.int8), mask55, s8(1, 5, 5, 6),
                                                       s8(c, 6), bias, mult, shift, *q)),
        "pointwise_conv_f32": (pointwise_conv_f32, (np.zeros((1, 5, 5, c), np.float32), f32(1, 5, 5, 6), f32(c, 6),
                                                    f32(c), 0.0, 6.0)),
        "add_s8": (add_s8, (np.zeros((1, 3, 3, c), np.int8), NO_MASK, s8(1, 3, 3, c), s8(1, 3, 3, c), 1, m, -1, 2, m,
                            0, 3, m, -2, -128, 127)),
        "add_s8_mask": (add_s8, (np.zeros((1, 3, 3, c), np.int8), mask33, s8(1, 3, 3, c), s8(1, 3, 3, c), 1, m, -1,
                                 2, m, 0, 3, m, -2, -128, 127)),
        "add_s8_host": (add_s8_host, (np.zeros((1, 3, 3, c), np.int8), NO_MASK, s8(1, 3, 3, c), s8(1, 3, 3, c),
                                      add_table({}, 1, m, -1, 2, m, 0, 3, m, -2, -128, 127))),
        "add_s8_host_mask": (add_s8_host, (np.zeros((1, 3, 3, c), np.int8), mask33, s8(1, 3, 3, c), s8(1, 3, 3, c),
                                           add_table({}, 1, m, -1, 2, m, 0, 3, m, -2, -128, 127))),
        "add_f32": (add_f32, (np.zeros((1, 3, 3, c), np.float32), f32(1, 3, 3, c), f32(1, 3, 3, c))),
        "avgpool_s8": (avgpool_s8, (np.zeros((1, 4, 4, c), np.int8), s8(1, 7, 7, c), 3, 3, 2, 1, -128, 127)),
        "global_mean_s8": (global_mean_s8, (np.zeros((1, c), np.int8), s8(1, 5, 5, c), -128, 127)),
        "avgpool_f32": (avgpool_f32, (np.zeros((1, 4, 4, c), np.float32), f32(1, 7, 7, c), 3, 3, 2, 1)),
        "global_mean_f32": (global_mean_f32, (np.zeros((1, c), np.float32), f32(1, 5, 5, c))),
        "fully_connected_s8": (fully_connected_s8, (np.zeros((2, c), np.int8), s8(2, 9), s8(c, 9), bias, mult, shift,
                                                    *q)),
        "fully_connected_f32": (fully_connected_f32, (np.zeros((2, c), np.float32), f32(2, 9), f32(c, 9), f32(c))),
        # the "blas" inference backend's ends around NumPy's matmul (kernels/gemm_io.py)
        "widen_s8_f32": (widen_s8_f32, (np.zeros((25, 6), np.float32), s8(25, 6), 3)),
        "im2col_f32": (im2col_f32, (np.zeros((16, 27), np.float32), s8(1, 7, 7, 3), 3, 3, 3, 2, 1)),
        "requantize_acc_f32_s8": (requantize_acc_f32_s8, (np.zeros((25, c), np.int8),
                                                          rng.integers(-5000, 5000, (25, c)).astype(np.float32),
                                                          bias, requant_f64_params(mult, shift), mult, shift, -5,
                                                          -128, 127)),
        "requantize_acc_f32_s8_mask": (requantize_acc_f32_s8_mask, (np.zeros((1, 4, 4, c), np.int8), mask44,
                                                                    rng.integers(-5000, 5000, (1, 4, 4, c)).astype(
                                                                        np.float32),
                                                                    bias, requant_f64_params(mult, shift), mult,
                                                                    shift, -5, -128, 127)),
        # the "blas" backends' depthwise kernel: stride 1 (row-wise weights) and stride 2 (per pixel)
        "depthwise_conv_s8_host": (depthwise_conv_s8_host, (np.zeros((1, 7, 7, c), np.int8), NO_MASK,
                                                            s8(1, 7, 7, c), s8(3, 3, c), bias,
                                                            requant_f64_params(mult, shift), mult, shift, *q, 1, 1)),
        "depthwise_conv_s8_host_mask": (depthwise_conv_s8_host, (np.zeros((1, 4, 4, c), np.int8), mask44,
                                                                 s8(1, 7, 7, c), s8(5, 5, c), bias,
                                                                 requant_f64_params(mult, shift), mult, shift, *q, 2,
                                                                 2)),
        "depthwise_conv_f32_host": (depthwise_conv_f32_host, (np.zeros((1, 7, 7, c), np.float32), f32(1, 7, 7, c),
                                                              f32(3, 3, c), f32(c), 0.0, 6.0, 1)),
        # the blas training step's fp32 GEMM tail (kernels/gemm_f32.py): blocks of pixels, and a ragged last block
        "bias_add_clamp_f32": (bias_add_clamp_f32, (f32(1500, c), f32(c), np.float32(0), np.float32(6))),
        "quantize_s8": (quantize_s8, (np.zeros((1, 3, 3, c), np.int8), f32(1, 3, 3, c), 0.05, -3)),
        "dequantize_s8": (dequantize_s8, (np.zeros((1, 3, 3, c), np.float32), s8(1, 3, 3, c), 0.05, -3)),
    }


CALLS = kernel_calls()


def numpy_bytes_held_after(fn, args):
    """Bytes in NumPy's tracemalloc domain still allocated after fn(*args) (a first call has compiled fn)."""
    tracemalloc.start()
    try:
        result = fn(*args)  # kept alive until the snapshot (kernels return None)
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    finally:
        tracemalloc.stop()
    return sum(stat.size for stat in snap.statistics("filename"))


def nrt_allocations(fn, args):
    """NRT allocations made by one call of fn(*args) (counted with the runtime's statistics switched on)."""
    from numba.core.runtime import _nrt_python, rtsys

    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats().alloc
        fn(*args)
        return rtsys.get_allocation_stats().alloc - before
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()


@pytest.mark.parametrize("name", CALLS)
def test_kernel_holds_no_numpy_memory(name):
    fn, args = CALLS[name]
    fn(*args)  # compile (or load from the cache) outside the measurement
    assert numpy_bytes_held_after(fn, args) == 0


@pytest.mark.skipif(JIT_DISABLED, reason=NO_NRT)
@pytest.mark.parametrize("name", CALLS)
def test_kernel_makes_no_nrt_allocation(name):
    fn, args = CALLS[name]
    fn(*args)
    n_arrays = sum(isinstance(a, np.ndarray) for a in args)
    # One MemInfo per array argument, made by the dispatcher when it unboxes the argument; nothing else.
    assert nrt_allocations(fn, args) == n_arrays


@njit
def _allocating_kernel(y):
    """Deliberately breaks the contract: a scratch array made inside the kernel."""
    t = np.empty(y.shape[0], np.float64)
    for i in range(y.shape[0]):
        t[i] = 2.0 * i
        y[i] = t[i]


@pytest.mark.skipif(JIT_DISABLED, reason=NO_NRT)
def test_nrt_probe_catches_an_allocating_kernel():
    y = np.zeros(16)
    _allocating_kernel(y)
    assert nrt_allocations(_allocating_kernel, (y,)) == 2  # the argument's MemInfo + the scratch array


@njit
def _make_array(n):
    return np.zeros(n)


def test_numpy_domain_probe_sees_numpy_arrays():
    assert numpy_bytes_held_after(np.zeros, (1000,)) >= 8000


@pytest.mark.skipif(JIT_DISABLED, reason="NUMBA_DISABLE_JIT=1: _make_array is plain NumPy there")
def test_numpy_domain_probe_is_blind_to_jitted_arrays():
    # Why probe 2 exists: an array made by jitted code (NRT malloc) never shows in NumPy's tracemalloc domain,
    # even while it is alive.
    _make_array(1000)
    assert numpy_bytes_held_after(_make_array, (1000,)) == 0
