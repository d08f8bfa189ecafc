/* QUANTIZE (fp32 -> int8) and DEQUANTIZE (int8 -> fp32), per-tensor scale and zero point; twin of
 * kernels/quantize.py. count = number of elements (any shape). */
#include <math.h>

#include "microtrain.h"

/* y = clamp(zero_point + round_half_away(x / scale), -128, 127): TFLM AffineQuantize with TfLiteRound = C round.
 * The rounding is spelled out in float (a - floorf(a) is exact) and the clamp is done in double before the
 * integer conversion, so a huge value or NaN saturates (NaN -> -128) instead of C's undefined conversion. */
void mt_quantize_s8(int8_t *y, const float *x, float scale, int32_t zero_point, int32_t count)
{
    for (int32_t i = 0; i < count; ++i) {
        const float v = x[i] / scale;
        const float a = fabsf(v);
        float r = floorf(a);
        if (a - r >= 0.5f) {
            r += 1.0f;
        }
        if (v < 0.0f) {
            r = -r;
        }
        double q = (double)r + (double)zero_point;
        if (!(q >= -128.0)) { /* also NaN */
            q = -128.0;
        } else if (q > 127.0) {
            q = 127.0;
        }
        y[i] = (int8_t)q;
    }
}

/* y = (float)((double)scale * (x - zero_point)): exact in double, rounded once (TFLM reference_ops::Dequantize). */
void mt_dequantize_s8(float *y, const int8_t *x, float scale, int32_t zero_point, int32_t count)
{
    for (int32_t i = 0; i < count; ++i) {
        y[i] = (float)((double)scale * (double)((int32_t)x[i] - zero_point));
    }
}
