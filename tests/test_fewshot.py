"""Few-shot adaptation and evaluation (microtrain.fewshot, `microtrain select` / `evaluate`): every method through
the engine on a tiny random model and a synthetic image folder, determinism, serial == dask, the prototype head,
padding of the last chunk, bad input as named errors, and one episode on real Omniglot + MCUNet (shared)."""

import json
import math
import sys

import numpy as np
import pytest
import yaml

from microtrain import errors
from microtrain.cli import main
from microtrain.data import parse_spec
from microtrain.episodes import sample_nway_kshot
from microtrain.fewshot import (METHODS, _chunked, adapt_episode, cosine_prototypes, evaluate, model_input,
                                static_config, tune_lr)
from microtrain.graph import graph_from_spec, with_classes
from microtrain.model import load_model, random_model
from microtrain.preprocess import quantize_table
from microtrain.train import TrainStep
from microtrain.train_plan import TrainOptions, plan_training_step
from microtrain.weights import save_npz
from shared import OMNIGLOT, tiny_training_weights

# A small MBConv net at 32x32: conv k3 s2, three blocks (one residual), 10 convs in all.
SPEC = {"name": "fewshot-tiny", "input": [32, 32, 3], "first_conv": {"out": 8, "kernel": 3, "stride": 2},
        "blocks": [{"expand": 2, "out": 8, "kernel": 3, "stride": 1},
                   {"expand": 2, "out": 12, "kernel": 3, "stride": 2},
                   {"expand": 2, "out": 12, "kernel": 3, "stride": 1}], "classifier": 10}
# An MIT-format SparseUpdate scheme for it (biases of the last 4 convs, two weights on part of their channels).
SCHEME = {"model": "fewshot-tiny", "name": "fewshot-tiny-test", "n_bias_update": 4, "manual_weight_idx": [8, 9],
          "weight_update_ratio": [0.5, 0.25]}
BUDGET = 64 * 1024  # bytes: above the head-only plan (about 10 KB), below FullTrain's (about 67 KB)
FAST = dict(ways=3, shots=2, queries=3, steps=3, memory_budget=BUDGET)  # 3-way 2-shot, 3 steps


