"""Print the TFLite Micro conformance totals, for quoting: "N layers, M int8 outputs compared, D differences".

Runs tests/test_tflm_conformance.py (needs `pip install microtrain[oracle]`; the real tiny-training weights
are used when $MICROTRAIN_SHARED or ../shared has them) and prints what its tally recorded: single random
layers, and whole reference models compared layer by layer. Usage: python bench/conformance_summary.py
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tally.json"
        os.environ["MICROTRAIN_CONFORMANCE_JSON"] = str(out)
        t0 = time.perf_counter()
        status = pytest.main([str(REPO / "tests" / "test_tflm_conformance.py"), "-q", "-p", "no:cacheprovider",
                              "--rootdir", str(REPO)])
        wall = time.perf_counter() - t0
        if not out.exists():
            print("no tally written (is tflite-micro installed? pip install microtrain[oracle])")
            return 1
        tally = json.loads(out.read_text())
    s, m = tally["single"], tally["models"]
    print()
    print(f"{'whole models':32s} {'runs':>5s} {'layers':>7s} {'int8 outputs':>13s} {'diffs':>7s} {'seconds':>8s}")
    for label, r in sorted(tally["per_model"].items()):
        print(f"{label:32s} {r['runs']:5d} {r['layers']:7d} {r['outputs']:13,d} {r['diffs']:7d} {r['seconds']:8.2f}")
    print()
    print(f"single layers: {s['layers']} layers, {s['outputs']:,} int8 outputs compared, {s['diffs']} differences")
    print(f"whole models:  {m['runs']} runs, {m['layers']} layer outputs, {m['outputs']:,} int8 outputs compared, "
          f"{m['diffs']} differences")
    total_l, total_o, total_d = s["layers"] + m["layers"], s["outputs"] + m["outputs"], s["diffs"] + m["diffs"]
    print(f"total: {total_l} layers, {total_o:,} int8 outputs compared, {total_d} differences "
          f"(pytest {'passed' if status == 0 else 'FAILED'}, {wall:.1f} s)")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
