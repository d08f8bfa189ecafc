/* Pointwise (1x1) convolution backward, fp32: input and sparse weight gradient; twin of
 * kernels/pointwise_backward.py, same loop orders (bit-equal results). */
#include "microtrain.h"

/* dx (n, h, w, ci) = dy (n, h, w, co) @ wt (co, ci), `=` overwrite; per element, co in increasing order. */
#define MT_POINTWISE_BACKWARD_INPUT_BODY(WT)                                                                   \
    for (int32_t p = 0; p < n * h * w; ++p) {                                                                  \
        float *dxp = dx + (size_t)p * ci;                                                                      \
        for (int32_t c = 0; c < ci; ++c) {                                                                     \
            dxp[c] = 0.0f;                                                                                     \
        }                                                                                                      \
        for (int32_t oc = 0; oc < co; ++oc) {                                                                  \
            const float g = dy[(size_t)p * co + oc];                                                           \
            const WT *wp = wt + (size_t)oc * ci;                                                               \
            for (int32_t c = 0; c < ci; ++c) {                                                                 \
                dxp[c] += (float)wp[c] * g;                                                                    \
            }                                                                                                  \
        }                                                                                                      \
    }

void mt_pointwise_conv_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t n, int32_t h,
                                          int32_t w, int32_t ci, int32_t co)
{
    MT_POINTWISE_BACKWARD_INPUT_BODY(float)
}

void mt_pointwise_conv_f32_backward_input_ws8(float *dx, const float *dy, const int8_t *wt, int32_t n, int32_t h,
                                              int32_t w, int32_t ci, int32_t co)
{
    MT_POINTWISE_BACKWARD_INPUT_BODY(int8_t)
}

/* dw (k, ci): dw[j, c] = sum over pixels p of (x[p, c] - x_zp) * dy[p, keep_out[j]], pixels in order. */
#define MT_POINTWISE_BACKWARD_WEIGHT_BODY(XT)                                                                  \
    for (int32_t j = 0; j < k; ++j) {                                                                          \
        const int32_t oc = keep_out[j];                                                                        \
        float *dwp = dw + (size_t)j * ci;                                                                      \
        for (int32_t c = 0; c < ci; ++c) {                                                                     \
            dwp[c] = 0.0f;                                                                                     \
        }                                                                                                      \
        for (int32_t p = 0; p < n * h * w; ++p) {                                                              \
            const float g = dy[(size_t)p * co + oc];                                                           \
            const XT *xp = x + (size_t)p * ci;                                                                 \
            for (int32_t c = 0; c < ci; ++c) {                                                                 \
                dwp[c] += ((float)xp[c] - x_zp) * g;                                                           \
            }                                                                                                  \
        }                                                                                                      \
    }

void mt_pointwise_conv_f32_backward_weight(float *dw, const float *x, float x_zp, const float *dy,
                                           const int32_t *keep_out, int32_t n, int32_t h, int32_t w, int32_t ci,
                                           int32_t co, int32_t k)
{
    MT_POINTWISE_BACKWARD_WEIGHT_BODY(float)
}

void mt_pointwise_conv_f32_backward_weight_xs8(float *dw, const int8_t *x, float x_zp, const float *dy,
                                               const int32_t *keep_out, int32_t n, int32_t h, int32_t w, int32_t ci,
                                               int32_t co, int32_t k)
{
    MT_POINTWISE_BACKWARD_WEIGHT_BODY(int8_t)
}
