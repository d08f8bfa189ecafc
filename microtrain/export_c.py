"""Export a planned training step as C99 sources: frozen weights in flash, one static arena of exactly plan.peak bytes.

`export_training_step(step, out_dir)` walks the kernel calls a bound `microtrain.train.TrainStep` runs (forward,
loss, partial backward with its updates, in the planned order) and writes the same calls as C: every arena view
becomes `arena + <planned offset>`, every read-only array the step binds (frozen int8 weights and int32 biases,
requantization multipliers and shifts, QAS coefficients, kept-channel lists) a `const` array, every trainable
copy's initial value a `const` array copied into the arena's tail by mt_init(). The C kernels are the twins in
firmware/ (docs/porting.md); `kernel_call` is the one table mapping a Python kernel call to its C twin's arguments,
shared by the exporter and the C tests.
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from microtrain.errors import ConfigError, PlanError

# The flags every firmware build must pass on the host (C99, every warning an error). -std=c99 also turns off FP
# contraction (no fused multiply-add), which the bit-exact fp32 contracts need; never add -ffast-math.
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")

PLAN_PREFIX = "MT_TRAIN"


# ----------------------------------------------------------------------------------------------
# Where the C kernels are
# ----------------------------------------------------------------------------------------------

def firmware_dir():
    """The folder holding microtrain.h and the kernel .c files: the installed package data
    (microtrain/firmware) or, in a checkout, firmware/ beside microtrain/."""
    here = Path(__file__).resolve().parent
    for d in (here / "firmware", here.parent / "firmware"):
        if (d / "microtrain.h").is_file():
            return d
    raise ConfigError(f"the C kernels (firmware/microtrain.h) were not found next to {here}: reinstall microtrain "
                      "from a full checkout (pip install .)")


def firmware_sources():
    """The kernel sources (.c), sorted, and the header path."""
    d = firmware_dir()
    return sorted(d.glob("*.c")), d / "microtrain.h"


def parse_prototypes(header_text):
    """{function name: (return type, [parameter types])} of every `mt_` prototype in a C header (whitespace
    normalised, parameter names dropped: `const int8_t *`, `int32_t`, `double` ...)."""
    text = re.sub(r"/\*.*?\*/", " ", header_text, flags=re.S)
    out = {}
    for m in re.finditer(r"\b(void|int32_t|double)\s+(mt_\w+)\s*\(([^)]*)\)\s*;", text):
        params = []
        for p in m.group(3).split(","):
            p = " ".join(p.split())
            p = re.sub(r"\s*\*\s*", " *", p)
            params.append(re.sub(r"\s*\b\w+$", "", p).strip())
        out[m.group(2)] = (m.group(1), params)
    return out


# ----------------------------------------------------------------------------------------------
# Python kernel call -> C twin call
# ----------------------------------------------------------------------------------------------

def _mask(m):
    return None if m.shape[0] == 0 else m  # NO_MASK -> NULL


def _s8(a, tag):
    return tag if a.dtype == np.int8 else ""


_CALLS = {
    # fixed-point primitives (scalars in, scalar out)
    "srdhm": lambda a, b: ("mt_srdhm", [a, b]),
    "rdbpot": lambda x, e: ("mt_rdbpot", [x, e]),
    "mbqm": lambda x, m, s: ("mt_mbqm", [x, m, s]),
    # forward, int8
    "conv2d_s8": lambda y, mask, x, w, b, mu, sh, xz, yz, lo, hi, s, p: (
        "mt_conv2d_s8", [y, _mask(mask), x, w, b, mu, sh, xz, yz, lo, hi, s, p, *x.shape, y.shape[3], w.shape[1],
                         w.shape[2]]),
    "depthwise_conv_s8": lambda y, mask, x, w, b, mu, sh, xz, yz, lo, hi, s, p: (
        "mt_depthwise_conv_s8", [y, _mask(mask), x, w, b, mu, sh, xz, yz, lo, hi, s, p, *x.shape, w.shape[0],
                                 w.shape[1]]),
    "pointwise_conv_s8": lambda y, mask, x, w, b, mu, sh, xz, yz, lo, hi: (
        "mt_pointwise_conv_s8", [y, _mask(mask), x, w, b, mu, sh, xz, yz, lo, hi, *x.shape, y.shape[3]]),
    "fully_connected_s8": lambda y, x, w, b, mu, sh, xz, yz, lo, hi: (
        "mt_fully_connected_s8", [y, x, w, b, mu, sh, xz, yz, lo, hi, x.shape[0], x.shape[1], y.shape[1]]),
    "add_s8": lambda y, mask, a, b, *q: ("mt_add_s8", [y, _mask(mask), a, b, *q, *y.shape]),
    "avgpool_s8": lambda y, x, kh, kw, s, p, lo, hi: ("mt_avgpool_s8", [y, x, kh, kw, s, p, lo, hi, *x.shape]),
    "global_mean_s8": lambda y, x, lo, hi: ("mt_global_mean_s8", [y, x, lo, hi, *x.shape]),
    "quantize_s8": lambda y, x, s, zp: ("mt_quantize_s8", [y, x, s, zp, y.size]),
    "dequantize_s8": lambda y, x, s, zp: ("mt_dequantize_s8", [y, x, s, zp, y.size]),
    "gather_channels": lambda d, s, keep: ("mt_gather_channels", [d, s, keep, *s.shape, d.shape[3],
                                                                  s.dtype.itemsize]),
    # forward, fp32
    "conv2d_f32": lambda y, x, w, b, lo, hi, s, p: (
        "mt_conv2d_f32", [y, x, w, b, lo, hi, s, p, *x.shape, y.shape[3], w.shape[1], w.shape[2]]),
    "depthwise_conv_f32": lambda y, x, w, b, lo, hi, s, p: (
        "mt_depthwise_conv_f32", [y, x, w, b, lo, hi, s, p, *x.shape, w.shape[0], w.shape[1]]),
    "pointwise_conv_f32": lambda y, x, w, b, lo, hi: ("mt_pointwise_conv_f32", [y, x, w, b, lo, hi, *x.shape,
                                                                                y.shape[3]]),
    "fully_connected_f32": lambda y, x, w, b: ("mt_fully_connected_f32", [y, x, w, b, *x.shape, y.shape[1]]),
    "add_f32": lambda y, a, b: ("mt_add_f32", [y, a, b, y.size]),
    "avgpool_f32": lambda y, x, kh, kw, s, p: ("mt_avgpool_f32", [y, x, kh, kw, s, p, *x.shape]),
    "global_mean_f32": lambda y, x: ("mt_global_mean_f32", [y, x, *x.shape]),
    "l2_normalize_rows_f32": lambda y, nrm, x: ("mt_l2_normalize_rows_f32", [y, nrm, x, *x.shape]),
    "l2_normalize_rows_f32_backward": lambda dx, dy, y, nrm: ("mt_l2_normalize_rows_f32_backward",
                                                              [dx, dy, y, nrm, *dy.shape]),
    # backward, fp32
    "conv2d_f32_backward_input": lambda dx, dy, w, s, p: (
        "mt_conv2d_f32_backward_input" + _s8(w, "_ws8"), [dx, dy, w, s, p, *dx.shape, dy.shape[3], w.shape[1],
                                                          w.shape[2]]),
    "conv2d_f32_backward_weight": lambda dw, x, xz, dy, keep, s, p: (
        "mt_conv2d_f32_backward_weight" + _s8(x, "_xs8"), [dw, x, xz, dy, keep, s, p, *x.shape, dy.shape[3],
                                                           dw.shape[1], dw.shape[2], dw.shape[0]]),
    "depthwise_conv_f32_backward_input": lambda dx, dy, w, s, p: (
        "mt_depthwise_conv_f32_backward_input" + _s8(w, "_ws8"), [dx, dy, w, s, p, *dx.shape, w.shape[0],
                                                                  w.shape[1]]),
    "depthwise_conv_f32_backward_weight": lambda dw, x, xz, dy, keep, s, p: (
        "mt_depthwise_conv_f32_backward_weight" + _s8(x, "_xs8"), [dw, x, xz, dy, keep, s, p, *x.shape[:3],
                                                                   dy.shape[3], dw.shape[0], dw.shape[1],
                                                                   dw.shape[2]]),
    "pointwise_conv_f32_backward_input": lambda dx, dy, w: (
        "mt_pointwise_conv_f32_backward_input" + _s8(w, "_ws8"), [dx, dy, w, *dx.shape, dy.shape[3]]),
    "pointwise_conv_f32_backward_weight": lambda dw, x, xz, dy, keep: (
        "mt_pointwise_conv_f32_backward_weight" + _s8(x, "_xs8"), [dw, x, xz, dy, keep, *x.shape, dy.shape[3],
                                                                   dw.shape[0]]),
    "fully_connected_f32_backward_input": lambda dx, dy, w: ("mt_fully_connected_f32_backward_input",
                                                             [dx, dy, w, *dx.shape, dy.shape[1]]),
    "fully_connected_f32_backward_weight": lambda dw, x, xz, dy, keep: (
        "mt_fully_connected_f32_backward_weight", [dw, x, xz, dy, keep, *x.shape, dy.shape[1], dw.shape[0]]),
    "bias_f32_backward": lambda db, dy, keep: ("mt_bias_f32_backward", [db, dy, keep, *dy.shape, db.shape[0]]),
    "bias_f32_backward_2d": lambda db, dy, keep: ("mt_bias_f32_backward_2d", [db, dy, keep, *dy.shape,
                                                                              db.shape[0]]),
    "clamp_f32_backward": lambda dx, dy, y, lo, hi: ("mt_clamp_f32_backward", [dx, dy, y, lo, hi, dx.size]),
    "accumulate_f32": lambda d, s: ("mt_accumulate_f32", [d, s, d.size]),
    "scale_f32": lambda d, s, f: ("mt_scale_f32", [d, s, f, d.size]),
    "scale_channels_f32": lambda dy, s: ("mt_scale_channels_f32", [dy, s, dy.size // dy.shape[-1], dy.shape[-1]]),
    "mask_pack_f32": lambda m, y, lo, hi: ("mt_mask_pack_f32", [m, y, lo, hi, *y.shape]),
    "mask_unpack_backward_f32": lambda dx, dy, m: ("mt_mask_unpack_backward_f32", [dx, dy, m, *dx.shape]),
    "global_mean_f32_backward": lambda dx, dy: ("mt_global_mean_f32_backward", [dx, dy, *dx.shape]),
    "avgpool_f32_backward": lambda dx, dy, kh, kw, s, p: ("mt_avgpool_f32_backward", [dx, dy, kh, kw, s, p,
                                                                                      *dx.shape]),
    "softmax_cross_entropy_f32": lambda d, z, labels: ("mt_softmax_cross_entropy_f32", [d, z, labels, *z.shape]),
    # updates
    "sgd_update_ohwi_s8": lambda w, dw, ko, ki, coef, lr: (
        "mt_sgd_update_ohwi_s8", [w, dw, ko, ki, coef, lr, *w.shape, dw.shape[0], dw.shape[3]]),
    "sgd_update_hwc_s8": lambda w, dw, keep, coef, lr: ("mt_sgd_update_hwc_s8", [w, dw, keep, coef, lr, *w.shape,
                                                                                 dw.shape[2]]),
    "sgd_update_bias_s32": lambda b, db, keep, coef, lr: ("mt_sgd_update_bias_s32", [b, db, keep, coef, lr,
                                                                                     b.shape[0], db.shape[0]]),
    "sgd_update_ohwi_f32": lambda w, dw, ko, ki, lr: (
        "mt_sgd_update_ohwi_f32", [w, dw, ko, ki, lr, *w.shape, dw.shape[0], dw.shape[3]]),
    "sgd_update_hwc_f32": lambda w, dw, keep, lr: ("mt_sgd_update_hwc_f32", [w, dw, keep, lr, *w.shape,
                                                                             dw.shape[2]]),
    "sgd_update_bias_f32": lambda b, db, keep, lr: ("mt_sgd_update_bias_f32", [b, db, keep, lr, b.shape[0],
                                                                               db.shape[0]]),
    "adam_update_ohwi_f32": lambda w, dw, m, v, ko, ki, lr, t: (
        "mt_adam_update_ohwi_f32", [w, dw, m, v, ko, ki, lr, t, *w.shape, dw.shape[0], dw.shape[3]]),
    "adam_update_hwc_f32": lambda w, dw, m, v, keep, lr, t: (
        "mt_adam_update_hwc_f32", [w, dw, m, v, keep, lr, t, *w.shape, dw.shape[2]]),
    "adam_update_bias_f32": lambda b, db, m, v, keep, lr, t: (
        "mt_adam_update_bias_f32", [b, db, m, v, keep, lr, t, b.shape[0], db.shape[0]]),
    "adam_update_ohwi_s8": lambda w, dw, m, v, ko, ki, gs, lr, t: (
        "mt_adam_update_ohwi_s8", [w, dw, m, v, ko, ki, gs, lr, t, *w.shape, dw.shape[0], dw.shape[3]]),
    "adam_update_hwc_s8": lambda w, dw, m, v, keep, gs, lr, t: (
        "mt_adam_update_hwc_s8", [w, dw, m, v, keep, gs, lr, t, *w.shape, dw.shape[2]]),
    "adam_update_bias_s32": lambda b, db, m, v, keep, gs, lr, t: (
        "mt_adam_update_bias_s32", [b, db, m, v, keep, gs, lr, t, b.shape[0], db.shape[0]]),
    "all_finite": lambda a: ("mt_all_finite", [a, a.size]),
}


def kernel_name(fn):
    """The Python name of a kernel (a Numba dispatcher or a plain function)."""
    return getattr(getattr(fn, "py_func", fn), "__name__", repr(fn))


def kernel_call(fn, args):
    """(C function name, C arguments) of the Python kernel call fn(*args): arrays stay arrays (pointers in C),
    NO_MASK becomes None (NULL), scalars stay scalars, and the dimensions the Python kernel reads from `.shape`
    are appended in the order firmware/microtrain.h documents."""
    name = fn if isinstance(fn, str) else kernel_name(fn)
    if name not in _CALLS:
        raise ConfigError(f"kernel {name} has no C twin in firmware/ yet: port it (docs/porting.md, 'Porting a new "
                          f"kernel') before exporting a step that uses it")
    c_name, cargs = _CALLS[name](*args)
    return c_name, [int(a) if isinstance(a, (int, np.integer)) and not isinstance(a, (bool, _CVar)) else a
                    for a in cargs]


def python_kernels():
    """Names of the Python kernels that have a C twin (the table above)."""
    return tuple(_CALLS)


# ----------------------------------------------------------------------------------------------
# The step as a list of calls: walks TrainStep exactly as TrainStep.run does
# ----------------------------------------------------------------------------------------------

def _update_args(step, item):
    """The (kernel, args) of one update item, built as TrainStep._apply builds them."""
    tag, fn, w, dw, k1, k2, coef, name = item
    lr = float(step.opts.lr)
    if step.opts.optimizer == "adam":
        pname = ("b:" if tag.startswith("b_") else "w:") + name
        m = step.v(f"adam:m:{pname}")
        v = step.v(f"adam:v:{pname}")
        if tag in ("ohwi_s8", "ohwi_f32"):
            m, v = m.reshape(dw.shape), v.reshape(dw.shape)
        t = _STEP_T  # the step counter, a C variable
        args = {"ohwi_s8": (w, dw, m, v, k1, k2, coef, lr, t), "ohwi_f32": (w, dw, m, v, k1, k2, lr, t),
                "dw_s8": (w, dw, m, v, k2, coef, lr, t), "dw_f32": (w, dw, m, v, k2, lr, t),
                "b_s32": (w, dw, m, v, k1, coef, lr, t), "b_f32": (w, dw, m, v, k1, lr, t)}[tag]
    else:
        args = {"ohwi_s8": (w, dw, k1, k2, coef, lr), "ohwi_f32": (w, dw, k1, k2, lr),
                "dw_s8": (w, dw, k2, coef, lr), "dw_f32": (w, dw, k2, lr),
                "b_s32": (w, dw, k1, coef, lr), "b_f32": (w, dw, k1, lr)}[tag]
    return fn, args


class _CVar(int):
    """A scalar argument that is a C variable, not a literal (Adam's step count t). An int so the call table's
    int() normalisation keeps it."""

    def __new__(cls, value, c_expr):
        obj = super().__new__(cls, value)
        obj.c_expr = c_expr
        return obj


_STEP_T = _CVar(1, "mt_step_t")


def step_program(step):
    """The step as ("call", fn, args) / ("check", dw, name) / ("loss",) entries, in TrainStep.run's order."""
    prog = [("call", fn, args) for fn, args in step._forward]
    prog.append(("loss",))
    for item in step._backward:
        if isinstance(item[0], str):
            prog.append(("check", item[3], item[7], False))
            fn, args = _update_args(step, item)
            prog.append(("call", fn, args))
        else:
            prog.append(("call", item[0], item[1]))
    for item in step._updates:  # without reordering: every gradient is checked before the first update
        prog.append(("check", item[3], item[7], True))
    for item in step._updates:
        fn, args = _update_args(step, item)
        prog.append(("call", fn, args))
    return prog


# ----------------------------------------------------------------------------------------------
# C text
# ----------------------------------------------------------------------------------------------

_CTYPE = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int32): "int32_t",
          np.dtype(np.float32): "float"}


