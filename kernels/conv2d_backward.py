"""Dense 2-D convolution backward, fp32 (float64 also accepted): input gradient and sparse weight gradient.

Differentiates `conv2d_f32` / `conv2d_s8` (NHWC activations, OHWI weights, symmetric padding `pad`, taps outside
the image skipped). The bias gradient is `bias_backward.bias_f32_backward`; ReLU6/clamp is `elementwise_backward`.
Gradients here are with respect to the real-valued (fp32) tensors. In int8 mode the optimizer, not these kernels,
applies Quantization-Aware Scaling (weight gradient x s_w^-2, bias x (s_w s_x)^-2, MIT tiny-training §3.3), and a
caller that differentiates with respect to a requantized output folds that scale in with `elementwise_backward.
scale_f32` before calling these. In int8 mode the weight gradient reads the saved int8 activation and its zero point
(sum dy * (x_int - x_zp); times s_x is dL/dw_real), and the input gradient reads the frozen int8 weights with dy
pre-scaled by s_w per output channel (`elementwise_backward.scale_channels_f32`).
C twins: mt_conv2d_f32_backward_input, mt_conv2d_f32_backward_weight.
"""

from numba import njit, prange

from microtrain.config import NJIT_PARALLEL

from .threads import threads_for, threads_restore


