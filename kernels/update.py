"""Parameter updates of the training step, in place on the kept slices of the trainable weights and biases.

int8 mode (MCU, MIT tiny-training): int8 weights and int32 biases live in SRAM (the arena's tail) and are updated
with SGD + Quantization-Aware Scaling (QAS, Lin et al. 2022 §3.3; tiny-training `SGDScale`), or with Adam on the
gradient with respect to the integer parameter. fp32 mode (TinyTrain on Pi / Jetson): plain SGD and Adam in float32.
A kernel touches only w[keep_out[a], :, :, keep_in[b]] (or w[..., keep[k]], b[keep[k]]); every other entry keeps
its bits. Gradients come in the compact layout of the weight-gradient kernels (dw[a, :, :, b] belongs to the kept
pair (keep_out[a], keep_in[b])); Adam's moments m, v have dw's shape and live in the tail. Gradients must be finite:
the engine checks them with `all_finite` before any update (a NaN step has no defined result here, as in C).

Rounding (int8 mode): the step is rounded half away from zero and subtracted, and the result is saturated to the
symmetric int8 weight range [-127, 127] (int32 for biases). This deliberately deviates from TinyEngine, which
truncates toward zero and does not saturate (see each docstring): half-away rounding is sign-symmetric (a step of
+0.5 LSB and one of -0.5 LSB both move the weight), truncation is not. Keep indices must be distinct (a repeated
index would be updated twice). Serial loops: the updates are tiny next to the backward, and trivially deterministic.
C twins: mt_<kernel name> (docs/porting.md).
"""

import math

import numpy as np
from numba import njit

from microtrain.config import NJIT

from .requant import INT32_MAX, INT32_MIN

# Adam (Kingma & Ba 2015, Algorithm 1) with the paper's (and PyTorch's) defaults.
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8

# Symmetric int8 weights (TFLite's per-channel weight spec): -128 is never produced.
W_MIN = -127.0
W_MAX = 127.0


# ----------------------------------------------------------------------------------------------
# Scalar helpers (jitted)
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def round_half_away_f64(v):
    """C round() on a float64: nearest integer, ties away from zero, exact for every float64 (a - floor(a) is exact;
    floor(a + 0.5) is not: 0.49999999999999994 + 0.5 rounds up to 1.0). Returns a float64."""
    a = abs(v)
    if a >= 4503599627370496.0:  # 2^52: already an integer (or inf, where a - floor(a) would be inf - inf)
        return v
    r = np.floor(a)
    if a - r >= 0.5:
        r += 1.0
    return -r if v < 0.0 else r


@njit(**NJIT)
def saturate_f64(t, lo, hi):
    """min(max(t, lo), hi) on float64 (before the conversion to an integer type, which must not overflow)."""
    if t < lo:
        return lo
    if t > hi:
        return hi
    return t


@njit(**NJIT)
def keep_in_range(keep, n):
    """True if every index of keep lies in [0, n)."""
    for k in range(keep.shape[0]):
        if keep[k] < 0 or keep[k] >= n:
            return False
    return True


@njit(**NJIT)
def adam_bias_corrections(t):
    """(1 - beta1^t, 1 - beta2^t) in float64 for step t >= 1, with libm pow (the same call jitted and interpreted)."""
    if t < 1:
        raise ValueError("adam: the step count t starts at 1")
    return 1.0 - math.pow(ADAM_BETA1, np.float64(t)), 1.0 - math.pow(ADAM_BETA2, np.float64(t))


@njit(**NJIT)
def adam_moments_step(m, v, g, bc1, bc2):
    """One Adam element: returns (m', v', step) with m' = float32(b1 m + (1 - b1) g), v' = float32(b2 v + (1 - b2) g^2)
    (computed in float64, stored as float32) and step = (m' / bc1) / (sqrt(v' / bc2) + eps) in float64 from the
    stored float32 moments, so the state alone determines the step. The caller multiplies by lr."""
    m32 = np.float32(ADAM_BETA1 * np.float64(m) + (1.0 - ADAM_BETA1) * g)
    v32 = np.float32(ADAM_BETA2 * np.float64(v) + (1.0 - ADAM_BETA2) * (g * g))
    step = (np.float64(m32) / bc1) / (math.sqrt(np.float64(v32) / bc2) + ADAM_EPS)
    return m32, v32, step


