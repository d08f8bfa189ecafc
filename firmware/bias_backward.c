/* Bias gradient (sum of the output gradient over all but the channel axis) at kept channels; twin of
 * kernels/bias_backward.py. One float sum per kept channel in (b, h, w) order: sparse == dense bit for bit. */
#include "microtrain.h"

/* db (k,) `=`; dy (n, h, w, c); keep (k,) in [0, c). */
void mt_bias_f32_backward(float *db, const float *dy, const int32_t *keep, int32_t n, int32_t h, int32_t w,
                          int32_t c, int32_t k)
{
    for (int32_t j = 0; j < k; ++j) {
        float s = 0.0f;
        for (int32_t p = 0; p < n * h * w; ++p) {
            s += dy[(size_t)p * c + keep[j]];
        }
        db[j] = s;
    }
}

/* db (k,) `=`; dy (n, c) (the head's logits gradient); keep (k,) in [0, c). */
void mt_bias_f32_backward_2d(float *db, const float *dy, const int32_t *keep, int32_t n, int32_t c, int32_t k)
{
    for (int32_t j = 0; j < k; ++j) {
        float s = 0.0f;
        for (int32_t b = 0; b < n; ++b) {
            s += dy[(size_t)b * c + keep[j]];
        }
        db[j] = s;
    }
}
