/* Pointwise (1x1, stride 1) convolution forward, int8 and fp32, NHWC; weights (co, ci). Twin of kernels/pointwise.py. */
#include "microtrain.h"

/* y (n, h, w, co) s8; mask (n * h, ceil(w * co / 8)) u8 or NULL; x (n, h, w, ci) s8; wt (co, ci) s8;
 * bias, mult, shift (co,) s32. Bit-exact with TFLM ConvPerChannel for a 1x1 filter. Overflow: the sum over ci fits
 * int32 while ci <= 65793; acc + bias wraps modulo 2^32 (see conv2d.c). */
void mt_pointwise_conv_s8(int8_t *y, uint8_t *mask, const int8_t *x, const int8_t *wt, const int32_t *bias,
                          const int32_t *mult, const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min,
                          int32_t act_max, int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co)
{
    const int32_t row_bytes = (w * co + 7) / 8;
    for (int32_t r = 0; r < n * h; ++r) {
        int32_t j = 0;
        uint32_t byte = 0;
        for (int32_t px = 0; px < w; ++px) {
            const int8_t *xp = x + ((size_t)r * w + px) * ci;
            for (int32_t oc = 0; oc < co; ++oc) {
                const int8_t *wp = wt + (size_t)oc * ci;
                int32_t acc = 0;
                for (int32_t c = 0; c < ci; ++c) {
                    acc += (int32_t)wp[c] * ((int32_t)xp[c] - x_zp);
                }
                acc = (int32_t)((uint32_t)acc + (uint32_t)bias[oc]);
                const int32_t v = mt_mbqm(acc, mult[oc], shift[oc]) + y_zp;
                y[((size_t)r * w + px) * co + oc] = (int8_t)(v < act_min ? act_min : (v > act_max ? act_max : v));
                if (mask != NULL) {
                    if (v >= act_min && v <= act_max) {
                        byte |= 1u << (j & 7);
                    }
                    if ((j & 7) == 7) {
                        mask[(size_t)r * row_bytes + (j >> 3)] = (uint8_t)byte;
                        byte = 0;
                    }
                    ++j;
                }
            }
        }
        if (mask != NULL && (j & 7) != 0) {
            mask[(size_t)r * row_bytes + (j >> 3)] = (uint8_t)byte;
        }
    }
}

/* y (n, h, w, co) f32; x (n, h, w, ci); wt (co, ci); bias (co,). Sum over ci in order, + bias, clamp (as Python). */
void mt_pointwise_conv_f32(float *y, const float *x, const float *wt, const float *bias, float act_min,
                           float act_max, int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co)
{
    for (int32_t p = 0; p < n * h * w; ++p) {
        const float *xp = x + (size_t)p * ci;
        for (int32_t oc = 0; oc < co; ++oc) {
            const float *wp = wt + (size_t)oc * ci;
            float acc = 0.0f;
            for (int32_t c = 0; c < ci; ++c) {
                acc += xp[c] * wp[c];
            }
            acc += bias[oc];
            if (acc < act_min) {
                acc = act_min;
            }
            if (acc > act_max) {
                acc = act_max;
            }
            y[(size_t)p * co + oc] = acc;
        }
    }
}
