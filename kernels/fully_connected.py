"""Fully connected (dense) layer forward, int8 with per-channel requantization and fp32; the classifier head.

Direct loops, no scratch. C twins: mt_fully_connected_s8, mt_fully_connected_f32 (docs/porting.md).
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT

from .requant import INT32_MIN, clamp, mbqm


@njit(**NJIT)
def fully_connected_s8(y, x, w, bias, mult, shift, x_zp, y_zp, act_min, act_max):
    """y[n, co] = clamp(mbqm(sum_ci w[co, ci] * (x[n, ci] - x_zp) + bias[co]) + y_zp), int8 FC, per-channel.

    Layout:    y (N, Co) s8 out; x (N, Ci) s8; w (Co, Ci) s8 (symmetric, zp 0); bias (Co,) s32;
               mult, shift (Co,) s32 from requant.conv_multipliers (PopulateConvolutionQuantizationParams' double
               form, which per-channel FC uses).
    Ownership: writes every element of y (`=`, overwrite); allocates nothing.
    Exactness: bit-exact with TFLM tflite::reference_integer_ops::FullyConnectedPerChannel
               (reference/integer_ops/fully_connected.h): acc += bias, double-rounding mbqm, + y_zp,
               max(act_min), min(act_max). (Per-tensor FullyConnected is this with equal mult/shift per channel.)
    Overflow:  |w * (x - x_zp)| <= 128 * 255 = 32640, so the sum over Ci fits int32 while Ci <= 65793.
               acc + bias can overflow: int32 biases at the limits occur in the real tiny-training weights
               (dead channels), and TFLM's int32 `acc += bias` then wraps modulo 2^32 (UB in C, two's complement
               on every TFLM target). Accumulated here in int64 (every int8 load widened), then acc + bias is
               wrapped to int32 explicitly, so that case matches too. mbqm's pre-shift acc * 2^max(shift, 0) is
               not wrapped: it must fit int32 (true whenever the effective scale is < 1).
    Zero points: x_zp, y_zp are zero points; TFLM/CMSIS-NN pass input_offset = -x_zp.
    C twin:    mt_fully_connected_s8
    """
    N, CO = y.shape
    CI = x.shape[1]
    if (x.shape[0] != N or w.shape[0] != CO or w.shape[1] != CI
            or bias.shape[0] != CO or mult.shape[0] != CO or shift.shape[0] != CO):
        raise ValueError("fully_connected_s8: inconsistent shapes")
    xz = np.int64(x_zp)
    yz = np.int64(y_zp)
    for n in range(N):
        for co in range(CO):
            acc = np.int64(0)
            for ci in range(CI):
                acc += np.int64(w[co, ci]) * (np.int64(x[n, ci]) - xz)
            acc += np.int64(bias[co])
            acc = ((acc - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN  # C's int32 acc + bias wraps (see Overflow)
            v = mbqm(acc, mult[co], shift[co]) + yz
            y[n, co] = np.int8(clamp(v, act_min, act_max))


@njit(**NJIT)
def fully_connected_f32(y, x, w, bias):
    """y[n, co] = sum_ci w[co, ci] * x[n, ci] + bias[co], fp32 FC (no activation: the classifier's logits).

    Layout:    y (N, Co) f32 out; x (N, Ci) f32; w (Co, Ci) f32; bias (Co,) f32.
    Ownership: writes every element of y (`=`, overwrite); allocates nothing.
    Exactness: float32 accumulation over ci in order, then + bias (TFLM tflite::reference_ops::FullyConnected
               float order), no fastmath; tested against float64 within config.F32_RTOL / F32_ATOL.
    Overflow:  not applicable (float32).
    Zero points: none (fp32).
    C twin:    mt_fully_connected_f32
    """
    N, CO = y.shape
    CI = x.shape[1]
    if x.shape[0] != N or w.shape[0] != CO or w.shape[1] != CI or bias.shape[0] != CO:
        raise ValueError("fully_connected_f32: inconsistent shapes")
    for n in range(N):
        for co in range(CO):
            acc = np.float32(0.0)
            for ci in range(CI):
                acc += x[n, ci] * w[co, ci]
            y[n, co] = acc + bias[co]
