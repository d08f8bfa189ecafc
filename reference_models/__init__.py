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
# The demo's training settings (steps, batch, memory budget in bytes) and the learning rate per method chosen for
# them by tune_lr on 3 probe episodes of DEMO_DATA (probe seed 1000, never the evaluated episodes) from 0.001,
# 0.005, 0.02, 0.05, int8 SGD (docs/results.md §6c). `microtrain adapt` uses DEMO_LR with the shipped weights on
# DEMO_DATA at DEMO_SETTINGS unless --lr is given.
DEMO_SETTINGS = (50, 5, 262_144)
DEMO_LR = {"tinytrain": 0.05}


def shipped_weights(name):
    """Path of the shipped int8 weights of reference model `name`, or None when the project ships none."""
    f = SHIPPED_WEIGHTS.get(name)
    return SPEC_DIR / f if f is not None and (SPEC_DIR / f).is_file() else None
