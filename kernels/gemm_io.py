"""The two ends of the host GEMM path for int8 convs and the classifier (Inference(backend="blas")).

An int8 pointwise conv or fully-connected layer is a matrix product: acc (P, Co) = (x - x_zp) (P, Ci) @ w.T
(Ci, Co), P = pixels (or samples); a standard conv is one too, over its im2col patches (P, KH * KW * Ci). On the
host that product can run in NumPy's float32 BLAS (sgemm) and still be *bit-exact*, because every value it forms is
a small integer:
  - each product w[co, ci] * (x - x_zp) is an integer (int8 times an int in [-255, 255]);
  - any partial sum, in whatever order or blocking the BLAS chooses (and with or without FMA), is the sum of a
    subset of those products, so its magnitude is at most B[co] = sum_ci |w[co, ci]| * max|x - x_zp|;
  - float32 represents every integer up to 2^24 exactly, so when B[co] <= 2^24 no addition ever rounds and the
    float result equals the int32 sum that TFLM's loop computes.
`exact_in_f32` checks that bound per layer once, when the layer is bound; a layer that fails it (real weights
would need >= 518 input channels of near-full-scale weights) keeps the integer loop kernel.

widen_s8_f32 (1x1, FC) or im2col_f32 (KxK) forms the GEMM's left operand; requantize_acc_f32_s8 turns its exact
sums into int8 with the same acc + bias wrap, mbqm and clamp as pointwise_conv_s8 / fully_connected_s8, so y is
identical bit for bit.

Requantization in float64 (requant_f64_params). TFLM's double-rounding MultiplyByQuantizedMultiplier is
RDBPOT(SRDHM(a * 2^left, M), right) with left = max(shift, 0), right = max(-shift, 0), and
  SRDHM(x, M)   = floor((x * M + 2^30) / 2^31)      (round half up; requant.srdhm's docstring derives it),
  RDBPOT(s, e)  = s / 2^e rounded half away from zero.
With mf = M * 2^(left - 31) and rs = 2^-right (both exact float64), for |a| < lim = 2^(21 - left):
  a * mf is exact (|a * 2^left| < 2^21 and M < 2^31: at most 52 significant bits), + 0.5 is exact (the sum still
  has 52 bits: 21 integer and 31 fraction), so floor(a * mf + 0.5) == SRDHM exactly; |s| < 2^21, so t = s * rs is
  exact and trunc(t + copysign(0.5, t)) is RDBPOT (t + 0.5 again fits in 52 bits). No step rounds, so the float64
  result equals the integer one for every such a; in that range acc + bias cannot wrap (|a| < 2^31) and mbqm's
  pre-shift cannot overflow. Elements with |a| >= lim (rare: real accumulators are far below 2^21) are redone with
  the integer primitives, row by row. The float form vectorises (AVX2 has 4-lane float64 floor, multiply and
  compare; it has no 64-bit integer multiply or arithmetic shift, which the integer form needs).
As computed (_row_f64), with fewer vector operations and the same values: the bias is folded into a per-channel
offset, floor(acc * mf + (bias * mf + 0.5)), exact when also |bias| < lim (bias * mf + 0.5 is then exact, |acc| <
2 lim makes acc * mf exact, and the sum is the exact (acc + bias) * mf + 0.5); the conversion to int32 truncates, so
it replaces trunc; + y_zp and the clamp run in int32. Channels with |bias| >= lim are redone whole.
The per-element test |a| >= lim is skipped where it cannot fire: a layer binds rq with reach[co], a bound on
|acc| from its weights (weight_reach: sum_k |w[co, k]| * max|x - x_zp|, or the int8 worst case 127 * K * max|x -
x_zp| for a weight that trains), and each call first counts the channels with reach[co] + |bias[co]| >= lim[co]
(requant_checked_channels: O(Co), with the bias as it is now, since biases may train). With none, the row loop
runs without the test (0.56-0.58 -> 0.47-0.49 ns per element, one core, no mask; 0.32 as computed now); with a
few (real int8 models saturate the int32 bias of some dead channels), only those channels are scanned after it
(requant_row_f64).
Likewise the in-range flags (the 1-bit mask's bits) are only formed when a mask is written.

One rounding where the clamp hides negative results (requant_one_rounding: act_min >= y_zp, the ReLU / ReLU6 layers,
and right <= 21 in every channel). With s = SRDHM = floor(v + 0.5), v = a * mf, RDBPOT of s >= 0 is
(s + h) >> right with h = 2^(right - 1) (0 if right = 0: RDBPOT by 0 is s), i.e. floor((s + h) / 2^right), and since
h is an integer, floor((floor(v + 0.5) + h) / 2^right) = floor((v + 0.5 + h) / 2^right): the two roundings are one.
So q = trunc(acc * mf2 + off2) with mf2 = mf * 2^-right and off2 = (bias * mf + 0.5 + h) * 2^-right (the conversion
to int32 truncates; truncation is the floor for the nonnegative arguments that s >= 0 gives). When s < 0, TFLM's q
is <= 0 and so is this one (the argument is then below 1/2), and both clamp to act_min, since q + y_zp <= y_zp <=
act_min. Exact: in units of 2^(left - 31 - right) every term is an integer (acc * M, bias * M, 2^(30 - left), and
2^(30 + right) for h), and the sum a * M + 2^(30 - left) + 2^(30 + right) stays below 2^53 for |a| < lim and
right <= 21 (|a * M| < 2^52, 2^51, 2^30), as do the partial sums (|acc|, |bias| < 2 lim). Per element: a convert,
a multiply, an add and a truncating convert, against the two-rounding form's floor, multiply, sign select and add on
top (AVX2, one core, 64-pixel rows: 0.64 -> 0.32 ns per element).
The in-range flag (the mask's bit) is v >= act_min and v <= act_max for TFLM's v = q + y_zp before the clamp. Its
upper half is the same with either q (they agree where q >= 1, and where TFLM's q <= 0 both are <= act_max - y_zp,
which is >= 0). So is its lower half where act_min > y_zp (both sides need q >= act_min - y_zp >= 1). Where act_min
== y_zp it needs TFLM's q >= 0, which for right >= 1 holds iff s > -h (RDBPOT of a negative s is
-floor((-s + h) / 2^right)), i.e. floor(v + 0.5) >= 1 - h, i.e. v + 0.5 + h >= 1, and for right = 0 iff
v + 0.5 >= 0: so the flag also tests t >= thr on the same exact t = acc * mf2 + off2, with thr = 2^-right (0 if
right = 0); where act_min > y_zp that test holds whenever the first does (q >= 1 means t >= 1).
Host only: firmware runs the loop kernels (their C twins); the GEMM's float32 buffers are host memory outside
the planned arena (Inference.host_bytes).
"""

