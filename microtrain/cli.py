"""The `microtrain` command line (also `python -m microtrain`).

Every MicrotrainError is printed as one line `microtrain: error: ...` on stderr with exit status 2;
no traceback for bad input.
"""

import argparse
import json
import sys

import numpy as np

from microtrain.errors import InputError, MicrotrainError
from microtrain.reference_models import (DEMO_DATA, DEMO_LR, DEMO_SETTINGS, HELD_OUT_SCRIPTS, SHIPPED_WEIGHTS,
                                        TRAIN_SCRIPTS, shipped_weights)

# `microtrain adapt` with no --data: glyph scripts the shipped weights never saw in pretraining, on graph paper
DEFAULT_ADAPT_DATA = DEMO_DATA


def _load(args):
    from microtrain.model import load_model

    weights = getattr(args, "weights", None)
    if weights == "shipped":  # the project's own pretrained weights (reference_models/, MODEL_CARD.md)
        weights = shipped_weights(args.model)
        if weights is None:
            raise InputError(f"the project ships no weights for {args.model!r} (only for "
                             f"{', '.join(SHIPPED_WEIGHTS)}); pass --weights: a tiny-training .pkl or a microtrain .npz")
    return load_model(args.model, weights)


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------

def model_info(graph):
    """Per-layer rows and totals of a graph (shapes per sample, MACs per sample)."""
    from microtrain.inference import plan_inference

    rows = []
    for op in graph.ops:
        rows.append({
            "name": op.name, "op": op.kind, "conv_index": op.conv_index,
            "in_shape": [list(graph.shapes[t]) for t in op.inputs], "out_shape": list(graph.shapes[op.output]),
            "kernel": op.kernel if op.kind in ("conv2d", "depthwise") else None,
            "stride": op.stride if op.kind in ("conv2d", "depthwise") else None,
            "params": graph.op_params(op), "macs": graph.op_macs(op),
        })
    head = graph.classifier
    return {
        "model": graph.name,
        "input_shape": list(graph.input_shape),
        "conv_layers": len(graph.convs),
        "params": graph.conv_params(),
        "macs": graph.conv_macs(),
        "classifier": {"params": graph.op_params(head), "macs": graph.op_macs(head), "classes": head.cout},
        "params_total": graph.conv_params() + graph.op_params(head),
        "macs_total": graph.conv_macs() + graph.op_macs(head),
        "inference_arena_bytes": plan_inference(graph, 1).peak,
        "layers": rows,
    }


def cmd_info(args):
    from microtrain.graph import load_graph

    graph = load_graph(args.model)
    if args.weights:
        graph = _load(args).graph  # validates the weights against the spec
    info = model_info(graph)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['model']}: input {info['input_shape']} (H, W, C), {info['conv_layers']} conv layers")
    print(f"{'#':>3} {'name':<22} {'op':<10} {'in':>14} {'out':>14} {'k':>2} {'s':>2} {'params':>9} {'MACs':>11}")
    for r in info["layers"]:
        ci = "" if r["conv_index"] is None else r["conv_index"]
        shp = "x".join(map(str, r["in_shape"][0]))
        print(f"{ci:>3} {r['name']:<22} {r['op']:<10} {shp:>14} {'x'.join(map(str, r['out_shape'])):>14} "
              f"{r['kernel'] or '':>2} {r['stride'] or '':>2} {r['params']:>9,} {r['macs']:>11,}")
    c = info["classifier"]
    print(f"convs (backbone, without classifier): params {info['params']:,}, MACs {info['macs']:,}")
    print(f"classifier ({c['classes']} classes): params {c['params']:,}, MACs {c['macs']:,}")
    print(f"int8 inference arena (batch 1): {info['inference_arena_bytes']:,} bytes")
    return 0


# ---------------------------------------------------------------------------------------------
# predict / infer
# ---------------------------------------------------------------------------------------------

