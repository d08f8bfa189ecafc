"""microtrain.config's vector width (512-bit loops on AVX-512 hosts, config.py "vector width"), each case in a fresh
process: the choice is made once, when microtrain.config is imported, and Numba reads its CPU features when it first
compiles. The float kernels' results must not depend on the choice."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from settings import JIT_DISABLED

pytestmark = pytest.mark.skipif(JIT_DISABLED, reason="the vector width only matters to compiled code")

# Imports microtrain.config (optionally after compiling a Numba function), compiles a small int8 MAC loop, reports
# the choice, Numba's features and whether LLVM used 512-bit (zmm) registers for the loop.
PROBE = """
import json, re, sys
import numpy as np
import numba
if len(sys.argv) > 1:
    numba.njit(lambda a: a + 1)(1)  # Numba compiles before microtrain is imported
import microtrain.config as c

@numba.njit
def mac(a, w, x):
    for j in range(a.shape[0]):
        a[j] += np.int32(w[j]) * (np.int32(x[j]) - 3)

mac(np.zeros(64, np.int32), np.ones(64, np.int8), np.ones(64, np.int8))
asm = "".join(mac.inspect_asm().values())
print(json.dumps({"choice": c.VECTOR_WIDTH, "features": numba.config.CPU_FEATURES,
                  "zmm": bool(re.search(r"%zmm", asm))}))
"""

# Runs float32 / float64 kernels whose loops LLVM vectorises (elementwise, a per-element sum, float64
# requantization, Adam) on fixed random inputs and saves their outputs to argv[1].
KERNELS = """
import sys
import numpy as np
import microtrain.config as c
from microtrain.kernels.depthwise_backward import depthwise_conv_f32_backward_weight
from microtrain.kernels.depthwise_host import depthwise_conv_f32_host
from microtrain.kernels.gemm_io import requant_f64_params, requantize_acc_f32_s8, widen_s8_f32
from microtrain.kernels.requant import conv_multipliers
from microtrain.kernels.update import adam_update_hwc_f32

rng = np.random.default_rng(7)
x = rng.standard_normal((2, 13, 11, 37)).astype(np.float32)
w = rng.standard_normal((5, 5, 37)).astype(np.float32)
b = rng.standard_normal(37).astype(np.float32)
y = np.empty((2, 13, 11, 37), np.float32)
depthwise_conv_f32_host(y, x, w, b, np.float32(-1.5), np.float32(2.5), 2)
dw = np.empty((5, 5, 37), np.float32)
depthwise_conv_f32_backward_weight(dw, x, np.float32(0.0), y, np.arange(37, dtype=np.int32), 1, 2)
m = np.zeros_like(dw)
v = np.zeros_like(dw)
wa = w.copy()
for t in (1, 2, 3):
    adam_update_hwc_f32(wa, dw, m, v, np.arange(37, dtype=np.int32), 1e-3, t)
x8 = rng.integers(-128, 128, (301, 29)).astype(np.int8)
xf = np.empty((301, 29), np.float32)
widen_s8_f32(xf, x8, 5)
acc = (xf @ rng.integers(-127, 128, (29, 19)).astype(np.float32)).astype(np.float32)
mult, shift = conv_multipliers(0.02, rng.uniform(1e-3, 5e-3, 19), 0.05)
y8 = np.empty((301, 19), np.int8)
requantize_acc_f32_s8(y8, acc, rng.integers(-3000, 3000, 19).astype(np.int32), requant_f64_params(mult, shift),
                      mult, shift, -3, -128, 127)
np.savez(sys.argv[1], y=y, dw=dw, wa=wa, m=m, v=v, xf=xf, y8=y8, choice=np.array(c.VECTOR_WIDTH))
"""


def _run(code, args=(), env_set=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MICROTRAIN_PREFER_256", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env.update(env_set or {})
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout


def _probe(env_set=None, compile_first=False):
    out = _run(PROBE, ["first"] if compile_first else [], env_set)
    return json.loads(out.strip().splitlines()[-1])


def _host_has_avx512():
    import llvmlite.binding as ll

    try:
        return bool(ll.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:
        return False


def test_default_lifts_the_256_bit_preference_on_avx512_hosts():
    got = _probe()
    if _host_has_avx512():
        assert got["choice"] == "512-bit (-prefer-256-bit)"
        assert got["features"].endswith(",-prefer-256-bit") and "+avx512f" in got["features"].split(",")
        assert got["zmm"], "the int8 MAC loop should use 512-bit registers"
    else:
        assert got["choice"] == "LLVM's default (no AVX-512)" and got["features"] is None


def test_opt_out_keeps_llvms_default():
    got = _probe({"MICROTRAIN_PREFER_256": "1"})
    assert got["choice"] == "LLVM's default (MICROTRAIN_PREFER_256)" and got["features"] is None
    if _host_has_avx512():
        import llvmlite.binding as ll

        if ll.get_host_cpu_name().startswith(("skylake-avx512", "cascadelake", "icelake-server", "sapphirerapids",
                                              "emeraldrapids")):
            assert not got["zmm"], "LLVM tunes this CPU with prefer-256-bit"


def test_the_users_cpu_settings_are_left_alone():
    import llvmlite.binding as ll

    mine = ll.get_host_cpu_features().flatten()
    got = _probe({"NUMBA_CPU_FEATURES": mine})
    assert got["choice"] == "the user's (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)" and got["features"] == mine


def test_nothing_changes_once_numba_has_compiled():
    got = _probe(compile_first=True)
    assert got["choice"] == "LLVM's default (Numba had compiled before microtrain was imported)"
    assert got["features"] is None


def test_float_results_are_bit_identical_at_either_width(tmp_path):
    if not _host_has_avx512():
        pytest.skip("the host has no AVX-512: both choices compile the same code")
    wide, narrow = tmp_path / "wide.npz", tmp_path / "narrow.npz"
    _run(KERNELS, [str(wide)])
    _run(KERNELS, [str(narrow)], {"MICROTRAIN_PREFER_256": "1"})
    with np.load(wide, allow_pickle=False) as a, np.load(narrow, allow_pickle=False) as b:
        assert str(a["choice"]).startswith("512-bit") and str(b["choice"]).startswith("LLVM's default")
        for k in ("y", "dw", "wa", "m", "v", "xf", "y8"):
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
        assert np.abs(a["dw"]).max() > 0 and np.abs(a["wa"] - b["wa"]).max() == 0
