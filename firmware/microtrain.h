/* microtrain firmware kernels: the C99 twins of the Python/Numba kernels in kernels/ (one .c per kernels/<name>.py).
 *
 * Conventions (docs/porting.md has the full table and the numeric contracts):
 *  - every function is the Python kernel of the same name with an `mt_` prefix; the arguments are the Python
 *    kernel's arguments in the same order (arrays become pointers, outputs first), followed by the dimensions
 *    the Python kernel reads from `.shape` (always in the order listed in each prototype's comment);
 *  - NHWC activations, OHWI conv weights, (KH, KW, C) depthwise weights, (Co, Ci) pointwise/FC weights, all
 *    C-contiguous (row-major), exactly the byte layout of the NumPy arrays and of the planned arena;
 *  - x_zp / y_zp / a_zp ... are zero points (TFLM passes input_offset = -x_zp);
 *  - `mask == NULL` is the Python NO_MASK: the forward kernel writes no 1-bit mask (inference);
 *  - no kernel allocates, reads globals, or checks shapes: the caller (the generated train_step) guarantees
 *    the preconditions the Python kernels check with ValueError;
 *  - `_xs8` variants read an int8 saved activation, `_ws8` variants frozen int8 weights, where the Python
 *    kernel accepts either dtype; the arithmetic is the same (int8 -> float is exact).
 * Build: any C99 compiler without -ffast-math and without FP contraction (gcc -std=c99 implies
 * -ffp-contract=off), IEEE-754 binary32/binary64 float/double. Link with -lm.
 */
#ifndef MICROTRAIN_H_
#define MICROTRAIN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- requant.c: gemmlowp / TFLM fixed-point primitives ------------------------------------------ */
int32_t mt_srdhm(int32_t a, int32_t b);                       /* SaturatingRoundingDoublingHighMul */
int32_t mt_rdbpot(int32_t x, int32_t exponent);               /* RoundingDivideByPOT, 0 <= exponent <= 31 */
int32_t mt_mbqm(int32_t x, int32_t multiplier, int32_t shift); /* MultiplyByQuantizedMultiplier (double rounding) */

/* ---- int8 forward (conv2d.c, depthwise.c, pointwise.c, fully_connected.c, add.c, pool.c) --------- */
/* dims: n, h, w, ci (x), co (y), kh, kw (weights); OH/OW follow from stride and pad */
void mt_conv2d_s8(int8_t *y, uint8_t *mask, const int8_t *x, const int8_t *wt, const int32_t *bias,
                  const int32_t *mult, const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min,
                  int32_t act_max, int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t ci,
                  int32_t co, int32_t kh, int32_t kw);
/* dims: n, h, w, c (x), kh, kw */
void mt_depthwise_conv_s8(int8_t *y, uint8_t *mask, const int8_t *x, const int8_t *wt, const int32_t *bias,
                          const int32_t *mult, const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min,
                          int32_t act_max, int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t c,
                          int32_t kh, int32_t kw);
/* dims: n, h, w, ci, co */
void mt_pointwise_conv_s8(int8_t *y, uint8_t *mask, const int8_t *x, const int8_t *wt, const int32_t *bias,
                          const int32_t *mult, const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min,
                          int32_t act_max, int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co);
/* dims: n, ci, co */
void mt_fully_connected_s8(int8_t *y, const int8_t *x, const int8_t *wt, const int32_t *bias, const int32_t *mult,
                           const int32_t *shift, int32_t x_zp, int32_t y_zp, int32_t act_min, int32_t act_max,
                           int32_t n, int32_t ci, int32_t co);
/* dims: n, h, w, c; y may alias a or b */
void mt_add_s8(int8_t *y, uint8_t *mask, const int8_t *a, const int8_t *b, int32_t a_zp, int32_t a_mult,
               int32_t a_shift, int32_t b_zp, int32_t b_mult, int32_t b_shift, int32_t y_zp, int32_t y_mult,
               int32_t y_shift, int32_t act_min, int32_t act_max, int32_t n, int32_t h, int32_t w, int32_t c);
