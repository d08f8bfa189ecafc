/* Elementwise backward pieces: accumulate, scale (per tensor, per channel), and the 1-bit clamp mask
 * (layout: kernels/mask.py; row r = b * h + y, element (x, ch) is bit j = x * c + ch of that row, byte j / 8,
 * bit j % 8, rows byte-aligned, unused high bits 0). Twin of kernels/elementwise_backward.py. */
#include "microtrain.h"

/* dst += src (the residual shortcut's gradient), count elements; dst may alias src. */
void mt_accumulate_f32(float *dst, const float *src, int32_t count)
{
    for (int32_t i = 0; i < count; ++i) {
        dst[i] += src[i];
    }
}

/* dst = src * s, count elements; in place allowed. */
void mt_scale_f32(float *dst, const float *src, float s, int32_t count)
{
    for (int32_t i = 0; i < count; ++i) {
        dst[i] = src[i] * s;
    }
}

/* dy[p, ch] *= s[ch] in place; dy (pixels, c), s (c,). */
void mt_scale_channels_f32(float *dy, const float *s, int32_t pixels, int32_t c)
{
    for (int32_t p = 0; p < pixels; ++p) {
        for (int32_t ch = 0; ch < c; ++ch) {
            dy[(size_t)p * c + ch] = dy[(size_t)p * c + ch] * s[ch];
        }
    }
}

/* mask bit = 1 iff lo < y < hi (NaN gives 0); mask (n * h, ceil(w * c / 8)) `=`; y (n, h, w, c). */
void mt_mask_pack_f32(uint8_t *mask, const float *y, float lo, float hi, int32_t n, int32_t h, int32_t w, int32_t c)
{
    const int32_t row = w * c;
    const int32_t row_bytes = (row + 7) / 8;
    for (int32_t r = 0; r < n * h; ++r) {
        uint32_t byte = 0;
        for (int32_t j = 0; j < row; ++j) {
            const float v = y[(size_t)r * row + j];
            if (v > lo && v < hi) {
                byte |= 1u << (j & 7);
            }
            if ((j & 7) == 7 || j == row - 1) {
                mask[(size_t)r * row_bytes + (j >> 3)] = (uint8_t)byte;
                byte = 0;
            }
        }
    }
}

/* dx = dy where the mask bit is set, else 0; dx, dy (n, h, w, c), dx may be dy. */
void mt_mask_unpack_backward_f32(float *dx, const float *dy, const uint8_t *mask, int32_t n, int32_t h, int32_t w,
                                 int32_t c)
{
    const int32_t row = w * c;
    const int32_t row_bytes = (row + 7) / 8;
    for (int32_t r = 0; r < n * h; ++r) {
        for (int32_t j = 0; j < row; ++j) {
            const size_t i = (size_t)r * row + j;
            dx[i] = ((mask[(size_t)r * row_bytes + (j >> 3)] >> (j & 7)) & 1u) ? dy[i] : 0.0f;
        }
    }
}