import numpy as np
from numba import njit, prange

from microtrain.config import NJIT, NJIT_PARALLEL

from .mask import mask_check, mask_flush_row, mask_pack_row, mask_put_bit
from .requant import INT32_MIN, clamp, mbqm
from .scratch import (SCRATCH_W8, SCRATCH_WF, chunk_bounds, scratch_acc_like, scratch_w_f32,
                      scratch_w_i8)
from .threads import ROW_ELEMENTS, STREAM_ELEMENTS, parallel_chunks, threads_for, threads_restore


F32_EXACT_INT = 1 << 24  # every integer of magnitude <= 2^24 is a float32
INT8_WEIGHT_MAX = 127  # int8 weights are symmetric: model.py refuses -128, updates saturate at +-127 (update.py)


def widest_input(x_zp):
    """max |x - x_zp| over int8 x in [-128, 127]."""
    return max(127 - int(x_zp), int(x_zp) + 128)


def weight_reach(w, x_zp):
    """(Co,) int64: reach[co] = sum_k |w[co, k]| * max|x - x_zp| >= |acc[co]| for any int8 input (w (Co, K) s8,
    the same bound whatever the order of the sums or the padding, whose taps add 0)."""
    return np.abs(w.astype(np.int64)).sum(axis=1) * widest_input(x_zp)


def exact_in_f32(w, x_zp):
    """True iff sgemm sums of w (Co, Ci) s8 against int8 inputs with zero point x_zp are exact (see above)."""
    return int(weight_reach(w, x_zp).max(initial=0)) <= F32_EXACT_INT


