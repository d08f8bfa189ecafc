"""Pretrain a reference model on rendered glyphs with microtrain's own fp32 engine, then quantize it to int8.

    python -m microtrain.reference_models.pretrain --out OUT.npz [--model mcunet-5fps] [--steps 3000]
        [--batch 32] [--lr 1e-3] [--seed 0] [--scripts a,b,...] [--workdir DIR] [--resume]

This is how the project makes the weights it ships (reference_models/mcunet-5fps-glyphs.npz, see
MODEL_CARD.md): no download, no ImageNet, only characters rendered from the DejaVu fonts in matplotlib's
wheel (microtrain.data.glyphs).

Data: TRAIN_SCRIPTS give 1,581 distinct characters (--scripts names others, never a held-out one); `classes`
of them (default 1000, the size of the graph's classifier) are drawn with the seed. Every training image is a
fresh rendering (face, size, stroke, rotation, shift; data.glyphs) followed by augment(): a smooth elastic
warp, thinner or thicker strokes, ink and paper grey levels and pixel noise. HELD_OUT_SCRIPTS are never seen:
they are the domain `microtrain adapt` adapts to by default.

Training: microtrain.train.TrainStep in fp32 mode with every conv and the linear head trainable (the engine's
full backward), Adam, linear warm-up then cosine decay. There is no batch norm in these graphs (the
published models are folded), so init_weights() keeps signals at unit scale: He-normal convs, and each
residual block's last (projection) conv starts at zero so every block starts as the identity (Goyal et al.
2017, "zero-gamma"; Zhang et al. 2019, Fixup).

Then microtrain.ptq calibrates activation ranges on training renderings and quantizes to the int8 format the
engine runs. Reported: top-1 on fresh renderings of the training classes (fp32 and int8) and prototype-head
5-way 5-shot accuracy on the held-out scripts (int8).

Reproducible: batch b of a run is drawn from a Generator seeded with (seed, b), so the same seed (and the same
Pillow/FreeType and fonts) gives bit-identical weights, and --resume continues a run exactly from its last
checkpoint.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from microtrain.data import GlyphRenderer, glyphs, script_names, to_size
from microtrain.errors import InputError, MicrotrainError
from microtrain.graph import load_graph, with_classes
from microtrain.model import random_model
from microtrain.reference_models import HELD_OUT_SCRIPTS, TRAIN_SCRIPTS
from microtrain.sparse import full_train
from microtrain.train import TrainStep
from microtrain.train_plan import TrainOptions
from microtrain.weights import save_npz

F32 = np.float32
CANVAS = 105  # Omniglot's image side; rendered, then resized to the model's input side
VAL_OFFSET = 1 << 30  # rendering indices >= this are validation renderings, never drawn for training


def init_weights(graph, rng):
    """fp32 weights {op name: (w, b)} for training from scratch without batch norm (see the module docstring)."""
    weights = {}
    residual_proj = {op.inputs[1] for op in graph.ops if op.kind == "add"}  # add(block_in, branch)
    for op in graph.ops:
        if not op.has_weights:
            continue
        shape = tuple(op.weight_shape())
        fan_in = op.kernel * op.kernel * (1 if op.kind == "depthwise" else op.cin)
        if op.kind == "fc":
            # a zero classifier: the first steps fit it to the (random) features instead of shrinking the
            # features to make random logits equal (without batch norm that collapse is what we saw at 0.01)
            w = np.zeros(shape)
        elif op.act is None and op.output in residual_proj:
            w = np.zeros(shape)  # the block's residual branch starts at zero: the block is the identity
        elif op.act is None:
            w = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)  # linear projection: variance preserving
        else:
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)  # He init for ReLU6
        weights[op.name] = (w.astype(F32), np.zeros(op.cout, F32))
    return weights


def _box_filter3(a, op):
    """3x3 min or max filter of a 2-D array, edges replicated."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    out = p[1:h + 1, 1:w + 1].copy()
    for dy in range(3):
        for dx in range(3):
            op(out, p[dy:dy + h, dx:dx + w], out=out)
    return out


