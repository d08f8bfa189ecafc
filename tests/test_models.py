"""Reference model specs: counted totals equal the published ones; weight loaders; bad input."""

import pickle
import zipfile

import numpy as np
import pytest

from microtrain import errors
from microtrain.graph import graph_from_spec, load_graph
from microtrain.model import load_model, random_model
from microtrain.weights import read_tiny_training_pickle, save_npz, load_npz
from shared import tiny_training_weights

# Published totals (TinyTrain paper §3 / tiny-training pickles): forward conv MACs per 128x128 image and
# conv parameters (weights + biases), without the 1000-way classifier; the classifier separately.
PUBLISHED = {
    "mcunet-5fps": dict(convs=42, macs=22_453_504, params=469_224, feat=160),
    "mbv2-w0.35": dict(convs=51, macs=16_646_912, params=244_448, feat=112),
    "proxyless-w0.3": dict(convs=60, macs=18_619_904, params=326_232, feat=96),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_counts_equal_published(name):
    g = load_graph(name)
    pub = PUBLISHED[name]
    assert len(g.convs) == pub["convs"]
    assert [op.conv_index for op in g.convs] == list(range(pub["convs"]))
    assert g.conv_macs() == pub["macs"]  # 22.45M / 16.65M / 18.62M as published
    assert g.conv_params() == pub["params"]
    head = g.classifier
    assert (head.cin, head.cout) == (pub["feat"], 1000)
    assert g.op_params(head) == pub["feat"] * 1000 + 1000
    assert g.op_macs(head) == pub["feat"] * 1000


def test_mcunet_layer_table_matches_tiny_training():
    # A few rows of the per-conv table derived from tiny-training's pickle (background doc, Appendix A).
    g = load_graph("mcunet-5fps")
    c = g.convs
    assert (c[4].name, c[4].kind, c[4].kernel, c[4].stride, g.shapes[c[4].output]) == \
        ("blocks.1.depthwise", "depthwise", 3, 2, (32, 32, 32))
    assert (c[19].name, c[19].kernel, g.op_macs(c[19])) == ("blocks.6.depthwise", 7, 501_760)
    assert (c[41].name, c[41].cin, c[41].cout, g.op_params(c[41])) == ("blocks.13.pointwise2", 576, 160, 92_320)
    adds = [op.name for op in g.ops if op.kind == "add"]
    assert adds == ["blocks.2.add", "blocks.4.add", "blocks.6.add", "blocks.8.add", "blocks.9.add",
                    "blocks.11.add", "blocks.12.add"]


@pytest.mark.shared
@pytest.mark.parametrize("name", PUBLISHED)
def test_tiny_training_pickle_loads_and_matches_spec(name):
    m = load_model(name, tiny_training_weights(name))
    assert m.input_quant() == (pytest.approx(1 / 127.5), 0)
    for op in m.graph.ops:
        if op.has_weights:
            assert not m.params[op.name]["weight"].flags.writeable  # frozen weights are flash
    n_w = sum(p["weight"].size for p in m.params.values())
    n_b = sum(p["bias"].size for p in m.params.values())
    assert n_w + n_b == PUBLISHED[name]["params"] + PUBLISHED[name]["feat"] * 1000 + 1000


@pytest.mark.parametrize("name", PUBLISHED)
def test_npz_round_trip(tmp_path, name):
    m = random_model(load_graph(name), seed=3)
    p = save_npz(m, tmp_path / "w.npz")
    m2 = load_npz(m.graph, p)
    assert m2.quant == m.quant
    for op, prm in m.params.items():
        for k, a in prm.items():
            np.testing.assert_array_equal(m2.params[op][k], a)
            assert m2.params[op][k].dtype == a.dtype


# ---- bad input ----------------------------------------------------------------------------------

def test_unknown_model():
    with pytest.raises(errors.UnknownModelError, match="unknown model"):
        load_graph("resnet50")


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ninput: [128, 128\n")
    with pytest.raises(errors.SpecError, match="not valid YAML"):
        load_graph(str(p))


def test_yaml_is_read_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(errors.SpecError):
        load_graph(str(p))


@pytest.mark.parametrize("spec, match", [
    ({"name": "x"}, "missing key"),
    ({"name": "x", "input": [8, 8], "first_conv": {}, "blocks": []}, "input"),
    ({"name": "x", "input": [8, 8, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 1},
      "blocks": [{"expand": 1, "out": 4, "kernel": 4, "stride": 1}]}, "must be odd"),
    ({"name": "x", "input": [8, 8, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 1},
      "blocks": [{"expand": 1, "out": 4, "kernel": 3, "stride": 1, "mid": 6}]}, "mid == in"),
    ({"name": "x", "input": [8, 8, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 1, "act": "gelu"},
      "blocks": [{"expand": 1, "out": 4, "kernel": 3, "stride": 1}]}, "unsupported activation"),
    ({"name": "x", "input": [8, 8, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 1},
      "blocks": [{"expand": 1, "out": 4, "kernel": 3, "stride": 1}], "classifier": 0}, "classifier"),
    ({"name": "x", "input": [8, 8, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 1},
      "blocks": [{"expand": 2, "out": 4, "kernel": 3, "stride": True}]}, "stride"),
])
def test_spec_errors(spec, match):
    with pytest.raises(errors.SpecError, match=match):
        graph_from_spec(spec)


def test_missing_weight_file(tmp_path):
    with pytest.raises(errors.WeightFileError, match="does not exist"):
        load_model("mcunet-5fps", tmp_path / "nope.npz")


def test_truncated_npz(tmp_path):
    m = random_model(load_graph("mcunet-5fps"))
    p = save_npz(m, tmp_path / "w.npz")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.WeightFileError, match="corrupt or truncated"):
        load_model("mcunet-5fps", p)


def test_npz_for_another_model(tmp_path):
    p = save_npz(random_model(load_graph("mbv2-w0.35")), tmp_path / "w.npz")
    with pytest.raises(errors.WeightFileError, match="not 'mcunet-5fps'"):
        load_model("mcunet-5fps", p)


def test_npz_with_wrong_shape(tmp_path):
    m = random_model(load_graph("mcunet-5fps"))
    p = save_npz(m, tmp_path / "w.npz")
    with np.load(p, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    d["param/first_conv/weight"] = d["param/first_conv/weight"][:8]
    np.savez(tmp_path / "bad.npz", **d)
    with pytest.raises(errors.WeightFileError, match="first_conv/weight has shape"):
        load_model("mcunet-5fps", tmp_path / "bad.npz")


def test_npz_with_object_array_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(errors.WeightFileError, match="refused"):
        load_model("mcunet-5fps", tmp_path / "obj.npz")


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"first_conv": _Evil(), "blocks": []}))
    with pytest.raises(errors.UnsafePickleError, match="refusing to load posix.system|refusing to load os.system"):
        read_tiny_training_pickle(p)


def test_zip_pickle_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pkl"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": _Evil()}))
    with pytest.raises(errors.UnsafePickleError):
        read_tiny_training_pickle(p)


@pytest.mark.shared
def test_truncated_pickle(tmp_path):
    src = tiny_training_weights("mcunet-5fps")
    p = tmp_path / "trunc.pkl"
    p.write_bytes(src.read_bytes()[:100_000])
    with pytest.raises(errors.WeightFileError, match="corrupt or truncated"):
        load_model("mcunet-5fps", p)


@pytest.mark.shared
def test_pickle_for_another_model():
    with pytest.raises(errors.WeightFileError, match="another model"):
        load_model("mcunet-5fps", tiny_training_weights("mbv2-w0.35"))