@njit(**NJIT_PARALLEL)
def widen_s8_f32(xf, x, x_zp):
    """xf[p, c] = x[p, c] - x_zp as float32 (exact: an integer in [-255, 255]).

    Layout:    xf (P, C) f32 out; x (P, C) s8 (an NHWC activation viewed as pixels x channels), both C-contiguous.
    Method:    float32(x) - float32(x_zp), in one flat loop per thread chunk. Both forms matter for speed: the
               integer form float32(int32(x) - x_zp) is computed in int64 by Numba's promotion, and AVX2 has no
               packed int64 -> float conversion, so that loop ran scalar (0.9 ns per element against 0.10 ns, one
               thread); a loop over C alone (8-16 in MCUNet's first blocks) is shorter than one vectorised iteration.
    Ownership: writes every element of xf; allocates nothing.
    Parallel:  prange over one contiguous chunk of elements per thread; disjoint writes.
    """
    P, C = xf.shape
    if x.shape[0] != P or x.shape[1] != C:
        raise ValueError("widen_s8_f32: inconsistent shapes")
    n = P * C
    src = x.reshape(n)
    dst = xf.reshape(n)
    z = np.float32(x_zp)
    prev = threads_for(n // STREAM_ELEMENTS)
    chunks = parallel_chunks(n)
    if chunks == 1:  # one thread: no parallel launch (threads.py, "Serial calls")
        _widen_chunk(dst, src, z, 0, 1)
    else:
        for t in prange(chunks):
            _widen_chunk(dst, src, z, t, chunks)
    threads_restore(prev)


@njit(inline="always", **NJIT)
def _widen_chunk(dst, src, z, t, chunks):
    """widen_s8_f32's chunk t of `chunks`: dst[j] = float32(src[j]) - z over one contiguous range."""
    j0, j1 = chunk_bounds(dst.shape[0], chunks, t)
    s_s = src[j0:j1]
    d_s = dst[j0:j1]
    for j in range(d_s.shape[0]):  # flat and float: vectorised
        d_s[j] = np.float32(s_s[j]) - z


@njit(**NJIT_PARALLEL)
def im2col_f32(cols, x, x_zp, kh, kw, stride, pad):
    """cols[p, (ky * KW + kx) * Ci + ci] = x[n, oy*stride - pad + ky, ox*stride - pad + kx, ci] - x_zp, float32.

    Layout:    cols (N * OH * OW, KH * KW * Ci) f32 out, rows in (n, oy, ox) order, columns in the OHWI weight's
               (ky, kx, ci) order, so conv2d = cols @ w.reshape(Co, -1).T; x (N, H, W, Ci) s8 (an int8 conv's
               input, x_zp its zero point) or f32 (an fp32 conv's, x_zp = 0); OH = (H + 2*pad - KH) // stride + 1
               (and OW alike).
    Exactness: float32(x) - float32(x_zp) is exact for int8 x and zp (integers below 2^8); x - 0.0 == x for floats.
    Padding:   taps outside the image are 0, as TFLM pads with x_zp (x_zp - x_zp = 0) and fp32 convs with 0.
    Method:    per output row and kernel row ky, the input row is converted once into a zero-padded float32 stack row
               (W + 2 * pad pixels); each output pixel's KW * Ci columns of that kernel row are then one contiguous
               run of it, copied without a test per tap. (Converting per tap, with a bounds test each: 2.2-2.3 ms
               for the stem's (25, 128, 128, 3) 3x3 stride 2 on one thread.) Rows wider than the stack row
               (SCRATCH_WF floats) take the per-tap loop.
    Ownership: writes every element of cols; allocates nothing (a per-thread stack row).
    Parallel:  prange over one contiguous chunk of (n, oy) output rows per thread; disjoint writes.
    """
    N, H, W, CI = x.shape
    OH = (H + 2 * pad - kh) // stride + 1
    OW = (W + 2 * pad - kw) // stride + 1
    if cols.shape[0] != N * OH * OW or cols.shape[1] != kh * kw * CI:
        raise ValueError("im2col_f32: inconsistent shapes")
    z = np.float32(x_zp)
    rows = N * OH
    prev = threads_for(cols.size)
    chunks = parallel_chunks(rows)
    if chunks == 1:  # one thread: no parallel launch (threads.py, "Serial calls")
        _im2col_chunk(cols, x, z, kh, kw, stride, pad, OH, OW, 0, 1)
    else:
        for t in prange(chunks):
            _im2col_chunk(cols, x, z, kh, kw, stride, pad, OH, OW, t, chunks)
    threads_restore(prev)


@njit(inline="always", **NJIT)
def _im2col_chunk(cols, x, z, kh, kw, stride, pad, OH, OW, t, chunks):
    """im2col_f32's output rows of chunk t of `chunks` (see its Method)."""
    N, H, W, CI = x.shape
    RW = kw * CI  # one kernel row's columns
    WP = (W + 2 * pad) * CI  # the padded row, in elements
    xp = scratch_w_f32()  # (SCRATCH_WF,) the padded, converted input row: xp[(ix + pad) * Ci + ci]
    r0, r1 = chunk_bounds(N * OH, chunks, t)
    for r in range(r0, r1):
        n = r // OH
        oy = r - n * OH
        if WP > SCRATCH_WF:
            _im2col_row_taps(cols, x, z, kh, kw, stride, pad, n, oy, r * OW, OW)
            continue
        for ky in range(kh):
            iy = oy * stride - pad + ky
            c0 = ky * RW
            if iy < 0 or iy >= H:
                for ox in range(OW):
                    d_s = cols[r * OW + ox, c0:c0 + RW]
                    for j in range(RW):
                        d_s[j] = 0.0
                continue
            for j in range(pad * CI):
                xp[j] = 0.0
                xp[WP - 1 - j] = 0.0
            src = x[n, iy].reshape(W * CI)
            body = xp[pad * CI:pad * CI + W * CI]
            for j in range(W * CI):  # flat: vectorised
                body[j] = np.float32(src[j]) - z
            for ox in range(OW):
                d_s = cols[r * OW + ox, c0:c0 + RW]
                s_s = xp[ox * stride * CI:ox * stride * CI + RW]
                for j in range(RW):
                    d_s[j] = s_s[j]


@njit(**NJIT)
def _im2col_row_taps(cols, x, z, kh, kw, stride, pad, n, oy, p0, OW):
    """im2col_f32's columns of output row (n, oy) (cols rows p0 .. p0 + OW - 1), converted tap by tap: for rows too
    wide for the stack row."""
    H = x.shape[1]
    W = x.shape[2]
    CI = x.shape[3]
    for ox in range(OW):
        p = p0 + ox
        for ky in range(kh):
            iy = oy * stride - pad + ky
            for kx in range(kw):
                ix = ox * stride - pad + kx
                c0 = (ky * kw + kx) * CI
                if iy < 0 or iy >= H or ix < 0 or ix >= W:
                    for ci in range(CI):
                        cols[p, c0 + ci] = 0.0
                else:
                    for ci in range(CI):
                        cols[p, c0 + ci] = np.float32(x[n, iy, ix, ci]) - z


RQ_ROWS = 4  # requant_f64_params' rows: mf, rs, lim, reach


def requant_f64_params(mult, shift, reach=None):
    """(4, Co) float64 of the float64 requantization, per channel: mf = M * 2^(left - 31), rs = 2^-right,
    lim = 2^(21 - left) (the module docstring proves the float64 form exact for |acc + bias| < lim) and reach, a
    bound on |acc| (+inf where none is known: every element is then tested against lim).

    mult, shift (Co,) s32 from requant.conv_multipliers; reach (Co,) or a scalar, integers (weight_reach, or the
    worst case of a weight that trains), or None. Host, once per layer when it is bound (the values are powers
    of two times an int32, or integers below 2^53: exact in float64)."""
    mult = np.asarray(mult, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    rq = np.empty((RQ_ROWS, mult.shape[0]), np.float64)
    rq[0] = np.ldexp(mult.astype(np.float64), (left - 31).astype(np.int32))
    rq[1] = np.ldexp(1.0, (-right).astype(np.int32))
    rq[2] = np.ldexp(1.0, (21 - left).astype(np.int32))
    rq[3] = np.inf if reach is None else np.asarray(reach, np.int64)
    return rq


@njit(**NJIT)
def _may_reach_limit(rq, bias, co):
    """True if channel co may see |acc + bias| >= lim: reach[co] + |bias[co]| >= lim[co] (the bias as it is now;
    it may train between calls)."""
    return rq[3, co] + abs(np.float64(bias[co])) >= rq[2, co]


@njit(**NJIT)
def requant_checked_channels(rq, bias):
    """How many channels may see |acc + bias| >= lim (_may_reach_limit). 0 means no element needs the limit test.
    O(Co), once per kernel call."""
    n = 0
    for co in range(rq.shape[1]):
        if _may_reach_limit(rq, bias, co):
            n += 1
    return n


@njit(**NJIT)
def _requant_int(acc, bias, mult, shift, yz):
    """The integer form: int32 acc + bias (C's wrapping add), mbqm, + y_zp; int64 result before the clamp."""
    a = np.int64(acc) + np.int64(bias)  # exact: |acc| <= 2^24
    a = ((a - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN
    return mbqm(a, mult, shift) + yz


@njit(**NJIT)
def _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, flags, check, one):
    """requant_row_f64's float64 pass; returns whether any |acc + bias| reached its limit (only if check).

    Per element (module docstring, "Requantization in float64"): s = floor(acc * mf + off) with off = bias * mf +
    0.5 (the caller's, per channel), t = s * rs, then RDBPOT's half away from zero as a conversion to int32 of
    t + copysign(0.5, t) (the conversion truncates), + y_zp and the clamp in int32. Exact where |acc + bias| < lim
    and |bias| < lim (then bias * mf + 0.5 and acc * mf are exact and their sum is (acc + bias) * mf + 0.5 exactly:
    a multiple of 2^(left - 31) below 2^21 + 1). (One core, no mask: 0.485 ns per element with the bias added
    per element, a float64 trunc and a float64 clamp; 0.39 with the int32 tail; 0.32 with the bias folded.)
    If one (requant_one_rounding said so): q = int32(t), t = acc * mf2 + off2, the one-rounding form (module
    docstring, "One rounding"), and the flag also tests t >= thr; mf2, off2, thr from off[Co:4 * Co]
    (requant_offsets).

    flags, check and one are loop-invariant: requant_row_f64 calls this with literal values, so after inlining LLVM
    compiles one loop per combination, each without the work it does not need (a runtime test inside one loop
    measured 0.67 against 0.59 ns per element with the mask and no check)."""
    W, CO = y2.shape
    mf2 = off[CO:2 * CO]
    off2 = off[2 * CO:3 * CO]
    thr = off[3 * CO:4 * CO]
    far = False
    for ox in range(W):
        a_s = acc2[ox]
        f_s = flag[ox * CO:ox * CO + CO]
        y_s = y2[ox]
        for co in range(CO):  # float64 lanes, no branch
            a = np.float64(a_s[co])
            if one:
                t = a * mf2[co] + off2[co]
                v = np.int32(np.int32(t) + yz)
                if flags:
                    f_s[co] = np.int8(v >= lo) & np.int8(v <= hi) & np.int8(t >= thr[co])
            else:
                t = np.floor(a * rq[0, co] + off[co]) * rq[1, co]
                v = np.int32(np.int32(t + np.copysign(0.5, t)) + yz)
                if flags:
                    f_s[co] = np.int8(v >= lo) & np.int8(v <= hi)
            y_s[co] = np.int8(min(max(v, lo), hi))
            if check:
                far |= abs(a + np.float64(bias[co])) >= rq[2, co]
    return far


@njit(**NJIT)
def _redo_channel(y2, flag, acc2, bias, mult, shift, y_zp, act_min, act_max, flags, co, lim, every):
    """Channel co's elements with |acc + bias| >= lim (every element if every), redone with the integer primitives
    (acc + bias wrapped to int32, requant.mbqm, clamp)."""
    W, CO = y2.shape
    for ox in range(W):
        if every or abs(np.float64(acc2[ox, co]) + np.float64(bias[co])) >= lim:
            v = _requant_int(acc2[ox, co], bias[co], mult[co], shift[co], np.int64(y_zp))
            if flags:
                flag[ox * CO + co] = np.int8(v >= act_min and v <= act_max)
            y2[ox, co] = np.int8(clamp(v, act_min, act_max))


@njit(**NJIT)
def requant_offsets(off, bias, rq):
    """off[co] = bias[co] * mf[co] + 0.5, the float64 pass's per-channel offsets (_row_f64), formed once per call
    or thread chunk with the bias as it is now (it may train); where 4 * Co fits off, also the one-rounding form's
    off[Co + co] = mf2 = mf * rs, off[3 * Co + co] = thr = rs (0 if right = 0: the flag's threshold) and
    off[2 * Co + co] = off2 = (bias * mf + 0.5 + h) * rs, h = 2^(right - 1) or 0
    (module docstring, "One rounding"; rs = 2^-right, so h * rs = 1/2 for right >= 1, and off2 = (bias * mf + 0.5)
    * rs + 1/2: the same exact value, as (bias * mf + 0.5 + h) is exact and scaling by rs is). off: a float64 stack row
    (scratch_acc_like(rq)). Returns bias_far: True if some |bias| >= lim (those channels' offsets may have rounded,
    so requant_row_f64 redoes them whole), or if Co exceeds off (no offsets: requant_row_f64 uses the integer
    primitives)."""
    CO = bias.shape[0]
    if CO > off.shape[0]:
        return True
    both = 4 * CO <= off.shape[0]
    bias_far = False
    for co in range(CO):
        b = np.float64(bias[co])
        o = b * rq[0, co] + 0.5
        off[co] = o
        bias_far |= abs(b) >= rq[2, co]
        if both:
            rs = rq[1, co]
            off[CO + co] = rq[0, co] * rs
            off[2 * CO + co] = o * rs + (0.5 if rs < 1.0 else 0.0)
            off[3 * CO + co] = rs if rs < 1.0 else 0.0
    return bias_far


ONE_ROUNDING_MAX_RIGHT = 21  # the one-rounding form is exact for right shifts up to this (module docstring)


@njit(**NJIT)
def requant_one_rounding(rq, off, y_zp, act_min):
    """True if requant_row_f64 may use the one-rounding form (module docstring, "One rounding"): act_min >= y_zp
    (every negative result clamps to act_min), right <= ONE_ROUNDING_MAX_RIGHT in every channel (rs >= 2^-21), and
    off holds mf2, off2 and thr (requant_offsets: 4 * Co fits). O(Co), once per call or thread chunk."""
    CO = rq.shape[1]
    if act_min < y_zp or 4 * CO > off.shape[0]:
        return False
    for co in range(CO):
        if rq[1, co] < 2.0 ** -ONE_ROUNDING_MAX_RIGHT:
            return False
    return True


@njit(**NJIT)
def requant_row_f64(y2, flag, acc2, bias, rq, off, bias_far, mult, shift, y_zp, act_min, act_max, flags, checked,
                    one):
    """Rows of int8 outputs (and, if flags, in-range flags) from exact integer sums, as TFLM requantizes them.

    Layout:    y2 (W, Co) s8 out (an image row, or a block of pixels); flag (>= W * Co,) int8 out if flags,
               flag[w * Co + co] = 1 iff the value before clamping lies in [act_min, act_max] (the 1-bit mask's
               bit, kernels/mask.py), else 0 (unused if not flags); acc2 (W, Co) int32 or float32 exact integer
               sums (before the bias); bias (Co,) s32; rq (4, Co) = requant_f64_params(mult, shift, reach);
               mult, shift (Co,) s32; checked = requant_checked_channels(rq, bias) and bias_far =
               requant_offsets(off, bias, rq) (the caller's, once per call or thread chunk: off holds the offsets);
               one = requant_one_rounding(rq, off, y_zp, act_min) (the caller's, likewise).
    Method:    the float64 form (module docstring; _row_f64) over the whole block, branch-free so it vectorises,
               with the per-channel offsets bias * mf + 0.5, or its one-rounding form if one. Elements with
               |acc + bias| >= lim, and every element of a channel with |bias| >= lim (its offset may have rounded),
               are then redone with the integer primitives. Which elements may be beyond: none if checked == 0
               (reach + |bias| < lim bounds both); if a few channels may be (checked <= Co / 8: real layers with a
               saturated int32 bias in some channels), the loop runs without the test and those channels are
               scanned after it; else the loop tests every element and, if one was beyond or a bias is, every
               channel is scanned. Rows with more channels than off holds (no offsets) are written with the integer
               primitives. The shared tail of requantize_acc_f32_s8, requantize_acc_f32_s8_mask and
               depthwise_host.depthwise_conv_s8_host.
    """
    W, CO = y2.shape
    if CO > off.shape[0]:  # no offsets (requant_offsets): the integer primitives
        for co in range(CO):
            _redo_channel(y2, flag, acc2, bias, mult, shift, y_zp, act_min, act_max, flags, co, 0.0, True)
        return
    yz, lo, hi = np.int32(y_zp), np.int32(act_min), np.int32(act_max)
    if checked * 8 > CO:
        if flags and one:
            far = _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, True, True, True)
        elif flags:
            far = _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, True, True, False)
        elif one:
            far = _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, False, True, True)
        else:
            far = _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, False, True, False)
        if far or bias_far:
            for co in range(CO):
                _redo_channel(y2, flag, acc2, bias, mult, shift, y_zp, act_min, act_max, flags, co, rq[2, co],
                              abs(np.float64(bias[co])) >= rq[2, co])
        return
    if flags and one:
        _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, True, False, True)
    elif flags:
        _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, True, False, False)
    elif one:
        _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, False, False, True)
    else:
        _row_f64(y2, flag, acc2, bias, rq, off, yz, lo, hi, False, False, False)
    if checked:
        for co in range(CO):
            if _may_reach_limit(rq, bias, co):
                _redo_channel(y2, flag, acc2, bias, mult, shift, y_zp, act_min, act_max, flags, co, rq[2, co],
                              abs(np.float64(bias[co])) >= rq[2, co])