# ----------------------------------------------------------------------------------------------
# int8 mode: SGD with QAS
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def sgd_update_ohwi_s8(w, dw, keep_out, keep_in, coef, lr):
    """w[co, :, :, ci] = sat(w - round_half_away(lr * coef[co] * dw)) for the kept (co, ci) pairs: int8 SGD with QAS, in place.

    Layout:    w (Co, KH, KW, Ci) int8 in SRAM, in and out; dw (Ko, KH, KW, Ki) float32, dw[a, :, :, b] the gradient
               sum for co = keep_out[a], ci = keep_in[b] (the compact output of conv2d / pointwise backward_weight);
               keep_out (Ko,), keep_in (Ki,) int32, distinct; coef (Co,) float32, indexed by the output channel.
               Pointwise (Co, Ci) weights and (Ko, Ki) gradients go through their (Co, 1, 1, Ci) / (Ko, 1, 1, Ki)
               reshape views (no copy; the update lands in the original array).
    Math:      the engine passes dw = sum dy_real * (x_int - x_zp) and coef[co] = s_x / s_w[co]. Then
               s_x * dw = dL/dw_real, and QAS (Lin et al. 2022 §3.3) rescales the integer weight's gradient
               G = dL/dw_int = s_w * dL/dw_real by s_w^-2: G~ = dL/dw_real / s_w = coef[co] * dw.
               step = (lr * coef[co]) * dw[a, ky, kx, b] in float64 (lr * coef once per output channel),
               w <- min(max(w - round_half_away(step), -127), 127).
    Rounding:  TinyEngine (nnfunctions_fp.h assign_sum_to_group_output_4row16col, fused in its weight-gradient
               kernel) computes w <- (int8)(float(w) - g * scale * lr): it truncates w - step toward zero (sub-LSB
               steps toward 0 take effect, steps away from 0 are lost) and does not saturate (UB in C). Here the
               step is rounded half away from zero, then subtracted and saturated: a documented deviation.
    Ownership: updates w in place at the kept entries only; reads dw, coef; allocates nothing.
    C twin:    mt_sgd_update_ohwi_s8.
    """
    CO, KH, KW, CI = w.shape
    KO = dw.shape[0]
    KI = dw.shape[3]
    if (dw.shape[1] != KH or dw.shape[2] != KW or keep_out.shape[0] != KO or keep_in.shape[0] != KI
            or coef.shape[0] != CO):
        raise ValueError("sgd_update_ohwi_s8: inconsistent shapes")
    if not keep_in_range(keep_out, CO) or not keep_in_range(keep_in, CI):
        raise ValueError("sgd_update_ohwi_s8: keep index out of range")
    lr64 = np.float64(lr)
    for a in range(KO):
        co = keep_out[a]
        s = lr64 * np.float64(coef[co])
        for ky in range(KH):
            for kx in range(KW):
                for b in range(KI):
                    ci = keep_in[b]
                    t = np.float64(w[co, ky, kx, ci]) - round_half_away_f64(s * np.float64(dw[a, ky, kx, b]))
                    w[co, ky, kx, ci] = np.int8(saturate_f64(t, W_MIN, W_MAX))