/* dims: n, h, w, c (x) */
void mt_avgpool_s8(int8_t *y, const int8_t *x, int32_t kh, int32_t kw, int32_t stride, int32_t pad, int32_t act_min,
                   int32_t act_max, int32_t n, int32_t h, int32_t w, int32_t c);
void mt_global_mean_s8(int8_t *y, const int8_t *x, int32_t act_min, int32_t act_max, int32_t n, int32_t h,
                       int32_t w, int32_t c);

/* ---- quantize.c, gather.c ----------------------------------------------------------------------- */
/* count = number of elements */
void mt_quantize_s8(int8_t *y, const float *x, float scale, int32_t zero_point, int32_t count);
void mt_dequantize_s8(float *y, const int8_t *x, float scale, int32_t zero_point, int32_t count);
/* dims: n, h, w, c (src), k (dst channels), elem_bytes (1 for int8, 4 for float) */
void mt_gather_channels(void *dst, const void *src, const int32_t *keep, int32_t n, int32_t h, int32_t w, int32_t c,
                        int32_t k, int32_t elem_bytes);

/* ---- fp32 forward (conv2d.c, depthwise.c, pointwise.c, fully_connected.c, add.c, pool.c, normalize.c) -- */
void mt_conv2d_f32(float *y, const float *x, const float *wt, const float *bias, float act_min, float act_max,
                   int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co, int32_t kh,
                   int32_t kw);
void mt_depthwise_conv_f32(float *y, const float *x, const float *wt, const float *bias, float act_min,
                           float act_max, int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t c,
                           int32_t kh, int32_t kw);
void mt_pointwise_conv_f32(float *y, const float *x, const float *wt, const float *bias, float act_min,
                           float act_max, int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co);
void mt_fully_connected_f32(float *y, const float *x, const float *wt, const float *bias, int32_t n, int32_t ci,
                            int32_t co);
void mt_add_f32(float *y, const float *a, const float *b, int32_t count);
void mt_avgpool_f32(float *y, const float *x, int32_t kh, int32_t kw, int32_t stride, int32_t pad, int32_t n,
                    int32_t h, int32_t w, int32_t c);
void mt_global_mean_f32(float *y, const float *x, int32_t n, int32_t h, int32_t w, int32_t c);
/* dims: n, c */
void mt_l2_normalize_rows_f32(float *y, float *norm, const float *x, int32_t n, int32_t c);
void mt_l2_normalize_rows_f32_backward(float *dx, const float *dy, const float *y, const float *norm, int32_t n,
                                       int32_t c);

/* ---- backward, fp32 (conv2d_backward.c, depthwise_backward.c, pointwise_backward.c,
 *      fully_connected_backward.c, bias_backward.c, clamp_backward.c, elementwise_backward.c,
 *      pool_backward.c) --------------------------------------------------------------------------- */
/* dims: n, h, w, ci (dx), co (dy), kh, kw */
void mt_conv2d_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t stride, int32_t pad,
                                  int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co, int32_t kh, int32_t kw);
void mt_conv2d_f32_backward_input_ws8(float *dx, const float *dy, const int8_t *wt, int32_t stride, int32_t pad,
                                      int32_t n, int32_t h, int32_t w, int32_t ci, int32_t co, int32_t kh,
                                      int32_t kw);
/* dims: n, h, w, ci (x), co (dy), kh, kw, k (dw rows) */
void mt_conv2d_f32_backward_weight(float *dw, const float *x, float x_zp, const float *dy, const int32_t *keep_out,
                                   int32_t stride, int32_t pad, int32_t n, int32_t h, int32_t w, int32_t ci,
                                   int32_t co, int32_t kh, int32_t kw, int32_t k);
