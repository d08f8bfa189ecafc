/* Softmax cross-entropy and its gradient with respect to the logits, fp32; twin of kernels/loss.py. */
#include <math.h>

#include "microtrain.h"

/* dlogits (n, k) = (softmax - onehot) / n, `=` (may alias logits); logits (n, k); labels (n,) in [0, k).
 * Per row in float with expf/logf after subtracting the row maximum; returns the mean loss, accumulated in double. */
double mt_softmax_cross_entropy_f32(float *dlogits, const float *logits, const int32_t *labels, int32_t n, int32_t k)
{
    const float count = (float)n;
    double total = 0.0;
    for (int32_t b = 0; b < n; ++b) {
        const float *z = logits + (size_t)b * k;
        float *d = dlogits + (size_t)b * k;
        const int32_t label = labels[b];
        float m = z[0];
        for (int32_t j = 1; j < k; ++j) {
            if (z[j] > m) {
                m = z[j];
            }
        }
        const float z_label = z[label] - m;
        float s = 0.0f;
        for (int32_t j = 0; j < k; ++j) {
            const float e = expf(z[j] - m);
            d[j] = e;
            s += e;
        }
        for (int32_t j = 0; j < k; ++j) {
            float p = d[j] / s;
            if (j == label) {
                p -= 1.0f;
            }
            d[j] = p / count;
        }
        total += (double)(logf(s) - z_label);
    }
    return total / n;
}
