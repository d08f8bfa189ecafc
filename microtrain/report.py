"""Reports of a training step: the arena peak by category (from the Plan itself), flash bytes, MACs, and
the two analytic conventions of the literature, each labelled (never compared across conventions).
"""

from collections import defaultdict

from microtrain.sparse import backward_macs, mit_analytic_bytes, tinytl_analytic_bytes


def live_head_bytes(plan, first_scope=0):
    """Max over scopes >= first_scope of the head bytes live at that scope (alias groups counted once).
    With first_scope = the loss scope this is the backward phase's own need, which a saving option can
    lower even when the step's peak is set by the forward pass."""
    by_name = {b.name: b for b in plan.buffers}
    spans = {}
    for b in plan.buffers:
        r = b
        while r.alias_of is not None:
            r = by_name[r.alias_of]
        if r.region != "head":
            continue
        f, l = spans.get(r.name, (b.first, b.last))
        spans[r.name] = (min(f, b.first), max(l, b.last))
    sizes = {n: by_name[n].size for n in spans}
    scopes = sorted({f for f, _ in spans.values()} | {l for _, l in spans.values()})
    return max([sum(sizes[n] for n, (f, l) in spans.items() if f <= t <= l) for t in scopes if t >= first_scope]
               or [0])


def live_by_category(plan):
    """Bytes per category of the buffers live at the busiest scope of the head, plus the whole tail.

    Head buffers reuse bytes over time, so a per-category sum over the whole step exceeds the peak; the
    breakdown that explains the peak is the set of buffers alive when the most head bytes are live. Alias
    groups are counted once (their root). `fragmentation` = head_bytes - live head bytes at that scope
    (the gaps the greedy placement leaves).
    """
    roots = {}
    for b in plan.buffers:
        roots[b.name] = b
    groups = {}
    for b in plan.buffers:
        r = b
        while r.alias_of is not None:
            r = roots[r.alias_of]
        g = groups.setdefault(r.name, [r, r.first, r.last])
        g[1], g[2] = min(g[1], b.first), max(g[2], b.last)
    head = [(r, f, l) for r, f, l in groups.values() if r.region == "head"]
    scopes = sorted({f for _, f, _ in head} | {l for _, _, l in head})
    best_t, best = None, -1
    for t in scopes:
        live = sum(r.size for r, f, l in head if f <= t <= l)
        if live > best:
            best_t, best = t, live
    out = defaultdict(int)
    for r, f, l in head:
        if f <= best_t <= l:
            out[r.category] += r.size
    for r, _, _ in groups.values():
        if r.region == "tail":
            out[r.category] += r.size
    out = dict(sorted(out.items()))
    return {"scope": best_t, "by_category": out, "live_head_bytes": best,
            "fragmentation": plan.head_bytes - best}


def training_report(step):
    """A dict describing a bound TrainStep (what `microtrain plan --json` prints)."""
    plan, g, cfg, opts = step.plan, step.graph, step.cfg, step.opts
    live = live_by_category(plan)
    fwd = (g.conv_macs() + g.op_macs(g.classifier)) * opts.batch
    return {
        "model": g.name, "config": cfg.name, "mode": opts.mode, "batch": opts.batch, "classes": step.n_classes,
        "optimizer": opts.optimizer,
        "options": {"save_kept_channels": opts.save_kept_channels, "bit_masks": opts.bit_masks,
                    "reorder": opts.reorder, "inplace": opts.inplace},
        "peak_bytes": plan.peak, "head_bytes": plan.head_bytes, "tail_bytes": plan.tail_bytes,
        "by_category": live["by_category"], "busiest_scope": live["scope"],
        "fragmentation_bytes": live["fragmentation"],
        "backward_live_bytes": live_head_bytes(plan, step.analysis.loss_scope),
        "flash_bytes": step.flash_bytes(),
        "forward_macs": fwd,
        "backward_macs": backward_macs(g, cfg, convention="engine", batch=opts.batch),
        "backward_macs_paper_convention": backward_macs(g, cfg, convention="paper", batch=opts.batch),
        "analytic": {
            "mit_tiny_training_bytes": mit_analytic_bytes(g, cfg, batch=1),
            "tinytl_bytes_batch8": tinytl_analytic_bytes(g, cfg, batch=8),
        },
        "buffers": len(plan.buffers),
    }


def format_report(r):
    lines = [f"{r['model']} / {r['config']}: {r['mode']} mode, batch {r['batch']}, {r['classes']}-way head, "
             f"{r['optimizer']}",
             "  options: " + ", ".join(f"{k}={v}" for k, v in r["options"].items()),
             f"  arena peak (SRAM):   {r['peak_bytes']:>12,} bytes  = head {r['head_bytes']:,} + tail {r['tail_bytes']:,}",
             f"  live at the busiest scope ({r['busiest_scope']}) by category, plus the tail:"]
    for k, v in r["by_category"].items():
        lines.append(f"    {k:<14} {v:>12,}")
    lines += [f"    {'(gaps)':<14} {r['fragmentation_bytes']:>12,}",
              f"  live head bytes in the backward phase (max): {r['backward_live_bytes']:,}",
              f"  flash (read-only):   {r['flash_bytes']:>12,} bytes",
              f"  forward MACs:        {r['forward_macs']:>12,}",
              f"  backward MACs:       {r['backward_macs']:>12,}  (engine: what the step executes)",
              f"  backward MACs:       {r['backward_macs_paper_convention']:>12,}  (TinyTrain Table 2 convention)",
              "  analytic conventions from the literature (not the plan; not comparable with it):",
              f"    MIT tiny-training count (batch 1, int8):      {r['analytic']['mit_tiny_training_bytes']:>12,} bytes",
              f"    TinyTL count (activations x 8 + parameters):  {r['analytic']['tinytl_bytes_batch8']:>12,} bytes"]
    return "\n".join(lines)
