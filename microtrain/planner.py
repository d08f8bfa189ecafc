"""Memory planning: buffer lifetimes in, byte offsets out. The planner owns no memory.

GreedyPlanner re-implements TFLite Micro's GreedyMemoryPlanner offset for offset, LinearPlanner its
keep-everything baseline; both add what training needs and TFLM lacks (in-place aliases). PlanBuilder
turns named requests into an immutable Plan (head + tail), the exact layout that microtrain.arena.Arena
hands out and that firmware reproduces from Plan.to_c_header().
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from microtrain.errors import PlanError

# Byte alignment of every planned and persistent buffer: TFLM's MicroArenaBufferAlignment()
# (micro_arena_constants.h), "a common requirement for SIMD extensions".
ALIGNMENT = 16

REGIONS = ("head", "tail")

# The categories the engine uses (free strings are allowed; these are the conventional ones).
CATEGORIES = ("input", "output", "activation", "saved", "act_grad", "weight_grad",
              "trainable", "optimizer", "quant_params", "scratch")

PLAN_FORMAT = "microtrain-plan"
PLAN_VERSION = 1


def align_up(nbytes: int, alignment: int = ALIGNMENT) -> int:
    """nbytes rounded up to a multiple of alignment (TFLM AlignSizeUp in memory_helpers.h)."""
    return -(-nbytes // alignment) * alignment


def reverse_sort(values, ids):
    """Sort (values, ids) by value, descending, keeping the given order among equal values.

    The semantics of TFLM's ReverseSortInPlace (greedy_memory_planner.cc): a bubble sort that swaps
    neighbours only when the left value is strictly smaller, hence stable. Python's sort is stable too,
    so sorting on -value gives the same permutation in O(n log n).
    """
    pairs = sorted(zip(values, ids), key=lambda p: -p[0])
    return [v for v, _ in pairs], [i for _, i in pairs]


def _as_int(x, what: str) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise PlanError(f"{what} must be an integer, got {x!r}")
    return int(x)


def _first_conflict(offset, size, first, last, group, persistent):
    """The first pair (i, j), i < j, of buffers that are live at the same time and share a byte.

    O(N^2) like TFLM's DoAnyBuffersOverlap ("only use for testing"), one NumPy row per buffer.
    Lifetimes are inclusive ([first, last], so last == t and first == t overlap); persistent buffers are
    live at all times; buffers of one alias group may share bytes; zero-byte buffers hold no byte.
    Returns None when there is no conflict.
    """
    offset, size = np.asarray(offset, np.int64), np.asarray(size, np.int64)
    first, last = np.asarray(first, np.int64), np.asarray(last, np.int64)
    group, persistent = np.asarray(group, np.int64), np.asarray(persistent, bool)
    end = offset + size
    for i in range(len(offset) - 1):
        if size[i] == 0:
            continue
        j = slice(i + 1, None)
        in_time = persistent[i] | persistent[j] | ((first[j] <= last[i]) & (first[i] <= last[j]))
        in_space = (offset[j] < end[i]) & (offset[i] < end[j]) & (size[j] > 0)
        clash = in_time & in_space & (group[j] != group[i])
        if clash.any():
            return i, i + 1 + int(np.argmax(clash))
    return None


class _Planner:
    """Shared bookkeeping of the planners: buffers in add order, alias groups, lazy offsets.

    A buffer added with `alias_of=k` shares its bytes with buffer k (an in-place op: ReLU, depthwise,
    elementwise add writing over its input). The alias must not be larger than k. Every alias group is
    planned as ONE buffer: the size of its root (the first, non-alias member), the lifetime the hull of
    its members' lifetimes [min first, max last]; every member then gets the root's offset.
    """

    def __init__(self):
        self._size: list[int] = []
        self._first: list[int] = []
        self._last: list[int] = []
        self._root: list[int] = []
        self._offsets: list[int] | None = None  # computed on demand, like TFLM's need_to_calculate_offsets_

    def add_buffer(self, size, first, last, alias_of=None) -> int:
        """Add a buffer of `size` bytes live over [first, last] (inclusive); returns its id (0, 1, ...)."""
        size, first, last = _as_int(size, "size"), _as_int(first, "first"), _as_int(last, "last")
        if size < 0:
            raise PlanError(f"buffer size must be >= 0 bytes, got {size}")
        if first > last:
            raise PlanError(f"buffer lifetime [{first}, {last}] ends before it starts: pass first <= last")
        n = len(self._size)
        root = n
        if alias_of is not None:
            target = _as_int(alias_of, "alias_of")
            if not 0 <= target < n:
                raise PlanError(f"alias_of={target} is not the id of an earlier buffer (0..{n - 1})")
            if size > self._size[target]:
                raise PlanError(f"an alias ({size} bytes) must not be larger than its target buffer {target} "
                                f"({self._size[target]} bytes): request the target at least as large")
            root = self._root[target]
        self._size.append(size)
        self._first.append(first)
        self._last.append(last)
        self._root.append(root)
        self._offsets = None
        return n

    def __len__(self) -> int:
        return len(self._size)

    def offsets(self) -> list[int]:
        """Byte offset of every buffer, in add order."""
        if self._offsets is None:
            roots = [i for i, r in enumerate(self._root) if r == i]
            first = {r: self._first[r] for r in roots}
            last = {r: self._last[r] for r in roots}
            for i, r in enumerate(self._root):  # alias groups: the hull of the members' lifetimes
                first[r] = min(first[r], self._first[i])
                last[r] = max(last[r], self._last[i])
            root_offset = self._place(roots, first, last)
            self._offsets = [root_offset[r] for r in self._root]
        return list(self._offsets)

    def offset(self, buffer_id: int) -> int:
        return self.offsets()[buffer_id]

    def peak(self) -> int:
        """Bytes the plan needs: max over buffers of offset + size (TFLM GetMaximumMemorySize)."""
        return max((o + s for o, s in zip(self.offsets(), self._size)), default=0)

    def find_overlap(self):
        """The first pair of ids live at the same time that share a byte, or None (TFLM DoAnyBuffersOverlap)."""
        n = len(self._size)
        return _first_conflict(self.offsets(), self._size, self._first, self._last, self._root, [False] * n)

    def _place(self, roots, first, last) -> dict[int, int]:
        raise NotImplementedError


class GreedyPlanner(_Planner):
    """TFLM's GreedyMemoryPlanner (memory_planner/greedy_memory_planner.{h,cc}), all buffers online.

    Sizes are planned exactly as given, in bytes: like TFLM, where MicroAllocator aligns each size up to
    16 *before* AddBuffer, the caller aligns (PlanBuilder does). This keeps TFLM's unaligned unit-test
    vectors reproducible. Lifetimes are inclusive. The algorithm:
    1. order: ids in reverse add order, stably sorted by size descending, so equal sizes go
       later-added first;
    2. each buffer walks the already placed buffers in offset order, skipping those not live at the same
       time; `cand` is the running max of the ends walked so far (ends are not sorted); it takes the
       first gap before a walked buffer with offset - cand >= size, else goes after all of them;
    3. it enters the offset-ordered list after every entry whose offset is <= its own.
    """

    def _place(self, roots, first, last):
        size = self._size
        _, order = reverse_sort([size[r] for r in reversed(roots)], list(reversed(roots)))
        placed_offset: list[int] = []  # ascending; equal offsets in placement order
        placed_id: list[int] = []
        offset = {}
        for b in order:
            cand = 0
            for o, j in zip(placed_offset, placed_id):
                if first[j] > last[b] or first[b] > last[j]:
                    continue  # not live at the same time as b: its bytes are free for b
                if o - cand >= size[b]:
                    break  # first fit: the gap [cand, o) holds b
                cand = max(cand, o + size[j])
            offset[b] = cand
            k = bisect_right(placed_offset, cand)
            placed_offset.insert(k, cand)
            placed_id.insert(k, b)
        return offset


class LinearPlanner(_Planner):
    """TFLM's LinearMemoryPlanner (linear_memory_planner.cc): each buffer at the running total of the sizes
    added before it, no reuse ("keep everything"; an alias still shares its target's bytes)."""

    def _place(self, roots, first, last):
        offset, total = {}, 0
        for r in roots:
            offset[r] = total
            total += self._size[r]
        return offset


_PLANNERS = {"greedy": GreedyPlanner, "linear": LinearPlanner}


@dataclass(frozen=True)
class PlannedBuffer:
    """One buffer of a Plan. Offsets and sizes in bytes; lifetimes in planner time steps, inclusive."""

    name: str
    offset: int  # from the (16-byte aligned) arena start
    nbytes: int  # requested: the most a view may cover
    size: int  # nbytes aligned up: the bytes reserved
    first: int
    last: int
    category: str
    region: str  # "head": planned by lifetime; "tail": persistent, live at every step
    alias_of: str | None = None  # shares the bytes of this earlier buffer (in-place op)


@dataclass(frozen=True)
class Plan:
    """An immutable arena layout: [0, head_bytes) planned head, [head_bytes, peak) persistent tail.

    `peak` = head_bytes + tail_bytes is exactly the arena's length in bytes (TFLM arena_used_bytes():
    planned head + persistent tail; our arena start is always 16-byte aligned, so no +16 is needed).
    """

    buffers: tuple[PlannedBuffer, ...]
    head_bytes: int
    tail_bytes: int
    alignment: int = ALIGNMENT
    planner: str = "greedy"
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "buffers", tuple(self.buffers))
        index = {}
        for i, b in enumerate(self.buffers):
            if b.name in index:
                raise PlanError(f"buffer name {b.name!r} is used twice: names must be unique")
            index[b.name] = i
        object.__setattr__(self, "_index", index)

    @property
    def peak(self) -> int:
        return self.head_bytes + self.tail_bytes

    def __getitem__(self, name: str) -> PlannedBuffer:
        try:
            return self.buffers[self._index[name]]
        except KeyError:
            raise PlanError(f"no buffer named {name!r} in this plan ({len(self.buffers)} buffers; "
                            f"see plan.format_table())") from None

    def __contains__(self, name) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self.buffers)

    def __len__(self) -> int:
        return len(self.buffers)

    def names(self) -> list[str]:
        return [b.name for b in self.buffers]

    def _root(self, b: PlannedBuffer) -> PlannedBuffer:
        while b.alias_of is not None:
            b = self[b.alias_of]
        return b

    def by_category(self) -> dict[str, int]:
        """Reserved (aligned) bytes per category, in first-appearance order.

        An alias group counts once, under its root's category: the alias adds no bytes. Tail categories
        sum to tail_bytes exactly; head categories sum to *at least* head_bytes, because head buffers
        with disjoint lifetimes reuse the same bytes. Zero-byte categories are listed with 0.
        """
        out: dict[str, int] = {}
        for b in self.buffers:
            out.setdefault(b.category, 0)
            if b.alias_of is None:
                out[b.category] += b.size
        return out

    # ------------------------------------------------------------------ checking

    def check(self) -> None:
        """Prove the layout sound or raise PlanError naming the offending buffer(s).

        Checks: peak = head + tail; offsets aligned; sizes = nbytes aligned up; every buffer inside
        [0, peak); head buffers inside [0, head_bytes), tail buffers inside [head_bytes, peak); an alias
        sits at its target's offset, in its region, no larger; and (O(N^2)) no two buffers live at the same
        time share a byte, tail buffers counting as live at every step.
        """
        if self.alignment < 1 or self.alignment & (self.alignment - 1):
            raise PlanError(f"alignment must be a power of two, got {self.alignment}")
        if min(self.head_bytes, self.tail_bytes) < 0:
            raise PlanError(f"head_bytes ({self.head_bytes}) and tail_bytes ({self.tail_bytes}) must be >= 0")
        for b in self.buffers:
            where = f"buffer {b.name!r} (offset {b.offset}, size {b.size} bytes)"
            if b.region not in REGIONS:
                raise PlanError(f"{where}: region {b.region!r} is not one of {REGIONS}")
            if b.first > b.last:
                raise PlanError(f"{where}: lifetime [{b.first}, {b.last}] ends before it starts")
            if b.nbytes < 0 or b.size != align_up(b.nbytes, self.alignment):
                raise PlanError(f"{where}: size must be nbytes={b.nbytes} aligned up to {self.alignment}")
            if b.offset % self.alignment:
                raise PlanError(f"{where}: offset is not a multiple of {self.alignment}")
            if b.offset < 0 or b.offset + b.size > self.peak:
                raise PlanError(f"{where} leaves the arena [0, {self.peak})")
            if b.region == "head" and b.offset + b.size > self.head_bytes:
                raise PlanError(f"{where} is a head buffer reaching past head_bytes={self.head_bytes}")
            if b.region == "tail" and b.offset < self.head_bytes:
                raise PlanError(f"{where} is a tail buffer overlapping the head [0, {self.head_bytes})")
            if b.alias_of is not None:
                if b.alias_of not in self._index or self._index[b.alias_of] >= self._index[b.name]:
                    raise PlanError(f"{where}: alias_of={b.alias_of!r} is not an earlier buffer")
                t = self[b.alias_of]
                if t.offset != b.offset or t.region != b.region or b.nbytes > t.nbytes:
                    raise PlanError(f"{where} aliases {t.name!r} (offset {t.offset}, {t.nbytes} bytes, "
                                    f"{t.region}) but is not at its offset, in its region, and no larger")
        roots = {b.name: i for i, b in enumerate(self.buffers) if b.alias_of is None}
        pair = _first_conflict([b.offset for b in self.buffers], [b.size for b in self.buffers],
                               [b.first for b in self.buffers], [b.last for b in self.buffers],
                               [roots[self._root(b).name] for b in self.buffers],
                               [b.region == "tail" for b in self.buffers])
        if pair is not None:
            a, b = (self.buffers[k] for k in pair)
            live = {x.name: "persistent" if x.region == "tail" else f"live {x.first}..{x.last}" for x in (a, b)}
            raise PlanError(f"buffers {a.name!r} [{a.offset}, {a.offset + a.size}) {live[a.name]} and "
                            f"{b.name!r} [{b.offset}, {b.offset + b.size}) {live[b.name]} "
                            f"are live at the same time and share bytes")

    # ------------------------------------------------------------------ serialisation

    def to_json(self) -> str:
        """JSON text with a fixed key order, one buffer per line (diffs stay readable)."""
        keys = ("name", "category", "region", "offset", "nbytes", "size", "first", "last", "alias_of")
        lines = [json.dumps({k: getattr(b, k) for k in keys}) for b in self.buffers]
        head = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "planner": self.planner,
                "alignment": self.alignment, "head_bytes": self.head_bytes,
                "tail_bytes": self.tail_bytes, "peak": self.peak}
        body = ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in head.items())
        return "{\n" + body + ',\n  "buffers": [\n' + ",\n".join("    " + s for s in lines) + "\n  ]\n}\n"

    @classmethod
    def from_json(cls, text: str, check: bool = True) -> "Plan":
        """The Plan that to_json() wrote; check=True (default) also runs check() on it."""
        try:
            doc = json.loads(text)
            if doc.get("format") != PLAN_FORMAT or doc.get("version") != PLAN_VERSION:
                raise PlanError(f"not a {PLAN_FORMAT} version {PLAN_VERSION} document (format="
                                f"{doc.get('format')!r}, version={doc.get('version')!r}): regenerate it")
            buffers = [PlannedBuffer(**b) for b in doc["buffers"]]
            plan = cls(buffers, doc["head_bytes"], doc["tail_bytes"], doc["alignment"], doc["planner"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise PlanError(f"malformed plan JSON ({type(e).__name__}: {e}): regenerate it with "
                            f"Plan.to_json()") from None
        if doc.get("peak") != plan.peak:
            raise PlanError(f"plan JSON says peak={doc.get('peak')} but head_bytes + tail_bytes = {plan.peak}")
        if check:
            plan.check()
        return plan

    # ------------------------------------------------------------------ printing

    def format_table(self) -> str:
        """One row per buffer, then reserved bytes per category and the head/tail/peak totals."""
        w = max([4] + [len(b.name) for b in self.buffers])
        c = max([8] + [len(b.category) for b in self.buffers])
        rows = [f"{'name':<{w}}  {'category':<{c}}  region  {'offset':>9}  {'nbytes':>9}  {'size':>9}  "
                f"{'live':>11}  alias_of"]
        for b in self.buffers:
            rows.append(f"{b.name:<{w}}  {b.category:<{c}}  {b.region:<6}  {b.offset:>9}  {b.nbytes:>9}  "
                        f"{b.size:>9}  {f'{b.first}..{b.last}':>11}  {b.alias_of or ''}".rstrip())
        rows.append("")
        rows.append("bytes reserved per category (aliases counted once; head buffers reuse bytes, "
                    "so head categories can sum to more than head_bytes):")
        rows += [f"  {k:<{c}}  {v:>9}" for k, v in self.by_category().items()]
        rows.append(f"head {self.head_bytes} + tail {self.tail_bytes} = peak {self.peak} bytes "
                    f"({self.planner} planner, {self.alignment}-byte alignment)")
        return "\n".join(rows)

    def format_timeline(self, width: int = 80, symbols: str = "auto") -> str:
        """A text picture of the plan, after TFLM's GreedyMemoryPlanner::PrintMemoryPlan.

        One row per time step, one column per band of ceil(peak / width) bytes of address; each live
        buffer paints its symbol over its bands (an alias paints its target's), '.' is free, '+' is a band
        holding more than one buffer (a boundary falls inside it). Tail buffers are live on every row. The
        right column gives the bytes live at that step. symbols="buffer" gives each buffer its own symbol,
        "category" one per category; "auto" picks "buffer" when there are few enough buffers.
        """
        pool = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        if width < 1:
            raise PlanError(f"width must be >= 1 column, got {width}")
        if symbols == "auto":
            symbols = "buffer" if len(self.buffers) <= len(pool) else "category"
        if symbols not in ("buffer", "category"):
            raise PlanError(f"symbols must be 'buffer', 'category' or 'auto', got {symbols!r}")
        band = max(1, math.ceil(self.peak / width))
        ncols = math.ceil(self.peak / band)
        key = (lambda b: b.name) if symbols == "buffer" else (lambda b: b.category)
        sym: dict[str, str] = {}
        for b in self.buffers:
            if b.alias_of is None and key(b) not in sym:
                sym[key(b)] = pool[len(sym) % len(pool)]
        roots = [b for b in self.buffers if b.alias_of is None]
        live_span = {b.name: (b.first, b.last) for b in roots}
        for b in self.buffers:  # an alias group is live over the hull of its members
            r = self._root(b)
            f, l = live_span[r.name]
            live_span[r.name] = (min(f, b.first), max(l, b.last))
        times = [t for b in self.buffers if b.region == "head" for t in (b.first, b.last)] or [0]
        lines = [f"arena {self.peak} bytes: head [0, {self.head_bytes}), tail [{self.head_bytes}, "
                 f"{self.peak}); one column = {band} bytes"]
        for t in range(min(times), max(times) + 1):
            row = ["."] * ncols
            live = 0
            for b in roots:
                f, l = live_span[b.name]
                if b.size == 0 or (b.region == "head" and not f <= t <= l):
                    continue
                live += b.size
                for col in range(b.offset // band, (b.offset + b.size - 1) // band + 1):
                    row[col] = sym[key(b)] if row[col] in (".", sym[key(b)]) else "+"
            lines.append(f"{t:>5} |{''.join(row)}| {live:>9}")
        lines.append(f"legend ({symbols}):")
        lines += [f"  {s} = {k}" for k, s in sym.items()]
        return "\n".join(lines)

    def to_c_header(self, prefix: str = "MT_PLAN") -> str:
        """A C header of the layout: arena size, and each buffer's index, offset and requested bytes.

        Macros are <PREFIX>_<NAME>_{INDEX,OFFSET,BYTES}, NAME being the buffer name upper-cased with every
        character outside [0-9A-Za-z] replaced by '_'; <PREFIX>_BUFFER_TABLE initialises an array of
        <prefix>_buffer_t {offset, bytes} in index order. Offsets are bytes from the arena start, which
        firmware must align to <PREFIX>_ALIGNMENT (alignas(16), as TFLM asks for tensor_arena).
        """
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", prefix):
            raise PlanError(f"prefix {prefix!r} is not a C identifier: use letters, digits and '_'")
        P = prefix.upper()
        idents: dict[str, str] = {}
        for b in self.buffers:
            ident = re.sub(r"[^0-9A-Za-z]", "_", b.name).upper()
            if ident in idents:
                raise PlanError(f"buffers {idents[ident]!r} and {b.name!r} both become C identifier "
                                f"{P}_{ident}_*: rename one of them")
            idents[ident] = b.name

        def comment(s: str) -> str:  # text that cannot end a C comment or a line
            return re.sub(r"[^ -~]", "?", s).replace("*/", "* /")

        out = [f"/* Memory plan generated by microtrain ({self.planner} planner, {self.alignment}-byte alignment).",
               f" * Arena: {self.peak} bytes = head {self.head_bytes} (planned by lifetime) + tail "
               f"{self.tail_bytes} (persistent).",
               f" * Offsets are bytes from the start of the arena, which must be {self.alignment}-byte aligned.",
               " * Do not edit: regenerate with microtrain's Plan.to_c_header(). */",
               f"#ifndef {P}_H_", f"#define {P}_H_", "", "#include <stdint.h>", "",
               f"#define {P}_ARENA_SIZE {self.peak}u", f"#define {P}_HEAD_SIZE {self.head_bytes}u",
               f"#define {P}_TAIL_SIZE {self.tail_bytes}u", f"#define {P}_ALIGNMENT {self.alignment}u",
               f"#define {P}_NUM_BUFFERS {len(self.buffers)}u", ""]
        for i, (ident, b) in enumerate(zip(idents, self.buffers)):
            alias = f", aliases {comment(b.alias_of)}" if b.alias_of else ""
            out += [f"/* {comment(b.name)}: {comment(b.category)}, {b.region}, live {b.first}..{b.last}{alias} */",
                    f"#define {P}_{ident}_INDEX {i}u", f"#define {P}_{ident}_OFFSET {b.offset}u",
                    f"#define {P}_{ident}_BYTES {b.nbytes}u"]
        out += ["", f"typedef struct {{ uint32_t offset; uint32_t bytes; }} {prefix.lower()}_buffer_t;", "",
                f"/* static const {prefix.lower()}_buffer_t buffers[{P}_NUM_BUFFERS] = {P}_BUFFER_TABLE; */",
                f"#define {P}_BUFFER_TABLE {{ \\"]
        out += [f"    {{{b.offset}u, {b.nbytes}u}}, /* {comment(b.name)} */ \\" for b in self.buffers]
        out += ["}", "", f"#endif /* {P}_H_ */", ""]
        return "\n".join(out)


class PlanBuilder:
    """Collects named buffer requests, then builds a Plan.

    head requests are planned by lifetime (GreedyPlanner, or LinearPlanner for a keep-everything
    baseline) on sizes aligned up to `alignment`. tail requests are persistent for the whole run and
    placed like TFLM's SingleArenaBufferAllocator persistent allocations: from the arena end downward in
    request order, the first request at the highest address. Unlike TFLM, which aligns persistent blocks
    to alignof(T), every tail size is aligned up to `alignment` (16) too, so each tail offset is
    16-byte aligned as well. The arena is exactly head_bytes + tail_bytes long.
    """

    def __init__(self):
        self._requests: dict[str, dict] = {}

    def request(self, name: str, nbytes: int, first: int, last: int, category: str,
                region: str = "head", alias_of: str | None = None) -> None:
        """Ask for `nbytes` bytes named `name`, live over [first, last] (inclusive time steps).

        alias_of names an earlier request in the same region whose bytes this one reuses in place (the
        alias must not be larger); the pair is planned as one buffer over the union of their lifetimes.
        For tail requests first/last are recorded but the bytes are held for the whole run.
        """
        if not isinstance(name, str) or not name:
            raise PlanError(f"buffer name must be a non-empty string, got {name!r}")
        if name in self._requests:
            raise PlanError(f"buffer {name!r} was already requested: names must be unique")
        nbytes, first, last = _as_int(nbytes, "nbytes"), _as_int(first, "first"), _as_int(last, "last")
        if nbytes < 0:
            raise PlanError(f"buffer {name!r}: nbytes must be >= 0, got {nbytes}")
        if first > last:
            raise PlanError(f"buffer {name!r}: lifetime [{first}, {last}] ends before it starts")
        if not isinstance(category, str) or not category:
            raise PlanError(f"buffer {name!r}: category must be a non-empty string, got {category!r}")
        if region not in REGIONS:
            raise PlanError(f"buffer {name!r}: region must be one of {REGIONS}, got {region!r}")
        if alias_of is not None:
            t = self._requests.get(alias_of)
            if t is None:
                raise PlanError(f"buffer {name!r}: alias_of={alias_of!r} is not an earlier request")
            if t["region"] != region:
                raise PlanError(f"buffer {name!r} ({region}) cannot alias {alias_of!r} ({t['region']}): "
                                f"an alias lives in its target's region")
            if nbytes > t["nbytes"]:
                raise PlanError(f"buffer {name!r} ({nbytes} bytes) is larger than its alias target "
                                f"{alias_of!r} ({t['nbytes']} bytes): request the target at least as large")
        self._requests[name] = dict(nbytes=nbytes, first=first, last=last, category=category,
                                    region=region, alias_of=alias_of)

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, name) -> bool:
        return name in self._requests

    def build(self, alignment: int = ALIGNMENT, planner: str = "greedy", check: bool = True) -> Plan:
        """Plan every request; check=True (default) also proves the result with Plan.check()."""
        alignment = _as_int(alignment, "alignment")
        if alignment < 1 or alignment & (alignment - 1):
            raise PlanError(f"alignment must be a power of two (bytes), got {alignment}")
        if planner not in _PLANNERS:
            raise PlanError(f"planner must be one of {sorted(_PLANNERS)}, got {planner!r}")
        reqs = self._requests
        size = {n: align_up(r["nbytes"], alignment) for n, r in reqs.items()}

        head = _PLANNERS[planner]()
        head_id = {}
        for n, r in reqs.items():
            if r["region"] == "head":
                alias = head_id[r["alias_of"]] if r["alias_of"] is not None else None
                head_id[n] = head.add_buffer(size[n], r["first"], r["last"], alias_of=alias)
        head_off = head.offsets()
        head_bytes = head.peak()

        # Tail: a cursor from the arena end (0) downward; offsets relative to the end until the total
        # is known, then made absolute (head_bytes + tail_bytes - distance from the end).
        from_end, tail_bytes = {}, 0
        for n, r in reqs.items():
            if r["region"] == "tail":
                if r["alias_of"] is not None:
                    from_end[n] = from_end[r["alias_of"]]
                else:
                    tail_bytes += size[n]
                    from_end[n] = tail_bytes
        peak = head_bytes + tail_bytes

        buffers = []
        for n, r in reqs.items():
            off = head_off[head_id[n]] if r["region"] == "head" else peak - from_end[n]
            buffers.append(PlannedBuffer(n, off, r["nbytes"], size[n], r["first"], r["last"],
                                         r["category"], r["region"], r["alias_of"]))
        plan = Plan(tuple(buffers), head_bytes, tail_bytes, alignment, planner)
        if check:
            plan.check()
        return plan