void mt_conv2d_f32_backward_weight_xs8(float *dw, const int8_t *x, float x_zp, const float *dy,
                                       const int32_t *keep_out, int32_t stride, int32_t pad, int32_t n, int32_t h,
                                       int32_t w, int32_t ci, int32_t co, int32_t kh, int32_t kw, int32_t k);
/* dims: n, h, w, c (dx), kh, kw */
void mt_depthwise_conv_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t stride, int32_t pad,
                                          int32_t n, int32_t h, int32_t w, int32_t c, int32_t kh, int32_t kw);
void mt_depthwise_conv_f32_backward_input_ws8(float *dx, const float *dy, const int8_t *wt, int32_t stride,
                                              int32_t pad, int32_t n, int32_t h, int32_t w, int32_t c, int32_t kh,
                                              int32_t kw);
/* dims: n, h, w (x_kept), c (dy channels), kh, kw, k (kept channels) */
void mt_depthwise_conv_f32_backward_weight(float *dw, const float *x_kept, float x_zp, const float *dy,
                                           const int32_t *keep, int32_t stride, int32_t pad, int32_t n, int32_t h,
                                           int32_t w, int32_t c, int32_t kh, int32_t kw, int32_t k);
void mt_depthwise_conv_f32_backward_weight_xs8(float *dw, const int8_t *x_kept, float x_zp, const float *dy,
                                               const int32_t *keep, int32_t stride, int32_t pad, int32_t n,
                                               int32_t h, int32_t w, int32_t c, int32_t kh, int32_t kw, int32_t k);
/* dims: n, h, w, ci (dx), co (dy) */
void mt_pointwise_conv_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t n, int32_t h,
                                          int32_t w, int32_t ci, int32_t co);
void mt_pointwise_conv_f32_backward_input_ws8(float *dx, const float *dy, const int8_t *wt, int32_t n, int32_t h,
                                              int32_t w, int32_t ci, int32_t co);
/* dims: n, h, w, ci (x), co (dy), k (dw rows) */
void mt_pointwise_conv_f32_backward_weight(float *dw, const float *x, float x_zp, const float *dy,
                                           const int32_t *keep_out, int32_t n, int32_t h, int32_t w, int32_t ci,
                                           int32_t co, int32_t k);
void mt_pointwise_conv_f32_backward_weight_xs8(float *dw, const int8_t *x, float x_zp, const float *dy,
                                               const int32_t *keep_out, int32_t n, int32_t h, int32_t w, int32_t ci,
                                               int32_t co, int32_t k);
/* dims: n, ci (dx), co (dy) */
void mt_fully_connected_f32_backward_input(float *dx, const float *dy, const float *wt, int32_t n, int32_t ci,
                                           int32_t co);
/* dims: n, ci (x), co (dy), k (dw rows) */
void mt_fully_connected_f32_backward_weight(float *dw, const float *x, float x_zp, const float *dy,
                                            const int32_t *keep_out, int32_t n, int32_t ci, int32_t co, int32_t k);
/* dims: n, h, w, c (dy), k */
void mt_bias_f32_backward(float *db, const float *dy, const int32_t *keep, int32_t n, int32_t h, int32_t w,
                          int32_t c, int32_t k);
/* dims: n, c (dy), k */
void mt_bias_f32_backward_2d(float *db, const float *dy, const int32_t *keep, int32_t n, int32_t c, int32_t k);
/* count = elements; lo, hi compared in double, as the Python kernel compares float32 with a Python float */
void mt_clamp_f32_backward(float *dx, const float *dy, const float *y, double lo, double hi, int32_t count);
/* count = elements */
void mt_accumulate_f32(float *dst, const float *src, int32_t count);
void mt_scale_f32(float *dst, const float *src, float s, int32_t count);
/* dims: pixels (n * h * w), c */
void mt_scale_channels_f32(float *dy, const float *s, int32_t pixels, int32_t c);
/* dims: n, h, w, c */
void mt_mask_pack_f32(uint8_t *mask, const float *y, float lo, float hi, int32_t n, int32_t h, int32_t w, int32_t c);
void mt_mask_unpack_backward_f32(float *dx, const float *dy, const uint8_t *mask, int32_t n, int32_t h, int32_t w,
                                 int32_t c);
