/* Average pooling forward, int8 and fp32, NHWC: windowed (padding excluded from the count) and global.
 * Twin of kernels/pool.py. Input and output share scale and zero point (no requantization). */
#include "microtrain.h"

/* TFLM AveragePool's rounding of acc / count (count > 0): half away from zero, C's truncating division. */
static int32_t rounded_mean(int32_t acc, int32_t count)
{
    return acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
}

static int32_t clamp_i32(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* y (n, oh, ow, c) s8; x (n, h, w, c) s8; pad < kh, pad < kw. Bit-exact with TFLM reference_integer_ops::AveragePool.
 * Overflow: |acc| <= 128 * kh * kw. */
void mt_avgpool_s8(int8_t *y, const int8_t *x, int32_t kh, int32_t kw, int32_t stride, int32_t pad, int32_t act_min,
                   int32_t act_max, int32_t n, int32_t h, int32_t w, int32_t c)
{
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;
    for (int32_t b = 0; b < n; ++b) {
        for (int32_t oy = 0; oy < oh; ++oy) {
            const int32_t y0 = oy * stride - pad;
            const int32_t fy0 = y0 < 0 ? -y0 : 0;
            const int32_t fy1 = kh < h - y0 ? kh : h - y0;
            for (int32_t ox = 0; ox < ow; ++ox) {
                const int32_t x0 = ox * stride - pad;
                const int32_t fx0 = x0 < 0 ? -x0 : 0;
                const int32_t fx1 = kw < w - x0 ? kw : w - x0;
                const int32_t count = (fy1 - fy0) * (fx1 - fx0);
                for (int32_t ch = 0; ch < c; ++ch) {
                    int32_t acc = 0;
                    for (int32_t fy = fy0; fy < fy1; ++fy) {
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            acc += x[(((size_t)b * h + y0 + fy) * w + x0 + fx) * c + ch];
                        }
                    }
                    y[(((size_t)b * oh + oy) * ow + ox) * c + ch] =
                        (int8_t)clamp_i32(rounded_mean(acc, count), act_min, act_max);
                }
            }
        }
    }
}

/* y (n, c) s8; x (n, h, w, c) s8: AveragePool with an h x w filter, VALID. Overflow: |acc| <= 128 * h * w. */
void mt_global_mean_s8(int8_t *y, const int8_t *x, int32_t act_min, int32_t act_max, int32_t n, int32_t h,
                       int32_t w, int32_t c)
{
    for (int32_t b = 0; b < n; ++b) {
        for (int32_t ch = 0; ch < c; ++ch) {
            int32_t acc = 0;
            for (int32_t p = 0; p < h * w; ++p) {
                acc += x[((size_t)b * h * w + p) * c + ch];
            }
            y[(size_t)b * c + ch] = (int8_t)clamp_i32(rounded_mean(acc, h * w), act_min, act_max);
        }
    }
}

/* y (n, oh, ow, c) f32; x (n, h, w, c). Float sum in (fy, fx) order, one division by the in-image count. */
void mt_avgpool_f32(float *y, const float *x, int32_t kh, int32_t kw, int32_t stride, int32_t pad, int32_t n,
                    int32_t h, int32_t w, int32_t c)
{
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;
    for (int32_t b = 0; b < n; ++b) {
        for (int32_t oy = 0; oy < oh; ++oy) {
            const int32_t y0 = oy * stride - pad;
            const int32_t fy0 = y0 < 0 ? -y0 : 0;
            const int32_t fy1 = kh < h - y0 ? kh : h - y0;
            for (int32_t ox = 0; ox < ow; ++ox) {
                const int32_t x0 = ox * stride - pad;
                const int32_t fx0 = x0 < 0 ? -x0 : 0;
                const int32_t fx1 = kw < w - x0 ? kw : w - x0;
                const float count = (float)((fy1 - fy0) * (fx1 - fx0));
                for (int32_t ch = 0; ch < c; ++ch) {
                    float acc = 0.0f;
                    for (int32_t fy = fy0; fy < fy1; ++fy) {
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            acc += x[(((size_t)b * h + y0 + fy) * w + x0 + fx) * c + ch];
                        }
                    }
                    y[(((size_t)b * oh + oy) * ow + ox) * c + ch] = acc / count;
                }
            }
        }
    }
}

/* y (n, c) f32; x (n, h, w, c): float sum in row-major (h, w) order, one division by h * w. */
void mt_global_mean_f32(float *y, const float *x, int32_t n, int32_t h, int32_t w, int32_t c)
{
    const float count = (float)(h * w);
    for (int32_t b = 0; b < n; ++b) {
        for (int32_t ch = 0; ch < c; ++ch) {
            float acc = 0.0f;
            for (int32_t p = 0; p < h * w; ++p) {
                acc += x[((size_t)b * h * w + p) * c + ch];
            }
            y[(size_t)b * c + ch] = acc / count;
        }
    }
}
