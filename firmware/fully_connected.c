/* Fully connected (classifier head) forward, int8 per-channel and fp32; weights (co, ci).
 * Twin of kernels/fully_connected.py. */
#include "microtrain.h"

/* y (n, co) s8; x (n, ci) s8; wt (co, ci) s8; bias, mult, shift (co,) s32. Bit-exact with TFLM
 * FullyConnectedPerChannel; acc + bias wraps modulo 2^32 (see conv2d.c). */
void mt_fully_connected_s8(int8_t *y, const int8_t *x, const int8_t *wt, const int32_t *bias, const int32_t *mult,
                           const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min, int32_t act_max,
                           int32_t n, int32_t ci, int32_t co)
{
    for (int32_t b = 0; b < n; ++b) {
        for (int32_t oc = 0; oc < co; ++oc) {
            int32_t acc = 0;
            for (int32_t c = 0; c < ci; ++c) {
                acc += (int32_t)wt[(size_t)oc * ci + c] * ((int32_t)x[(size_t)b * ci + c] - x_zp);
            }
            acc = (int32_t)((uint32_t)acc + (uint32_t)bias[oc]);
            const int32_t v = mt_mbqm(acc, mult[oc], shift[oc]) + y_zp;
            y[(size_t)b * co + oc] = (int8_t)(v < act_min ? act_min : (v > act_max ? act_max : v));
        }
    }
}

/* y (n, co) f32; x (n, ci); wt (co, ci); bias (co,). Sum over ci in order, then + bias (as Python). */
void mt_fully_connected_f32(float *y, const float *x, const float *wt, const float *bias, int32_t n, int32_t ci,
                            int32_t co)
{
    for (int32_t b = 0; b < n; ++b) {
        for (int32_t oc = 0; oc < co; ++oc) {
            float acc = 0.0f;
            for (int32_t c = 0; c < ci; ++c) {
                acc += x[(size_t)b * ci + c] * wt[(size_t)oc * ci + c];
            }
            y[(size_t)b * co + oc] = acc + bias[oc];
        }
    }
}