@pytest.fixture(scope="module")
def model():
    return random_model(graph_from_spec(SPEC), seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    """A synthetic image folder (5 classes x 8 images, 24x24 .npy, a colour per class plus noise), the spec,
    the weights and the scheme as files."""
    root = tmp_path_factory.mktemp("fewshot")
    rng = np.random.default_rng(0)
    data = root / "data"
    for c in range(5):
        base = rng.integers(0, 256, (1, 1, 3))
        (data / f"class{c}").mkdir(parents=True)
        for i in range(8):
            img = np.clip(base + rng.normal(0, 30, (24, 24, 3)), 0, 255).astype(np.uint8)
            np.save(data / f"class{c}" / f"{i}.npy", img)
    spec = root / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    weights = save_npz(model, root / "tiny.npz")
    scheme = root / "scheme.yaml"
    scheme.write_text(yaml.safe_dump(SCHEME))
    return {"data": data, "spec": spec, "weights": weights, "scheme": scheme}


@pytest.fixture(scope="module")
def dataset(files):
    return parse_spec(f"folder:{files['data']}", 32)


@pytest.fixture(scope="module")
def full_eval(model, dataset, files):
    return evaluate(model, dataset, METHODS, 2, seed=3, progress=False, scheme=str(files["scheme"]), **FAST)


def _timeless(ev):
    """The evaluation without its wall-clock fields (everything else must be reproducible)."""
    d = ev.to_dict()
    for r in d["rows"]:
        r.pop("seconds")
    for e in d["episodes"]:
        e.pop("seconds")
        e.pop("fisher_seconds")
    return d


# ---- the evaluation ----------------------------------------------------------------------------------

def test_every_method_runs(full_eval):
    rows = {r["method"]: r for r in full_eval.rows()}
    assert tuple(rows) == METHODS
    for m, r in rows.items():
        assert r["episodes"] == 2
        for k in ("acc", "acc_before"):
            assert 0.0 <= r[k] <= 1.0
        for k in ("ci95", "ci95_before", "backward_macs", "seconds"):
            assert math.isfinite(r[k]) and r[k] >= 0
        assert (r["peak_bytes"] is None) == (m == "none")
        assert (r["fisher_peak_bytes"] is not None) == m.startswith("tinytrain")
    assert rows["none"]["backward_macs"] == 0 and rows["none"]["acc"] == rows["none"]["acc_before"]
    assert rows["fulltrain"]["peak_bytes"] > BUDGET  # the baselines are not held to the budget ...
    for m in ("tinytrain", "tinytrain-l2", "tinytrain-random"):  # ... TinyTrain's step and Fisher pass are
        assert rows[m]["peak_bytes"] <= BUDGET and rows[m]["fisher_peak_bytes"] <= BUDGET
    assert rows["sparseupdate"]["config"] == "fewshot-tiny-test"
    text = full_eval.format()
    assert all(m in text for m in METHODS)
    json.dumps(full_eval.to_dict(), allow_nan=False)  # strict JSON


def test_episode_results(full_eval, model):
    graph = with_classes(model.graph, 3)
    for r in full_eval.results:
        assert r.ways == 3 and r.shots == (2, 2, 2) and r.queries == 9 and r.batch == 6
        if r.method != "none":
            assert r.steps == 3 and len(r.losses) == 3 and all(math.isfinite(v) for v in r.losses)
            assert r.run_peak_bytes > r.peak_bytes  # batch 6 vs the device's batch 1
    # every method starts from the same prototype head on the same backbone: the same accuracy before
    for i in (0, 1):
        assert len({r.acc_before for r in full_eval.results if r.episode == i}) == 1
    # static configs: the reported peak is the batch-1 cosine-head plan of that config
    opts = TrainOptions(mode="int8", batch=1, head="cosine")
    for m in ("fulltrain", "lastlayer", "biasonly"):
        r = full_eval.of(m)[0]
        assert r.peak_bytes == plan_training_step(graph, static_config(model, graph, m), opts)[0].peak
    tt = full_eval.of("tinytrain")[0]
    assert "s_i" in tt.selection and tt.selected and tt.fisher_seconds >= 0


def test_same_seed_same_table(model, dataset, full_eval):
    """Rerunning some of the methods gives their rows and episodes exactly (a method's result does not depend
    on which other methods run, nor on their order)."""
    methods = ("tinytrain-random", "fulltrain", "tinytrain")
    again = evaluate(model, dataset, methods, 2, seed=3, progress=False, **FAST)
    a, b = _timeless(again), _timeless(full_eval)
    assert a["rows"] == [r for m in methods for r in b["rows"] if r["method"] == m]
    key = lambda e: (e["episode"], e["method"])  # noqa: E731
    assert sorted(a["episodes"], key=key) == sorted([e for e in b["episodes"] if e["method"] in methods], key=key)
    other = evaluate(model, dataset, ("tinytrain-random",), 2, seed=4, progress=False, **FAST)
    assert _timeless(other)["episodes"] != [e for e in a["episodes"] if e["method"] == "tinytrain-random"]


def test_serial_equals_dask(model, dataset, files):
    pytest.importorskip("distributed")
    methods = ("none", "biasonly", "sparseupdate", "tinytrain-random")
    kw = dict(seed=5, progress=False, scheme=str(files["scheme"]), **FAST)
    serial = evaluate(model, dataset, methods, 3, **kw)
    dist = evaluate(model, dataset, methods, 3, workers=2, **kw)
    assert _timeless(dist) == _timeless(serial)
    assert [(r.episode, r.method) for r in dist.results] == [(i, m) for i in range(3) for m in methods]


def test_tune_lr_with_workers_equals_serial_on_one_cluster(model, dataset, monkeypatch):
    pytest.importorskip("distributed")
    import microtrain.fewshot as fs

    kw = dict(grid=(0.01, 0.2), probes=2, probe_seed=9, progress=False, **FAST)
    serial = tune_lr(model, dataset, ("lastlayer", "biasonly"), **kw)
    started = []
    real = fs.local_cluster
    monkeypatch.setattr(fs, "local_cluster", lambda n: started.append(n) or real(n))
    dist = tune_lr(model, dataset, ("lastlayer", "biasonly"), workers=2, **kw)
    assert (dist.chosen, dist.accuracy) == (serial.chosen, serial.accuracy)
    assert started == [2]  # one cluster for the whole grid, not one per lr
    with pytest.raises(errors.ConfigError, match="not both"):
        tune_lr(model, dataset, ("lastlayer",), workers=2, scheduler="tcp://127.0.0.1:1", **kw)
    with pytest.raises(errors.ConfigError, match="positive integer"):  # before any cluster starts
        tune_lr(model, dataset, ("lastlayer",), workers=0, **kw)


def test_missing_dask_is_a_named_error(model, dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(errors.MicrotrainError, match="dask"):
        evaluate(model, dataset, ("none",), 1, workers=2, progress=False, **FAST)


def test_progress_bar(model, dataset, capsys):
    evaluate(model, dataset, ("none", "lastlayer"), 1, progress=True, **FAST)
    err = capsys.readouterr().err
    assert "\r[" in err and "2/2" in err and err.endswith("\n")


# ---- pieces --------------------------------------------------------------------------------------------

def test_model_input(model):
    u = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1).repeat(3, axis=3)
    u = np.broadcast_to(u[:, :, :32], (1, 32, 32, 3)).copy()
    np.testing.assert_array_equal(model_input(u, model, "int8"), quantize_table(*model.input_quant())[u])
    f = model_input(u, model, "fp32")
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, 2 * u.astype(np.float64) / 255 - 1, atol=1e-6)
    with pytest.raises(errors.InputError, match="input size"):
        model_input(np.zeros((1, 16, 16, 3), np.uint8), model)