@njit(**NJIT_PARALLEL)
def conv2d_f32_backward_input(dx, dy, w, stride, pad):
    """dx = dL/dx of y = conv2d(x, w) (transposed convolution of dy with w), `=` overwrite.

    Forward:   y[n, oy, ox, co] = sum_{ky, kx, ci} x[n, iy, ix, ci] * w[co, ky, kx, ci], iy = oy*stride - pad + ky,
               ix = ox*stride - pad + kx (+ bias, then clamp: the clamp's mask is applied to dy before this kernel).
    So now:    dx[n, iy, ix, ci] = sum over the taps (ky, kx) with iy = oy*stride - pad + ky, ix likewise, for some
               in-range output (oy, ox), of sum_co dy[n, oy, ox, co] * w[co, ky, kx, ci].
    Layout:    dx (N, H, W, Ci) out; dy (N, OH, OW, Co); w (Co, KH, KW, Ci) OHWI; OH = (H + 2*pad - KH)//stride + 1.
    Reads:     dy and the weights only; nothing saved from the forward pass. w may be the frozen int8 weights (int8
               mode: the caller first scaled dy[..., co] by s_w[co] with scale_channels_f32); int8 * float32 is
               float32 both jitted and interpreted (NumPy 2 promotion), and int8 -> float32 is exact, so the result
               equals this kernel on float32(w) bit for bit.
    Ownership: writes every element of dx (`=`); input pixels that no output window reads (stride 2 with an odd
               remainder, e.g. the last row of H = 6, KH = 3, pad = 0) get exactly 0; allocates nothing.
               dx must not alias dy or w.
    Order:     per element of dx, sum over (ky, kx, co) in that order, in the dtype of dx (float32 in the C twin).
    Parallel:  prange over (batch x input rows); each iteration writes disjoint rows of dx (deterministic).
    C twin:    mt_conv2d_f32_backward_input.
    """
    N, H, W, CI = dx.shape
    OH = dy.shape[1]
    OW = dy.shape[2]
    CO = dy.shape[3]
    KH = w.shape[1]
    KW = w.shape[2]
    if (dy.shape[0] != N or w.shape[0] != CO or w.shape[3] != CI or stride < 1
            or OH != (H + 2 * pad - KH) // stride + 1 or OW != (W + 2 * pad - KW) // stride + 1):
        raise ValueError("conv2d_f32_backward_input: inconsistent shapes")
    prev = threads_for(dy.size * (w.size // w.shape[0]))
    for r in prange(N * H):
        n = r // H
        iy = r - n * H
        for ix in range(W):
            for ci in range(CI):
                dx[n, iy, ix, ci] = 0
            for ky in range(KH):
                ty = iy + pad - ky  # = oy * stride if output row oy read input row iy through tap ky
                if ty < 0 or ty % stride != 0:
                    continue
                oy = ty // stride
                if oy >= OH:
                    continue
                for kx in range(KW):
                    tx = ix + pad - kx
                    if tx < 0 or tx % stride != 0:
                        continue
                    ox = tx // stride
                    if ox >= OW:
                        continue
                    for co in range(CO):
                        g = dy[n, oy, ox, co]
                        for ci in range(CI):
                            dx[n, iy, ix, ci] += w[co, ky, kx, ci] * g
    threads_restore(prev)


@njit(**NJIT_PARALLEL)
def conv2d_f32_backward_weight(dw, x, x_zp, dy, keep_out, stride, pad):
    """dw = dL/dw of y = conv2d(x, w) restricted to the kept channels, `=` overwrite.

    Forward:   y[n, oy, ox, co] = sum_{ky, kx, ci} x[n, iy, ix, ci] * w[co, ky, kx, ci], iy = oy*stride - pad + ky,
               ix = ox*stride - pad + kx.
    So now:    dw[k, ky, kx, j] = sum_{n, oy, ox} (x[n, iy, ix, j] - x_zp) * dy[n, oy, ox, keep_out[k]] (taps in the
               padding are skipped: they would contribute (x_zp - x_zp) * dy = 0).
    Layout:    dw (K, KH, KW, Ci') out, float32 (float64 in the gradient checks); x (N, H, W, Ci') the input saved
               in forward, int8 or of dw's float dtype; x_zp scalar; dy (N, OH, OW, Co) of dw's dtype;
               keep_out (K,) int32, output channels whose weight rows are computed, each in [0, Co).
    int8 mode: x may be the int8 activation saved by the int8 forward, x_zp its zero point; the kernel then returns
               sum dy * (x_int - x_zp), and the caller multiplies by s_x (dL/dw_real = s_x * dw) or folds s_x into
               the update's coefficient. Pass x_zp as a float of dw's dtype (np.float32(zp)); it is cast to dw's
               dtype anyway, and x_int - x_zp is exact in float32 (|x_int - x_zp| <= 255). fp32 mode: float x,
               x_zp = 0.0 (x - 0.0 == x exactly, so the result is the plain sum dy * x).
    Sparse update (DESIGN §4, MIT tiny-training's partial backward), both axes with this one kernel:
      * input-channel axis (MIT's choice; normal conv masks W[:, :, :, c]): forward saves only the kept input
        channels, compacted in the order of the caller's keep list, x_saved[..., j] = x[..., keep_in[j]];
        call with (x_saved, keep_out = arange(Co)) -> dw[co, :, :, j] = dW[co, :, :, keep_in[j]];
      * output-channel axis: forward saves all of x; call with (x, keep_out = kept) -> dw[k] = dW[keep_out[k]];
      * dense: (x, arange(Co)). Both restrictions at once are also valid.
    Reads:     x (saved from forward, possibly channel-compacted) and dy; not the weights.
    Exactness: each element is one sum over (n, oy, ox) in that fixed order, independent of which other channels
               are computed, so every sparse result equals the dense dW at the kept channels bit for bit.
    Ownership: writes every element of dw (`=`); allocates nothing.
    Parallel:  prange over k; each iteration writes the disjoint slice dw[k], its reduction serial (deterministic).
    C twin:    mt_conv2d_f32_backward_weight.
    """
    K, KH, KW, CI = dw.shape
    N, H, W, CX = x.shape
    xz = dw.dtype.type(x_zp)
    OH = dy.shape[1]
    OW = dy.shape[2]
    CO = dy.shape[3]
    if (CX != CI or dy.shape[0] != N or keep_out.shape[0] != K or stride < 1
            or OH != (H + 2 * pad - KH) // stride + 1 or OW != (W + 2 * pad - KW) // stride + 1):
        raise ValueError("conv2d_f32_backward_weight: inconsistent shapes")
    for k in range(K):
        if keep_out[k] < 0 or keep_out[k] >= CO:
            raise ValueError("conv2d_f32_backward_weight: keep_out index out of range")
    prev = threads_for(dy.size * (dw.size // dw.shape[0]))
    for k in prange(K):
        co = keep_out[k]
        for ky in range(KH):
            for kx in range(KW):
                for ci in range(CI):
                    dw[k, ky, kx, ci] = 0
        for n in range(N):
            for oy in range(OH):
                iy0 = oy * stride - pad
                for ox in range(OW):
                    ix0 = ox * stride - pad
                    g = dy[n, oy, ox, co]
                    for ky in range(KH):
                        iy = iy0 + ky
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(KW):
                            ix = ix0 + kx
                            if ix < 0 or ix >= W:
                                continue
                            for ci in range(CI):
                                dw[k, ky, kx, ci] += (x[n, iy, ix, ci] - xz) * g
    threads_restore(prev)