def _softmax_from_int8(logits_q, scale, zero):
    z = (logits_q.astype(np.float64) - zero) * scale
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cmd_predict(args):
    from microtrain.inference import Inference
    from microtrain.images import load_image
    from microtrain.preprocess import to_model_input

    model = _load(args)
    if args.top < 1:
        raise InputError("--top must be at least 1")
    engine = Inference(model, batch=1)
    results = []
    for path in args.images:
        x = to_model_input(load_image(path), model)
        logits = engine.run(x).copy()
        scale, zero = model.quant[model.graph.output]
        prob = _softmax_from_int8(logits, scale, zero)[0]
        k = min(args.top, prob.shape[0])
        top = np.argsort(-prob, kind="stable")[:k]
        results.append({"image": str(path), "top": [{"class": int(c), "probability": float(prob[c])} for c in top]})
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=1))
    else:
        for r in results:
            print(r["image"])
            for t in r["top"]:
                print(f"  class {t['class']:>5}  p = {t['probability']:.4f}")
    return 0


def cmd_infer(args):
    from microtrain.inference import Inference

    model = _load(args)
    try:
        x = np.load(args.input, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"input file {args.input} does not exist") from None
    except Exception as e:
        raise InputError(f"cannot read {args.input} as a .npy array ({e})") from None
    if x.ndim != 4:
        raise InputError(f"{args.input}: expected an int8 array (N, H, W, C), got shape {x.shape}")
    engine = Inference(model, batch=x.shape[0])
    out = engine.run(x).copy()
    from microtrain.weights import atomic_save_npy

    atomic_save_npy(args.output, out)
    return 0


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------

def cmd_plan(args):
    from microtrain.errors import ArenaOverflowError
    from microtrain.report import format_report, training_report
    from microtrain.sparse import load_config
    from microtrain.train import TrainStep
    from microtrain.train_plan import TrainOptions

    model = _load(args)
    cfg = load_config(args.config, model)
    opts = TrainOptions(mode=args.mode, batch=args.batch, optimizer=args.optimizer,
                        save_kept_channels=not args.no_save_kept, bit_masks=not args.no_bit_masks,
                        reorder=not args.no_reorder, inplace=not args.no_inplace).validate()
    step = TrainStep(model, cfg, args.classes, opts)
    rep = training_report(step)
    if args.budget is not None and step.plan.peak > args.budget:
        raise ArenaOverflowError(
            f"the training step of {cfg.name} needs {step.plan.peak:,} bytes of SRAM, {step.plan.peak - args.budget:,} "
            f"bytes over the budget of {args.budget:,}; choose a sparser config or a smaller batch")
    if args.header:
        from microtrain.weights import atomic_write_text

        atomic_write_text(args.header, step.plan.to_c_header(prefix="MT_TRAIN"))
    if args.timeline_png:
        from microtrain.plot import plot_timeline

        plot_timeline(step.plan, args.timeline_png, title=f"{rep['model']} / {rep['config']} ({rep['mode']})")
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    print(format_report(rep))
    if args.table:
        print(step.plan.format_table())
    if args.timeline:
        print(step.plan.format_timeline(width=100, symbols="category"))
    return 0


# ---------------------------------------------------------------------------------------------
# export-c (microtrain.export_c)
# ---------------------------------------------------------------------------------------------

def cmd_export_c(args):
    from microtrain.export_c import compile_c, export_training_step
    from microtrain.sparse import load_config
    from microtrain.train import TrainStep
    from microtrain.train_plan import TrainOptions

    model = _load(args)
    cfg = load_config(args.config, model)
    opts = TrainOptions(mode=args.mode, optimizer=args.optimizer, lr=args.lr, batch=args.batch,
                        backend="reference").validate()  # the loop kernels: the calls firmware's C twins mirror
    step = TrainStep(model, cfg, args.classes, opts)
    written = export_training_step(step, args.out)
    if args.check:  # compile every source once on the host, with the firmware flags
        from pathlib import Path
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            compile_c([f for f in written if f.suffix == ".c"], Path(tmp) / "libmt.so", include_dirs=[args.out],
                      shared=True)
    print(f"{model.name} / {cfg.name} ({opts.mode}, {opts.optimizer}, lr {opts.lr}, batch {opts.batch}): "
          f"{len(written)} files in {args.out}; arena {step.plan.peak:,} bytes, flash {step.flash_bytes():,} bytes"
          + ("; compiled cleanly" if args.check else ""))
    return 0


