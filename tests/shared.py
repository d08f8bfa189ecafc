"""Where the development material lives (never committed): $MICROTRAIN_SHARED, default ../shared."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models" / "tiny-training"
OMNIGLOT = SHARED / "data" / "omniglot"


def tiny_training_weights(name):
    """Path of a tiny-training .pkl, or skip the test with the reason."""
    p = MODELS / f"{name}.pkl"
    if not p.is_file():
        pytest.skip(f"tiny-training weights not found at {p} (set MICROTRAIN_SHARED to the shared folder)")
    return p
