"""reference_models/pretrain.py, the script that makes the shipped weights: its init, schedule, augmentation and
data stream; a short run on the tiny test network is bit-identical for a seed and resumes exactly from a
checkpoint; the whole script writes int8 weights that load as a microtrain model."""

import json

import numpy as np
import pytest
import yaml

from microtrain import errors
from microtrain.graph import graph_from_spec, with_classes
from microtrain.model import load_model
from microtrain.reference_models import HELD_OUT_SCRIPTS, TRAIN_SCRIPTS
from microtrain.reference_models import pretrain as pt
from test_fewshot import SPEC

GRAPH = graph_from_spec(SPEC)


def test_train_and_held_out_scripts_are_disjoint_names():
    from microtrain.data import SCRIPTS

    assert not set(TRAIN_SCRIPTS) & set(HELD_OUT_SCRIPTS)
    assert set(TRAIN_SCRIPTS) | set(HELD_OUT_SCRIPTS) <= set(SCRIPTS)


def test_init_weights_start_every_residual_block_as_identity():
    w = pt.init_weights(GRAPH, np.random.default_rng(0))
    branches = {op.inputs[1] for op in GRAPH.ops if op.kind == "add"}
    assert branches  # the tiny network has a residual block
    for op in GRAPH.ops:
        if not op.has_weights:
            continue
        wt, b = w[op.name]
        assert wt.dtype == np.float32 and wt.shape == tuple(op.weight_shape()) and np.all(b == 0)
        if op.output in branches or op.kind == "fc":
            assert np.all(wt == 0)
        else:
            fan_in = op.kernel * op.kernel * (1 if op.kind == "depthwise" else op.cin)
            want = np.sqrt((2.0 if op.act else 1.0) / fan_in)
            assert 0.5 * want < wt.std() < 1.5 * want


def test_lr_schedule_warms_up_then_decays_to_five_percent():
    lrs = [pt.lr_at(i, 100, 1.0, 10) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_augment_is_seeded_and_changes_the_image():
    rng = np.random.default_rng(0)
    grey = np.full((40, 40), 255, np.uint8)
    grey[10:30, 18:22] = 0
    a = pt.augment(grey, np.random.default_rng(5))
    b = pt.augment(grey, np.random.default_rng(5))
    c = pt.augment(grey, np.random.default_rng(6))
    assert a.dtype == np.uint8 and a.shape == grey.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[20, 20] < a[2, 2]  # still dark ink on light paper
    del rng


@pytest.fixture(scope="module")
def stream():
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    renderer, code_points = pt.select_classes(10, seed=0)
    return pt.GlyphStream(code_points, renderer, GRAPH.input_shape[0], seed=0)


def test_classes_are_drawn_from_the_training_scripts_only(stream):
    from microtrain.data import SCRIPTS

    held = {u for s in HELD_OUT_SCRIPTS for lo, hi in SCRIPTS[s] for u in range(lo, hi + 1)}
    assert len(set(stream.code_points)) == 10 and not set(stream.code_points) & held
    with pytest.raises(errors.InputError, match="classes asked"):
        pt.select_classes(100_000, seed=0)


def test_classes_come_from_the_scripts_asked_and_never_from_held_out_ones():
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    from microtrain.data import SCRIPTS

    _, cps = pt.select_classes(20, seed=0, scripts=("braille", "blocks"))
    allowed = {u for s in ("braille", "blocks") for lo, hi in SCRIPTS[s] for u in range(lo, hi + 1)}
    assert len(cps) == 20 and set(cps) <= allowed
    with pytest.raises(errors.InputError, match="held out"):
        pt.select_classes(5, seed=0, scripts=("braille", HELD_OUT_SCRIPTS[0]))


def test_stream_batches_are_reproducible(stream):
    x1, y1 = stream.batch(7, 4)
    x2, y2 = stream.batch(7, 4)
    x3, _ = stream.batch(8, 4)
    assert x1.dtype == np.float32 and x1.shape == (4,) + tuple(GRAPH.input_shape) and y1.dtype == np.int32
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert x1.min() >= -1 and x1.max() <= 1


class _Stop(Exception):
    pass


def test_training_is_bit_identical_and_resumes_exactly(stream, tmp_path):
    kw = dict(steps=4, batch=2, lr=1e-3, seed=0, warmup=2, log_every=2, checkpoint_every=2)
    a = pt.trained_weights(pt.train(GRAPH, stream, workdir=tmp_path / "a", log=lambda s: None, **kw))
    b = pt.trained_weights(pt.train(GRAPH, stream, log=lambda s: None, **kw))

    def stop(_):
        raise _Stop

    with pytest.raises(_Stop):  # interrupted after the checkpoint of step 2
        pt.train(GRAPH, stream, workdir=tmp_path / "c", log=stop, **kw)
    c = pt.trained_weights(pt.train(GRAPH, stream, workdir=tmp_path / "c", resume=True, log=lambda s: None, **kw))
    init = pt.init_weights(with_classes(GRAPH, 10), np.random.default_rng([0, 3]))
    for name in a:
        for i in range(2):
            assert np.array_equal(a[name][i], b[name][i]) and np.array_equal(a[name][i], c[name][i]), name
    assert any(not np.array_equal(a[n][0], init[n][0]) for n in a)  # training moved the weights
    with pytest.raises(errors.InputError, match="no checkpoint"):
        pt.train(GRAPH, stream, workdir=tmp_path / "empty", resume=True, **kw)


def test_script_writes_int8_weights_that_load(stream, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "w.npz"
    rc = pt.main(["--out", str(out), "--model", str(spec), "--steps", "3", "--batch", "2", "--calibration", "2",
                  "--eval-episodes", "2", "--workdir", str(tmp_path / "work")])
    assert rc == 0
    m = load_model(str(spec), out)
    assert len(m.meta["classes"]) == GRAPH.classifier.cout
    assert m.meta["held_out_scripts"] == list(HELD_OUT_SCRIPTS)
    assert m.meta["train_scripts"] == list(TRAIN_SCRIPTS)
    assert set(m.meta["pretrain_report"]) >= {"top1_val_fp32", "top1_val_int8", "train_seconds"}
    json.dumps(m.meta)


def test_script_records_the_scripts_it_was_given_and_refuses_unknown_ones(tmp_path):
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "w.npz"
    common = ["--out", str(out), "--model", str(spec), "--steps", "1", "--batch", "2", "--calibration", "2",
              "--eval-episodes", "1"]
    assert pt.main(common + ["--scripts", "braille,blocks"]) == 0
    assert load_model(str(spec), out).meta["train_scripts"] == ["braille", "blocks"]
    out.unlink()
    assert pt.main(common + ["--scripts", "braille,klingon"]) == 2
    assert not out.exists()


def test_set_lr_sets_the_lr_and_refuses_bad_values(stream):
    step = pt.train(GRAPH, stream, steps=1, batch=2, lr=1e-3, seed=0, warmup=1, log=lambda s: None)
    step.set_lr(0.25)
    assert step.opts.lr == 0.25
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(errors.ConfigError, match="learning rate"):
            step.set_lr(bad)
        assert step.opts.lr == 0.25
