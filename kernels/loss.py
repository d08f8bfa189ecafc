"""Softmax cross-entropy loss and its gradient with respect to the logits, fp32 (float64 also accepted).

The start of every backward pass: logits come from the classifier head (`fully_connected_f32`), labels are class
indices. Row-wise, numerically stable (row maximum subtracted), no scratch. C twin: mt_softmax_cross_entropy_f32.
"""

import numpy as np
from numba import njit

from microtrain.config import NJIT


@njit(**NJIT)
def softmax_cross_entropy_f32(dlogits, logits, labels):
    """Return the mean loss -1/N sum_n log softmax(logits[n])[labels[n]]; dlogits = (softmax - onehot) / N, `=`.

    Forward:   loss = 1/N sum_n (log sum_k exp(z[n, k]) - z[n, label_n]).
    So now:    dL/dz[n, k] = (exp(z[n, k] - m_n) / s_n - [k == label_n]) / N, with m_n = max_k z[n, k] and
               s_n = sum_k exp(z[n, k] - m_n) (every exponent <= 0: no overflow; s_n >= 1: no log(0)).
    Layout:    dlogits (N, K) out; logits (N, K); labels (N,) integer in [0, K).
    Numerics:  everything per row in the logits' dtype (expf/logf in the C twin); the returned mean accumulates the
               per-row losses in float64 (double) and is reported, not differentiated further.
    Ownership: writes every element of dlogits (`=`); allocates nothing. In place allowed: dlogits may be logits
               (each row's max and label logit are read before the row is overwritten).
    C twin:    mt_softmax_cross_entropy_f32.
    """
    N, K = logits.shape
    if dlogits.shape[0] != N or dlogits.shape[1] != K or labels.shape[0] != N or N < 1 or K < 1:
        raise ValueError("softmax_cross_entropy_f32: inconsistent shapes")
    for n in range(N):
        if labels[n] < 0 or labels[n] >= K:
            raise ValueError("softmax_cross_entropy_f32: label out of range")
    one = logits.dtype.type(1)
    count = logits.dtype.type(N)
    total = 0.0
    for n in range(N):
        label = labels[n]
        m = logits[n, 0]
        for k in range(1, K):
            if logits[n, k] > m:
                m = logits[n, k]
        z_label = logits[n, label] - m
        s = logits.dtype.type(0)
        for k in range(K):
            e = np.exp(logits[n, k] - m)
            dlogits[n, k] = e
            s += e
        for k in range(K):
            p = dlogits[n, k] / s
            if k == label:
                p -= one
            dlogits[n, k] = p / count
        total += np.float64(np.log(s) - z_label)
    return total / N
