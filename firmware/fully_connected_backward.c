/* Fully connected (head) backward, fp32: input and sparse weight gradient; twin of
 * kernels/fully_connected_backward.py, same loop orders (bit-equal results). */
#include "microtrain.h"

/* dx (n, ci) = dy (n, co) @ wt (co, ci), `=` overwrite; per element, co in increasing order. */
void mt_fully_connected_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t n, int32_t ci,
                                           int32_t co)
{
    for (int32_t b = 0; b < n; ++b) {
        float *dxp = dx + (size_t)b * ci;
        for (int32_t c = 0; c < ci; ++c) {
            dxp[c] = 0.0f;
        }
        for (int32_t oc = 0; oc < co; ++oc) {
            const float g = dy[(size_t)b * co + oc];
            for (int32_t c = 0; c < ci; ++c) {
                dxp[c] += wt[(size_t)oc * ci + c] * g;
            }
        }
    }
}

/* dw (k, ci): dw[j, c] = sum_b (x[b, c] - x_zp) * dy[b, keep_out[j]], b in increasing order. */
void mt_fully_connected_f32_backward_weight(float *dw, const float *x, float x_zp, const float *dy,
                                            const int32_t *keep_out, int32_t n, int32_t ci, int32_t co, int32_t k)
{
    for (int32_t j = 0; j < k; ++j) {
        const int32_t oc = keep_out[j];
        float *dwp = dw + (size_t)j * ci;
        for (int32_t c = 0; c < ci; ++c) {
            dwp[c] = 0.0f;
        }
        for (int32_t b = 0; b < n; ++b) {
            const float g = dy[(size_t)b * co + oc];
            for (int32_t c = 0; c < ci; ++c) {
                dwp[c] += (x[(size_t)b * ci + c] - x_zp) * g;
            }
        }
    }
}
