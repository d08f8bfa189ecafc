/* Dense 2-D convolution forward, int8 (per-channel requantization) and fp32; NHWC activations, OHWI weights.
 * Twin of kernels/conv2d.py. Direct loops, symmetric explicit padding `pad` on all four sides, no scratch. */
#include "microtrain.h"

/* y (n, oh, ow, co) s8; mask (n * oh, ceil(ow * co / 8)) u8 or NULL; x (n, h, w, ci) s8; wt (co, kh, kw, ci) s8;
 * bias, mult, shift (co,) s32. oh = (h + 2 pad - kh) / stride + 1, ow likewise.
 * Bit-exact with TFLM reference_integer_ops::ConvPerChannel: out-of-image taps skipped (= padding with x_zp).
 * Overflow: |wt * (x - x_zp)| <= 128 * 255 = 32640, so the tap sum fits int32 while kh * kw * ci <= 65793.
 * acc + bias is done modulo 2^32 (TFLM's int32 `acc += bias` wraps on its targets; unsigned here so it is
 * defined behaviour, the narrowing back is GCC's modulo conversion), as the Python kernel wraps explicitly. */
void mt_conv2d_s8(int8_t *y, uint8_t *mask, const int8_t *x, const int8_t *wt, const int32_t *bias,
                  const int32_t *mult, const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min,
                  int32_t act_max, int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t ci,
                  int32_t co, int32_t kh, int32_t kw)
{
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;
    const int32_t row_bytes = (ow * co + 7) / 8;
    for (int32_t r = 0; r < n * oh; ++r) {
        const int32_t b = r / oh;
        const int32_t oy = r - b * oh;
        const int32_t iy0 = oy * stride - pad;
        int32_t j = 0; /* mask bit of (ox, oc) in row r: ox * co + oc */
        uint32_t byte = 0;
        for (int32_t ox = 0; ox < ow; ++ox) {
            const int32_t ix0 = ox * stride - pad;
            for (int32_t oc = 0; oc < co; ++oc) {
                int32_t acc = 0;
                for (int32_t ky = 0; ky < kh; ++ky) {
                    const int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= h) {
                        continue; /* tap in the padding: (x_zp - x_zp) * w = 0 */
                    }
                    for (int32_t kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ix0 + kx;
                        if (ix < 0 || ix >= w) {
                            continue;
                        }
                        const int8_t *xp = x + (((size_t)b * h + iy) * w + ix) * ci;
                        const int8_t *wp = wt + (((size_t)oc * kh + ky) * kw + kx) * ci;
                        for (int32_t c = 0; c < ci; ++c) {
                            acc += (int32_t)wp[c] * ((int32_t)xp[c] - x_zp);
                        }
                    }
                }
                acc = (int32_t)((uint32_t)acc + (uint32_t)bias[oc]);
                const int32_t v = mt_mbqm(acc, mult[oc], shift[oc]) + y_zp;
                y[((size_t)r * ow + ox) * co + oc] = (int8_t)(v < act_min ? act_min : (v > act_max ? act_max : v));
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
            mask[(size_t)r * row_bytes + (j >> 3)] = (uint8_t)byte; /* last partial byte, high bits 0 */
        }
    }
}

/* y (n, oh, ow, co) f32; x (n, h, w, ci); wt (co, kh, kw, ci); bias (co,). Float accumulation in TFLM
 * reference_ops::Conv order (ky, kx, ci), then + bias, then clamp: the Python kernel's order, so equal bit for bit. */
void mt_conv2d_f32(float *y, const float *x, const float *wt, const float *bias, float act_min, float act_max,
                   int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co, int32_t kh,
                   int32_t kw)
{
    const int32_t oh = (h + 2 * pad - kh) / stride + 1;
    const int32_t ow = (w + 2 * pad - kw) / stride + 1;
    for (int32_t r = 0; r < n * oh; ++r) {
        const int32_t b = r / oh;
        const int32_t oy = r - b * oh;
        const int32_t iy0 = oy * stride - pad;
        for (int32_t ox = 0; ox < ow; ++ox) {
            const int32_t ix0 = ox * stride - pad;
            for (int32_t oc = 0; oc < co; ++oc) {
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
                        const float *xp = x + (((size_t)b * h + iy) * w + ix) * ci;
                        const float *wp = wt + (((size_t)oc * kh + ky) * kw + kx) * ci;
                        for (int32_t c = 0; c < ci; ++c) {
                            acc += xp[c] * wp[c];
                        }
                    }
                }
                acc += bias[oc];
                if (acc < act_min) {
                    acc = act_min;
                }
                if (acc > act_max) {
                    acc = act_max;
                }
                y[((size_t)r * ow + ox) * co + oc] = acc;
            }
        }
    }
}