def c_ident(name):
    """A C identifier for a buffer or constant name: every character outside [0-9A-Za-z] becomes '_'."""
    return re.sub(r"[^0-9A-Za-z]", "_", name)


def c_float(v):
    """An exact C99 literal of a Python/NumPy float: hexadecimal (no decimal rounding), or +-INFINITY."""
    v = float(v)
    if np.isinf(v):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    if np.isnan(v):
        raise ConfigError("a NaN scalar cannot be exported: check the model's quantization parameters")
    return v.hex()


def _c_array_values(a):
    flat = np.ascontiguousarray(a).ravel()
    if a.dtype == np.float32:
        items = [c_float(x) + "f" if np.isfinite(x) else c_float(x) for x in flat.tolist()]
    elif a.dtype == np.int32:
        items = [str(x) if x != -(1 << 31) else "(-2147483647 - 1)" for x in flat.tolist()]
    else:
        items = [str(x) for x in flat.tolist()]
    lines = []
    for i in range(0, len(items), 16):
        lines.append("    " + ", ".join(items[i:i + 16]) + ",")
    return "\n".join(lines) if lines else "    0,"


class _Exporter:
    def __init__(self, step):
        self.step = step
        self.plan = step.plan
        self.base = step.arena.buffer.__array_interface__["data"][0]
        self.view_names = {id(v): k[0] for k, v in step.arena._views.items()}
        self.consts = {}  # (dtype, shape, bytes) -> (C name, array): identical constants are emitted once
        self.const_order = []
        for key, arr in step.flash.items():
            self._add_const(key, arr)
        self.protos = parse_prototypes(firmware_sources()[1].read_text())

    @staticmethod
    def _content(arr):
        return (arr.dtype.str, arr.shape, np.ascontiguousarray(arr).tobytes())

    def _add_const(self, key, arr):
        """Register a read-only array under the C name mt_<key>; returns that name (or the name of an identical
        constant registered before: the step may bind equal index lists under several names)."""
        content = self._content(arr)
        if content in self.consts:
            return self.consts[content][0]
        if arr.dtype not in _CTYPE:
            raise ConfigError(f"constant {key} has dtype {arr.dtype}, which the C export does not support")
        if arr.dtype == np.int32 and arr.ndim == 1 and np.array_equal(arr, np.arange(arr.size)):
            key = f"arange_{arr.size}"  # "every channel" lists are shared by many layers: name them by content
        name = "mt_" + c_ident(key)
        if any(n == name for n, _ in self.consts.values()):
            raise PlanError(f"constants {key!r} and another one both become C identifier {name}: rename one")
        self.consts[content] = (name, arr)
        self.const_order.append(content)
        return name

    def array_expr(self, a, ctype):
        """C expression of an array argument: an arena offset or a flash constant."""
        addr = a.__array_interface__["data"][0]
        off = addr - self.base
        if 0 <= off < self.plan.peak or (a.nbytes == 0 and off == self.plan.peak):
            if off + a.nbytes > self.plan.peak:
                raise PlanError(f"an argument of {a.nbytes} bytes at arena offset {off} leaves the arena "
                                f"({self.plan.peak} bytes)")
            name = self.view_names.get(id(a)) or self.view_names.get(id(a.base))
            where = f"{PLAN_PREFIX}_{c_ident(name).upper()}_OFFSET" if name is not None and \
                self.plan[name].offset == off else str(off)
            return f"({ctype})(mt_arena + {where})"
        if a.flags.writeable:
            raise PlanError(f"a kernel argument ({a.dtype} {a.shape}) is neither an arena view nor a read-only "
                            "(flash) array: the step binds memory the exporter does not know")
        return self._add_const(f"const_{len(self.consts)}", a)

    def call(self, fn, args):
        c_name, cargs = kernel_call(fn, args)
        ret, params = self.protos[c_name]
        if len(params) != len(cargs):
            raise ConfigError(f"{c_name}: the call table gives {len(cargs)} arguments, microtrain.h declares "
                              f"{len(params)}: fix export_c._CALLS")
        out = []
        for p, a in zip(params, cargs):
            if a is None:
                out.append("NULL")
            elif isinstance(a, np.ndarray):
                out.append(self.array_expr(a, p.replace("const ", "")))
            elif isinstance(a, _CVar):
                out.append(a.c_expr)
            elif p in ("float", "double"):
                out.append(c_float(a))
            else:
                out.append(str(int(a)))
        return c_name, out

    # ---- files -------------------------------------------------------------------------------
    def constants_c(self):
        lines = ["/* Read-only data of the training step (flash): frozen weights and biases, requantization",
                 " * multipliers and shifts, QAS coefficients, kept-channel lists, and the trainable copies' initial",
                 " * values (copied into the arena's tail by mt_init()). Generated by microtrain export-c. */",
                 "#include \"mt_train_step.h\"", ""]
        for key in self.const_order:
            name, arr = self.consts[key]
            lines.append(f"/* {arr.dtype} {tuple(arr.shape)} */")
            lines.append(f"const {_CTYPE[arr.dtype]} {name}[{max(arr.size, 1)}] = {{")
            lines.append(_c_array_values(arr))
            lines.append("};")
        for b in self.tail_buffers():
            arr = self.step.v(b.name)
            lines.append(f"/* initial value of {b.name}: {arr.dtype} {tuple(arr.shape)} */")
            lines.append(f"const {_CTYPE[arr.dtype]} mt_init_{c_ident(b.name)}[{max(arr.size, 1)}] = {{")
            lines.append(_c_array_values(arr))
            lines.append("};")
        return "\n".join(lines) + "\n"

    def tail_buffers(self):
        return [b for b in self.plan if b.region == "tail" and b.alias_of is None and b.name in self.step.specs]

    def step_h(self):
        s = self.step
        n_in = int(np.prod(s.specs[f"act:{s.graph.input_name}"][0]))
        in_t = _CTYPE[s.specs[f"act:{s.graph.input_name}"][1]]
        lines = [
            "/* The exported training step. Generated by microtrain export-c; do not edit, regenerate. */",
            "#ifndef MT_TRAIN_STEP_H_", "#define MT_TRAIN_STEP_H_", "", "#include <stdint.h>", "",
            "#include \"microtrain.h\"", "#include \"mt_plan.h\"", "",
            f"#define MT_BATCH {s.opts.batch}",
            f"#define MT_INPUT_ELEMS {n_in} /* {in_t} {s.specs[f'act:{s.graph.input_name}'][0]} NHWC */",
            f"#define MT_CLASSES {s.n_classes}",
            "#define MT_OK 0",
            "#define MT_ERR_LABEL 1        /* a label outside [0, MT_CLASSES) */",
            "#define MT_ERR_NONFINITE 2    /* NaN/inf in a trainable fp32 parameter, the loss or a gradient */",
            "",
            "/* The one arena: exactly MT_TRAIN_ARENA_SIZE bytes, offsets from mt_plan.h. */",
            "extern uint8_t mt_arena[MT_TRAIN_ARENA_SIZE];",
            "/* Copy the trainable parameters' initial values into the arena's tail, zero the optimizer state. */",
            "void mt_init(void);",
            "/* One training step on x (MT_INPUT_ELEMS elements) and labels (MT_BATCH): forward, loss, partial",
            " * backward and update in the planned order. *loss receives the mean loss before the update.",
            " * Returns MT_OK, or an MT_ERR_ code (as microtrain's NumericError / InputError: no weight changed,",
            " * except the layers already updated when operator reordering is on). */",
            f"int32_t mt_train_step(const {in_t} *x, const int32_t *labels, double *loss);",
            "/* Forward pass only; the fp32 logits (MT_BATCH x MT_CLASSES) are at mt_arena + "
            f"{PLAN_PREFIX}_HEAD_LOGITS_OFFSET. */",
            f"void mt_forward(const {in_t} *x);",
            "", "#endif /* MT_TRAIN_STEP_H_ */", ""]
        return "\n".join(lines)

    def _finite_check(self, a, what, code):
        n = a.size
        return [f"    if (!mt_all_finite({self.array_expr(a, 'float *')}, {n})) {{ /* {what} */",
                f"        {code}", "    }"]

    def step_c(self):
        s = self.step
        x_name = f"act:{s.graph.input_name}"
        in_t = _CTYPE[s.specs[x_name][1]]
        B = []  # the body first: generating calls may register constants, declared above the body
        B += ["void mt_init(void)", "{", "    memset(mt_arena, 0, sizeof mt_arena);", "    mt_step_t = 0;"]
        for b in self.tail_buffers():
            B.append(f"    memcpy(mt_arena + {PLAN_PREFIX}_{c_ident(b.name).upper()}_OFFSET, "
                     f"mt_init_{c_ident(b.name)}, sizeof mt_init_{c_ident(b.name)});")
        B += ["}", ""]
        fwd = [self.call(fn, args) for fn, args in s._forward]
        x_off = f"{PLAN_PREFIX}_{c_ident(x_name).upper()}_OFFSET"
        B += [f"void mt_forward(const {in_t} *x)", "{",
              f"    memcpy(mt_arena + {x_off}, x, sizeof({in_t}) * MT_INPUT_ELEMS);"]
        B += [f"    {c}({', '.join(a)});" for c, a in fwd]
        B += ["}", ""]
        B += [f"int32_t mt_train_step(const {in_t} *x, const int32_t *labels, double *loss)", "{",
              "    for (int32_t i = 0; i < MT_BATCH; ++i) {",
              "        if (labels[i] < 0 || labels[i] >= MT_CLASSES) {", "            return MT_ERR_LABEL;",
              "        }", "    }"]
        for p in s._float_params:
            B += self._finite_check(p, "trainable fp32 parameter", "return MT_ERR_NONFINITE;")
        B += [f"    memcpy(mt_arena + {PLAN_PREFIX}_LABELS_OFFSET, labels, sizeof(int32_t) * MT_BATCH);",
              "    mt_forward(x);"]
        for entry in step_program(s)[len(s._forward):]:
            if entry[0] == "loss":
                c, a = self.call("softmax_cross_entropy_f32", s._loss_args)
                B += [f"    *loss = {c}({', '.join(a)});",
                      "    if (!isfinite(*loss)) {", "        return MT_ERR_NONFINITE;", "    }"]
                B += self._finite_check(s._loss_args[0], "loss gradient", "return MT_ERR_NONFINITE;")
                B += ["    mt_step_t += 1;"]
            elif entry[0] == "check":
                B += self._finite_check(entry[1], f"gradient of {entry[2]}",
                                        "mt_step_t -= 1;\n        return MT_ERR_NONFINITE;")
            else:
                c, a = self.call(entry[1], entry[2])
                B.append(f"    {c}({', '.join(a)});")
        B += ["    return MT_OK;", "}", ""]
        consts = [f"extern const {_CTYPE[a.dtype]} {n}[{max(a.size, 1)}];" for n, a in
                  (self.consts[k] for k in self.const_order)]
        consts += [f"extern const {_CTYPE[s.v(b.name).dtype]} mt_init_{c_ident(b.name)}"
                   f"[{max(s.v(b.name).size, 1)}];" for b in self.tail_buffers()]
        L = ["/* The training step of one (model, sparse config, options), in TrainStep.run's order. Generated by",
             f" * microtrain export-c: {s.graph.name}, config {s.cfg.name}, mode {s.opts.mode}, optimizer "
             f"{s.opts.optimizer}, lr {s.opts.lr!r}, batch {s.opts.batch}, {s.n_classes} classes;",
             f" * arena {self.plan.peak} bytes = head {self.plan.head_bytes} + tail {self.plan.tail_bytes}. */",
             "#include <math.h>", "#include <string.h>", "", "#include \"mt_train_step.h\"", "",
             "#if defined(__GNUC__)", "#define MT_ALIGNED __attribute__((aligned(MT_TRAIN_ALIGNMENT)))", "#else",
             "#define MT_ALIGNED /* align the arena to MT_TRAIN_ALIGNMENT bytes with your compiler's means */",
             "#endif", "", "uint8_t mt_arena[MT_TRAIN_ARENA_SIZE] MT_ALIGNED;",
             "static int32_t mt_step_t; /* optimizer step count (Adam's bias correction), as TrainStep.t */", ""]
        L += consts + [""] + B
        return "\n".join(L)

    def makefile(self):
        return ("# Host build of the exported step (the firmware build uses the same sources and flags).\n"
                f"CFLAGS ?= {' '.join(CFLAGS)}\n"
                "SRCS := $(wildcard *.c)\n\n"
                "libmt_train_step.a: $(SRCS:.c=.o)\n\t$(AR) rcs $@ $^\n\n"
                "clean:\n\trm -f *.o libmt_train_step.a\n")


