/* Fixed-point requantization, bit-exact with TFLite Micro's default (double-rounding) build.
 * Twin of kernels/requant.py (srdhm, rdbpot, mbqm); semantics from gemmlowp fixedpoint.h and TFLM common.cc. */
#include "microtrain.h"

/* SaturatingRoundingDoublingHighMul: the high 32 bits of 2*a*b, rounded (nudge, then C's truncating division).
 * The one overflowing pair, a == b == INT32_MIN, saturates to INT32_MAX. */
int32_t mt_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* |result| <= 2^31 - 1: fits */
}

/* RoundingDivideByPOT: x / 2^exponent rounded half away from zero, 0 <= exponent <= 31. The mask is built in
 * 64 bits (gemmlowp: 1ll << exponent) so exponent 31 is defined; >> of a negative int32 is an arithmetic shift
 * on every compiler TFLM supports (implementation-defined in C99, as in TFLM itself). */
int32_t mt_rdbpot(int32_t x, int32_t exponent)
{
    int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier with TFLM's double rounding: RDBPOT(SRDHM(x * 2^max(shift, 0), M), max(-shift, 0)).
 * The pre-shift is computed in 64 bits and narrowed: callers keep |x * 2^shift| < 2^31 (every layer whose
 * effective scale is < 1), where this equals TFLM's int32 product. */
int32_t mt_mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift < 0 ? -shift : 0;
    int32_t shifted = (int32_t)((int64_t)x * ((int64_t)1 << left));
    return mt_rdbpot(mt_srdhm(shifted, multiplier), right);
}
