"""pytest hooks only; shared helpers live in settings.py (JIT_DISABLED, kernel_settings) and shared.py.

Tests import the *installed* microtrain (tests/ is not a package, so the checkout root is not put on
sys.path): run them with `pytest`, after `pip install -e ".[dev,oracle,images]"` or a plain install.

Hypothesis runs derandomized by default (profile "repro"): the same examples on every run, so CI's verdict is
reproducible and a red run can be replayed. To search new examples, run with
MICROTRAIN_HYPOTHESIS_PROFILE=explore (and MICROTRAIN_EXAMPLES_SCALE=10 for ten times as many examples).
"""

import os

from hypothesis import settings

settings.register_profile("repro", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("MICROTRAIN_HYPOTHESIS_PROFILE", "repro"))
