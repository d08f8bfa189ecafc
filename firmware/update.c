/* Parameter updates, in place on the kept slices of the trainable weights and biases; twin of kernels/update.py.
 *
 * int8 mode: SGD with Quantization-Aware Scaling (coef = s_x / s_w for weights, 1 / (s_x s_w) for biases, computed
 * on the host) or Adam in integer units. The step is computed in double, rounded half away from zero, subtracted,
 * and the result saturated to [-127, 127] (weights) or the int32 range (biases). TinyEngine instead truncates
 * toward zero and does not saturate: a documented deviation (kernels/update.py). fp32 mode: SGD, Adam.
 * Keep indices must be distinct; gradients must be finite (mt_all_finite, checked by the caller first). */
#include <math.h>

#include "microtrain.h"

#define MT_ADAM_BETA1 0.9
#define MT_ADAM_BETA2 0.999
#define MT_ADAM_EPS 1e-8
#define MT_W_MIN (-127.0)
#define MT_W_MAX 127.0
#define MT_B_MIN (-2147483648.0)
#define MT_B_MAX 2147483647.0

/* C round() spelled out: nearest integer, ties away from zero, exact for every double (a - floor(a) is exact). */
static double round_half_away(double v)
{
    const double a = fabs(v);
    if (a >= 4503599627370496.0) { /* 2^52: already an integer (or inf) */
        return v;
    }
    double r = floor(a);
    if (a - r >= 0.5) {
        r += 1.0;
    }
    return v < 0.0 ? -r : r;
}

static double saturate(double t, double lo, double hi)
{
    return t < lo ? lo : (t > hi ? hi : t);
}

/* One Adam element: m, v updated in float32 (computed in double), returns the step (m' / bc1) / (sqrt(v' / bc2) + eps)
 * from the stored float32 moments. */
static double adam_moments_step(float *m, float *v, double g, double bc1, double bc2)
{
    const float m32 = (float)(MT_ADAM_BETA1 * (double)*m + (1.0 - MT_ADAM_BETA1) * g);
    const float v32 = (float)(MT_ADAM_BETA2 * (double)*v + (1.0 - MT_ADAM_BETA2) * (g * g));
    *m = m32;
    *v = v32;
    return ((double)m32 / bc1) / (sqrt((double)v32 / bc2) + MT_ADAM_EPS);
}

/* w (co, kh, kw, ci) s8; dw (ko, kh, kw, ki) f32 compact: dw[a, :, :, b] belongs to (keep_out[a], keep_in[b]);
 * coef (co,) f32. step = (lr * coef[co]) * dw in double; w <- sat(w - round_half_away(step)). */
void mt_sgd_update_ohwi_s8(int8_t *w, const float *dw, const int32_t *keep_out, const int32_t *keep_in,
                           const float *coef, double lr, int32_t co, int32_t kh, int32_t kw, int32_t ci, int32_t ko,
                           int32_t ki)
{
    (void)co;
    for (int32_t a = 0; a < ko; ++a) {
        const int32_t oc = keep_out[a];
        const double s = lr * (double)coef[oc];
        for (int32_t t = 0; t < kh * kw; ++t) {
            for (int32_t b = 0; b < ki; ++b) {
                int8_t *wp = &w[((size_t)oc * kh * kw + t) * ci + keep_in[b]];
                const double step = s * (double)dw[((size_t)a * kh * kw + t) * ki + b];
                *wp = (int8_t)saturate((double)*wp - round_half_away(step), MT_W_MIN, MT_W_MAX);
            }
        }
    }
}

/* w (kh, kw, c) s8; dw (kh, kw, k) f32, slot j is channel keep[j]; coef (c,) f32. */
void mt_sgd_update_hwc_s8(int8_t *w, const float *dw, const int32_t *keep, const float *coef, double lr, int32_t kh,
                          int32_t kw, int32_t c, int32_t k)
{
    for (int32_t j = 0; j < k; ++j) {
        const int32_t ch = keep[j];
        const double s = lr * (double)coef[ch];
        for (int32_t t = 0; t < kh * kw; ++t) {
            int8_t *wp = &w[(size_t)t * c + ch];
            const double step = s * (double)dw[(size_t)t * k + j];
            *wp = (int8_t)saturate((double)*wp - round_half_away(step), MT_W_MIN, MT_W_MAX);
        }
    }
}

