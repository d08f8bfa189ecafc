"""Plain float64 NumPy forward references for the gradient tests, and a central finite-difference helper.

Written independently of the kernels (np.pad + einsum, explicit loops for pooling) so that finite differences of
these functions check the hand-written backward kernels. NHWC activations, OHWI conv weights, (KH, KW, C)
depthwise weights, (Co, Ci) pointwise / fully connected weights, symmetric padding, as in the forward kernels.
"""

import numpy as np


def _out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _windows(x, kh, kw, stride, pad):
    """Yield (ky, kx, patch): patch[n, oy, ox, c] = zero-padded x[n, oy*stride - pad + ky, ox*stride - pad + kx, c]."""
    N, H, W, C = x.shape
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, xp[:, ky:ky + stride * (OH - 1) + 1:stride, kx:kx + stride * (OW - 1) + 1:stride, :]


def conv2d(x, w, b, stride, pad):
    """y (N, OH, OW, Co) = conv(x (N, H, W, Ci), w (Co, KH, KW, Ci)) + b (Co,), zero padding."""
    N, H, W, _ = x.shape
    CO, KH, KW, _ = w.shape
    y = np.zeros((N, _out_size(H, KH, stride, pad), _out_size(W, KW, stride, pad), CO))
    for ky, kx, patch in _windows(x, KH, KW, stride, pad):
        y += np.einsum("nhwc,oc->nhwo", patch, w[:, ky, kx, :])
    return y + b


def depthwise(x, w, b, stride, pad):
    """y (N, OH, OW, C) = depthwise conv(x (N, H, W, C), w (KH, KW, C)) + b (C,), zero padding."""
    N, H, W, C = x.shape
    KH, KW, _ = w.shape
    y = np.zeros((N, _out_size(H, KH, stride, pad), _out_size(W, KW, stride, pad), C))
    for ky, kx, patch in _windows(x, KH, KW, stride, pad):
        y += patch * w[ky, kx, :]
    return y + b


def pointwise(x, w, b):
    """y (N, H, W, Co) = x (N, H, W, Ci) @ w (Co, Ci).T + b."""
    return np.einsum("nhwc,oc->nhwo", x, w) + b


def fully_connected(x, w, b):
    """y (N, Co) = x (N, Ci) @ w (Co, Ci).T + b."""
    return x @ w.T + b


def avgpool(x, kh, kw, stride, pad):
    """kh x kw average pool, window clipped to the image, divisor = number of in-image taps (TFLM AveragePool)."""
    N, H, W, C = x.shape
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    y = np.zeros((N, OH, OW, C))
    for oy in range(OH):
        rows = [r for r in range(oy * stride - pad, oy * stride - pad + kh) if 0 <= r < H]
        for ox in range(OW):
            cols = [c for c in range(ox * stride - pad, ox * stride - pad + kw) if 0 <= c < W]
            y[:, oy, ox, :] = x[:, rows][:, :, cols].sum(axis=(1, 2)) / (len(rows) * len(cols))
    return y


def global_mean(x):
    """y (N, C) = mean of x (N, H, W, C) over H and W."""
    return x.mean(axis=(1, 2))


def clamp(x, lo, hi):
    """ReLU6 for lo = 0, hi = 6."""
    return np.minimum(np.maximum(x, lo), hi)


def softmax_cross_entropy(logits, labels):
    """Mean over the batch of -log softmax(logits)[label], via a stable log-sum-exp."""
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def numerical_gradient(f, x, eps=1e-6):
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every element of x (float64, perturbed
    in place and restored); f takes no arguments and returns a scalar computed from the current x."""
    g = np.zeros_like(x)
    flat = x.reshape(-1)  # a view: x must be contiguous
    assert np.shares_memory(flat, x)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        v = flat[i]
        flat[i] = v + eps
        fp = f()
        flat[i] = v - eps
        fm = f()
        flat[i] = v
        gflat[i] = (fp - fm) / (2 * eps)
    return g
