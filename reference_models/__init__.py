"""Reference model specs (YAML) and the weights the project makes itself. Installed as
`microtrain.reference_models`."""

from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent
NAMES = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")

# int8 weights pretrained by the project on rendered glyphs (pretrain.py; MODEL_CARD.md), per model name
SHIPPED_WEIGHTS = {"mcunet-5fps": "mcunet-5fps-glyphs.npz"}
# Glyph scripts the shipped weights were trained on, and the ones they never saw: the default domain of
# `microtrain adapt` (microtrain.data.SCRIPTS names).
TRAIN_SCRIPTS = ("latin", "greek", "cyrillic", "arabic", "ogham", "canadian", "ipa", "math", "arrows", "box",
                 "shapes", "braille", "yijing")
HELD_OUT_SCRIPTS = ("armenian", "georgian", "hebrew", "nko", "lao", "tifinagh")


def shipped_weights(name):
    """Path of the shipped int8 weights of reference model `name`, or None when the project ships none."""
    f = SHIPPED_WEIGHTS.get(name)
    return SPEC_DIR / f if f is not None and (SPEC_DIR / f).is_file() else None