/* dims: n, h, w, c (dx) */
void mt_global_mean_f32_backward(float *dx, const float *dy, int32_t n, int32_t h, int32_t w, int32_t c);
void mt_avgpool_f32_backward(float *dx, const float *dy, int32_t kh, int32_t kw, int32_t stride, int32_t pad,
                             int32_t n, int32_t h, int32_t w, int32_t c);

/* ---- loss.c: returns the mean loss (double); dims: n, k -------------------------------------------- */
double mt_softmax_cross_entropy_f32(float *dlogits, const float *logits, const int32_t *labels, int32_t n,
                                    int32_t k);

/* ---- update.c ------------------------------------------------------------------------------------ */
/* dims: co, kh, kw, ci (w), ko, ki (dw) */
void mt_sgd_update_ohwi_s8(int8_t *w, const float *dw, const int32_t *keep_out, const int32_t *keep_in,
                           const float *coef, double lr, int32_t co, int32_t kh, int32_t kw, int32_t ci, int32_t ko,
                           int32_t ki);
/* dims: kh, kw, c (w), k (dw) */
void mt_sgd_update_hwc_s8(int8_t *w, const float *dw, const int32_t *keep, const float *coef, double lr, int32_t kh,
                          int32_t kw, int32_t c, int32_t k);
/* dims: c (b), k (db) */
void mt_sgd_update_bias_s32(int32_t *b, const float *db, const int32_t *keep, const float *coef, double lr, int32_t c,
                            int32_t k);
void mt_sgd_update_ohwi_f32(float *w, const float *dw, const int32_t *keep_out, const int32_t *keep_in, double lr,
                            int32_t co, int32_t kh, int32_t kw, int32_t ci, int32_t ko, int32_t ki);
void mt_sgd_update_hwc_f32(float *w, const float *dw, const int32_t *keep, double lr, int32_t kh, int32_t kw,
                           int32_t c, int32_t k);
void mt_sgd_update_bias_f32(float *b, const float *db, const int32_t *keep, double lr, int32_t c, int32_t k);
void mt_adam_update_ohwi_f32(float *w, const float *dw, float *m, float *v, const int32_t *keep_out,
                             const int32_t *keep_in, double lr, int32_t t, int32_t co, int32_t kh, int32_t kw,
                             int32_t ci, int32_t ko, int32_t ki);
void mt_adam_update_hwc_f32(float *w, const float *dw, float *m, float *v, const int32_t *keep, double lr, int32_t t,
                            int32_t kh, int32_t kw, int32_t c, int32_t k);
void mt_adam_update_bias_f32(float *b, const float *db, float *m, float *v, const int32_t *keep, double lr, int32_t t,
                             int32_t c, int32_t k);
void mt_adam_update_ohwi_s8(int8_t *w, const float *dw, float *m, float *v, const int32_t *keep_out,
                            const int32_t *keep_in, const float *gscale, double lr, int32_t t, int32_t co, int32_t kh,
                            int32_t kw, int32_t ci, int32_t ko, int32_t ki);
void mt_adam_update_hwc_s8(int8_t *w, const float *dw, float *m, float *v, const int32_t *keep, const float *gscale,
                           double lr, int32_t t, int32_t kh, int32_t kw, int32_t c, int32_t k);
void mt_adam_update_bias_s32(int32_t *b, const float *db, float *m, float *v, const int32_t *keep,
                             const float *gscale, double lr, int32_t t, int32_t c, int32_t k);
/* 1 if no element is NaN or +-inf, else 0; count = elements */
int32_t mt_all_finite(const float *a, int32_t count);

#ifdef __cplusplus
}
#endif

#endif /* MICROTRAIN_H_ */
