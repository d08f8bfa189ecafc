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
# `microtrain adapt`'s default domain: the held-out scripts drawn in colour on graph paper (data.paper_style), a
# change of appearance on top of the change of script (pretraining only saw grey ink on plain paper). On plain
# paper adaptation does not beat the prototype head (docs/results.md §6); on graph paper it does (§6c).
DEMO_DATA = "glyphs:" + ",".join(HELD_OUT_SCRIPTS) + ":graphpaper"
# Learning rate per method for DEMO_DATA (int8 SGD, 25 steps of batch 5), chosen by tune_lr on 3 probe episodes
# (probe seed 1000, never the evaluated episodes) from 0.001, 0.005, 0.02, 0.05 (docs/results.md §6c).
DEMO_LR = {"fulltrain": 0.005, "lastlayer": 0.001, "biasonly": 0.05, "sparseupdate": 0.001, "tinytrain": 0.02,
           "tinytrain-l2": 0.05, "tinytrain-random": 0.05}


def shipped_weights(name):
    """Path of the shipped int8 weights of reference model `name`, or None when the project ships none."""
    f = SHIPPED_WEIGHTS.get(name)
    return SPEC_DIR / f if f is not None and (SPEC_DIR / f).is_file() else None
