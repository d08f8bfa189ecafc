"""The int8 weights the project ships (reference_models/mcunet-5fps-glyphs.npz, made by pretrain.py): they load
as mcunet-5fps, say what they were trained on, are trained (int8 top-1 on fresh renderings of their classes far
above chance), and `microtrain adapt` with no arguments runs on them and a held-out glyph domain."""

import json

import numpy as np
import pytest

from microtrain.cli import DEFAULT_ADAPT_DATA, build_parser, demo_lr, main
from microtrain.fewshot import model_input
from microtrain.inference import Inference
from microtrain.model import load_model
from microtrain.reference_models import DEMO_LR, DEMO_SETTINGS, HELD_OUT_SCRIPTS, SHIPPED_WEIGHTS, TRAIN_SCRIPTS, shipped_weights
from microtrain.reference_models import pretrain as pt

PATH = shipped_weights("mcunet-5fps")
pytestmark = pytest.mark.skipif(PATH is None, reason="reference_models/mcunet-5fps-glyphs.npz is not in this tree")
# int8 top-1 on one fresh plain rendering of each of 200 training classes. Chance is 0.1%; the model card's
# figure over all 1,000 classes is far above this floor (it fails on untrained or mangled weights, e.g. a
# wrong activation quantization), and leaves room for a different FreeType's rendering.
TOP1_FLOOR = 0.15


@pytest.fixture(scope="module")
def model():
    return load_model("mcunet-5fps", PATH)


def test_shipped_file_is_registered_and_describes_itself(model):
    assert PATH.name == SHIPPED_WEIGHTS["mcunet-5fps"]
    m = model.meta
    assert len(m["classes"]) == model.graph.classifier.cout == 1000
    assert m["train_scripts"] == list(TRAIN_SCRIPTS) and m["held_out_scripts"] == list(HELD_OUT_SCRIPTS)
    assert "pretrain" in m["source"]
    assert DEFAULT_ADAPT_DATA == "glyphs:" + ",".join(HELD_OUT_SCRIPTS) + ":graphpaper"


def test_shipped_weights_classify_fresh_renderings(model):
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    seed = int(model.meta["source"].split("seed ")[1].split(",")[0])
    renderer, code_points = pt.select_classes(1000, seed)
    assert [f"U+{u:04X}" for u in code_points] == model.meta["classes"]  # the script rebuilds the same classes
    stream = pt.GlyphStream(code_points, renderer, 128, seed)
    classes = np.arange(0, 1000, 5)
    imgs = np.stack([stream.image(int(c), pt.VAL_OFFSET + 7) for c in classes])  # never trained on
    inf = Inference(model, batch=len(classes))
    pred = np.argmax(inf.run(model_input(imgs, model)), axis=1)
    assert np.mean(pred == classes) >= TOP1_FLOOR


def test_adapt_with_no_arguments_uses_shipped_weights_and_held_out_glyphs(capsys):
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    rc = main(["adapt", "--steps", "2", "--queries", "2", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    assert d["model"] == "mcunet-5fps" and d["data"] == DEFAULT_ADAPT_DATA
    r = d["result"]
    assert r["method"] == "tinytrain" and r["peak_bytes"] <= 1 << 20 and r["steps"] == 2  # the 1 MB envelope
    assert r["lr"] == 0.005  # --steps 2 is not the demo's setting: the default lr, not the tuned one
    assert "note:" not in err  # a held-out domain: no warning
    rc = main(["adapt", "--data", "glyphs:latin", "--steps", "1", "--queries", "1", "--method", "none", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0 and "were pretrained on the glyph scripts latin" in err


def test_demo_lr_applies_only_to_the_demo_settings():
    args = build_parser().parse_args(["adapt"])
    args.data = DEFAULT_ADAPT_DATA  # as cmd_adapt fills it in
    assert (args.steps, args.batch, args.memory_budget) == DEMO_SETTINGS
    assert demo_lr(args, shipped=True) == DEMO_LR["tinytrain"]
    assert demo_lr(args, shipped=False) is None  # other weights
    for change in (("steps", 25), ("memory_budget", 1 << 20), ("mode", "fp32"), ("method", "fulltrain"),
                   ("data", "glyphs:hebrew")):
        other = build_parser().parse_args(["adapt"])
        other.data = DEFAULT_ADAPT_DATA
        setattr(other, *change)
        assert demo_lr(other, shipped=True) is None, change
