"""Memory and compute of one training step per model x config, from the real plans (byte-exact).

    python bench/memory_table.py            # Markdown tables (bench/README.md, issue notes)

Random int8 weights of the real graphs: memory and MACs depend only on shapes and the config (MIT's
magnitude+ channel choice picks the same *number* of channels whatever the weights).
"""

from microtrain.graph import load_graph
from microtrain.model import random_model
from microtrain.report import training_report
from microtrain.sparse import load_config
from microtrain.train import TrainStep
from microtrain.train_plan import TrainOptions

MODELS = {"mcunet-5fps": ["full", "last", "last+conv", "bias", "49kb", "100kb"],
          "mbv2-w0.35": ["full", "last", "bias", "49kb"],
          "proxyless-w0.3": ["full", "last", "bias", "49kb"]}
CATS = ["input", "activation", "saved", "act_grad", "weight_grad", "scratch", "trainable", "optimizer"]


def row(model, cfg_name, **opts):
    m = random_model(load_graph(model), seed=1)
    cfg = load_config(cfg_name, m)
    step = TrainStep(m, cfg, 10, TrainOptions(**opts))
    return training_report(step)


def main():
    print("### Training step per model and config (batch 1, 10-way fp32 head, SGD, all saving options on)\n")
    print("| model | config | mode | peak bytes | " + " | ".join(CATS) + " | flash bytes | backward MACs (engine) |"
          " backward MACs (paper) |")
    print("|" + "---|" * (6 + len(CATS) + 2))
    for model, cfgs in MODELS.items():
        for c in cfgs:
            for mode in ("int8", "fp32"):
                r = row(model, c, mode=mode)
                cats = " | ".join(f"{r['by_category'].get(k, 0):,}" for k in CATS)
                print(f"| {model} | {r['config']} | {mode} | {r['peak_bytes']:,} | {cats} | {r['flash_bytes']:,} | "
                      f"{r['backward_macs']:,} | {r['backward_macs_paper_convention']:,} |")
    print("\n### MIT \"49kb\" on MCUNet-5fps, int8, batch 1: each memory-saving option switched off alone\n")
    print("| setting | peak bytes | head | tail | change vs all on | backward-phase live bytes | change |")
    print("|---|---|---|---|---|---|---|")
    base = row("mcunet-5fps", "49kb", mode="int8")
    print(f"| all options on | {base['peak_bytes']:,} | {base['head_bytes']:,} | {base['tail_bytes']:,} | - | "
          f"{base['backward_live_bytes']:,} | - |")
    for flag in ("save_kept_channels", "reorder", "inplace"):
        r = row("mcunet-5fps", "49kb", mode="int8", **{flag: False})
        print(f"| {flag}=False | {r['peak_bytes']:,} | {r['head_bytes']:,} | {r['tail_bytes']:,} | "
              f"{r['peak_bytes'] - base['peak_bytes']:+,} | {r['backward_live_bytes']:,} | "
              f"{r['backward_live_bytes'] - base['backward_live_bytes']:+,} |")
    print("\n### The same options for FullTrain and MIT \"100kb\" on MCUNet-5fps, fp32, batch 1\n")
    print("| config | setting | peak bytes | change vs all on |")
    print("|---|---|---|---|")
    for c in ("full", "100kb"):
        base = row("mcunet-5fps", c, mode="fp32")
        print(f"| {base['config']} | all options on | {base['peak_bytes']:,} | - |")
        for flag in ("save_kept_channels", "bit_masks", "reorder", "inplace"):
            r = row("mcunet-5fps", c, mode="fp32", **{flag: False})
            print(f"| {base['config']} | {flag}=False | {r['peak_bytes']:,} | {r['peak_bytes'] - base['peak_bytes']:+,} |")


if __name__ == "__main__":
    main()
