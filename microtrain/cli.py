"""The `microtrain` command line (also `python -m microtrain`).

Every MicrotrainError is printed as one line `microtrain: error: ...` on stderr with exit status 2;
no traceback for bad input.
"""

import argparse
import json
import sys

import numpy as np

from microtrain.errors import InputError, MicrotrainError


def _load(args):
    from microtrain.model import load_model

    return load_model(args.model, getattr(args, "weights", None))


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
    s.add_argument("--weights", required=True)
    s.add_argument("images", nargs="+", help="image files (.npy HxWx3 uint8, .png, .ppm/.pgm; JPEG with Pillow)")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("infer", help="int8 in (N,H,W,C) .npy -> int8 logits (N,classes) .npy")
    s.add_argument("model")
    s.add_argument("--weights", required=True)
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
