"""Tables for docs/results.md from the results.json files that `microtrain evaluate --out DIR` writes.

    python bench/fewshot_summary.py main DIR [DIR ...]        # per model: accuracy, memory, compute, lr, time
    python bench/fewshot_summary.py paired DIR [DIR ...]      # per-episode paired differences between methods
    python bench/fewshot_summary.py ablation DIR [DIR ...]    # dynamic vs static channels, one DIR per budget
    python bench/fewshot_summary.py selection DIR [DIR ...]   # Fisher pass + selection time as a share

Every number is recomputed here from the per-episode records (not copied from the rows), so a table can be
checked against the raw file. Methods run on the same episodes, so differences are paired: the mean of the
per-episode difference, with its own 95% CI (1.96 s / sqrt(n)), is tighter than comparing two means.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

ORDER = ("none", "fulltrain", "lastlayer", "biasonly", "sparseupdate", "tinytrain-random", "tinytrain-l2",
         "tinytrain")
PAIRS = (("tinytrain", "fulltrain"), ("tinytrain", "sparseupdate"), ("tinytrain", "biasonly"),
         ("tinytrain", "lastlayer"), ("tinytrain", "none"), ("tinytrain", "tinytrain-l2"),
         ("tinytrain", "tinytrain-random"))


def load(d):
    p = Path(d)
    return json.loads((p if p.is_file() else p / "results.json").read_text())  # a DIR or its results.json copy


def by_method(res):
    out = {}
    for e in res["episodes"]:
        out.setdefault(e["method"], {})[e["episode"]] = e
    return out


def mean_ci(v):
    v = np.asarray(v, np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


def pct(m, ci):
    return f"{100 * m:.1f} ± {100 * ci:.1f}"


def fmt_bytes(v):
    return "-" if v is None else f"{int(v):,}"


def main_table(dirs):
    for d in dirs:
        res = load(d)
        s = res["settings"]
        ms = by_method(res)
        print(f"**{s['model']}** on `{s['data'].split(':')[0]}`: {s['episodes']} episodes, {s['ways']}-way "
              f"{s['shots']}-shot, {s['queries']} queries/class, {s['mode']}, {s['steps']} steps x batch "
              f"{s['batch']}, memory budget {s['memory_budget']:,} B (tinytrain*)\n")
        print("| method | accuracy (%) | Δ vs none (pp) | lr | peak SRAM, batch-1 step (B) | backward MACs / sample "
              "| s / episode |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        base = ms.get("none")
        for m in ORDER:
            if m not in ms:
                continue
            eps = [ms[m][i] for i in sorted(ms[m])]
            acc = mean_ci([e["acc_after"] for e in eps])
            gain = "-"
            if base is not None and m != "none":
                gain = pct(*mean_ci([ms[m][i]["acc_after"] - base[i]["acc_after"] for i in sorted(ms[m])]))
            peaks = [e["peak_bytes"] for e in eps if e["peak_bytes"] is not None]
            lr = "-" if m == "none" else f"{eps[0]['lr']:g}"
            print(f"| {m} | {pct(*acc)} | {gain} | {lr} | {fmt_bytes(max(peaks) if peaks else None)} | "
                  f"{np.mean([e['backward_macs'] for e in eps]):,.0f} | {np.mean([e['seconds'] for e in eps]):.1f} |")
        print()


def paired(dirs):
    for d in dirs:
        res = load(d)
        ms = by_method(res)
        print(f"**{res['settings']['model']}**: paired per-episode differences (pp, mean ± 95% CI; wins / ties / "
              "losses over episodes)\n")
        print("| comparison | Δ accuracy (pp) | wins / ties / losses |")
        print("|---|---:|---:|")
        for a, b in PAIRS:
            if a not in ms or b not in ms:
                continue
            diff = np.array([ms[a][i]["acc_after"] - ms[b][i]["acc_after"] for i in sorted(ms[a])])
            w, t, l = int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum())
            print(f"| {a} − {b} | {pct(*mean_ci(diff))} | {w} / {t} / {l} |")
        print()


def ablation(dirs):
    rows = []
    for d in dirs:
        res = load(d)
        ms = by_method(res)
        budget = res["settings"]["memory_budget"]
        r = {"budget": budget}
        for m in ("tinytrain", "tinytrain-l2", "tinytrain-random"):
            if m in ms:
                eps = [ms[m][i] for i in sorted(ms[m])]
                r[m] = mean_ci([e["acc_after"] for e in eps])
                r[m + ":peak"] = max(e["peak_bytes"] for e in eps)
        if "tinytrain" in ms:
            for m in ("tinytrain-l2", "tinytrain-random"):
                if m in ms:
                    r["d:" + m] = mean_ci([ms["tinytrain"][i]["acc_after"] - ms[m][i]["acc_after"]
                                           for i in sorted(ms["tinytrain"])])
            sel = [tuple(ms["tinytrain"][i]["selected"]) for i in sorted(ms["tinytrain"])]
            r["distinct"] = len(set(sel))
            r["layers"] = np.mean([len(v) for v in sel])
        rows.append(r)
    rows.sort(key=lambda r: r["budget"])
    print("| memory budget (B) | plan peak (max, B) | layers (mean) | distinct layer sets | Fisher (dynamic) % | "
          "L2-norm % | random % | dynamic − L2 (pp) | dynamic − random (pp) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['budget']:,} | {r.get('tinytrain:peak', 0):,} | {r.get('layers', float('nan')):.1f} | "
              f"{r.get('distinct', '-')} | {pct(*r['tinytrain'])} | {pct(*r['tinytrain-l2'])} | "
              f"{pct(*r['tinytrain-random'])} | {pct(*r['d:tinytrain-l2'])} | {pct(*r['d:tinytrain-random'])} |")
    print()


def selection(dirs):
    print("| model | memory budget (B) | Fisher pass peak (B) | Fisher pass s (mean) | tinytrain episode s (mean) | "
          "share |")
    print("|---|---:|---:|---:|---:|---:|")
    for d in dirs:
        res = load(d)
        eps = [e for e in res["episodes"] if e["method"] == "tinytrain"]
        if not eps:
            continue
        f = np.array([e["fisher_seconds"] for e in eps])
        t = np.array([e["seconds"] for e in eps])
        print(f"| {res['settings']['model']} | {res['settings']['memory_budget']:,} | "
              f"{max(e['fisher_peak_bytes'] for e in eps):,} | {f.mean():.2f} | {t.mean():.2f} | "
              f"{100 * f.sum() / t.sum():.1f}% |")
    print()


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("main", "paired", "ablation", "selection"):
        sys.exit(__doc__)
    {"main": main_table, "paired": paired, "ablation": ablation, "selection": selection}[sys.argv[1]](sys.argv[2:])