def test_cosine_prototypes():
    f = np.array([[3.0, 4.0], [3.0, 4.0], [0.0, 2.0], [0.0, 4.0]])
    W, b = cosine_prototypes(f, [0, 0, 1, 1], 3)
    np.testing.assert_allclose(W, [[6.0, 8.0], [0.0, 10.0], [0.0, 0.0]], rtol=1e-6)  # scale 10 x unit mean
    assert W.dtype == b.dtype == np.float32 and not b.any()


def test_chunked_pads_and_drops(model):
    """Logits in chunks of the step's batch (last chunk padded by repetition) equal one row at a time."""
    step = TrainStep(model, static_config(model, with_classes(model.graph, 3), "lastlayer"), 3,
                     TrainOptions(batch=4, head="cosine"))
    step.set_head(np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32), np.zeros(3, np.float32))
    x = np.random.default_rng(1).integers(-32, 33, (7, 32, 32, 3)).astype(np.int8)
    got = _chunked(step.forward_logits, x, 4)
    one = np.concatenate([step.forward_logits(np.repeat(x[i:i + 1], 4, axis=0))[:1] for i in range(7)])
    assert got.shape == (7, 3)
    np.testing.assert_array_equal(got, one)


def test_adapt_episode_fp32_and_zero_steps(model, dataset):
    ep = sample_nway_kshot(dataset, 3, 2, 3, np.random.default_rng(0))
    r = adapt_episode(model, ep, "tinytrain", mode="fp32", steps=2, memory_budget=BUDGET * 4,
                      augment_kw={"flip": True})
    assert r.optimizer == "adam" and r.lr == 1e-3 and r.mode == "fp32" and len(r.losses) == 2
    assert r.peak_bytes <= BUDGET * 4
    z = adapt_episode(model, ep, "lastlayer", steps=0, batch=4)
    assert z.acc_after == z.acc_before and z.batch == 4 and z.losses == ()


# ---- learning rate per method ---------------------------------------------------------------------------------

def test_lr_per_method_equals_separate_runs(model, dataset):
    """lr={method: lr} runs each method exactly as a separate evaluation at that lr would."""
    kw = dict(seed=5, progress=False, **FAST)
    mixed = evaluate(model, dataset, ("lastlayer", "biasonly"), 2, lr={"lastlayer": 0.05, "biasonly": 0.005}, **kw)
    a = evaluate(model, dataset, ("lastlayer",), 2, lr=0.05, **kw)
    b = evaluate(model, dataset, ("biasonly",), 2, lr=0.005, **kw)
    for sep in (a, b):
        for r in sep.results:
            twin = next(x for x in mixed.of(r.method) if x.episode == r.episode)
            assert (twin.lr, twin.acc_after, twin.losses) == (r.lr, r.acc_after, r.losses)
    assert mixed.settings["lr"] == {"lastlayer": 0.05, "biasonly": 0.005}
    assert [r["lr"] for r in mixed.rows()] == [0.05, 0.005]
    # a method without an entry runs at the default lr; lr for a method not evaluated is an error
    part = evaluate(model, dataset, ("lastlayer", "biasonly"), 1, lr={"lastlayer": 0.05}, **kw)
    assert part.of("biasonly")[0].lr == 0.005  # DEFAULT_LR[("int8", "sgd")]
    with pytest.raises(errors.ConfigError, match="not evaluated: fulltrain"):
        evaluate(model, dataset, ("lastlayer",), 1, lr={"fulltrain": 0.1}, **kw)
    with pytest.raises(errors.ConfigError, match="positive finite"):
        evaluate(model, dataset, ("lastlayer",), 1, lr={"lastlayer": -1.0}, **kw)


