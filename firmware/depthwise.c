/* Depthwise 2-D convolution forward (depth multiplier 1), int8 and fp32, NHWC; weights (kh, kw, c).
 * Twin of kernels/depthwise.py. Any kernel size and stride, symmetric explicit padding, no scratch. */
#include "microtrain.h"

/* y (n, oh, ow, c) s8; mask (n * oh, ceil(ow * c / 8)) u8 or NULL; x (n, h, w, c) s8; wt (kh, kw, c) s8;
 * bias, mult, shift (c,) s32. Bit-exact with TFLM reference_integer_ops::DepthwiseConvPerChannel.
 * Overflow: a 7x7 window sums to at most 49 * 32640 < 2^21; acc + bias wraps modulo 2^32 (see conv2d.c). */
void mt_depthwise_conv_s8(int8_t *y, uint8_t *mask, const int8_t *x, const int8_t *wt, const int32_t *bias,
                          const int32_t *mult, const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min,
                          int32_t act_max, int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t c,
                          int32_t kh, int32_t kw)
{
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;
    const int32_t row_bytes = (ow * c + 7) / 8;
    for (int32_t r = 0; r < n * oh; ++r) {
        const int32_t b = r / oh;
        const int32_t oy = r - b * oh;
        const int32_t iy0 = oy * stride - pad;
        int32_t j = 0; /* mask bit of (ox, ch) in row r: ox * c + ch */
        uint32_t byte = 0;
        for (int32_t ox = 0; ox < ow; ++ox) {
            const int32_t ix0 = ox * stride - pad;
            for (int32_t ch = 0; ch < c; ++ch) {
                int32_t acc = 0;
                for (int32_t ky = 0; ky < kh; ++ky) {
                    const int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= h) {
                        continue; /* tap in the padding contributes (x_zp - x_zp) * w = 0 */
                    }
                    for (int32_t kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ix0 + kx;
                        if (ix < 0 || ix >= w) {
                            continue;
                        }
                        acc += (int32_t)wt[((size_t)ky * kw + kx) * c + ch]
                               * ((int32_t)x[(((size_t)b * h + iy) * w + ix) * c + ch] - x_zp);
                    }
                }
                acc = (int32_t)((uint32_t)acc + (uint32_t)bias[ch]);
                const int32_t v = mt_mbqm(acc, mult[ch], shift[ch]) + y_zp;
                y[((size_t)r * ow + ox) * c + ch] = (int8_t)(v < act_min ? act_min : (v > act_max ? act_max : v));
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

/* y (n, oh, ow, c) f32; x (n, h, w, c); wt (kh, kw, c); bias (c,). Order (ky, kx), + bias, clamp: as Python. */
void mt_depthwise_conv_f32(float *y, const float *x, const float *wt, const float *bias, float act_min,
                           float act_max, int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t c,
                           int32_t kh, int32_t kw)
{
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;
    for (int32_t r = 0; r < n * oh; ++r) {
        const int32_t b = r / oh;
        const int32_t oy = r - b * oh;
        const int32_t iy0 = oy * stride - pad;
        for (int32_t ox = 0; ox < ow; ++ox) {
            const int32_t ix0 = ox * stride - pad;
            for (int32_t ch = 0; ch < c; ++ch) {
                float acc = 0.0f;
                for (int32_t ky = 0; ky < kh; ++ky) {
                    const int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= h) {
                        continue;
                    }
                    for (int32_t kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ix0 + kx;
                        if (ix < 0 || ix >= w) {
                            continue;
                        }
                        acc += x[(((size_t)b * h + iy) * w + ix) * c + ch] * wt[((size_t)ky * kw + kx) * c + ch];
                    }
                }
                acc += bias[ch];
                if (acc < act_min) {
                    acc = act_min;
                }
                if (acc > act_max) {
                    acc = act_max;
                }
                y[((size_t)r * ow + ox) * c + ch] = acc;
            }
        }
    }
}
