/* Average pooling backward, fp32: windowed (padding excluded from the count) and global; twin of
 * kernels/pool_backward.py, same order (bit-equal results). */
#include "microtrain.h"

/* dx (n, h, w, c) = dy (n, c) / (h * w), one float division per element, `=` overwrite. */
void mt_global_mean_f32_backward(float *dx, const float *dy, int32_t n, int32_t h, int32_t w, int32_t c)
{
    const float count = (float)(h * w);
    for (int32_t b = 0; b < n; ++b) {
        for (int32_t p = 0; p < h * w; ++p) {
            for (int32_t ch = 0; ch < c; ++ch) {
                dx[((size_t)b * h * w + p) * c + ch] = dy[(size_t)b * c + ch] / count;
            }
        }
    }
}

/* dx (n, h, w, c) from dy (n, oh, ow, c): each window adds dy / count(window) to its in-image taps; order per
 * element of dx: windows by tap (fy, fx). pad < kh, pad < kw. */
void mt_avgpool_f32_backward(float *dx, const float *dy, int32_t kh, int32_t kw, int32_t stride, int32_t pad,
                             int32_t n, int32_t h, int32_t w, int32_t c)
{
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;
    for (int32_t r = 0; r < n * h; ++r) {
        const int32_t b = r / h;
        const int32_t iy = r - b * h;
        for (int32_t ix = 0; ix < w; ++ix) {
            float *dxp = dx + ((size_t)r * w + ix) * c;
            for (int32_t ch = 0; ch < c; ++ch) {
                dxp[ch] = 0.0f;
            }
            for (int32_t fy = 0; fy < kh; ++fy) {
                const int32_t ty = iy + pad - fy;
                if (ty < 0 || ty % stride != 0 || ty / stride >= oh) {
                    continue;
                }
                const int32_t oy = ty / stride;
                const int32_t y0 = oy * stride - pad;
                const int32_t count_y = (kh < h - y0 ? kh : h - y0) - (y0 < 0 ? -y0 : 0);
                for (int32_t fx = 0; fx < kw; ++fx) {
                    const int32_t tx = ix + pad - fx;
                    if (tx < 0 || tx % stride != 0 || tx / stride >= ow) {
                        continue;
                    }
                    const int32_t ox = tx / stride;
                    const int32_t x0 = ox * stride - pad;
                    const float count = (float)(count_y * ((kw < w - x0 ? kw : w - x0) - (x0 < 0 ? -x0 : 0)));
                    const float *dyp = dy + (((size_t)b * oh + oy) * ow + ox) * c;
                    for (int32_t ch = 0; ch < c; ++ch) {
                        dxp[ch] += dyp[ch] / count;
                    }
                }
            }
        }
    }
}