def test_tune_lr_picks_the_best_probe_accuracy(model, dataset):
    """tune_lr's choice is, per method, the arg-max of evaluate's own accuracy on the probe episodes (seed
    probe_seed), recomputed here independently; the probe episodes are not the evaluation's."""
    kw = dict(progress=False, **FAST)
    grid = (0.001, 0.05, 0.5)
    t = tune_lr(model, dataset, ("none", "lastlayer", "fulltrain"), grid=grid, probes=2, probe_seed=77, **kw)
    assert set(t.chosen) == {"lastlayer", "fulltrain"} and t.grid == grid
    for m in ("lastlayer", "fulltrain"):
        accs = [evaluate(model, dataset, (m,), 2, seed=77, lr=v, **kw).rows()[0]["acc"] for v in grid]
        assert [a for _, a, _ in t.accuracy[m]] == accs
        assert t.chosen[m] == grid[int(np.argmax(accs))]  # argmax keeps the first (smallest lr) of ties
    assert "chosen" in t.format() and "| lastlayer |" in t.to_markdown()
    json.dumps(t.to_dict(), allow_nan=False)
    with pytest.raises(errors.ConfigError, match="probe_seed"):
        tune_lr(model, dataset, ("lastlayer",), grid=grid, seed=0, **kw)
    with pytest.raises(errors.ConfigError, match="twice"):
        tune_lr(model, dataset, ("lastlayer",), grid=(0.1, 0.1), **kw)
    with pytest.raises(errors.ConfigError, match="trains"):
        tune_lr(model, dataset, ("none",), grid=grid, **kw)


def test_cli_evaluate_tune_lr(files, capsys, tmp_path):
    rc, out, err = run(capsys, "evaluate", files["spec"], "--weights", files["weights"], "--data",
                       f"folder:{files['data']}", "--methods", "none,lastlayer", "--episodes", 1, "--ways", 3,
                       "--shots", 2, "--queries", 3, "--steps", 2, "--tune-lr", "0.01,0.1", "--probes", 1, "--quiet",
                       "--out", tmp_path / "res")
    assert rc == 0, err
    assert "learning rate per method on 1 probe episodes (seed 1000)" in out
    assert "## Learning rate per method" in (tmp_path / "res" / "results.md").read_text()
    rc, out, err = run(capsys, "evaluate", files["spec"], "--weights", files["weights"], "--data",
                       f"folder:{files['data']}", "--methods", "lastlayer", "--episodes", 1, "--ways", 3,
                       "--shots", 2, "--queries", 3, "--steps", 1, "--lr", "lastlayer=0.05", "--json", "--quiet")
    assert rc == 0, err
    assert json.loads(out)["settings"]["lr"] == {"lastlayer": 0.05}


# ---- bad input -------------------------------------------------------------------------------------------

def test_bad_requests(model, dataset):
    with pytest.raises(errors.ConfigError, match="unknown method 'protonet'"):
        evaluate(model, dataset, ("none", "protonet"), 1, progress=False, **FAST)
    with pytest.raises(errors.DataError, match="classes"):
        evaluate(model, dataset, ("none",), 1, progress=False, **{**FAST, "ways": 6})
    with pytest.raises(errors.DataError, match="too few images"):
        evaluate(model, dataset, ("none",), 1, progress=False, **{**FAST, "queries": 7})
    with pytest.raises(errors.ArenaOverflowError, match="at least"):
        evaluate(model, dataset, ("tinytrain",), 1, progress=False, **{**FAST, "memory_budget": 1000})
    with pytest.raises(errors.DataError, match="size 32"):
        evaluate(model, parse_spec(f"folder:{dataset.name.split(':', 1)[1]}", 16), ("none",), 1, progress=False,
                 **FAST)
    with pytest.raises(errors.ConfigError, match="unknown MIT scheme|unknown sparse config"):
        evaluate(model, dataset, ("sparseupdate",), 1, progress=False, **FAST)  # no 49kb scheme for this net
    with pytest.raises(errors.ConfigError, match="workers"):
        evaluate(model, dataset, ("none",), 1, workers=0, progress=False, **FAST)


# ---- CLI ----------------------------------------------------------------------------------------------------

