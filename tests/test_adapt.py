"""`microtrain adapt` (microtrain.adapt): one episode adapted and reported; --save writes weights that load back
and reproduce the adapted model's query logits exactly; bad input as named errors. Uses the tiny network and
synthetic image folder of test_fewshot."""

import json

import numpy as np
import pytest
import yaml

from microtrain import errors
from microtrain.adapt import ENVELOPES, adapt, load_adapted, save_adapted
from microtrain.cli import main
from microtrain.data import parse_spec
from microtrain.episodes import sample_nway_kshot
from microtrain.fewshot import _episode_seed, adapt_episode, model_input
from microtrain.graph import graph_from_spec
from microtrain.model import load_model, random_model
from microtrain.sparse import full_train
from microtrain.train import TrainStep
from microtrain.train_plan import TrainOptions
from microtrain.weights import save_npz
from test_fewshot import BUDGET, SPEC

FAST = dict(ways=3, shots=2, queries=3, steps=3, batch=3, memory_budget=BUDGET)


@pytest.fixture(scope="module")
def model():
    return random_model(graph_from_spec(SPEC), seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("adapt")
    rng = np.random.default_rng(1)
    for c in range(4):
        base = rng.integers(0, 256, (1, 1, 3))
        (root / "data" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            np.save(root / "data" / f"class{c}" / f"{i}.npy",
                    np.clip(base + rng.normal(0, 30, (20, 20, 3)), 0, 255).astype(np.uint8))
    (root / "tiny.yaml").write_text(yaml.safe_dump(SPEC))
    return {"data": root / "data", "spec": root / "tiny.yaml", "weights": save_npz(model, root / "tiny.npz")}


@pytest.fixture(scope="module")
def dataset(files):
    return parse_spec(f"folder:{files['data']}", 32)


def test_adapt_is_episode_zero_of_evaluate(model, dataset):
    """adapt runs adapt_episode on the episode evaluate draws first for this seed, with the same rng."""
    report, step = adapt(model, dataset, method="tinytrain", seed=4, **FAST)
    ep = sample_nway_kshot(dataset, 3, 2, 3, np.random.default_rng([4, 0]))
    twin = adapt_episode(model, ep, "tinytrain", steps=3, batch=3, memory_budget=BUDGET, seed=_episode_seed(4, 0),
                         augment_kw={"flip": dataset.flip_ok})
    r = report.result
    assert (r.acc_before, r.acc_after, r.losses, r.selected) == (twin.acc_before, twin.acc_after, twin.losses,
                                                                  twin.selected)
    assert report.class_names == tuple(dataset.class_names[int(c)] for c in ep.class_ids)
    assert report.flash_bytes == step.flash_bytes() > 0
    text = report.format()
    assert "query accuracy" in text and "s_i" in text and "peak SRAM" in text
    for name, limit in ENVELOPES:
        assert f"{'fits' if r.peak_bytes <= limit else 'exceeds'} {name}" in text
    json.dumps(report.to_dict(), allow_nan=False)


def test_save_and_load_adapted_reproduce_logits(model, dataset, files, tmp_path):
    """The saved backbone + head give the adapted step's query logits bit for bit (a fresh step on the loaded
    weights, FullTrain config so every weight is a trainable copy, head set from the file)."""
    report, step = adapt(model, dataset, method="fulltrain", seed=2, **FAST)
    path = save_adapted(step, model, tmp_path / "adapted.npz", meta={"method": "fulltrain"})
    loaded, (hw, hb) = load_adapted(model.graph, path)
    assert loaded.meta["adapted"] == {"method": "fulltrain"} and hw.shape[0] == 3
    ep = sample_nway_kshot(dataset, 3, 2, 3, np.random.default_rng([2, 0]))
    x = model_input(ep.query_x, model)
    fresh = TrainStep(loaded, full_train(step.graph), 3, TrainOptions(batch=x.shape[0], head="cosine"))
    fresh.set_head(hw, hb)
    ref = TrainStep(model, full_train(step.graph), 3, TrainOptions(batch=x.shape[0], head="cosine"))
    trained, head = step.trained_model()
    again = TrainStep(trained, full_train(step.graph), 3, TrainOptions(batch=x.shape[0], head="cosine"))
    again.set_head(*head)
    assert np.array_equal(fresh.forward_logits(x), again.forward_logits(x))
    ref.set_head(hw, hb)
    assert not np.array_equal(ref.forward_logits(x), fresh.forward_logits(x))  # the weights did change
    # the file is also a plain weight file of the base graph (load_npz skips the head)
    assert load_model(str(files["spec"]), path).name == model.name


def test_load_adapted_refuses_a_plain_weight_file(model, files):
    with pytest.raises(errors.WeightFileError, match="no adapted head"):
        load_adapted(model.graph, files["weights"])


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_adapt(files, tmp_path, capsys):
    base = ["adapt", files["spec"], "--weights", files["weights"], "--data", f"folder:{files['data']}", "--ways", 3,
            "--shots", 2, "--queries", 3, "--steps", 2, "--batch", 3, "--memory-budget", BUDGET]
    rc, out, err = run(capsys, *base, "--save", tmp_path / "a.npz")
    assert rc == 0, err
    assert "before (prototype head only)" in out and "written to" in out and (tmp_path / "a.npz").exists()
    assert "step 2" in err  # the progress bar
    rc, out, err = run(capsys, *base, "--method", "sparseupdate", "--json")
    assert rc == 2 and "unknown sparse config '49kb'" in err  # no MIT scheme for the tiny net: a named error
    rc, out, err = run(capsys, *base, "--method", "biasonly", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["result"]["method"] == "biasonly" and d["saved"] is None


@pytest.mark.parametrize("extra, message", [
    (("--method", "magic"), "unknown method 'magic'"),
    (("--ways", 9), "classes"),
    (("--memory-budget", 1000), "below the smallest training plan"),
    (("--mode", "fp32", "--save", "x.npz"), "--save writes int8"),
])
def test_cli_adapt_bad_input(files, capsys, extra, message):
    rc, out, err = run(capsys, "adapt", files["spec"], "--weights", files["weights"], "--data",
                       f"folder:{files['data']}", "--ways", 3, "--shots", 2, "--queries", 3, "--steps", 1, "--quiet",
                       *extra)
    assert rc == 2 and message in err and "Traceback" not in err


def test_cli_adapt_needs_weights(files, capsys):
    rc, out, err = run(capsys, "adapt", files["spec"], "--data", f"folder:{files['data']}")
    assert rc == 2 and "ships no weights" in err and "pass --weights" in err


def test_cli_weights_shipped_names_the_models_that_have_them(capsys):
    rc, out, err = run(capsys, "info", "mbv2-w0.35", "--weights", "shipped")
    assert rc == 2 and "ships no weights for 'mbv2-w0.35'" in err and "mcunet-5fps" in err
    rc, out, err = run(capsys, "adapt", "proxyless-w0.3", "--quiet")
    assert rc == 2 and "pass --weights" in err


def test_progress_estimate_starts_at_the_first_item():
    """Time spent before the first item (the Fisher pass, a cold kernel compile) does not enter the estimate."""
    import io

    from microtrain.fewshot import _Progress

    s = io.StringIO()
    bar = _Progress(3, True, stream=s)
    bar.t0 -= 1000.0  # as if the first item came after 1,000 s of compilation
    bar.update("a")
    assert "estimating time left" in s.getvalue()
    bar.update("b")
    left = float(s.getvalue().rsplit("~", 1)[1].split(" s left")[0])
    assert left < 100 and "1000 s elapsed" in s.getvalue()
