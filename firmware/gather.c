/* Channel gather: the kept input channels of an activation into a compact buffer (MIT's "save only the kept
 * input channels"). Twin of kernels/gather.py. */
#include <string.h>

#include "microtrain.h"

/* dst (n, h, w, k) <- src (n, h, w, c) at channels keep[0..k); elem_bytes 1 (int8) or 4 (float). A copy, bit for
 * bit; dst must not alias src. */
void mt_gather_channels(void *dst, const void *src, const int32_t *keep, int32_t n, int32_t h, int32_t w, int32_t c,
                        int32_t k, int32_t elem_bytes)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    for (int32_t p = 0; p < n * h * w; ++p) {
        for (int32_t j = 0; j < k; ++j) {
            memcpy(d + ((size_t)p * k + j) * elem_bytes, s + ((size_t)p * c + keep[j]) * elem_bytes,
                   (size_t)elem_bytes);
        }
    }
}
