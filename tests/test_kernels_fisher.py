"""channel_fisher_f32 (TinyTrain's per-channel Fisher term) against a float64 NumPy reference written here:
acc[c] += sum_n (s_a * sum_{h,w} (a - zp) g)^2, int8 and fp32 activations, within config.F32_RTOL; and the
chunking property the Fisher pass relies on: the support set in chunks, run in order, gives bit-identical acc."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microtrain.config import F32_ATOL, F32_RTOL
from microtrain.kernels.fisher import channel_fisher_f32
from settings import kernel_settings


def fisher_terms_ref(a, a_zp, a_scale, g):
    """(C,) float64: sum over samples of the squared per-sample, per-channel sums of a_real * g."""
    a_real = (a.astype(np.float64) - a_zp) * a_scale
    per_sample = np.einsum("nhwc,nhwc->nc", a_real, g.astype(np.float64))
    return (per_sample ** 2).sum(axis=0)


def make(rng, shape, int8):
    g = rng.normal(0, 0.1, shape).astype(np.float32)
    if int8:
        return rng.integers(-128, 128, shape).astype(np.int8), int(rng.integers(-128, 128)), \
            float(np.float32(rng.uniform(0.01, 0.1))), g
    return rng.normal(0, 1, shape).astype(np.float32), 0, 1.0, g


def run(a, a_zp, a_scale, g, acc0=None):
    C = g.shape[3]
    acc = np.zeros(C, np.float32) if acc0 is None else acc0.copy()
    s = np.full(C, np.nan, np.float32)  # scratch: must be overwritten, never read first
    channel_fisher_f32(acc, s, a, a_zp, a_scale, g)
    return acc


@kernel_settings(30)
@given(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7), st.integers(1, 9), st.booleans(),
       st.integers(0, 2 ** 32 - 1))
def test_channel_fisher_matches_reference(n, h, w, c, int8, seed):
    a, zp, sc, g = make(np.random.default_rng(seed), (n, h, w, c), int8)
    np.testing.assert_allclose(run(a, zp, sc, g), fisher_terms_ref(a, zp, sc, g), rtol=F32_RTOL, atol=F32_ATOL)


def test_channel_fisher_accumulates_and_chunks_exactly():
    a, zp, sc, g = make(np.random.default_rng(4), (5, 6, 5, 3), True)
    whole = run(a, zp, sc, g)
    first = run(a[:2], zp, sc, g[:2])
    assert np.array_equal(run(a[2:], zp, sc, g[2:], acc0=first), whole)  # += in sample order: bit-identical
    base = np.arange(3, dtype=np.float32)
    np.testing.assert_allclose(run(a, zp, sc, g, acc0=base), base + whole, rtol=1e-6)


def test_channel_fisher_rejects_inconsistent_shapes():
    a, zp, sc, g = make(np.random.default_rng(0), (1, 2, 2, 3), False)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        channel_fisher_f32(np.zeros(2, np.float32), np.zeros(3, np.float32), a, zp, sc, g)
