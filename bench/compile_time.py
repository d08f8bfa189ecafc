"""First-call cost of the kernels: cold compile (empty Numba cache) and warm start (cache hit).

Run: python bench/compile_time.py   Each measurement is a fresh process that imports microtrain and calls
every forward and backward kernel once on tiny arrays (through one whole-model inference plus the
backward kernels' smoke calls); NUMBA_CACHE_DIR points at a temporary folder that is empty for the cold
run and filled for the warm run.
"""

import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np
from microtrain.graph import graph_from_spec
from microtrain.model import random_model
from microtrain.inference import Inference
spec = {"name": "tiny", "input": [9, 9, 3], "first_conv": {"out": 4, "kernel": 3, "stride": 2},
        "blocks": [{"expand": 2, "out": 4, "kernel": 3, "stride": 1}], "classifier": 5}
m = random_model(graph_from_spec(spec))
Inference(m).run(np.zeros((1, 9, 9, 3), np.int8))
t1 = time.perf_counter()
import sys
sys.path.insert(0, "tests")
from test_kernels_noalloc import CALLS
for fn, args in CALLS.values():
    fn(*args)
t2 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t0:.2f} {len(CALLS)}")
"""


def measure(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wall = time.perf_counter() - t
    infer, all_fwd, n = out.stdout.split()
    return float(infer), float(all_fwd), int(n), wall


def main():
    with tempfile.TemporaryDirectory() as d:
        cold = measure(d)
        warm = measure(d)
    for label, (infer, all_fwd, n, wall) in (("cold (empty cache)", cold), ("warm (cache hit)", warm)):
        print(f"{label:>20}: import + inference kernels {infer:6.2f} s; + all {n} forward kernels {all_fwd:6.2f} s; "
              f"process wall {wall:6.2f} s")


if __name__ == "__main__":
    main()