/* b (c,) s32; db (k,) f32, db[j] belongs to keep[j]; coef (c,) f32. |b| < 2^31 and the rounded step is an integer,
 * so the double difference is exact until it saturates anyway. */
void mt_sgd_update_bias_s32(int32_t *b, const float *db, const int32_t *keep, const float *coef, double lr, int32_t c,
                            int32_t k)
{
    (void)c;
    for (int32_t j = 0; j < k; ++j) {
        const int32_t ch = keep[j];
        const double t = (double)b[ch] - round_half_away((lr * (double)coef[ch]) * (double)db[j]);
        b[ch] = (int32_t)saturate(t, MT_B_MIN, MT_B_MAX);
    }
}

/* fp32 SGD: lr rounded to float once, then w - (lr * dw): two float roundings, no FMA (PyTorch's SGD). */
void mt_sgd_update_ohwi_f32(float *w, const float *dw, const int32_t *keep_out, const int32_t *keep_in, double lr,
                            int32_t co, int32_t kh, int32_t kw, int32_t ci, int32_t ko, int32_t ki)
{
    const float lr_t = (float)lr;
    (void)co;
    for (int32_t a = 0; a < ko; ++a) {
        const int32_t oc = keep_out[a];
        for (int32_t t = 0; t < kh * kw; ++t) {
            for (int32_t b = 0; b < ki; ++b) {
                float *wp = &w[((size_t)oc * kh * kw + t) * ci + keep_in[b]];
                *wp = *wp - lr_t * dw[((size_t)a * kh * kw + t) * ki + b];
            }
        }
    }
}

void mt_sgd_update_hwc_f32(float *w, const float *dw, const int32_t *keep, double lr, int32_t kh, int32_t kw,
                           int32_t c, int32_t k)
{
    const float lr_t = (float)lr;
    for (int32_t j = 0; j < k; ++j) {
        for (int32_t t = 0; t < kh * kw; ++t) {
            float *wp = &w[(size_t)t * c + keep[j]];
            *wp = *wp - lr_t * dw[(size_t)t * k + j];
        }
    }
}

void mt_sgd_update_bias_f32(float *b, const float *db, const int32_t *keep, double lr, int32_t c, int32_t k)
{
    const float lr_t = (float)lr;
    (void)c;
    for (int32_t j = 0; j < k; ++j) {
        b[keep[j]] = b[keep[j]] - lr_t * db[j];
    }
}

/* Adam bias corrections (1 - b1^t, 1 - b2^t) for step t >= 1, with libm pow (as math.pow in the Python twin). */
static void adam_bias_corrections(int32_t t, double *bc1, double *bc2)
{
    *bc1 = 1.0 - pow(MT_ADAM_BETA1, (double)t);
    *bc2 = 1.0 - pow(MT_ADAM_BETA2, (double)t);
}

/* Adam on fp32 weights: m, v (ko, kh, kw, ki) compact like dw; w <- (float)(w - lr * step) in double. */
void mt_adam_update_ohwi_f32(float *w, const float *dw, float *m, float *v, const int32_t *keep_out,
                             const int32_t *keep_in, double lr, int32_t t, int32_t co, int32_t kh, int32_t kw,
                             int32_t ci, int32_t ko, int32_t ki)
{
    double bc1, bc2;
    adam_bias_corrections(t, &bc1, &bc2);
    (void)co;
    for (int32_t a = 0; a < ko; ++a) {
        const int32_t oc = keep_out[a];
        for (int32_t q = 0; q < kh * kw; ++q) {
            for (int32_t b = 0; b < ki; ++b) {
                const size_t i = ((size_t)a * kh * kw + q) * ki + b;
                const double step = adam_moments_step(&m[i], &v[i], (double)dw[i], bc1, bc2);
                float *wp = &w[((size_t)oc * kh * kw + q) * ci + keep_in[b]];
                *wp = (float)((double)*wp - lr * step);
            }
        }
    }
}