# ---------------------------------------------------------------------------------------------
# select / evaluate (few-shot, microtrain.fewshot)
# ---------------------------------------------------------------------------------------------

def _fewshot_data(args, model):
    from microtrain.data import parse_spec

    h, w, _ = model.graph.input_shape
    if h != w:
        raise InputError(f"{model.name} takes {h}x{w} images; the few-shot datasets are square")
    return parse_spec(args.data, h, seed=args.seed)


def demo_lr(args, shipped):
    """The lr tuned for the demo (reference_models.DEMO_LR) when adapt runs the shipped weights on DEMO_DATA at
    DEMO_SETTINGS in int8 mode with a method that has one; else None (adapt_episode's default)."""
    if (shipped and args.data == DEMO_DATA and args.mode == "int8" and args.method in DEMO_LR
            and (args.steps, args.batch, args.memory_budget) == DEMO_SETTINGS):
        return DEMO_LR[args.method]
    return None


def cmd_adapt(args):
    from microtrain.adapt import adapt, save_adapted
    from microtrain.fewshot import METHODS

    if args.method not in METHODS:
        raise InputError(f"unknown method {args.method!r}; use one of {', '.join(METHODS)}")
    if args.save and args.mode != "int8":
        raise InputError("--save writes int8 weights; drop --mode fp32 or --save")
    if args.weights is None:
        args.weights = "shipped"  # _load resolves it, or names the models that have shipped weights
    shipped = args.weights == "shipped"
    if args.data is None:
        args.data = DEFAULT_ADAPT_DATA
    model = _load(args)
    data = _fewshot_data(args, model)
    if shipped and data.name.startswith("glyphs:"):
        seen = set(data.groups) & set(TRAIN_SCRIPTS)  # a glyph set's groups are its scripts
        if seen:
            print(f"note: the shipped weights were pretrained on the glyph scripts {', '.join(sorted(seen))}; "
                  f"this is not a held-out domain (held out: {', '.join(HELD_OUT_SCRIPTS)})", file=sys.stderr)
    kw = {"mode": args.mode, "scheme": args.scheme, "backend": args.backend}
    lr = args.lr if args.lr is not None else demo_lr(args, shipped)
    if lr is not None:
        kw["lr"] = lr
    report, step = adapt(model, data, method=args.method, ways=args.ways, shots=args.shots, queries=args.queries,
                         seed=args.seed, steps=args.steps, batch=args.batch, memory_budget=args.memory_budget,
                         progress=not (args.quiet or args.json), **kw)
    if args.save:
        save_adapted(step, model, args.save, meta={"method": args.method, "data": data.name, "seed": args.seed,
                                                   "classes": list(report.class_names)})
    if args.json:
        d = report.to_dict()
        d["saved"] = args.save
        print(json.dumps(d, indent=1))
    else:
        print(report.format())
        if args.save:
            print(f"adapted weights and head written to {args.save}")
    return 0


