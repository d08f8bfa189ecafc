"""Optional pictures (matplotlib, not a dependency): the timeline of a memory plan."""

from microtrain.errors import MicrotrainError


def plot_timeline(plan, path, title=""):
    """PNG of the plan: one rectangle per head buffer (x = scopes it lives, y = its bytes in the arena),
    coloured by category; the tail drawn as a band above the head."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        raise MicrotrainError("the timeline picture needs matplotlib: pip install matplotlib") from None
    cats = sorted({b.category for b in plan.buffers})
    cmap = plt.get_cmap("tab10")
    colour = {c: cmap(i % 10) for i, c in enumerate(cats)}
    t_max = max([b.last for b in plan.buffers] + [1]) + 1
    fig, ax = plt.subplots(figsize=(12, 6))
    for b in plan.buffers:
        if b.alias_of is not None or b.size == 0:
            continue
        if b.region == "head":
            ax.add_patch(Rectangle((b.first, b.offset), b.last - b.first + 1, b.size, facecolor=colour[b.category],
                                   edgecolor="black", linewidth=0.2))
        else:
            ax.add_patch(Rectangle((0, b.offset), t_max, b.size, facecolor=colour[b.category], alpha=0.35))
    ax.set_xlim(0, t_max)
    ax.set_ylim(0, plan.peak)
    ax.set_xlabel("scope (forward ops, loss, backward ops in reverse, updates)")
    ax.set_ylabel("arena offset (bytes)")
    ax.set_title(f"{title}  peak {plan.peak:,} B (head {plan.head_bytes:,} + tail {plan.tail_bytes:,})")
    ax.legend(handles=[Rectangle((0, 0), 1, 1, facecolor=colour[c]) for c in cats], labels=cats, loc="upper right",
              fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