def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_select_json(files, tmp_path, capsys):
    rc, out, err = run(capsys, "select", files["spec"], "--weights", files["weights"], "--data",
                       f"folder:{files['data']}", "--ways", 3, "--shots", 2, "--queries", 3, "--memory-budget", BUDGET,
                       "--json", "--save", tmp_path / "cfg.yaml")
    assert rc == 0, err
    d = json.loads(out)
    assert d["training_plan_peak_bytes"] <= BUDGET and d["fisher"]["peak_bytes"] <= BUDGET
    assert d["selected"] and len(d["layers"]) == 10
    assert "tinytrain-fisher" in (tmp_path / "cfg.yaml").read_text()
    rc, out, err = run(capsys, "select", files["spec"], "--weights", files["weights"], "--data",
                       f"folder:{files['data']}", "--ways", 3, "--shots", 2, "--queries", 3, "--memory-budget", BUDGET,
                       "--channels", "l2")
    assert rc == 0, err
    assert "tinytrain-l2" in out and "Fisher pass: peak" in out and "training plan (batch 1)" in out


def test_cli_evaluate_json_and_out(files, tmp_path, capsys):
    rc, out, err = run(capsys, "evaluate", files["spec"], "--weights", files["weights"], "--data",
                       f"folder:{files['data']}", "--methods", "none,lastlayer,tinytrain", "--episodes", 2,
                       "--ways", 3, "--shots", 2, "--queries", 3, "--steps", 2, "--memory-budget", BUDGET, "--json",
                       "--quiet", "--out", tmp_path / "res")
    assert rc == 0, err
    d = json.loads(out)
    assert [r["method"] for r in d["rows"]] == ["none", "lastlayer", "tinytrain"]
    assert len(d["episodes"]) == 6 and d["settings"]["steps"] == 2
    assert json.loads((tmp_path / "res" / "results.json").read_text())["rows"] == d["rows"]
    assert "| tinytrain |" in (tmp_path / "res" / "results.md").read_text()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "skipped" in err
    else:
        assert (tmp_path / "res" / "accuracy_vs_memory.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra, message", [
    (("--methods", "none,magic"), "unknown method 'magic'"),
    (("--ways", 9), "classes"),
    (("--methods", "tinytrain", "--memory-budget", 2000), "below the smallest training plan"),
    (("--meta-dataset",), "--meta-dataset draws"),
    (("--lr", "fast"), "--lr 'fast'"),
    (("--lr", "0.1", "--tune-lr"), "drop --lr"),
    (("--tune-lr", "0.1,x"), "--tune-lr '0.1,x'"),
])
def test_cli_evaluate_bad_input(files, capsys, extra, message):
    base = ["evaluate", files["spec"], "--weights", files["weights"], "--data", f"folder:{files['data']}",
            "--episodes", 1, "--shots", 2, "--queries", 3, "--steps", 1, "--quiet"]
    rc, out, err = run(capsys, *base, *extra)
    assert rc == 2 and message in err and "Traceback" not in err and err.startswith("microtrain: error:")


def test_cli_select_budget_too_small(files, capsys):
    rc, _, err = run(capsys, "select", files["spec"], "--weights", files["weights"], "--data", f"folder:{files['data']}",
                     "--ways", 3, "--shots", 2, "--queries", 3, "--memory-budget", 2000)
    assert rc == 2 and "raise the budget" in err and "Traceback" not in err


# ---- real data --------------------------------------------------------------------------------------------

@pytest.mark.shared
def test_omniglot_mcunet_one_episode():
    """One 5-way 5-shot Omniglot episode on the real ImageNet-pretrained MCUNet (int8), a few steps."""
    weights = tiny_training_weights("mcunet-5fps")
    if not any(OMNIGLOT.glob("images_*.zip")):
        pytest.skip(f"Omniglot zips not found in {OMNIGLOT} (set MICROTRAIN_SHARED to the shared folder)")
    model = load_model("mcunet-5fps", weights)
    data = parse_spec(f"omniglot:{OMNIGLOT}", 128)
    ev = evaluate(model, data, ("none", "sparseupdate", "tinytrain"), 1, steps=3, progress=False)
    rows = {r["method"]: r for r in ev.rows()}
    assert rows["none"]["acc"] > 0.4  # ImageNet features separate 5 Omniglot characters far above chance (0.2)
    assert rows["sparseupdate"]["config"] == "mcunet-5fps-49kb"
    assert rows["sparseupdate"]["peak_bytes"] <= 262_144 and rows["tinytrain"]["peak_bytes"] <= 262_144
    assert rows["tinytrain"]["fisher_peak_bytes"] <= 262_144
    assert all(0 <= r["acc"] <= 1 for r in rows.values())