def augment(grey, rng):
    """uint8 (S, S) grey glyph (dark ink on white) -> augmented uint8 (S, S).

    Elastic warp: a displacement field of up to 0.03 S pixels, bilinear from a random 5x5 grid, sampled
    bilinearly; stroke width: a 3x3 erosion or dilation of the ink with probability 1/3 each; ink grey level
    in [0, 90] and paper in [170, 255]; Gaussian pixel noise of std up to 12 grey levels.
    """
    s = grey.shape[0]
    g = grey.astype(F32) / 255.0  # 1 = paper, 0 = ink
    amp = rng.uniform(0.0, 0.03 * s)
    coarse = rng.normal(0.0, 1.0, (2, 5, 5))
    t = np.linspace(0.0, 4.0, s)
    i0 = np.minimum(t.astype(np.int64), 3)
    f = t - i0
    # separable bilinear upsampling of each 5x5 field to s x s
    rows = coarse[:, i0, :] * (1 - f)[None, :, None] + coarse[:, i0 + 1, :] * f[None, :, None]
    field = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]
    yy, xx = np.meshgrid(np.arange(s, dtype=np.float64), np.arange(s, dtype=np.float64), indexing="ij")
    sy = np.clip(yy + amp * field[0], 0, s - 1)
    sx = np.clip(xx + amp * field[1], 0, s - 1)
    y0, x0 = np.minimum(sy.astype(np.int64), s - 2), np.minimum(sx.astype(np.int64), s - 2)
    fy, fx = sy - y0, sx - x0
    g = ((g[y0, x0] * (1 - fx) + g[y0, x0 + 1] * fx) * (1 - fy)
         + (g[y0 + 1, x0] * (1 - fx) + g[y0 + 1, x0 + 1] * fx) * fy)
    k = int(rng.integers(3))
    if k == 1:
        g = _box_filter3(g, np.minimum)  # paper shrinks: thicker ink
    elif k == 2:
        g = _box_filter3(g, np.maximum)  # thinner ink
    ink, paper = rng.uniform(0.0, 90.0), rng.uniform(170.0, 255.0)
    out = ink + (paper - ink) * g + rng.normal(0.0, rng.uniform(0.0, 12.0), g.shape)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


class GlyphStream:
    """Batches of augmented glyph renderings of `code_points`, as the model's fp32 input (2u/255 - 1)."""

    def __init__(self, code_points, renderer, size, seed):
        self.code_points = list(code_points)
        self.renderer, self.size, self.seed = renderer, size, seed

    def image(self, c, j, rng=None):
        """uint8 (size, size, 3): rendering j of class c, augmented with rng (None: plain rendering)."""
        grey = to_size(self.renderer.render((self.code_points[c], j)), self.size, "glyph")[:, :, 0]
        if rng is not None:
            grey = augment(grey, rng)
        return np.repeat(grey[:, :, None], 3, axis=2)

    def batch(self, index, n):
        """Training batch `index`: n random classes, fresh renderings, augmented. (x float32, labels int32)."""
        rng = np.random.default_rng([self.seed, 1, index])
        labels = rng.integers(0, len(self.code_points), n).astype(np.int32)
        js = rng.integers(0, VAL_OFFSET, n)
        x = np.stack([self.image(c, j, rng) for c, j in zip(labels, js)])
        return to_input(x), labels

    def validation(self, per_class, augmented=False):
        """(uint8 images, labels) of renderings VAL_OFFSET + i, i < per_class, of every class."""
        rng = np.random.default_rng([self.seed, 2]) if augmented else None
        imgs, labels = [], []
        for c in range(len(self.code_points)):
            for i in range(per_class):
                imgs.append(self.image(c, VAL_OFFSET + i, rng))
                labels.append(c)
        return np.stack(imgs), np.array(labels, np.int32)


def to_input(images):
    """uint8 (N, H, W, 3) -> float32 2u/255 - 1 (microtrain.fewshot.fp32_input, the engine's fp32 input)."""
    from microtrain.fewshot import fp32_input

    return fp32_input(images)


