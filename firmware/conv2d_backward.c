/* Dense 2-D convolution backward, fp32: input gradient and sparse weight gradient. Twin of kernels/conv2d_backward.py.
 * Loop orders are the Python kernels' (they define the float rounding), so results are equal bit for bit. The
 * int8 variants differ only in the element type read (int8 -> float is exact). QAS lives in the optimizer. */
#include "microtrain.h"

/* dx (n, h, w, ci) = transposed convolution of dy (n, oh, ow, co) with wt (co, kh, kw, ci), `=` overwrite.
 * Order per element of dx: taps (ky, kx), then co, summed in float (ci innermost is a separate element). */
#define MT_CONV2D_BACKWARD_INPUT_BODY(WT)                                                                      \
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;                                                        \
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;                                                        \
    for (int32_t r = 0; r < n * h; ++r) {                                                                      \
        const int32_t b = r / h;                                                                               \
        const int32_t iy = r - b * h;                                                                          \
        for (int32_t ix = 0; ix < w; ++ix) {                                                                   \
            float *dxp = dx + ((size_t)r * w + ix) * ci;                                                       \
            for (int32_t c = 0; c < ci; ++c) {                                                                 \
                dxp[c] = 0.0f;                                                                                 \
            }                                                                                                  \
            for (int32_t ky = 0; ky < kh; ++ky) {                                                              \
                const int32_t ty = iy + pad - ky; /* = oy * stride if output row oy reads row iy at tap ky */  \
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
                    const float *dyp = dy + (((size_t)b * oh + oy) * ow + ox) * co;                            \
                    for (int32_t oc = 0; oc < co; ++oc) {                                                      \
                        const float g = dyp[oc];                                                               \
                        const WT *wp = wt + (((size_t)oc * kh + ky) * kw + kx) * ci;                           \
                        for (int32_t c = 0; c < ci; ++c) {                                                     \
                            dxp[c] += (float)wp[c] * g;                                                        \
                        }                                                                                      \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

void mt_conv2d_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t stride, int32_t pad,
                                  int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co, int32_t kh, int32_t kw)
{
    MT_CONV2D_BACKWARD_INPUT_BODY(float)
}

void mt_conv2d_f32_backward_input_ws8(float *dx, const float *dy, const int8_t *wt, int32_t stride, int32_t pad,
                                      int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co, int32_t kh,
                                      int32_t kw)
{
    MT_CONV2D_BACKWARD_INPUT_BODY(int8_t)
}

/* dw (k, kh, kw, ci) = sum over (b, oy, ox) of (x[b, iy, ix, :] - x_zp) * dy[b, oy, ox, keep_out[j]], `=` overwrite.
 * x (n, h, w, ci) is the saved input (int8 or float, possibly channel-compacted); dy (n, oh, ow, co).
 * One sum per element in (b, oy, ox) order, independent of the other kept channels (sparse == dense slice). */
#define MT_CONV2D_BACKWARD_WEIGHT_BODY(XT)                                                                     \
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;                                                        \
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;                                                        \
    for (int32_t j = 0; j < k; ++j) {                                                                          \
        const int32_t oc = keep_out[j];                                                                        \
        float *dwp = dw + (size_t)j * kh * kw * ci;                                                            \
        for (int32_t i = 0; i < kh * kw * ci; ++i) {                                                           \
            dwp[i] = 0.0f;                                                                                     \
        }                                                                                                      \
        for (int32_t b = 0; b < n; ++b) {                                                                      \
            for (int32_t oy = 0; oy < oh; ++oy) {                                                              \
                const int32_t iy0 = oy * stride - pad;                                                         \
                for (int32_t ox = 0; ox < ow; ++ox) {                                                          \
                    const int32_t ix0 = ox * stride - pad;                                                     \
                    const float g = dy[(((size_t)b * oh + oy) * ow + ox) * co + oc];                           \
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
                            const XT *xp = x + (((size_t)b * h + iy) * w + ix) * ci;                           \
                            float *d = dwp + ((size_t)ky * kw + kx) * ci;                                      \
                            for (int32_t c = 0; c < ci; ++c) {                                                 \
                                d[c] += ((float)xp[c] - x_zp) * g;                                             \
                            }                                                                                  \
                        }                                                                                      \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

void mt_conv2d_f32_backward_weight(float *dw, const float *x, float x_zp, const float *dy, const int32_t *keep_out,
                                   int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t ci,
                                   int32_t co, int32_t kh, int32_t kw, int32_t k)
{
    MT_CONV2D_BACKWARD_WEIGHT_BODY(float)
}

void mt_conv2d_f32_backward_weight_xs8(float *dw, const int8_t *x, float x_zp, const float *dy,
                                       const int32_t *keep_out, int32_t stride, int32_t pad, int32_t n, int32_t h,
                                       int32_t w, int32_t ci, int32_t co, int32_t kh, int32_t kw, int32_t k)
{
    MT_CONV2D_BACKWARD_WEIGHT_BODY(int8_t)
}
