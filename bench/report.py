"""Turn one pytest-benchmark JSON run into the ratio tables of bench/README.md.

    python -m pytest bench/ --benchmark-json=run.json && python bench/report.py run.json

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
    case = re.sub(r"(^|-)(microtrain|reference|numpy|torch|tflm|litert)(-|$)", r"\1\3", case).strip("-")
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
           f"run {data.get('datetime', '?')}", ""]
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


def main(argv):
    with open(argv[1]) as f:
        print(render(json.load(f)))


if __name__ == "__main__":
    main(sys.argv)