def lr_at(step, steps, peak, warmup):
    """Linear warm-up over `warmup` steps, then cosine decay to 5% of peak at the last step (step is 0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup - 1)
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(t, 1.0))))


def select_classes(classes, seed, canvas=CANVAS, scripts=TRAIN_SCRIPTS):
    """(renderer, code points of the training classes): `classes` characters of `scripts` (names of
    microtrain.data.SCRIPTS, as a comma string or a sequence), drawn with seed."""
    scripts = script_names(scripts)
    overlap = sorted(set(scripts) & set(HELD_OUT_SCRIPTS))
    if overlap:
        raise InputError(f"training scripts {', '.join(overlap)} are held out (HELD_OUT_SCRIPTS: the demo's domain); "
                         f"choose others")
    renderer = GlyphRenderer(canvas, seed)
    pool, _ = renderer.select(scripts)
    if classes > len(pool):
        raise InputError(f"{classes} classes asked, the training scripts give {len(pool)}")
    rng = np.random.default_rng([seed, 0])
    chosen = sorted(int(u) for u in rng.choice(pool, classes, replace=False))
    return renderer, chosen


def _state_names(step):
    return [n for n in step.specs if n.startswith(("train:", "adam:"))]


def save_checkpoint(path, step, index):
    arrays = {n.replace(":", "|"): step.v(n) for n in _state_names(step)}
    arrays["__step__"] = np.array([index, step.t], np.int64)
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_checkpoint(path, step):
    with np.load(path, allow_pickle=False) as z:
        for n in _state_names(step):
            step.v(n)[...] = z[n.replace(":", "|")]
        index, t = (int(v) for v in z["__step__"])
    step.t = t
    return index


def trained_weights(step):
    """fp32 {op name: (w, b)} copied out of the step's arena (backbone convs and the head as classifier)."""
    g = step.graph
    out = {op.name: (step.v(f"train:w:{op.name}").copy(), step.v(f"train:b:{op.name}").copy()) for op in g.convs}
    out[g.classifier.name] = (step.v("train:w:head").copy(), step.v("train:b:head").copy())
    return out


def train(graph, stream, *, steps, batch, lr, seed, warmup=100, workdir=None, resume=False, log=print,
          log_every=50, checkpoint_every=250):
    """Train every layer of `graph` (its classifier sized to the stream's classes) in fp32; returns the step."""
    g = with_classes(graph, len(stream.code_points))
    init = init_weights(g, np.random.default_rng([seed, 3]))
    # TrainStep takes an int8 Model for the frozen layers' weights; with every conv trainable none is read,
    # so a random one stands in and the fp32 copies in the arena are overwritten with init_weights.
    step = TrainStep(random_model(graph, seed), full_train(graph), len(stream.code_points),
                     TrainOptions(mode="fp32", optimizer="adam", lr=lr, batch=batch, head="linear"),
                     head=init[g.classifier.name])
    for op in g.convs:
        step.v(f"train:w:{op.name}")[...] = init[op.name][0]
        step.v(f"train:b:{op.name}")[...] = init[op.name][1]
    ckpt = Path(workdir) / "checkpoint.npz" if workdir else None
    first = 0
    if ckpt is not None and not resume:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise InputError(f"--resume: no checkpoint at {ckpt}")
        first = load_checkpoint(ckpt, step)
        log(f"resumed at step {first}")
    t0, losses = time.perf_counter(), []
    for i in range(first, steps):
        x, y = stream.batch(i, batch)
        step.set_lr(lr_at(i, steps, lr, warmup))
        losses.append(step.run(x, y))
        if ckpt is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == steps):
            save_checkpoint(ckpt, step, i + 1)
        if (i + 1) % log_every == 0 or i + 1 == steps:
            # the arena reuses the logits' bytes in the backward: one more forward to score this batch
            hit = np.mean(np.argmax(step.forward_logits(x), axis=1) == y)
            log(f"step {i + 1}/{steps}: loss {np.mean(losses):.3f} (mean of the last {len(losses)}), "
                f"accuracy on the last batch after its update {100 * hit:.1f}%, lr {step.opts.lr:.2e}, "
                f"{time.perf_counter() - t0:.0f} s")
            losses = []
    return step