@njit(**NJIT)
def sgd_update_hwc_s8(w, dw, keep, coef, lr):
    """w[:, :, c] = sat(w - round_half_away(lr * coef[c] * dw)) for the kept channels: int8 depthwise SGD with QAS, in place.

    Layout:    w (KH, KW, C) int8 in SRAM; dw (KH, KW, K) float32, dw[:, :, k] the gradient of channel keep[k];
               keep (K,) int32, distinct; coef (C,) float32 indexed by the channel (s_x / s_w[c]).
    Math:      as sgd_update_ohwi_s8: step = (lr * coef[c]) * dw in float64, w <- sat[-127, 127](w - round_half_away(step)).
    Rounding:  TinyEngine truncates float(w) - step toward zero and does not saturate; here the step is rounded half
               away from zero and the result saturated (documented deviation, see sgd_update_ohwi_s8).
    Ownership: updates w in place at the kept channels only; allocates nothing.
    C twin:    mt_sgd_update_hwc_s8.
    """
    KH, KW, C = w.shape
    K = dw.shape[2]
    if dw.shape[0] != KH or dw.shape[1] != KW or keep.shape[0] != K or coef.shape[0] != C:
        raise ValueError("sgd_update_hwc_s8: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("sgd_update_hwc_s8: keep index out of range")
    lr64 = np.float64(lr)
    for k in range(K):
        c = keep[k]
        s = lr64 * np.float64(coef[c])
        for ky in range(KH):
            for kx in range(KW):
                t = np.float64(w[ky, kx, c]) - round_half_away_f64(s * np.float64(dw[ky, kx, k]))
                w[ky, kx, c] = np.int8(saturate_f64(t, W_MIN, W_MAX))


@njit(**NJIT)
def sgd_update_bias_s32(b, db, keep, coef, lr):
    """b[c] = sat_int32(b[c] - round_half_away(lr * coef[c] * db[k])), c = keep[k]: int32 bias SGD with QAS, in place.

    Layout:    b (C,) int32 in SRAM; db (K,) float32, db[k] the gradient of channel keep[k] (bias_f32_backward's
               compact output); keep (K,) int32, distinct; coef (C,) float32 indexed by the channel.
    Math:      the engine passes db = dL/db_real and coef[c] = 1 / (s_x * s_w[c]). With b_real = s_x s_w b_int,
               G = dL/db_int = s_x s_w db, and QAS rescales it by (s_x s_w)^-2 (tiny-training SGDScale:
               G_b / (effective_scale * y_scale)^2): G~ = db / (s_x s_w) = coef[c] * db.
               step = (lr * coef[c]) * db[k] in float64, b <- min(max(b - round_half_away(step), INT32_MIN), INT32_MAX).
    Rounding:  TinyEngine (code_generator/operators/bias_update.py) computes b <- b - (int32)(g * blr * QASinv):
               the step is truncated toward zero (steps below 1 are lost in both directions) and the int32
               subtraction is not saturated. Here: rounded half away from zero, saturated (documented deviation).
    Ownership: updates b in place at the kept channels only; allocates nothing.
    C twin:    mt_sgd_update_bias_s32.
    """
    C = b.shape[0]
    K = db.shape[0]
    if keep.shape[0] != K or coef.shape[0] != C:
        raise ValueError("sgd_update_bias_s32: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("sgd_update_bias_s32: keep index out of range")
    lr64 = np.float64(lr)
    for k in range(K):
        c = keep[k]
        # |b| < 2^31 and the rounded step is an integer: the float64 difference is exact until it saturates anyway
        t = np.float64(b[c]) - round_half_away_f64((lr64 * np.float64(coef[c])) * np.float64(db[k]))
        b[c] = np.int32(saturate_f64(t, np.float64(INT32_MIN), np.float64(INT32_MAX)))


# ----------------------------------------------------------------------------------------------
# fp32 mode: SGD
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def sgd_update_ohwi_f32(w, dw, keep_out, keep_in, lr):
    """w[co, :, :, ci] -= lr * dw[a, :, :, b] for co = keep_out[a], ci = keep_in[b]: fp32 SGD, in place.

    Layout:    w (Co, KH, KW, Ci) float32; dw (Ko, KH, KW, Ki) float32 (compact, as sgd_update_ohwi_s8);
               keep_out (Ko,), keep_in (Ki,) int32, distinct. Pointwise / FC (Co, Ci): pass (Co, 1, 1, Ci) views.
    Math:      in w's dtype: lr cast once, then w <- w - (lr * dw), two float32 roundings (the product, then the
               difference), no FMA contraction (PyTorch's SGD without momentum: param.add_(grad, alpha=-lr)).
    Ownership: updates w in place at the kept entries only; allocates nothing.
    C twin:    mt_sgd_update_ohwi_f32.
    """
    CO, KH, KW, CI = w.shape
    KO = dw.shape[0]
    KI = dw.shape[3]
    if dw.shape[1] != KH or dw.shape[2] != KW or keep_out.shape[0] != KO or keep_in.shape[0] != KI:
        raise ValueError("sgd_update_ohwi_f32: inconsistent shapes")
    if not keep_in_range(keep_out, CO) or not keep_in_range(keep_in, CI):
        raise ValueError("sgd_update_ohwi_f32: keep index out of range")
    lr_t = w.dtype.type(lr)
    for a in range(KO):
        co = keep_out[a]
        for ky in range(KH):
            for kx in range(KW):
                for b in range(KI):
                    ci = keep_in[b]
                    w[co, ky, kx, ci] = w[co, ky, kx, ci] - lr_t * dw[a, ky, kx, b]


@njit(**NJIT)
def sgd_update_hwc_f32(w, dw, keep, lr):
    """w[:, :, keep[k]] -= lr * dw[:, :, k]: fp32 depthwise SGD, in place.

    Layout:    w (KH, KW, C) float32; dw (KH, KW, K) float32; keep (K,) int32, distinct.
    Math:      as sgd_update_ohwi_f32 (float32, lr cast once, product then difference).
    Ownership: updates w in place at the kept channels only; allocates nothing.
    C twin:    mt_sgd_update_hwc_f32.
    """
    KH, KW, C = w.shape
    K = dw.shape[2]
    if dw.shape[0] != KH or dw.shape[1] != KW or keep.shape[0] != K:
        raise ValueError("sgd_update_hwc_f32: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("sgd_update_hwc_f32: keep index out of range")
    lr_t = w.dtype.type(lr)
    for k in range(K):
        c = keep[k]
        for ky in range(KH):
            for kx in range(KW):
                w[ky, kx, c] = w[ky, kx, c] - lr_t * dw[ky, kx, k]


@njit(**NJIT)
def sgd_update_bias_f32(b, db, keep, lr):
    """b[keep[k]] -= lr * db[k]: fp32 bias SGD, in place.

    Layout:    b (C,) float32; db (K,) float32; keep (K,) int32, distinct.
    Math:      as sgd_update_ohwi_f32.
    Ownership: updates b in place at the kept channels only; allocates nothing.
    C twin:    mt_sgd_update_bias_f32.
    """
    C = b.shape[0]
    K = db.shape[0]
    if keep.shape[0] != K:
        raise ValueError("sgd_update_bias_f32: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("sgd_update_bias_f32: keep index out of range")
    lr_t = b.dtype.type(lr)
    for k in range(K):
        c = keep[k]
        b[c] = b[c] - lr_t * db[k]


# ----------------------------------------------------------------------------------------------
# Adam, fp32 mode
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def adam_update_ohwi_f32(w, dw, m, v, keep_out, keep_in, lr, t):
    """Adam step t on the kept (co, ci) pairs of an OHWI float32 weight, in place (w, m and v).

    Layout:    w (Co, KH, KW, Ci) float32; dw, m, v (Ko, KH, KW, Ki) float32, the compact layout (m, v persistent,
               zero before step 1); keep_out (Ko,), keep_in (Ki,) int32, distinct; t >= 1 the step count (the same t
               for every parameter of a step). Pointwise / FC: (Co, 1, 1, Ci) / (Ko, 1, 1, Ki) views.
    Math:      Kingma & Ba 2015, Algorithm 1 (b1 0.9, b2 0.999, eps 1e-8), per element in float64 with float32 state:
               g = dw; m = f32(b1 m + (1 - b1) g); v = f32(b2 v + (1 - b2) g^2);
               w <- f32(w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)).
               (PyTorch applies eps and the bias corrections in float32 with a different grouping; results agree
               to float32 rounding, not bit for bit.)
    Ownership: updates w at the kept entries and every element of m and v; allocates nothing.
    C twin:    mt_adam_update_ohwi_f32.
    """
    CO, KH, KW, CI = w.shape
    KO = dw.shape[0]
    KI = dw.shape[3]
    if (dw.shape[1] != KH or dw.shape[2] != KW or keep_out.shape[0] != KO or keep_in.shape[0] != KI
            or m.shape != dw.shape or v.shape != dw.shape):
        raise ValueError("adam_update_ohwi_f32: inconsistent shapes")
    if not keep_in_range(keep_out, CO) or not keep_in_range(keep_in, CI):
        raise ValueError("adam_update_ohwi_f32: keep index out of range")
    bc1, bc2 = adam_bias_corrections(t)
    lr64 = np.float64(lr)
    for a in range(KO):
        co = keep_out[a]
        for ky in range(KH):
            for kx in range(KW):
                for b in range(KI):
                    ci = keep_in[b]
                    m32, v32, step = adam_moments_step(m[a, ky, kx, b], v[a, ky, kx, b],
                                                       np.float64(dw[a, ky, kx, b]), bc1, bc2)
                    m[a, ky, kx, b] = m32
                    v[a, ky, kx, b] = v32
                    w[co, ky, kx, ci] = np.float32(np.float64(w[co, ky, kx, ci]) - lr64 * step)


@njit(**NJIT)
def adam_update_hwc_f32(w, dw, m, v, keep, lr, t):
    """Adam step t on the kept channels of a depthwise float32 weight, in place (w, m and v).

    Layout:    w (KH, KW, C) float32; dw, m, v (KH, KW, K) float32; keep (K,) int32, distinct; t >= 1.
    Math:      as adam_update_ohwi_f32.
    Ownership: updates w at the kept channels and every element of m and v; allocates nothing.
    C twin:    mt_adam_update_hwc_f32.
    """
    KH, KW, C = w.shape
    K = dw.shape[2]
    if (dw.shape[0] != KH or dw.shape[1] != KW or keep.shape[0] != K
            or m.shape != dw.shape or v.shape != dw.shape):
        raise ValueError("adam_update_hwc_f32: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("adam_update_hwc_f32: keep index out of range")
    bc1, bc2 = adam_bias_corrections(t)
    lr64 = np.float64(lr)
    for k in range(K):
        c = keep[k]
        for ky in range(KH):
            for kx in range(KW):
                m32, v32, step = adam_moments_step(m[ky, kx, k], v[ky, kx, k], np.float64(dw[ky, kx, k]), bc1, bc2)
                m[ky, kx, k] = m32
                v[ky, kx, k] = v32
                w[ky, kx, c] = np.float32(np.float64(w[ky, kx, c]) - lr64 * step)


@njit(**NJIT)
def adam_update_bias_f32(b, db, m, v, keep, lr, t):
    """Adam step t on the kept entries of a float32 bias, in place (b, m and v).

    Layout:    b (C,) float32; db, m, v (K,) float32; keep (K,) int32, distinct; t >= 1.
    Math:      as adam_update_ohwi_f32.
    Ownership: updates b at the kept channels and every element of m and v; allocates nothing.
    C twin:    mt_adam_update_bias_f32.
    """
    C = b.shape[0]
    K = db.shape[0]
    if keep.shape[0] != K or m.shape[0] != K or v.shape[0] != K:
        raise ValueError("adam_update_bias_f32: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("adam_update_bias_f32: keep index out of range")
    bc1, bc2 = adam_bias_corrections(t)
    lr64 = np.float64(lr)
    for k in range(K):
        c = keep[k]
        m32, v32, step = adam_moments_step(m[k], v[k], np.float64(db[k]), bc1, bc2)
        m[k] = m32
        v[k] = v32
        b[c] = np.float32(np.float64(b[c]) - lr64 * step)


# ----------------------------------------------------------------------------------------------
# Adam, int8 mode (on the gradient with respect to the integer parameter)
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def adam_update_ohwi_s8(w, dw, m, v, keep_out, keep_in, gscale, lr, t):
    """Adam step t on the kept (co, ci) pairs of an int8 OHWI weight in SRAM, in integer units, in place.

    Layout:    w (Co, KH, KW, Ci) int8; dw, m, v (Ko, KH, KW, Ki) float32 (compact; m, v zero before step 1);
               keep_out (Ko,), keep_in (Ki,) int32, distinct; gscale (Co,) float32 indexed by the output channel;
               t >= 1. Pointwise: (Co, 1, 1, Ci) / (Ko, 1, 1, Ki) views.
    Math:      gscale turns dw into the gradient with respect to the integer weight: the engine passes
               dw = sum dy_real * (x_int - x_zp) and gscale[co] = s_x * s_w[co], so
               g = gscale[co] * dw = s_w * dL/dw_real = dL/dw_int (float64). The moments follow Adam on g exactly as
               adam_update_ohwi_f32 (float32 state), and the step lr * m_hat / (sqrt(v_hat) + eps) is in integer
               units (LSBs): w <- min(max(w - round_half_away(step), -127), 127). No QAS: Adam's step is invariant to
               a constant per-parameter gradient scale (up to eps), which is why the QAS paper's int8 Adam baseline
               trains without it. Sharp edge: |m_hat / (sqrt(v_hat) + eps)| <= ~1 early on (exactly 1 at t = 1), so
               lr < 0.5 never moves a weight at t = 1; lr is of the order of the LSBs a step may move.
    Rounding:  TinyEngine has no Adam. The rounding and saturation are those of sgd_update_ohwi_s8 (TinyEngine's
               SGD truncates toward zero and does not saturate; here half away from zero, saturated).
    Ownership: updates w at the kept entries and every element of m and v; allocates nothing.
    C twin:    mt_adam_update_ohwi_s8.
    """
    CO, KH, KW, CI = w.shape
    KO = dw.shape[0]
    KI = dw.shape[3]
    if (dw.shape[1] != KH or dw.shape[2] != KW or keep_out.shape[0] != KO or keep_in.shape[0] != KI
            or m.shape != dw.shape or v.shape != dw.shape or gscale.shape[0] != CO):
        raise ValueError("adam_update_ohwi_s8: inconsistent shapes")
    if not keep_in_range(keep_out, CO) or not keep_in_range(keep_in, CI):
        raise ValueError("adam_update_ohwi_s8: keep index out of range")
    bc1, bc2 = adam_bias_corrections(t)
    lr64 = np.float64(lr)
    for a in range(KO):
        co = keep_out[a]
        gs = np.float64(gscale[co])
        for ky in range(KH):
            for kx in range(KW):
                for b in range(KI):
                    ci = keep_in[b]
                    m32, v32, step = adam_moments_step(m[a, ky, kx, b], v[a, ky, kx, b],
                                                       gs * np.float64(dw[a, ky, kx, b]), bc1, bc2)
                    m[a, ky, kx, b] = m32
                    v[a, ky, kx, b] = v32
                    tw = np.float64(w[co, ky, kx, ci]) - round_half_away_f64(lr64 * step)
                    w[co, ky, kx, ci] = np.int8(saturate_f64(tw, W_MIN, W_MAX))


@njit(**NJIT)
def adam_update_hwc_s8(w, dw, m, v, keep, gscale, lr, t):
    """Adam step t on the kept channels of an int8 depthwise weight in SRAM, in integer units, in place.

    Layout:    w (KH, KW, C) int8; dw, m, v (KH, KW, K) float32; keep (K,) int32, distinct; gscale (C,) float32
               indexed by the channel (s_x * s_w[c]); t >= 1.
    Math:      as adam_update_ohwi_s8: g = gscale[c] * dw = dL/dw_int, Adam on g, w <- sat(w - round_half_away(lr * step)).
    Rounding:  half away from zero, saturated to [-127, 127] (TinyEngine has no Adam; its SGD truncates).
    Ownership: updates w at the kept channels and every element of m and v; allocates nothing.
    C twin:    mt_adam_update_hwc_s8.
    """
    KH, KW, C = w.shape
    K = dw.shape[2]
    if (dw.shape[0] != KH or dw.shape[1] != KW or keep.shape[0] != K
            or m.shape != dw.shape or v.shape != dw.shape or gscale.shape[0] != C):
        raise ValueError("adam_update_hwc_s8: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("adam_update_hwc_s8: keep index out of range")
    bc1, bc2 = adam_bias_corrections(t)
    lr64 = np.float64(lr)
    for k in range(K):
        c = keep[k]
        gs = np.float64(gscale[c])
        for ky in range(KH):
            for kx in range(KW):
                m32, v32, step = adam_moments_step(m[ky, kx, k], v[ky, kx, k], gs * np.float64(dw[ky, kx, k]),
                                                   bc1, bc2)
                m[ky, kx, k] = m32
                v[ky, kx, k] = v32
                tw = np.float64(w[ky, kx, c]) - round_half_away_f64(lr64 * step)
                w[ky, kx, c] = np.int8(saturate_f64(tw, W_MIN, W_MAX))


@njit(**NJIT)
def adam_update_bias_s32(b, db, m, v, keep, gscale, lr, t):
    """Adam step t on the kept entries of an int32 bias in SRAM, in integer units, in place.

    Layout:    b (C,) int32; db, m, v (K,) float32; keep (K,) int32, distinct; gscale (C,) float32; t >= 1.
    Math:      the engine passes db = dL/db_real and gscale[c] = s_x * s_w[c] (the bias scale), so
               g = gscale[c] * db = dL/db_int; Adam on g as adam_update_ohwi_s8;
               b <- min(max(b - round_half_away(lr * step), INT32_MIN), INT32_MAX).
    Rounding:  half away from zero, saturated (TinyEngine has no Adam; its bias SGD truncates the step, unsaturated).
    Ownership: updates b at the kept channels and every element of m and v; allocates nothing.
    C twin:    mt_adam_update_bias_s32.
    """
    C = b.shape[0]
    K = db.shape[0]
    if keep.shape[0] != K or m.shape[0] != K or v.shape[0] != K or gscale.shape[0] != C:
        raise ValueError("adam_update_bias_s32: inconsistent shapes")
    if not keep_in_range(keep, C):
        raise ValueError("adam_update_bias_s32: keep index out of range")
    bc1, bc2 = adam_bias_corrections(t)
    lr64 = np.float64(lr)
    for k in range(K):
        c = keep[k]
        m32, v32, step = adam_moments_step(m[k], v[k], np.float64(gscale[c]) * np.float64(db[k]), bc1, bc2)
        m[k] = m32
        v[k] = v32
        tb = np.float64(b[c]) - round_half_away_f64(lr64 * step)
        b[c] = np.int32(saturate_f64(tb, np.float64(INT32_MIN), np.float64(INT32_MAX)))


# ----------------------------------------------------------------------------------------------
# Guard
# ----------------------------------------------------------------------------------------------

@njit(**NJIT)
def all_finite(a):
    """True if no element of the float array a (any shape, any layout) is NaN or +-inf; False at the first that is.

    The engine refuses a step (no parameter changes) when a gradient is not finite. Reads a; allocates nothing.
    C twin:    mt_all_finite.
    """
    for x in a.flat:
        if not np.isfinite(x):
            return False
    return True
