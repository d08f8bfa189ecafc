"""Few-shot data path: augmenting a support batch (25 images, 128x128, p = 1) in NumPy."""

import numpy as np

from microtrain.episodes import augment


def test_augment_25x128(benchmark):
    x = np.random.default_rng(0).integers(0, 256, (25, 128, 128, 3)).astype(np.uint8)
    y = augment(x, np.random.default_rng(1), p=1.0)
    assert y.shape == x.shape and y.dtype == np.uint8
    benchmark.group = "augment"
    benchmark.extra_info.update(images=25, pixels=25 * 128 * 128)
    benchmark(lambda: augment(x, np.random.default_rng(1), p=1.0))