void mt_adam_update_hwc_f32(float *w, const float *dw, float *m, float *v, const int32_t *keep, double lr, int32_t t,
                            int32_t kh, int32_t kw, int32_t c, int32_t k)
{
    double bc1, bc2;
    adam_bias_corrections(t, &bc1, &bc2);
    for (int32_t j = 0; j < k; ++j) {
        for (int32_t q = 0; q < kh * kw; ++q) {
            const size_t i = (size_t)q * k + j;
            const double step = adam_moments_step(&m[i], &v[i], (double)dw[i], bc1, bc2);
            float *wp = &w[(size_t)q * c + keep[j]];
            *wp = (float)((double)*wp - lr * step);
        }
    }
}

void mt_adam_update_bias_f32(float *b, const float *db, float *m, float *v, const int32_t *keep, double lr, int32_t t,
                             int32_t c, int32_t k)
{
    double bc1, bc2;
    adam_bias_corrections(t, &bc1, &bc2);
    (void)c;
    for (int32_t j = 0; j < k; ++j) {
        const double step = adam_moments_step(&m[j], &v[j], (double)db[j], bc1, bc2);
        b[keep[j]] = (float)((double)b[keep[j]] - lr * step);
    }
}

/* Adam in integer units: g = gscale[co] * dw = dL/dw_int; w <- sat(w - round_half_away(lr * step)). */
void mt_adam_update_ohwi_s8(int8_t *w, const float *dw, float *m, float *v, const int32_t *keep_out,
                            const int32_t *keep_in, const float *gscale, double lr, int32_t t, int32_t co, int32_t kh,
                            int32_t kw, int32_t ci, int32_t ko, int32_t ki)
{
    double bc1, bc2;
    adam_bias_corrections(t, &bc1, &bc2);
    (void)co;
    for (int32_t a = 0; a < ko; ++a) {
        const int32_t oc = keep_out[a];
        const double gs = (double)gscale[oc];
        for (int32_t q = 0; q < kh * kw; ++q) {
            for (int32_t b = 0; b < ki; ++b) {
                const size_t i = ((size_t)a * kh * kw + q) * ki + b;
                const double step = adam_moments_step(&m[i], &v[i], gs * (double)dw[i], bc1, bc2);
                int8_t *wp = &w[((size_t)oc * kh * kw + q) * ci + keep_in[b]];
                *wp = (int8_t)saturate((double)*wp - round_half_away(lr * step), MT_W_MIN, MT_W_MAX);
            }
        }
    }
}

void mt_adam_update_hwc_s8(int8_t *w, const float *dw, float *m, float *v, const int32_t *keep, const float *gscale,
                           double lr, int32_t t, int32_t kh, int32_t kw, int32_t c, int32_t k)
{
    double bc1, bc2;
    adam_bias_corrections(t, &bc1, &bc2);
    for (int32_t j = 0; j < k; ++j) {
        const int32_t ch = keep[j];
        const double gs = (double)gscale[ch];
        for (int32_t q = 0; q < kh * kw; ++q) {
            const size_t i = (size_t)q * k + j;
            const double step = adam_moments_step(&m[i], &v[i], gs * (double)dw[i], bc1, bc2);
            int8_t *wp = &w[(size_t)q * c + ch];
            *wp = (int8_t)saturate((double)*wp - round_half_away(lr * step), MT_W_MIN, MT_W_MAX);
        }
    }
}

void mt_adam_update_bias_s32(int32_t *b, const float *db, float *m, float *v, const int32_t *keep,
                             const float *gscale, double lr, int32_t t, int32_t c, int32_t k)
{
    double bc1, bc2;
    adam_bias_corrections(t, &bc1, &bc2);
    (void)c;
    for (int32_t j = 0; j < k; ++j) {
        const int32_t ch = keep[j];
        const double step = adam_moments_step(&m[j], &v[j], (double)gscale[ch] * (double)db[j], bc1, bc2);
        b[ch] = (int32_t)saturate((double)b[ch] - round_half_away(lr * step), MT_B_MIN, MT_B_MAX);
    }
}

/* 1 if every element is finite; isfinite() from C99 math.h. */
int32_t mt_all_finite(const float *a, int32_t count)
{
    for (int32_t i = 0; i < count; ++i) {
        if (!isfinite(a[i])) {
            return 0;
        }
    }
    return 1;
}