@njit(**NJIT_PARALLEL)
def requantize_acc_f32_s8(y, acc, bias, rq, mult, shift, y_zp, act_min, act_max):
    """y[p, co] = clamp(mbqm(wrap32(acc[p, co] + bias[co]), mult[co], shift[co]) + y_zp), the int8 output.

    Layout:    y (P, Co) s8 out; acc (P, Co) f32 holding exact integer sums (see the module docstring);
               bias (Co,) s32; rq (4, Co) f64 = requant_f64_params(mult, shift, reach); mult, shift (Co,) s32 from
               requant.conv_multipliers.
    Ownership: writes every element of y; allocates nothing.
    Exactness: acc is an exact integer, so int64(acc) is the int32 accumulator of TFLM's loop; the float64 form
               (module docstring) equals the integer tail of pointwise_conv_s8 (acc + bias wrapped to int32,
               TFLM's double-rounding MultiplyByQuantizedMultiplier, + y_zp, clamp) wherever |acc + bias| < lim;
               any element beyond it is rewritten with those integer primitives (requant_row_f64).
    Parallel:  prange over one contiguous block of rows per thread; disjoint writes.
    """
    P, CO = y.shape
    if (acc.shape[0] != P or acc.shape[1] != CO or bias.shape[0] != CO or mult.shape[0] != CO or shift.shape[0] != CO
            or rq.shape[0] != RQ_ROWS or rq.shape[1] != CO):
        raise ValueError("requantize_acc_f32_s8: inconsistent shapes")
    checked = requant_checked_channels(rq, bias)
    prev = threads_for(y.size // ROW_ELEMENTS)
    chunks = parallel_chunks(P)
    if chunks == 1:  # one thread: no parallel launch (threads.py, "Serial calls")
        _requant_chunk(y, acc, bias, rq, mult, shift, y_zp, act_min, act_max, checked, 0, 1)
    else:
        for t in prange(chunks):
            _requant_chunk(y, acc, bias, rq, mult, shift, y_zp, act_min, act_max, checked, t, chunks)
    threads_restore(prev)


@njit(inline="always", **NJIT)
def _requant_chunk(y, acc, bias, rq, mult, shift, y_zp, act_min, act_max, checked, t, chunks):
    """requantize_acc_f32_s8's rows of chunk t of `chunks`."""
    p0, p1 = chunk_bounds(y.shape[0], chunks, t)
    flag = scratch_w_i8()  # unused (no flags); one stack row so every caller shares a specialisation
    off = scratch_acc_like(rq)
    bias_far = requant_offsets(off, bias, rq)
    one = requant_one_rounding(rq, off, y_zp, act_min)
    requant_row_f64(y[p0:p1], flag, acc[p0:p1], bias, rq, off, bias_far, mult, shift, y_zp, act_min, act_max,
                    False, checked, one)


@njit(**NJIT_PARALLEL)
def requantize_acc_f32_s8_mask(y, mask, acc, bias, rq, mult, shift, y_zp, act_min, act_max):
    """requantize_acc_f32_s8 over an image-shaped tensor, also writing the training step's 1-bit clamp mask.

    Layout:    y (N, H, W, Co) s8 out; mask (N * H, ceil(W * Co / 8)) u8 out (layout in kernels/mask.py), or
               mask.NO_MASK; acc (N, H, W, Co) f32 exact integer sums; bias (Co,) s32; rq (4, Co) f64 =
               requant_f64_params(mult, shift, reach); mult, shift (Co,) s32.
    Mask:      bit (n, h, w, co) = 1 iff the value before clamping, mbqm(acc + bias) + y_zp, lies in
               [act_min, act_max]: the same bit pointwise_conv_s8 / conv2d_s8 write, so a training step's int8
               forward on the GEMM path leaves the arena exactly as the loop kernels do.
    Method:    per image row, requant_row_f64 writes y and (if a mask is written) one in-range flag per element
               into a per-thread stack row, then the flags are packed 8 to a byte; a row longer than the stack row
               (W * Co > SCRATCH_W8) is written element by element with the integer primitives instead.
    Ownership: writes every element of y and, unless NO_MASK, every byte of mask; allocates nothing.
    Parallel:  prange over one contiguous chunk of image rows (n, h) per thread; rows of the mask start on a byte,
               so writes are disjoint.
    """
    N, H, W, CO = y.shape
    if (acc.shape[0] != N or acc.shape[1] != H or acc.shape[2] != W or acc.shape[3] != CO or bias.shape[0] != CO
            or mult.shape[0] != CO or shift.shape[0] != CO or rq.shape[0] != RQ_ROWS or rq.shape[1] != CO):
        raise ValueError("requantize_acc_f32_s8_mask: inconsistent shapes")
    write_mask = mask_check(mask, N * H, W, CO)
    checked = requant_checked_channels(rq, bias)
    prev = threads_for(y.size // ROW_ELEMENTS)
    chunks = parallel_chunks(N * H)
    if chunks == 1:  # one thread: no parallel launch (threads.py, "Serial calls")
        _requant_mask_chunk(y, mask, acc, bias, rq, mult, shift, y_zp, act_min, act_max, write_mask, checked, 0, 1)
    else:
        for t in prange(chunks):
            _requant_mask_chunk(y, mask, acc, bias, rq, mult, shift, y_zp, act_min, act_max, write_mask, checked,
                                t, chunks)
    threads_restore(prev)


@njit(inline="always", **NJIT)
def _requant_mask_chunk(y, mask, acc, bias, rq, mult, shift, y_zp, act_min, act_max, write_mask, checked, t,
                        chunks):
    """requantize_acc_f32_s8_mask's image rows of chunk t of `chunks` (the offsets formed once per chunk)."""
    N, H, W, CO = y.shape
    L = W * CO
    yz = np.int64(y_zp)
    flag = scratch_w_i8()  # (SCRATCH_W8,) the row's in-range flags, 0 or 1
    off = scratch_acc_like(rq)
    bias_far = requant_offsets(off, bias, rq)
    one = requant_one_rounding(rq, off, y_zp, act_min)
    r0, r1 = chunk_bounds(N * H, chunks, t)
    for r in range(r0, r1):
        n = r // H
        h = r - n * H
        if L <= SCRATCH_W8:
            requant_row_f64(y[n, h], flag, acc[n, h], bias, rq, off, bias_far, mult, shift, y_zp, act_min, act_max,
                            write_mask, checked, one)
            if write_mask:
                mask_pack_row(mask, r, flag, L)
        else:  # no room for the flags: the integer primitives, element by element
            byte = 0
            for ox in range(W):
                for co in range(CO):
                    v = _requant_int(acc[n, h, ox, co], bias[co], mult[co], shift[co], yz)
                    y[n, h, ox, co] = np.int8(clamp(v, act_min, act_max))
                    if write_mask:
                        byte = mask_put_bit(mask, r, ox * CO + co, byte, v >= act_min and v <= act_max)
            if write_mask:
                mask_flush_row(mask, r, L, byte)
