"""Turn pytest-benchmark JSON runs into the ratio tables of bench/README.md.

    python -m pytest bench/ --benchmark-json=run.json && python bench/report.py run.json [peers.json ...]

Several files are merged, a later file's case replacing an earlier one's of the same name: PyTorch is timed in a
run of its own (microtrain's passive OpenMP setting would slow it, bench/README.md), whose file comes second.

Each benchmark is parametrised by `impl` (microtrain or a peer); rows pair them by the other parameters.
Ratio = peer time / microtrain time (> 1: microtrain is faster). GMAC/s = extra_info["macs"] / mean time.
"""

import json
import platform
import re
import sys
from collections import defaultdict


def _key(bench):
    params = dict(bench.get("params") or {})
    impl = params.pop("impl", "microtrain")
    case = bench["name"].split("[", 1)[-1].rstrip("]")
    case = re.sub(r"(^|-)(microtrain|reference|host|numpy|torch|tflm|litert)(-|$)", r"\1\3", case).strip("-")
    return bench["group"], case, impl


def tables(data):
    rows = defaultdict(dict)
    info = {}
    for b in data["benchmarks"]:
        group, case, impl = _key(b)
        rows[(group, case)][impl] = b["stats"]["mean"]
        info[(group, case)] = b.get("extra_info", {})
    by_group = defaultdict(list)
    for (group, case), times in sorted(rows.items()):
        by_group[group].append((case, times, info[(group, case)]))
    return by_group


def render(data):
    m = data.get("machine_info", {})
    out = [f"Machine: {m.get('cpu', {}).get('brand_raw', platform.processor())}, "
           f"{m.get('cpu', {}).get('count', '?')} logical CPUs; Python {m.get('python_version', '?')}; "
           f"run {data.get('datetime', '?')}"]
    if "microtrain_threading" in m:
        out.append(f"Threads: Numba {m['microtrain_threading']}; OpenBLAS {m.get('microtrain_blas_wait', '?')}")
    if "microtrain_vector_width" in m:
        out.append(f"Vector width: {m['microtrain_vector_width']}")
    out.append("")
    for group, rows in tables(data).items():
        peers = sorted({p for _, t, _ in rows for p in t} - {"microtrain"})
        head = ["case", "microtrain ms"] + [f"{p} ms" for p in peers] + [f"{p}/microtrain" for p in peers] + ["GMAC/s"]
        out += [f"### {group}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for case, t, extra in rows:
            mt = t.get("microtrain")
            cells = [case, f"{mt * 1e3:.3f}" if mt else "-"]
            cells += [f"{t[p] * 1e3:.3f}" if p in t else "-" for p in peers]
            cells += [f"{t[p] / mt:.1f}x" if (p in t and mt) else "-" for p in peers]
            macs = extra.get("macs")
            cells.append(f"{macs / mt / 1e9:.2f}" if (macs and mt) else "-")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def merge(runs):
    """One run from several: the first one's machine and date, every case, a later run's case replacing an
    earlier one's of the same full name."""
    cases = {}
    for run in runs:
        for b in run["benchmarks"]:
            cases[b["fullname"]] = b
    return dict(runs[0], benchmarks=list(cases.values()))


def main(argv):
    runs = []
    for path in argv[1:]:
        with open(path) as f:
            runs.append(json.load(f))
    print(render(merge(runs)))


if __name__ == "__main__":
    main(sys.argv)