def cmd_select(args):
    from microtrain.episodes import sample_nway_kshot
    from microtrain.fewshot import DEFAULT_LR, DEFAULT_OPTIMIZER, _episode_seed, model_input
    from microtrain.tinytrain import fisher_potential, select
    from microtrain.train_plan import TrainOptions

    model = _load(args)
    data = _fewshot_data(args, model)
    # the support set of episode 0 of `microtrain evaluate` with the same seed, ways, shots and queries
    ep = sample_nway_kshot(data, args.ways, args.shots, args.queries, np.random.default_rng([args.seed, 0]))
    x = model_input(ep.support_x, model, args.mode)
    optimizer = DEFAULT_OPTIMIZER[args.mode]
    opts = TrainOptions(mode=args.mode, optimizer=optimizer, lr=DEFAULT_LR[(args.mode, optimizer)], batch=1,
                        head="cosine")
    fisher = fisher_potential(model, x, ep.support_y, ep.ways, mode=args.mode, memory_budget=args.memory_budget,
                              first_conv="auto")
    sel = select(model, fisher, args.memory_budget, args.compute_budget, channel_ratio=args.channel_ratio,
                 channels=args.channels, n_classes=ep.ways, options=opts, seed=_episode_seed(args.seed, 0))
    if args.save:
        from microtrain.weights import atomic_write_text

        atomic_write_text(args.save, sel.to_yaml())
    if args.json:
        from dataclasses import asdict

        layers = []
        for r in sel.table:
            d = asdict(r)
            d["potential"] = None if not np.isfinite(r.potential) else r.potential
            d["score"] = None if not np.isfinite(r.score) else r.score
            lu = sel.config.updated(r.conv_index)
            d["keep"] = None if lu is None or lu.keep is None else list(lu.keep)
            layers.append(d)
        print(json.dumps({
            "model": model.name, "data": data.name, "ways": ep.ways, "shots": args.shots, "seed": args.seed,
            "mode": args.mode, "channels": args.channels, "channel_ratio": args.channel_ratio,
            "memory_budget": args.memory_budget, "compute_budget": args.compute_budget,
            "config": sel.config.name, "selected": sel.selected(),
            "training_plan_peak_bytes": sel.peak_bytes, "min_training_plan_peak_bytes": sel.min_peak_bytes,
            "backward_macs_per_sample": sel.backward_macs,
            "fisher": {"peak_bytes": fisher.peak_bytes, "seconds": fisher.seconds, "chunk": fisher.chunk,
                       "segments": fisher.segments, "first_conv": fisher.first_conv,
                       "forward_macs": fisher.forward_macs, "recompute_macs": fisher.recompute_macs,
                       "backward_macs": fisher.backward_macs, "activation": fisher.activation},
            "layers": layers, "saved": args.save}, indent=1))
        return 0
    print(f"{model.name} on {data.name}: {ep.ways}-way {args.shots}-shot support set (episode 0, seed {args.seed}), "
          f"{args.mode}")
    print(fisher.summary())
    print(sel.format_table())
    print(f"Fisher pass: peak {fisher.peak_bytes:,} bytes, {fisher.seconds:.3f} s; training plan (batch 1): peak "
          f"{sel.peak_bytes:,} bytes (smallest possible {sel.min_peak_bytes:,}); backward {sel.backward_macs:,} "
          f"MACs per sample")
    if args.save:
        print(f"config written to {args.save}")
    return 0


