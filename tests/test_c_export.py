"""The exported C training step (`microtrain export-c`) against the Python engine, on MCUNet-5fps with MIT's "49kb"
SparseUpdate scheme (reference_models/sparse/mcunet-5fps-49kb.yaml), int8 mode, SGD + QAS.

The step is exported from a TrainStep before its first run, compiled with gcc (export_c.CFLAGS), and both run the
same inputs for STEPS steps: the logits of every step's forward, the loss, and after every step the whole arena
(activations, masks, gradients, and the tail's int8 weights / int32 biases / fp32 head) are compared byte for byte.
Random int8 weights (no ../shared needed) always; MIT tiny-training's real weights too when tests/shared.py finds
them. The arena is checked to be exactly plan.peak bytes (nm), the library to import no allocator (nm), and a
standalone executable of the step to run clean under valgrind memcheck.
"""

import ctypes
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from microtrain import export_c
from microtrain.cli import main as cli_main
from microtrain.graph import load_graph
from microtrain.model import load_model, random_model
from microtrain.sparse import load_config
from microtrain.train import TrainStep
from microtrain.train_plan import TrainOptions
from shared import tiny_training_weights

pytestmark = pytest.mark.skipif(export_c.find_cc() is None, reason="no C compiler (gcc) on PATH: the exported C "
                                                                   "training step cannot be built")

K = 5  # classes of the trained head
STEPS = 3
LR = 0.05
F32 = np.float32


def batches(seed, n=STEPS):
    rng = np.random.default_rng(seed)
    return [(rng.integers(-128, 128, (1, 128, 128, 3)).astype(np.int8), rng.integers(0, K, 1).astype(np.int32))
            for _ in range(n)]


def make_step(model):
    rng = np.random.default_rng(1)
    head = (rng.normal(0, 0.1, (K, model.graph.classifier.cin)).astype(F32), rng.normal(0, 0.1, K).astype(F32))
    opts = TrainOptions(mode="int8", optimizer="sgd", lr=LR, batch=1, backend="reference")
    return TrainStep(model, load_config("49kb", model), K, opts, head=head)


@pytest.fixture(scope="module", params=["random-weights", "tiny-training-weights"])
def exported(request, tmp_path_factory):
    """The export of a fresh step (out dir, shared library) and the Python record taken AFTER the export: the initial
    arena and, per step, the forward logits, the loss and a copy of the whole arena after the step."""
    if request.param == "random-weights":
        model = random_model(load_graph("mcunet-5fps"), seed=5)
    else:
        model = load_model("mcunet-5fps", tiny_training_weights("mcunet-5fps"))
    step = make_step(model)
    out = tmp_path_factory.mktemp(f"export_{request.param}")
    export_c.export_training_step(step, out)
    initial = step.arena.buffer.copy()
    record = []
    for x, labels in batches(seed=2):
        logits = step.forward_logits(x)
        loss = step.run(x, labels)
        record.append((logits, loss, step.arena.buffer.copy()))
    lib = export_c.compile_c(sorted(out.glob("*.c")), out / "libmt_step.so", include_dirs=[out], shared=True)
    return SimpleNamespace(kind=request.param, step=step, out=out, lib=lib, initial=initial, record=record)


def c_arena(lib, peak):
    return np.ctypeslib.as_array((ctypes.c_uint8 * peak).in_dll(lib, "mt_arena"))


def test_exported_step_equals_python_engine(exported):
    step, lib_path, initial, record = exported.step, exported.lib, exported.initial, exported.record
    lib = ctypes.CDLL(str(lib_path))
    lib.mt_train_step.restype = ctypes.c_int32
    lib.mt_train_step.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)]
    lib.mt_forward.argtypes = [ctypes.c_void_p]
    plan = step.plan
    arena = c_arena(lib, plan.peak)
    lib.mt_init()
    tail = slice(plan.head_bytes, plan.peak)
    assert arena[tail].tobytes() == initial[tail].tobytes(), "mt_init() must reproduce TrainStep's initial tail"
    logits_at = plan["head:logits"].offset
    for i, ((x, labels), (logits_py, loss_py, arena_py)) in enumerate(zip(batches(seed=2), record)):
        lib.mt_forward(x.ctypes.data)
        logits_c = arena[logits_at:logits_at + logits_py.nbytes].view(F32).reshape(logits_py.shape)
        np.testing.assert_array_equal(logits_c, logits_py, err_msg=f"step {i}: logits differ")
        loss = ctypes.c_double()
        assert lib.mt_train_step(x.ctypes.data, labels.ctypes.data, ctypes.byref(loss)) == 0
        assert loss.value == pytest.approx(loss_py, rel=1e-6)
        for name in (b.name for b in plan if b.region == "tail" and b.alias_of is None):
            b = plan[name]
            shape, dtype = step.specs[name]
            got = arena[b.offset:b.offset + b.nbytes].view(dtype).reshape(shape)
            want = arena_py[b.offset:b.offset + b.nbytes].view(dtype).reshape(shape)
            np.testing.assert_array_equal(got, want, err_msg=f"step {i}: {name} differs after the update")
        assert arena.tobytes() == arena_py.tobytes(), f"step {i}: the arenas differ outside the trained parameters"
    # not vacuous: the int8 weights and int32 biases of the scheme really moved
    moved = {}
    for b in plan:
        if b.name.startswith(("train:w:", "train:b:")) and not b.name.endswith(":head"):
            sl = slice(b.offset, b.offset + b.nbytes)
            moved[b.name] = int(np.count_nonzero(arena[sl] != initial[sl]))
    assert sum(v for k, v in moved.items() if k.startswith("train:w:")) > 0, moved
    assert sum(v for k, v in moved.items() if k.startswith("train:b:")) > 0, moved


