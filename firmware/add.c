/* Elementwise ADD (residual connection), int8 (TFLM's left-shift-20 scheme) and fp32. Twin of kernels/add.py. */
#include "microtrain.h"

#define MT_ADD_LEFT_SHIFT 20 /* TFLM add_common.cc: left_shift = 20 for int8 output */

/* y, a, b (n, h, w, c) s8, y may alias a or b; mask (n * h, ceil(w * c / 8)) u8 or NULL; every shift <= 0.
 * Bit-exact with TFLM reference_integer_ops::Add. Overflow: |a - a_zp| <= 255, so every intermediate is < 2^29. */
void mt_add_s8(int8_t *y, uint8_t *mask, const int8_t *a, const int8_t *b, int32_t a_zp, int32_t a_mult,
               int32_t a_shift, int32_t b_zp, int32_t b_mult, int32_t b_shift, int32_t y_zp, int32_t y_mult,
               int32_t y_shift, int32_t act_min, int32_t act_max, int32_t n, int32_t h, int32_t w, int32_t c)
{
    const int32_t row_bytes = (w * c + 7) / 8;
    const int32_t row = w * c;
    for (int32_t r = 0; r < n * h; ++r) {
        uint32_t byte = 0;
        for (int32_t j = 0; j < row; ++j) {
            const size_t i = (size_t)r * row + j;
            const int32_t va = ((int32_t)a[i] - a_zp) * (1 << MT_ADD_LEFT_SHIFT);
            const int32_t vb = ((int32_t)b[i] - b_zp) * (1 << MT_ADD_LEFT_SHIFT);
            const int32_t ua = mt_rdbpot(mt_srdhm(va, a_mult), -a_shift);
            const int32_t ub = mt_rdbpot(mt_srdhm(vb, b_mult), -b_shift);
            const int32_t v = mt_rdbpot(mt_srdhm(ua + ub, y_mult), -y_shift) + y_zp;
            y[i] = (int8_t)(v < act_min ? act_min : (v > act_max ? act_max : v));
            if (mask != NULL) {
                if (v >= act_min && v <= act_max) {
                    byte |= 1u << (j & 7);
                }
                if ((j & 7) == 7 || j == row - 1) {
                    mask[(size_t)r * row_bytes + (j >> 3)] = (uint8_t)byte;
                    byte = 0;
                }
            }
        }
    }
}

/* y = a + b, count elements; y may alias a or b. One float addition per element. */
void mt_add_f32(float *y, const float *a, const float *b, int32_t count)
{
    for (int32_t i = 0; i < count; ++i) {
        y[i] = a[i] + b[i];
    }
}