def top1(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m microtrain.reference_models.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="int8 weights to write (.npz)")
    ap.add_argument("--model", default="mcunet-5fps")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classes", type=int, default=None, help="training classes (default: the classifier's)")
    ap.add_argument("--scripts", default=",".join(TRAIN_SCRIPTS),
                    help="comma list of microtrain.data.SCRIPTS to draw the training classes from "
                         "(default: TRAIN_SCRIPTS, the shipped weights' scripts)")
    ap.add_argument("--workdir", help="checkpoints and the fp32 weights go here")
    ap.add_argument("--resume", action="store_true", help="continue from WORKDIR/checkpoint.npz")
    ap.add_argument("--calibration", type=int, default=256, help="calibration renderings")
    ap.add_argument("--eval-episodes", type=int, default=100, help="held-out few-shot episodes (prototype head)")
    args = ap.parse_args(argv)
    try:
        report = run(args)
    except MicrotrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


def run(args):
    from microtrain import ptq
    from microtrain.fewshot import _chunked, evaluate, model_input
    from microtrain.inference import Inference

    t_start = time.perf_counter()
    graph = load_graph(args.model)
    classes = args.classes or graph.classifier.cout
    side = graph.input_shape[0]
    scripts = script_names(args.scripts)
    renderer, code_points = select_classes(classes, args.seed, scripts=scripts)
    stream = GlyphStream(code_points, renderer, side, args.seed)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print(f"pretraining {graph.name} on {classes} glyph classes of {', '.join(scripts)}: {args.steps} steps "
          f"x batch {args.batch}, Adam lr {args.lr:g}", flush=True)
    step = train(graph, stream, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                 warmup=args.warmup, workdir=args.workdir, resume=args.resume,
                 log=lambda s: print(s, flush=True))
    t_train = time.perf_counter() - t_start
    g = step.graph
    weights = trained_weights(step)
    if args.workdir:
        np.savez(Path(args.workdir) / "fp32.npz", **{f"{k}/{i}": v for k, wb in weights.items() for i, v in
                                                     enumerate(wb)})

    # calibration: augmented renderings of the training classes (the stream's own distribution)
    cal = [stream.batch(VAL_OFFSET + i, 32)[0] for i in range(max(1, args.calibration // 32))]
    ranges = ptq.calibrate(g, weights, cal)
    meta = {"source": f"microtrain.reference_models.pretrain (seed {args.seed}, {args.steps} steps x batch "
                      f"{args.batch}, Adam lr {args.lr:g})",
            "classes": [f"U+{u:04X}" for u in code_points], "train_scripts": list(scripts),
            "held_out_scripts": list(HELD_OUT_SCRIPTS)}
    model = ptq.quantize_model(g, weights, ranges, meta=meta)

    # top-1 on plain validation renderings (never trained on), fp32 and int8
    imgs, labels = stream.validation(1)
    n = min(50, len(imgs))
    inf = Inference(model, batch=n)
    logits_f = _chunked(lambda x: ptq.float_forward(g, weights, x), to_input(imgs), n)
    logits_q = _chunked(lambda x: inf.run(x).copy(), model_input(imgs, model), n)
    aimgs, alabels = stream.validation(1, augmented=True)
    logits_a = _chunked(lambda x: inf.run(x).copy(), model_input(aimgs, model), n)

    held = glyphs(",".join(HELD_OUT_SCRIPTS), side, per_class=20, seed=args.seed)
    ev = evaluate(model, held, ["none"], args.eval_episodes, ways=5, shots=5, queries=15, seed=0, progress=False)
    row = ev.rows()[0]
    report = {"model": graph.name, "classes": classes, "steps": args.steps, "batch": args.batch, "lr": args.lr,
              "seed": args.seed, "train_seconds": round(t_train, 1),
              "top1_val_fp32": top1(logits_f, labels), "top1_val_int8": top1(logits_q, labels),
              "top1_val_augmented_int8": top1(logits_a, alabels),
              "fewshot_held_out_prototype": {"episodes": row["episodes"], "acc": row["acc"], "ci95": row["ci95"],
                                             "ways": 5, "shots": 5, "queries": 15}}
    save_npz(model, args.out, extra_meta={"pretrain_report": {k: v for k, v in report.items()
                                                              if k.startswith(("top1", "train_sec"))}})
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report


if __name__ == "__main__":
    sys.exit(main())