def _nm(*args):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not on PATH")
    return subprocess.run([nm, *args], capture_output=True, text=True, check=True).stdout


def test_exported_arena_is_exactly_the_plan_and_nothing_allocates(exported):
    step, out, lib_path = exported.step, exported.out, exported.lib
    sizes = {ln.split()[-1]: ln.split() for ln in _nm("-S", "--defined-only", str(lib_path)).splitlines()
             if len(ln.split()) == 4}
    assert "mt_arena" in sizes
    assert int(sizes["mt_arena"][1], 16) == step.plan.peak  # exactly the plan: no padding, no slack
    assert sizes["mt_arena"][2] in "bB"  # zero-initialised static storage, not heap
    header = (out / "mt_plan.h").read_text()
    assert f"#define MT_TRAIN_ARENA_SIZE {step.plan.peak}u" in header
    undefined = {ln.split()[-1].split("@")[0] for ln in _nm("-D", "--undefined-only", str(lib_path)).splitlines()
                 if ln.strip()}
    assert not undefined & {"malloc", "calloc", "realloc", "free", "aligned_alloc", "posix_memalign"}, undefined


MAIN_C = r"""
/* Test driver: runs the exported step on the batches in argv[1], writes the final arena to argv[2]. */
#include <stdio.h>

#include "mt_train_step.h"

int main(int argc, char **argv)
{
    static int8_t x[MT_INPUT_ELEMS];
    int32_t labels[MT_BATCH];
    double loss = 0.0;
    if (argc != 4) {
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    FILE *out = fopen(argv[2], "wb");
    int steps = 0;
    if (in == NULL || out == NULL || sscanf(argv[3], "%d", &steps) != 1) {
        return 3;
    }
    mt_init();
    for (int s = 0; s < steps; ++s) {
        if (fread(x, sizeof x, 1, in) != 1 || fread(labels, sizeof labels, 1, in) != 1) {
            return 4;
        }
        int32_t rc = mt_train_step(x, labels, &loss);
        if (rc != MT_OK) {
            return 10 + rc;
        }
        printf("step %d loss %.9g\n", s, loss);
    }
    fwrite(mt_arena, 1, sizeof mt_arena, out);
    fclose(in);
    fclose(out);
    return 0;
}
"""


def test_exported_step_runs_clean_under_valgrind(exported, tmp_path):
    step, out, record = exported.step, exported.out, exported.record
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind not on PATH")
    if exported.kind != "random-weights":
        pytest.skip("valgrind runs once, on the random-weights export (the code is the same, only constants differ)")
    (tmp_path / "main.c").write_text(MAIN_C)
    exe = export_c.compile_c(sorted(out.glob("*.c")) + [tmp_path / "main.c"], tmp_path / "step", include_dirs=[out],
                             extra_flags=("-g",))
    steps = 2
    with open(tmp_path / "batches.bin", "wb") as f:
        for x, labels in batches(seed=2, n=steps):
            f.write(x.tobytes())
            f.write(labels.tobytes())
    res = subprocess.run([valgrind, "--tool=memcheck", "--error-exitcode=99", "--leak-check=full", str(exe),
                          str(tmp_path / "batches.bin"), str(tmp_path / "arena.bin"), str(steps)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in res.stderr
    arena = np.fromfile(tmp_path / "arena.bin", np.uint8)
    plan = step.plan
    tail = slice(plan.head_bytes, plan.peak)
    assert arena[tail].tobytes() == record[steps - 1][2][tail].tobytes()  # same trained parameters as Python


def test_cli_export_c_writes_the_sources(tmp_path, capsys):
    from microtrain.weights import save_npz

    w = save_npz(random_model(load_graph("mcunet-5fps"), seed=3), tmp_path / "w.npz")
    rc = cli_main(["export-c", "mcunet-5fps", "--weights", str(w), "--config", "49kb", "--out", str(tmp_path / "c"),
                   "--classes", "10", "--lr", "0.02"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "arena 216,320 bytes" in printed  # README: MIT's 49kb scheme on MCUNet, 10 classes, needs 216,320 bytes
    assert "#define MT_TRAIN_ARENA_SIZE 216320u" in (tmp_path / "c" / "mt_plan.h").read_text()
    files = {p.name for p in (tmp_path / "c").iterdir()}
    assert {"microtrain.h", "mt_plan.h", "mt_constants.c", "mt_train_step.c", "mt_train_step.h", "conv2d.c",
            "update.c", "Makefile"} <= files
    assert "#define MT_CLASSES 10" in (tmp_path / "c" / "mt_train_step.h").read_text()
