"""The command line: info / predict / infer, JSON shapes, and errors without tracebacks."""

import json
import subprocess
import sys

import numpy as np
import pytest

from microtrain.cli import main
from microtrain.graph import load_graph
from microtrain.inference import Inference
from microtrain.model import random_model
from microtrain.weights import save_npz


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_json(capsys):
    rc, out, _ = run(capsys, "info", "mcunet-5fps", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["model"] == "mcunet-5fps" and d["input_shape"] == [128, 128, 3]
    assert d["params"] == 469_224 and d["macs"] == 22_453_504 and d["conv_layers"] == 42
    assert d["classifier"] == {"params": 161_000, "macs": 160_000, "classes": 1000}
    assert d["inference_arena_bytes"] == 163_840 + 8 * 7_008  # see tests/test_inference.py
    assert len(d["layers"]) == len(load_graph("mcunet-5fps").ops)


def test_info_table(capsys):
    rc, out, _ = run(capsys, "info", "proxyless-w0.3")
    assert rc == 0 and "blocks.19.pointwise2" in out and "326,232" in out


def test_infer_round_trip(tmp_path, capsys):
    m = random_model(load_graph("mbv2-w0.35"), seed=7)
    w = save_npz(m, tmp_path / "w.npz")
    x = np.random.default_rng(1).integers(-128, 128, (2, 128, 128, 3)).astype(np.int8)
    np.save(tmp_path / "in.npy", x)
    rc, _, err = run(capsys, "infer", "mbv2-w0.35", "--weights", str(w), "--input", str(tmp_path / "in.npy"),
                     "--output", str(tmp_path / "out.npy"))
    assert rc == 0, err
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.int8 and out.shape == (2, 1000)
    np.testing.assert_array_equal(out, Inference(m, batch=2).run(x))


def test_predict_npy_image(tmp_path, capsys):
    m = random_model(load_graph("mcunet-5fps"), seed=8)
    w = save_npz(m, tmp_path / "w.npz")
    img = np.random.default_rng(2).integers(0, 256, (150, 170, 3)).astype(np.uint8)
    np.save(tmp_path / "img.npy", img)
    rc, out, err = run(capsys, "predict", "mcunet-5fps", "--weights", str(w), str(tmp_path / "img.npy"),
                       "--top", "3", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert len(d["top"]) == 3
    p = [t["probability"] for t in d["top"]]
    assert p == sorted(p, reverse=True) and 0 < sum(p) <= 1


@pytest.mark.parametrize("argv, match", [
    (["info", "nosuchmodel"], "unknown model"),
    (["infer", "mcunet-5fps", "--weights", "/nonexistent.npz", "--input", "x.npy", "--output", "y.npy"],
     "does not exist"),
])
def test_errors_are_one_line(capsys, argv, match):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and match in err and "Traceback" not in err


def test_infer_rejects_float_input(tmp_path, capsys):
    w = save_npz(random_model(load_graph("mcunet-5fps")), tmp_path / "w.npz")
    np.save(tmp_path / "in.npy", np.zeros((1, 128, 128, 3), np.float32))
    rc, _, err = run(capsys, "infer", "mcunet-5fps", "--weights", str(w), "--input", str(tmp_path / "in.npy"),
                     "--output", str(tmp_path / "out.npy"))
    assert rc == 2 and "int8" in err
    assert not (tmp_path / "out.npy").exists()  # nothing written on error


def test_python_dash_m(tmp_path):
    # cwd outside the checkout, so the installed package runs (not the source folder)
    r = subprocess.run([sys.executable, "-m", "microtrain", "info", "nosuch"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2 and "unknown model" in r.stderr and "Traceback" not in r.stderr


def test_plan_json_and_header(tmp_path, capsys):
    hdr = tmp_path / "plan.h"
    rc, out, err = run(capsys, "plan", "mcunet-5fps", "--config", "49kb", "--json", "--header", str(hdr))
    assert rc == 0, err
    d = json.loads(out)
    for key in ("peak_bytes", "flash_bytes", "backward_macs", "forward_macs", "by_category"):
        assert key in d
    assert d["peak_bytes"] <= 263_080  # TinyEngine's scheduler needs 263,080 B for the same scheme
    assert d["forward_macs"] == 22_453_504 + 160 * 10  # backbone + 10-way head
    # the busiest scope's live bytes plus the gaps the placement leaves make up the head exactly
    assert sum(v for k, v in d["by_category"].items() if k not in ("trainable", "optimizer")) \
        + d["fragmentation_bytes"] == d["head_bytes"]
    assert 0 < d["backward_live_bytes"] <= d["head_bytes"]
    text = hdr.read_text()
    assert f"#define MT_TRAIN_ARENA_SIZE {d['peak_bytes']}u" in text
    assert text.count("_OFFSET ") == d["buffers"]


def test_plan_text_table_and_timeline(capsys):
    rc, out, _ = run(capsys, "plan", "proxyless-w0.3", "--config", "bias", "--mode", "fp32", "--table", "--timeline")
    assert rc == 0
    assert "arena peak (SRAM)" in out and "MIT tiny-training count" in out and "TinyTL count" in out


def test_plan_over_budget_says_by_how_much(capsys):
    rc, _, err = run(capsys, "plan", "mcunet-5fps", "--config", "full", "--budget", "100000")
    assert rc == 2 and "bytes over the budget of 100,000" in err


@pytest.mark.parametrize("argv, match", [
    (["plan", "mcunet-5fps", "--config", "nosuch"], "nosuch"),
    (["plan", "mcunet-5fps", "--config", "full", "--mode", "int8", "--no-bit-masks"], "bit_masks"),
    (["plan", "mcunet-5fps", "--config", "full", "--batch", "0"], "batch"),
])
def test_plan_bad_input(capsys, argv, match):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and match in err and "Traceback" not in err
