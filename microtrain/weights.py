"""Weight files: MIT tiny-training's int8 pickles (read-only, restricted) and microtrain's own .npz.

tiny-training's `.pkl` is a PyTorch-style zip (`archive/data.pkl`) whose pickle holds only dicts and
numpy arrays; it is read with an Unpickler that admits exactly numpy's array reconstruction and nothing
else, so a malicious file cannot run code. Weights are OIHW there and converted once to our layouts.
microtrain's `.npz` is read with `allow_pickle=False`; its metadata is JSON stored as a uint8 array.
"""

import io
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from microtrain.errors import UnsafePickleError, WeightFileError
from microtrain.model import Model

NPZ_FORMAT = "microtrain-int8-v1"

# The only globals a tiny-training pickle may reference (numpy array reconstruction).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a tiny-training weight pickle may only hold numpy "
                "arrays; this file is not one (or has been tampered with)")
        if module == "numpy.core.multiarray":  # NumPy 2 moved it; keep old pickles readable
            module = "numpy._core.multiarray"
        if module == "_codecs":
            import codecs

            return codecs.encode
        import importlib

        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing persistent ids (torch tensor storages): expected numpy arrays only")


def read_tiny_training_pickle(path):
    """The raw dict of a tiny-training .pkl, unpickled with numpy-only globals."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightFileError(f"cannot read weight file {path}: {e}") from None
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                if not names:
                    raise WeightFileError(f"{path}: zip archive without data.pkl; not a tiny-training model")
                data = z.read(names[0])
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except WeightFileError:
        raise
    except Exception as e:  # truncated zip, bad CRC, truncated pickle stream ...
        raise WeightFileError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); "
                              "fetch a fresh copy of the weight file") from None
    if not isinstance(obj, dict) or "first_conv" not in obj or "blocks" not in obj:
        raise WeightFileError(f"{path}: not a tiny-training model dict (needs first_conv, blocks, classifier)")
    return obj


def _conv_from_pickle(graph_op, conv, where):
    """Map one pickle conv dict to our params, checking it against the graph op."""
    p = conv.get("params") if isinstance(conv, dict) else None
    if p is None:
        raise WeightFileError(f"{where}: missing conv {graph_op.name}; are these weights for another model?")
    w = p["weight"]
    if not (isinstance(w, np.ndarray) and w.dtype == np.int8 and w.ndim == 4):
        raise WeightFileError(f"{where}: {graph_op.name} weight must be int8 OIHW")
    k = graph_op.kernel
    if graph_op.kind == "depthwise":
        expect = (graph_op.cout, 1, k, k)
    else:
        expect = (graph_op.cout, graph_op.cin, k, k)
    if w.shape != expect:
        raise WeightFileError(f"{where}: {graph_op.name} weight is {w.shape}, the spec needs {expect}; "
                              "are these weights for another model?")
    if int(conv.get("stride", graph_op.stride)) != graph_op.stride:
        raise WeightFileError(f"{where}: {graph_op.name} stride differs from the spec; weights for another model?")
    if graph_op.kind == "depthwise":
        weight = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))  # (C,1,KH,KW) -> (KH,KW,C)
    elif graph_op.kind in ("pointwise", "fc"):
        weight = np.ascontiguousarray(w[:, :, 0, 0])  # (Co,Ci,1,1) -> (Co,Ci)
    else:
        weight = np.ascontiguousarray(w.transpose(0, 2, 3, 1))  # OIHW -> OHWI
    params = {"weight": weight, "bias": np.ascontiguousarray(p["bias"], dtype=np.int32),
              "w_scales": np.ascontiguousarray(p["w_scales"], dtype=np.float32)}
    xq = (float(p["x_scale"]), int(p["x_zero"]))
    yq = (float(p["y_scale"]), int(p["y_zero"]))
    return params, xq, yq


def model_from_tiny_training(graph, raw, where="pickle"):
    """Build a Model of `graph` from a tiny-training dict (feature_mix must be absent)."""
    params, quant = {}, {}
    if raw.get("feature_mix") is not None and not any(op.name == "feature_mix" for op in graph.ops):
        raise WeightFileError(f"{where}: has a feature_mix conv that the spec {graph.name} lacks")
    convs = {"first_conv": raw["first_conv"]}
    residuals = {}
    for i, blk in enumerate(raw["blocks"]):
        for part in ("pointwise1", "depthwise", "pointwise2"):
            if blk.get(part) is not None:
                convs[f"blocks.{i}.{part}"] = blk[part]
        if blk.get("residual") is not None:
            residuals[f"blocks.{i}.add"] = blk["residual"]["params"]
        if blk.get("se") is not None:
            raise WeightFileError(f"{where}: block {i} has squeeze-excite, which microtrain does not support")
    if raw.get("feature_mix") is not None:
        convs["feature_mix"] = raw["feature_mix"]
    n_conv_graph = sum(1 for op in graph.ops if op.kind in ("conv2d", "depthwise", "pointwise"))
    if len(convs) != n_conv_graph:
        raise WeightFileError(f"{where}: holds {len(convs)} convs, the spec {graph.name} has {n_conv_graph}; "
                              "weights for another model?")
    for op in graph.ops:
        if op.kind in ("conv2d", "depthwise", "pointwise"):
            params[op.name], xq, yq = _conv_from_pickle(op, convs.get(op.name), where)
            if op.inputs[0] in quant and not _same_q(quant[op.inputs[0]], xq):
                raise WeightFileError(f"{where}: {op.name} input quantization {xq} differs from its producer's "
                                      f"{quant[op.inputs[0]]}")
            quant.setdefault(op.inputs[0], xq)
            quant[op.output] = yq
        elif op.kind == "add":
            r = residuals.get(op.name)
            if r is None:
                raise WeightFileError(f"{where}: the spec has a residual at {op.name} but the weights do not")
            sq = (float(r["x_scale"]), int(r["x_zero"]))
            if not _same_q(quant[op.inputs[0]], sq):
                raise WeightFileError(f"{where}: {op.name} shortcut quantization differs from the block input's")
            quant[op.output] = (float(r["y_scale"]), int(r["y_zero"]))
        elif op.kind == "mean":
            quant[op.output] = quant[op.inputs[0]]  # average pooling keeps the quantization
        elif op.kind == "fc":
            c = raw["classifier"]
            w = c["params"]["weight"]
            if w.shape[:2] != (op.cout, op.cin):
                raise WeightFileError(f"{where}: classifier is {w.shape[:2]}, the spec needs {(op.cout, op.cin)}")
            params[op.name] = {"weight": np.ascontiguousarray(w.reshape(op.cout, op.cin)),
                               "bias": np.ascontiguousarray(c["params"]["bias"], dtype=np.int32),
                               "w_scales": np.ascontiguousarray(c["params"]["w_scales"], dtype=np.float32)}
            xq = (float(c["params"]["x_scale"]), int(c["params"]["x_zero"]))
            if not _same_q(quant[op.inputs[0]], xq):
                raise WeightFileError(f"{where}: classifier input quantization differs from the pooled features'")
            quant[op.output] = (float(c["params"]["y_scale"]), int(c["params"]["y_zero"]))
    if len(residuals) != sum(1 for op in graph.ops if op.kind == "add"):
        raise WeightFileError(f"{where}: residual connections differ from the spec {graph.name}")
    m = Model(graph, params, quant, {"source": str(where), "format": "tiny-training-pkl"})
    m.validate(where)
    return m.freeze()


def _same_q(a, b):
    return a[1] == b[1] and np.float32(a[0]) == np.float32(b[0])


# ---------------------------------------------------------------------------------------------
# microtrain .npz
# ---------------------------------------------------------------------------------------------

def save_npz(model, path, extra_meta=None, extra_arrays=None):
    """Write `model` as microtrain's .npz, atomically (temporary file, then rename). extra_arrays: more named
    arrays for the same file (only names load_npz knows to skip, e.g. an adapted head's "head/weight")."""
    arrays = dict(extra_arrays or {})
    for name, p in model.params.items():
        for key, a in p.items():
            arrays[f"param/{name}/{key}"] = np.ascontiguousarray(a)
    for t, (s, zp) in model.quant.items():
        arrays[f"quant/{t}"] = np.array([s, zp], dtype=np.float64)
    meta = {"format": NPZ_FORMAT, "model": model.graph.name}
    meta.update(model.meta or {})
    meta.update(extra_meta or {})
    meta["format"] = NPZ_FORMAT
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    return _atomic_write(path, ".tmp.npz", lambda tmp: np.savez(tmp, **arrays))


def load_npz(graph, path):
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise WeightFileError(f"weight file {path} does not exist") from None
    except ValueError as e:  # object arrays need pickle: refused
        raise WeightFileError(f"{path}: refused ({e}); microtrain .npz files hold plain arrays only") from None
    except Exception as e:
        raise WeightFileError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})") from None
    if "meta" not in files:
        raise WeightFileError(f"{path}: no 'meta' entry; not a microtrain weight file")
    try:
        meta = json.loads(files.pop("meta").tobytes().decode())
    except Exception:
        raise WeightFileError(f"{path}: unreadable metadata") from None
    if meta.get("format") != NPZ_FORMAT:
        raise WeightFileError(f"{path}: format {meta.get('format')!r}, expected {NPZ_FORMAT}")
    if meta.get("model") != graph.name:
        raise WeightFileError(f"{path} holds weights for {meta.get('model')!r}, not {graph.name!r}; "
                              "pass the matching model name or spec")
    params, quant = {}, {}
    for k, a in files.items():
        parts = k.split("/")
        if parts[0] == "param" and len(parts) == 3:
            params.setdefault(parts[1], {})[parts[2]] = a
        elif parts[0] == "quant" and len(parts) == 2 and a.shape == (2,):
            quant[parts[1]] = (float(a[0]), int(a[1]))
        elif k in ("head/weight", "head/bias"):
            continue  # an adapted few-shot head (microtrain.adapt.save_adapted); read by adapt.load_adapted
        else:
            raise WeightFileError(f"{path}: unexpected entry {k!r}")
    extra = set(params) - {op.name for op in graph.ops if op.has_weights}
    if extra:
        raise WeightFileError(f"{path}: weights for ops not in {graph.name}: {sorted(extra)[:5]}")
    m = Model(graph, params, quant, meta)
    m.validate(str(path))
    return m.freeze()


def read_weights(graph, path):
    """Dispatch on the file: tiny-training .pkl or microtrain .npz."""
    path = Path(path)
    if not path.exists():
        raise WeightFileError(f"weight file {path} does not exist")
    if path.suffix == ".npz":
        return load_npz(graph, path)
    if path.suffix in (".pkl", ".pth", ".pt"):
        return model_from_tiny_training(graph, read_tiny_training_pickle(path), where=str(path))
    raise WeightFileError(f"{path}: unknown weight format (use a tiny-training .pkl or a microtrain .npz)")


def _atomic_write(path, suffix, write):
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path`: a crash or an
    error leaves the old file (or none), never a half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=str(path.parent or "."))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save_npy(path, array):
    """np.save through a temporary file and a rename: nothing is left half-written."""
    return _atomic_write(path, ".tmp.npy", lambda tmp: np.save(tmp, array, allow_pickle=False))


def atomic_write_text(path, text):
    """Write text through a temporary file and a rename (nothing half-written on error)."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return _atomic_write(path, ".tmp", write)