def _methods(text):
    from microtrain.fewshot import METHODS

    if text.strip() == "all":
        return METHODS
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _lr_arg(text):
    """--lr: one number for every method, or per method: "fulltrain=0.005,tinytrain=0.02"."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return float(text)
        out = {}
        for part in text.split(","):
            m, _, v = part.partition("=")
            out[m.strip()] = float(v)
        return out
    except ValueError:
        raise InputError(f"--lr {text!r}: give a number, or method=lr pairs separated by commas "
                         "(e.g. fulltrain=0.005,tinytrain=0.02)") from None


def _grid_arg(text):
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--tune-lr {text!r}: give learning rates separated by commas (e.g. 0.005,0.02,0.05)") from None


def cmd_evaluate(args):
    from pathlib import Path

    from microtrain.fewshot import evaluate, tune_lr

    methods = _methods(args.methods)
    if args.meta_dataset and (args.ways is not None or args.shots is not None or args.queries is not None):
        raise InputError("--meta-dataset draws ways, shots and queries itself; drop --ways/--shots/--queries")
    model = _load(args)
    data = _fewshot_data(args, model)
    kw = {"mode": args.mode, "steps": args.steps, "memory_budget": args.memory_budget,
          "compute_budget": args.compute_budget, "channel_ratio": args.channel_ratio, "scheme": args.scheme,
          "backend": args.backend}
    for k in ("batch", "optimizer"):
        if getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    lr = _lr_arg(args.lr)
    episode_kw = dict(ways=args.ways or 5, shots=args.shots or 5,
                      queries=args.queries if args.queries is not None else 15,
                      sampler="meta-dataset" if args.meta_dataset else "nway", workers=args.workers,
                      scheduler=args.scheduler, progress=not args.quiet)
    tuning = None
    if args.tune_lr is not None:
        if lr is not None:
            raise InputError("--tune-lr chooses the learning rates; drop --lr")
        grid = None if args.tune_lr == "default" else _grid_arg(args.tune_lr)
        tuning = tune_lr(model, data, methods, grid=grid, probes=args.probes, probe_seed=args.probe_seed,
                         **episode_kw, **kw)
        if not args.json:
            print(tuning.format())
        lr = tuning.chosen
    if lr is not None:
        kw["lr"] = lr
    ev = evaluate(model, data, methods, args.episodes, seed=args.seed, **episode_kw, **kw)
    result = ev.to_dict()
    if tuning is not None:
        result["lr_tuning"] = tuning.to_dict()
    note = None
    if args.out:
        from microtrain.fewshot import plot_accuracy_vs_memory
        from microtrain.weights import atomic_write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        md = ev.to_markdown()
        if tuning is not None:
            md += ("\n## Learning rate per method\n\nMean query accuracy (%) on the probe episodes "
                   f"(seed {args.probe_seed}, {args.probes} episodes; not the evaluation's):\n\n" + tuning.to_markdown())
        atomic_write_text(out / "results.md", md)
        atomic_write_text(out / "results.json", json.dumps(result, indent=1) + "\n")
        try:
            plot_accuracy_vs_memory(ev, out / "accuracy_vs_memory.png")
        except MicrotrainError as e:
            note = f"accuracy_vs_memory.png skipped: {e}"
            print(f"microtrain: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(ev.format())
        if args.out:
            print(f"results written to {args.out}/" + (f" ({note})" if note else ""))
    return 0


# ---------------------------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog="microtrain", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="per-layer table (op, shapes, params, MACs) and totals")
    s.add_argument("model", help="reference model name (mcunet-5fps, mbv2-w0.35, proxyless-w0.3) or a YAML spec")
    s.add_argument("--weights", help="weight file to validate against the spec (.pkl or .npz)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("predict", help="top-K classes of images with an int8 model")
    s.add_argument("model")
    s.add_argument("--weights", required=True, help="tiny-training .pkl, microtrain .npz, or 'shipped'")
    s.add_argument("images", nargs="+", help="image files (.npy HxWx3 uint8, .png, .ppm/.pgm; JPEG with Pillow)")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("infer", help="int8 in (N,H,W,C) .npy -> int8 logits (N,classes) .npy")
    s.add_argument("model")
    s.add_argument("--weights", required=True, help="tiny-training .pkl, microtrain .npz, or 'shipped'")
    s.add_argument("--input", required=True, help="int8 .npy already in the model's input quantization")
    s.add_argument("--output", required=True, help="where to write the int8 logits .npy")
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser("plan", help="memory plan and compute of one training step (sparse update)")
    s.add_argument("model")
    s.add_argument("--weights", help="weights (needed for magnitude-based channel choice of MIT's schemes; "
                                      "random int8 weights of the right shapes otherwise)")
    s.add_argument("--config", required=True,
                   help="full, last, last+conv, bias, an MIT scheme (49kb, 100kb, mcunet-5fps-49kb ...) or a YAML file")
    s.add_argument("--mode", choices=["int8", "fp32"], default="int8")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--classes", type=int, default=10, help="classes of the trained head (default 10)")
    s.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    s.add_argument("--budget", type=int, help="SRAM budget in bytes: error if the plan does not fit")
    s.add_argument("--no-save-kept", action="store_true", help="save full inputs, not only kept channels")
    s.add_argument("--no-bit-masks", action="store_true", help="fp32: keep activations instead of 1-bit masks")
    s.add_argument("--no-reorder", action="store_true", help="update after the whole backward (no MIT reordering)")
    s.add_argument("--no-inplace", action="store_true", help="no in-place gradient buffers")
    s.add_argument("--json", action="store_true")
    s.add_argument("--table", action="store_true", help="print every buffer of the plan")
    s.add_argument("--timeline", action="store_true", help="print the plan's timeline")
    s.add_argument("--timeline-png", help="write the timeline as a PNG (needs matplotlib)")
    s.add_argument("--header", help="write a C header with every buffer's offset and size and the arena size")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("export-c", help="C99 sources of one training step: weights in flash, one static arena")
    s.add_argument("model")
    s.add_argument("--weights", help="weights (.pkl or .npz); random int8 weights of the right shapes otherwise")
    s.add_argument("--config", required=True, help="sparse config: a name (49kb, full, bias ...) or a YAML file")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for the C sources (created if missing)")
    s.add_argument("--mode", choices=["int8", "fp32"], default="int8")
    s.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    s.add_argument("--lr", type=float, default=0.01)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--classes", type=int, default=10, help="classes of the trained head (default 10)")
    s.add_argument("--check", action="store_true", help="compile the sources once with gcc (-Werror) after writing")
    s.set_defaults(func=cmd_export_c)

    s = sub.add_parser("select", help="TinyTrain's layer/channel selection for one support set (Fisher pass + s_i)")
    s.add_argument("model")
    s.add_argument("--weights", required=True, help="tiny-training .pkl, microtrain .npz, or 'shipped'")
    s.add_argument("--data", required=True, help="omniglot:PATH, folder:PATH, glyphs:SCRIPTS[:STYLE] or digits")
    s.add_argument("--ways", type=int, default=5)
    s.add_argument("--shots", type=int, default=5)
    s.add_argument("--queries", type=int, default=15,
                   help="queries per class drawn with the support set (default 15: the support set of "
                        "`evaluate`'s episode 0 for the same seed); not used for the selection")
    s.add_argument("--memory-budget", type=int, default=262_144, help="bytes (default 262144)")
    s.add_argument("--compute-budget", type=int, help="backward MACs per sample")
    s.add_argument("--channels", choices=["fisher", "l2", "random"], default="fisher")
    s.add_argument("--channel-ratio", type=float, default=0.5)
    s.add_argument("--mode", choices=["int8", "fp32"], default="int8")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.add_argument("--save", metavar="CFG.yaml", help="write the selected SparseConfig as YAML")
    s.set_defaults(func=cmd_select)

    s = sub.add_parser("adapt", help="adapt a model to one few-shot episode and report memory, compute, accuracy")
    s.add_argument("model", nargs="?", default="mcunet-5fps",
                   help="reference model name or a YAML spec (default mcunet-5fps)")
    s.add_argument("--weights", help="tiny-training .pkl or microtrain .npz (default: the project's shipped "
                                     "weights, pretrained on rendered glyphs; mcunet-5fps only)")
    s.add_argument("--data", help="omniglot:PATH, folder:PATH, glyphs:SCRIPTS[:STYLE] or digits (default: "
                                  f"{DEFAULT_ADAPT_DATA}, scripts the shipped weights never saw, on graph paper)")
    s.add_argument("--method", default="tinytrain", help="none, fulltrain, lastlayer, biasonly, sparseupdate, "
                                                         "tinytrain (default), tinytrain-l2, tinytrain-random")
    s.add_argument("--ways", type=int, default=5)
    s.add_argument("--shots", type=int, default=5)
    s.add_argument("--queries", type=int, default=15, help="queries per class (default 15)")
    s.add_argument("--steps", type=int, default=DEMO_SETTINGS[0], help=f"default {DEMO_SETTINGS[0]}")
    s.add_argument("--batch", type=int, default=5, help="support images per step (default 5)")
    s.add_argument("--lr", type=float, help="learning rate (default: with the shipped weights on the default data "
                                            "and settings, the lr tuned for them (tinytrain "
                                            f"{DEMO_LR['tinytrain']:g}); else int8 SGD 0.005, fp32 Adam 1e-3)")
    s.add_argument("--memory-budget", type=int, default=262_144, help="bytes, for tinytrain* (default 262144)")
    s.add_argument("--mode", choices=["int8", "fp32"], default="int8")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scheme", default="49kb", help="MIT scheme of sparseupdate: a name or YAML (default 49kb)")
    s.add_argument("--backend", choices=["blas", "reference"], default="blas",
                   help="blas (default): host GEMMs for 1x1 and standard convs (int8 forward bit-exact, fp32 sums "
                        "in sgemm's order); reference: the loop kernels firmware's C twins mirror bit for bit")
    s.add_argument("--save", metavar="OUT.npz", help="write the adapted weights and head (int8 mode)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_adapt)

    s = sub.add_parser("evaluate", help="few-shot evaluation of adaptation methods over episodes")
    s.add_argument("model")
    s.add_argument("--weights", required=True, help="tiny-training .pkl, microtrain .npz, or 'shipped'")
    s.add_argument("--data", required=True, help="omniglot:PATH, folder:PATH, glyphs:SCRIPTS[:STYLE] or digits")
    s.add_argument("--methods", default="all",
                   help="comma list of none, fulltrain, lastlayer, biasonly, sparseupdate, tinytrain, tinytrain-l2, "
                        "tinytrain-random; or all (default)")
    s.add_argument("--episodes", type=int, default=10)
    s.add_argument("--ways", type=int, help="N-way (default 5)")
    s.add_argument("--shots", type=int, help="K-shot (default 5)")
    s.add_argument("--queries", type=int, help="queries per class (default 15)")
    s.add_argument("--meta-dataset", action="store_true", help="Meta-Dataset's varying-way varying-shot episodes")
    s.add_argument("--steps", type=int, default=40)
    s.add_argument("--lr", help="learning rate, one for all methods or per method (fulltrain=0.005,tinytrain=0.02); "
                                "default: int8 SGD 0.005, fp32 Adam 1e-3")
    s.add_argument("--tune-lr", nargs="?", const="default", metavar="GRID",
                   help="choose each method's lr on probe episodes first, from GRID (comma list; default int8 SGD "
                        "0.001,0.005,0.02,0.05, fp32 Adam 1e-4,1e-3,1e-2)")
    s.add_argument("--probes", type=int, default=3, help="probe episodes per lr for --tune-lr (default 3)")
    s.add_argument("--probe-seed", type=int, default=1000, help="seed of the probe episodes (default 1000)")
    s.add_argument("--optimizer", choices=["sgd", "adam"], help="default: sgd in int8 mode, adam in fp32 mode")
    s.add_argument("--batch", type=int, help="support images per step (default min(25, support size))")
    s.add_argument("--memory-budget", type=int, default=262_144,
                   help="bytes, for tinytrain* (default 262144; fp32 activations take 4x the bytes of int8 ones)")
    s.add_argument("--compute-budget", type=int, help="backward MACs per sample, for tinytrain*")
    s.add_argument("--channel-ratio", type=float, default=0.5)
    s.add_argument("--scheme", default="49kb", help="MIT scheme of sparseupdate: a name or YAML (default 49kb)")
    s.add_argument("--backend", choices=["blas", "reference"], default="blas",
                   help="blas (default): host GEMMs for 1x1 and standard convs (int8 forward bit-exact, fp32 sums "
                        "in sgemm's order); reference: the loop kernels firmware's C twins mirror bit for bit")
    s.add_argument("--mode", choices=["int8", "fp32"], default="int8")
    s.add_argument("--seed", type=int, default=0)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="run on a local dask cluster of N worker processes")
    g.add_argument("--scheduler", help="address of an existing dask scheduler (tcp://host:port)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--out", metavar="DIR", help="write results.md, results.json, accuracy_vs_memory.png")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_evaluate)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MicrotrainError as e:
        print(f"microtrain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("microtrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