def export_training_step(step, out_dir):
    """Write the C sources of `step` (a microtrain.train.TrainStep, before or after some steps: the trainable
    copies are exported with their current values) into out_dir: microtrain.h and the kernel .c files,
    mt_plan.h (Plan.to_c_header), mt_constants.c, mt_train_step.{h,c}, Makefile. Returns the list of paths."""
    from microtrain.weights import atomic_write_text

    if step.opts.head not in ("linear", "cosine"):
        raise ConfigError(f"head {step.opts.head!r} cannot be exported")
    if step.opts.backend != "reference":
        raise ConfigError(f"a step with backend {step.opts.backend!r} runs host GEMMs firmware has no twin of; "
                          "build the step to export with TrainOptions(backend=\"reference\")")
    ex = _Exporter(step)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources, header = firmware_sources()
    written = []
    for src in sources + [header]:
        shutil.copyfile(src, out / src.name)
        written.append(out / src.name)
    step_c = ex.step_c()  # first: it registers every constant the calls bind
    files = {"mt_plan.h": step.plan.to_c_header(prefix=PLAN_PREFIX), "mt_train_step.h": ex.step_h(),
             "mt_constants.c": ex.constants_c(), "mt_train_step.c": step_c, "Makefile": ex.makefile()}
    for name, text in files.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    return written


# ----------------------------------------------------------------------------------------------
# Host compilation (tests, `export-c --check`)
# ----------------------------------------------------------------------------------------------

def find_cc():
    """Path of gcc (or cc) on PATH, or None."""
    return shutil.which("gcc") or shutil.which("cc")


def compile_c(sources, output, include_dirs=(), shared=False, extra_flags=()):
    """Compile C sources with CFLAGS into an executable, a shared library when shared=True (adds -fPIC -shared),
    or an object file when extra_flags holds "-c". Raises ConfigError with the compiler's message when it fails or
    no compiler exists."""
    cc = find_cc()
    if cc is None:
        raise ConfigError("no C compiler (gcc or cc) on PATH: install gcc to build the exported C sources")
    cmd = [cc, *CFLAGS, *extra_flags, *[f"-I{d}" for d in include_dirs]]
    if shared:
        cmd += ["-fPIC", "-shared"]
    cmd += [str(s) for s in sources] + ["-o", str(output)] + ([] if "-c" in extra_flags else ["-lm"])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise ConfigError(f"C compilation failed ({' '.join(cmd)}):\n{res.stderr.strip()}")
    return Path(output)
