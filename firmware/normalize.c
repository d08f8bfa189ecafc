/* Row-wise L2 normalisation and its backward (cosine classifier head); twin of kernels/normalize.py. */
#include <math.h>

#include "microtrain.h"

#define MT_NORM_EPS 1e-12 /* |f| floored here: an all-zero row maps to zeros, not NaN */

/* y, x (n, c) f32 (y may be x); norm (n,) f32 out. Sum of squares in double, y = (double)x * (1 / |x|). */
void mt_l2_normalize_rows_f32(float *y, float *norm, const float *x, int32_t n, int32_t c)
{
    for (int32_t b = 0; b < n; ++b) {
        double s = 0.0;
        for (int32_t j = 0; j < c; ++j) {
            const double v = (double)x[(size_t)b * c + j];
            s += v * v;
        }
        double r = sqrt(s);
        if (r < MT_NORM_EPS) {
            r = MT_NORM_EPS;
        }
        norm[b] = (float)r;
        const double inv = 1.0 / r;
        for (int32_t j = 0; j < c; ++j) {
            y[(size_t)b * c + j] = (float)((double)x[(size_t)b * c + j] * inv);
        }
    }
}

/* dx[b] = (dy[b] - y[b] (y[b] . dy[b])) / norm[b], in double; dx, dy, y (n, c) f32 (dx may be dy); norm (n,). */
void mt_l2_normalize_rows_f32_backward(float *dx, const float *dy, const float *y, const float *norm, int32_t n,
                                       int32_t c)
{
    for (int32_t b = 0; b < n; ++b) {
        double d = 0.0;
        for (int32_t j = 0; j < c; ++j) {
            d += (double)y[(size_t)b * c + j] * (double)dy[(size_t)b * c + j];
        }
        const double inv = 1.0 / (double)norm[b];
        for (int32_t j = 0; j < c; ++j) {
            const size_t i = (size_t)b * c + j;
            dx[i] = (float)(((double)dy[i] - (double)y[i] * d) * inv);
        }
    }
}
