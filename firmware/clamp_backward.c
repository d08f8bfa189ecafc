/* Backward of an fp32 clamp (ReLU6 / ReLU) from the saved fp32 output; twin of kernels/clamp_backward.py. */
#include "microtrain.h"

/* dx = dy where lo < y < hi, else 0; count elements; dx may be dy. y is widened to double for the comparison, as the
 * Python kernel compares a float32 element with a Python float (0.0, 6.0 or inf: exact either way). */
void mt_clamp_f32_backward(float *dx, const float *dy, const float *y, double lo, double hi, int32_t count)
{
    for (int32_t i = 0; i < count; ++i) {
        const double v = (double)y[i];
        dx[i] = (v > lo && v < hi) ? dy[i] : 0.0f;
    }
}
