/* Depthwise convolution backward, fp32: input gradient and sparse weight gradient; twin of
 * kernels/depthwise_backward.py, same loop orders (bit-equal results). */
#include "microtrain.h"

/* dx (n, h, w, c) from dy (n, oh, ow, c) and wt (kh, kw, c), `=` overwrite; order per element: (ky, kx). */
#define MT_DEPTHWISE_BACKWARD_INPUT_BODY(WT)                                                                   \
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;                                                        \
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;                                                        \
    for (int32_t r = 0; r < n * h; ++r) {                                                                      \
        const int32_t b = r / h;                                                                               \
        const int32_t iy = r - b * h;                                                                          \
        for (int32_t ix = 0; ix < w; ++ix) {                                                                   \
            float *dxp = dx + ((size_t)r * w + ix) * c;                                                        \
            for (int32_t ch = 0; ch < c; ++ch) {                                                               \
                dxp[ch] = 0.0f;                                                                                \
            }                                                                                                  \
            for (int32_t ky = 0; ky < kh; ++ky) {                                                              \
                const int32_t ty = iy + pad - ky;                                                              \
                if (ty < 0 || ty % stride != 0 || ty / stride >= oh) {                                         \
                    continue;                                                                                  \
                }                                                                                              \
                const int32_t oy = ty / stride;                                                                \
                for (int32_t kx = 0; kx < kw; ++kx) {                                                          \
                    const int32_t tx = ix + pad - kx;                                                          \
                    if (tx < 0 || tx % stride != 0 || tx / stride >= ow) {                                     \
                        continue;                                                                              \
                    }                                                                                          \
                    const int32_t ox = tx / stride;                                                            \
                    const float *dyp = dy + (((size_t)b * oh + oy) * ow + ox) * c;                             \
                    const WT *wp = wt + ((size_t)ky * kw + kx) * c;                                            \
                    for (int32_t ch = 0; ch < c; ++ch) {                                                       \
                        dxp[ch] += (float)wp[ch] * dyp[ch];                                                    \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

void mt_depthwise_conv_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t stride, int32_t pad,
                                          int32_t n, int32_t h, int32_t w, int32_t c, int32_t kh, int32_t kw)
{
    MT_DEPTHWISE_BACKWARD_INPUT_BODY(float)
}

void mt_depthwise_conv_f32_backward_input_ws8(float *dx, const float *dy, const int8_t *wt, int32_t stride,
                                              int32_t pad, int32_t n, int32_t h, int32_t w, int32_t c, int32_t kh,
                                              int32_t kw)
{
    MT_DEPTHWISE_BACKWARD_INPUT_BODY(int8_t)
}

/* dw (kh, kw, k): slot j is channel keep[j]; x_kept (n, h, w, k) holds that channel in slot j; dy (n, oh, ow, c).
 * One sum per element in (b, oy, ox) order. */
#define MT_DEPTHWISE_BACKWARD_WEIGHT_BODY(XT)                                                                  \
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;                                                        \
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;                                                        \
    for (int32_t j = 0; j < k; ++j) {                                                                          \
        const int32_t ch = keep[j];                                                                            \
        for (int32_t t = 0; t < kh * kw; ++t) {                                                                \
            dw[(size_t)t * k + j] = 0.0f;                                                                      \
        }                                                                                                      \
        for (int32_t b = 0; b < n; ++b) {                                                                      \
            for (int32_t oy = 0; oy < oh; ++oy) {                                                              \
                const int32_t iy0 = oy * stride - pad;                                                         \
                for (int32_t ox = 0; ox < ow; ++ox) {                                                          \
                    const int32_t ix0 = ox * stride - pad;                                                     \
                    const float g = dy[(((size_t)b * oh + oy) * ow + ox) * c + ch];                            \
                    for (int32_t ky = 0; ky < kh; ++ky) {                                                      \
                        const int32_t iy = iy0 + ky;                                                           \
                        if (iy < 0 || iy >= h) {                                                               \
                            continue;                                                                          \
                        }                                                                                      \
                        for (int32_t kx = 0; kx < kw; ++kx) {                                                  \
                            const int32_t ix = ix0 + kx;                                                       \
                            if (ix < 0 || ix >= w) {                                                           \
                                continue;                                                                      \
                            }                                                                                  \
                            dw[((size_t)ky * kw + kx) * k + j] +=                                              \
                                ((float)x_kept[(((size_t)b * h + iy) * w + ix) * k + j] - x_zp) * g;           \
                        }                                                                                      \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

void mt_depthwise_conv_f32_backward_weight(float *dw, const float *x_kept, float x_zp, const float *dy,
                                           const int32_t *keep, int32_t stride, int32_t pad, int32_t n, int32_t h,
                                           int32_t w, int32_t c, int32_t kh, int32_t kw, int32_t k)
{
    MT_DEPTHWISE_BACKWARD_WEIGHT_BODY(float)
}

void mt_depthwise_conv_f32_backward_weight_xs8(float *dw, const int8_t *x_kept, float x_zp, const float *dy,
                                               const int32_t *keep, int32_t stride, int32_t pad, int32_t n,
                                               int32_t h, int32_t w, int32_t c, int32_t kh, int32_t kw, int32_t k)
{
    MT_DEPTHWISE_BACKWARD_WEIGHT_BODY(int8_t)
}
