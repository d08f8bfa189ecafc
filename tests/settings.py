"""Shared test settings (imported by the tests as `settings`). `kernel_settings(n)`: hypothesis settings for the kernel tests, n examples when jitted and
about a third of that under NUMBA_DISABLE_JIT=1, where every kernel runs as pure Python (about 1 us per MAC)."""

import os

from hypothesis import settings

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT") == "1"
# Multiplies every kernel test's example count (with MICROTRAIN_HYPOTHESIS_PROFILE=explore, see conftest.py).
EXAMPLES_SCALE = int(os.environ.get("MICROTRAIN_EXAMPLES_SCALE", "1"))


def kernel_settings(n):
    """@settings for a kernel property test: n examples jitted, max(5, n // 3) with the JIT disabled; no deadline
    (the first example of a jitted kernel includes compilation)."""
    n *= EXAMPLES_SCALE
    return settings(max_examples=max(5, n // 3) if JIT_DISABLED else n, deadline=None)
