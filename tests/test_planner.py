"""Planner tests: TFLM's greedy/linear planner unit-test vectors exactly, aliases, Plan layout and output.

TFLM vectors are from tensorflow/lite/micro/memory_planner/{greedy,linear}_memory_planner_test.cc.
"""

import dataclasses
import json
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microtrain.errors import PlanError
from microtrain.planner import (GreedyPlanner, LinearPlanner, Plan, PlanBuilder, align_up,
                                reverse_sort)


def planned(cls, buffers):
    p = cls()
    for b in buffers:
        p.add_buffer(*b)
    return p


# ---------------------------------------------------------------------------------------------
# TFLM unit-test vectors


def test_reverse_sort_tflm_vectors():
    # TestReverseSortInPlace: already descending stays put; ascending reverses; ties keep input order.
    assert reverse_sort(list(range(10, 0, -1)), list(range(10))) == (list(range(10, 0, -1)), list(range(10)))
    assert reverse_sort(list(range(1, 11)), list(range(10))) == (list(range(10, 0, -1)),
                                                                 list(range(9, -1, -1)))
    values, ids = reverse_sort(list(range(1, 11)) * 10, list(range(100)))
    assert values == [v for v in range(10, 0, -1) for _ in range(10)]
    assert ids == [v - 1 + 10 * k for v in range(10, 0, -1) for k in range(10)]  # 9, 19, ..., 99, 8, 18, ...


def test_greedy_basics():
    # TestGreedyBasics: disjoint lifetimes [0,1] and [2,3] share offset 0.
    p = planned(GreedyPlanner, [(10, 0, 1), (20, 2, 3)])
    assert p.offsets() == [0, 0]
    assert p.peak() == 20
    assert p.find_overlap() is None


def test_greedy_medium():
    # TestGreedyMedium.
    p = planned(GreedyPlanner, [(10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1)])
    assert p.offsets() == [50, 70, 40, 0, 0]
    assert p.peak() == 90
    assert p.find_overlap() is None


def test_greedy_overlap_case():
    # TestOverlapCase asserts only max 120. Offsets derived by hand: 100 at 0; 50 ([2,3]) does not meet
    # it in time, so 0; 20 ([1,2]) meets both, gap before 0 is 0 bytes, so after max(100, 50) = 100.
    p = planned(GreedyPlanner, [(100, 0, 1), (50, 2, 3), (20, 1, 2)])
    assert p.peak() == 120
    assert p.offsets() == [0, 0, 100]
    assert p.find_overlap() is None


PERSON_DETECTION = [  # TestPersonDetectionModel: (size, first, last) of the 250 KB MobileNet, add order
    (9216, 0, 29), (3, 28, 29), (256, 27, 28), (2304, 26, 27), (2304, 25, 26), (2304, 24, 25),
    (1152, 23, 24), (4608, 22, 23), (4608, 21, 22), (4608, 20, 21), (4608, 19, 20), (4608, 18, 19),
    (4608, 17, 18), (4608, 16, 17), (4608, 15, 16), (4608, 14, 15), (4608, 13, 14), (4608, 12, 13),
    (2304, 11, 12), (9216, 10, 11), (9216, 9, 10), (9216, 8, 9), (4608, 7, 8), (18432, 6, 7),
    (18432, 5, 6), (18432, 4, 5), (9216, 3, 4), (36864, 2, 3), (18432, 1, 2), (18432, 0, 1)]


def test_greedy_person_detection():
    p = planned(GreedyPlanner, PERSON_DETECTION)
    assert sum(s for s, _, _ in PERSON_DETECTION) == 241027  # TFLM asserts max < this sum
    # 64,512 = the result of an independent re-implementation of the same recipe (background note
    # int8-arena-and-tiny-training.md §2.9); also = the literal port below. The lower bound is the
    # bytes live at t=2..3: 9216 + 36864 + 18432 (t=2) = 64,512, so greedy is optimal here.
    assert p.peak() == 64512
    assert p.find_overlap() is None
    assert p.offsets() == tflm_literal_greedy(PERSON_DETECTION)[0]


def test_greedy_ties_later_added_first():
    # Three 16-byte buffers all live at t=0: order is ids 2, 1, 0 (equal sizes, later-added first), each
    # going after the ones placed before it.
    p = planned(GreedyPlanner, [(16, 0, 0)] * 3)
    assert p.offsets() == [32, 16, 0]


def test_linear_basics():
    # linear_memory_planner_test.cc TestBasics: running total, no reuse.
    p = planned(LinearPlanner, [(10, 0, 1), (20, 1, 2)])
    assert p.offsets() == [0, 10]
    assert p.peak() == 30
    # disjoint lifetimes are still not reused: 10 + 20 = 30 bytes
    assert planned(LinearPlanner, [(10, 0, 1), (20, 2, 3)]).peak() == 30


def test_linear_person_detection_keeps_everything():
    p = planned(LinearPlanner, PERSON_DETECTION)
    assert p.peak() == 241027  # the sum of all sizes
    assert p.find_overlap() is None


def test_empty_planner():
    assert GreedyPlanner().offsets() == [] and GreedyPlanner().peak() == 0
    assert LinearPlanner().peak() == 0


@pytest.mark.parametrize("args", [(-1, 0, 0), (10, 2, 1), (1.5, 0, 0), (10, 0, None), (True, 0, 0)])
def test_add_buffer_rejects_bad_input(args):
    with pytest.raises(PlanError):
        GreedyPlanner().add_buffer(*args)


# ---------------------------------------------------------------------------------------------
# A literal port of the recipe (background §2.9) with TFLM's data structures (id arrays filled from the
# tail, a neighbour-swapping bubble sort, an offset-ordered singly linked list), as an oracle for the
# list-based GreedyPlanner on random inputs.


def tflm_literal_greedy(buffers):
    n = len(buffers)
    if n == 0:
        return [], 0
    sizes, ids = [0] * n, [0] * n
    for i, (s, _, _) in enumerate(buffers):  # written from the tail backwards
        sizes[n - 1 - i], ids[n - 1 - i] = s, i
    swapped = True
    while swapped:  # bubble sort: swap neighbours only when the left one is strictly smaller
        swapped = False
        for k in range(1, n):
            if sizes[k - 1] < sizes[k]:
                sizes[k - 1], sizes[k] = sizes[k], sizes[k - 1]
                ids[k - 1], ids[k] = ids[k], ids[k - 1]
                swapped = True
    offsets = [0] * n
    entries = [[0, ids[0], -1]]  # [offset, buffer id, next entry index]
    for b in ids[1:]:
        size, first, last = buffers[b]
        cand, prior, cur = 0, None, 0
        while True:
            while cur != -1:  # next entry live at the same time as b
                _, j, _ = entries[cur]
                if not (buffers[j][1] > last or first > buffers[j][2]):
                    break
                cur = entries[cur][2]
            if prior is not None:
                cand = max(cand, entries[prior][0] + buffers[entries[prior][1]][0])
            if cur == -1 or entries[cur][0] - cand >= size:
                break
            prior, cur = cur, entries[cur][2]
        offsets[b] = cand
        entries.append([cand, b, -1])
        new = len(entries) - 1
        if entries[0][0] > cand:  # new head: swap contents into slot 0 to keep entry 0 the head
            entries[0], entries[new] = entries[new], entries[0]
            entries[0][2] = new
        else:
            cur = 0
            while entries[cur][2] != -1 and entries[entries[cur][2]][0] <= cand:
                cur = entries[cur][2]
            entries[new][2], entries[cur][2] = entries[cur][2], new
    return offsets, max(offsets[i] + buffers[i][0] for i in range(n))


def test_literal_port_reproduces_tflm_vectors():
    assert tflm_literal_greedy([(10, 0, 1), (20, 2, 3)]) == ([0, 0], 20)
    assert tflm_literal_greedy([(10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1)]) == (
        [50, 70, 40, 0, 0], 90)
    assert tflm_literal_greedy([(100, 0, 1), (50, 2, 3), (20, 1, 2)])[1] == 120


# ---------------------------------------------------------------------------------------------
# Random buffer sets

buffer_sets = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 12), st.integers(0, 6)).map(
    lambda t: (t[0], t[1], t[1] + t[2])), max_size=30)


def live_lower_bound(sizes, firsts, lasts):
    """Max over time of the bytes live at once: every plan needs at least this many bytes."""
    times = set(firsts) | set(lasts)
    return max((sum(s for s, f, l in zip(sizes, firsts, lasts) if f <= t <= l) for t in times), default=0)


@settings(max_examples=300, deadline=None)
@given(buffer_sets)
def test_greedy_random_matches_literal_port_and_bounds(buffers):
    p = planned(GreedyPlanner, buffers)
    offsets, peak = tflm_literal_greedy(buffers)
    assert p.offsets() == offsets and p.peak() == peak
    assert p.find_overlap() is None
    sizes, firsts, lasts = zip(*buffers) if buffers else ((), (), ())
    assert live_lower_bound(sizes, firsts, lasts) <= p.peak() <= sum(sizes)


@st.composite
def requests(draw):
    """Named requests for a PlanBuilder: head and tail, some aliasing an earlier one of their region."""
    out = []
    for i in range(draw(st.integers(0, 25))):
        nbytes = draw(st.integers(0, 300))
        first = draw(st.integers(0, 12))
        last = first + draw(st.integers(0, 6))
        region = draw(st.sampled_from(["head", "head", "head", "tail"]))
        alias = None
        earlier = [r for r in out if r[5] == region]
        if earlier and draw(st.booleans()) and draw(st.booleans()):
            target = draw(st.sampled_from(earlier))
            alias, nbytes = target[0], min(nbytes, target[1])
        out.append((f"b{i}", nbytes, first, last, draw(st.sampled_from(["activation", "saved", "scratch"])),
                    region, alias))
    return out


def build(reqs, **kw):
    b = PlanBuilder()
    for name, nbytes, first, last, cat, region, alias in reqs:
        b.request(name, nbytes, first, last, cat, region=region, alias_of=alias)
    return b.build(**kw)


@settings(max_examples=300, deadline=None)
@given(requests(), st.sampled_from(["greedy", "linear"]))
def test_random_plans_check_and_bounds(reqs, planner):
    plan = build(reqs, planner=planner)
    plan.check()
    # Each alias group counts once, with its root's aligned size, live over the hull of its members.
    root = {}
    for name, _, _, _, _, _, alias in reqs:
        root[name] = root[alias] if alias else name
    hull = {}
    for name, _, first, last, _, _, _ in reqs:
        f, l = hull.get(root[name], (first, last))
        hull[root[name]] = (min(f, first), max(l, last))
    head_roots = [n for n in hull if plan[n].region == "head"]
    sizes = [plan[n].size for n in head_roots]
    lower = live_lower_bound(sizes, [hull[n][0] for n in head_roots], [hull[n][1] for n in head_roots])
    assert lower <= plan.head_bytes <= sum(sizes)
    if planner == "linear":
        assert plan.head_bytes == sum(sizes)
    assert plan.tail_bytes == sum(plan[n].size for n in hull if plan[n].region == "tail")
    assert plan.peak == plan.head_bytes + plan.tail_bytes
    assert sum(plan.by_category().values()) == sum(plan[n].size for n in hull)
    assert Plan.from_json(plan.to_json()) == plan


# ---------------------------------------------------------------------------------------------
# Aliases (in-place buffers)


def test_alias_shares_offset_and_plans_the_union():
    # y = relu(x) in place: y aliases x. x [0,1] and y [1,2] overlap at t=1 (inclusive), so without the
    # alias they need 100 + 100 = 200 bytes; as one buffer over [0,2], 100 bytes.
    p = GreedyPlanner()
    x = p.add_buffer(100, 0, 1)
    y = p.add_buffer(100, 1, 2, alias_of=x)
    # z [2,3] meets the group's hull [0,2] at t=2 (not x's own [0,1]), so it goes after it: 100.
    z = p.add_buffer(50, 2, 3)
    assert p.offsets() == [0, 0, 100]
    assert (p.offset(y), p.offset(z), p.peak()) == (0, 100, 150)
    assert p.find_overlap() is None


def test_alias_of_alias_resolves_to_root():
    p = GreedyPlanner()
    a = p.add_buffer(64, 0, 0)
    b = p.add_buffer(64, 1, 1, alias_of=a)
    p.add_buffer(32, 2, 2, alias_of=b)  # smaller than its target: allowed
    p.add_buffer(48, 1, 1)  # live with the group at t=1: after its 64 bytes
    assert p.offsets() == [0, 0, 0, 64]
    assert p.peak() == 112


def test_alias_errors():
    p = GreedyPlanner()
    a = p.add_buffer(64, 0, 1)
    with pytest.raises(PlanError, match="must not be larger"):
        p.add_buffer(80, 1, 2, alias_of=a)
    with pytest.raises(PlanError, match="earlier buffer"):
        p.add_buffer(16, 1, 2, alias_of=5)
    b = PlanBuilder()
    b.request("x", 64, 0, 1, "activation")
    b.request("w", 64, 0, 1, "trainable", region="tail")
    with pytest.raises(PlanError, match="larger than its alias target"):
        b.request("y", 65, 1, 2, "activation", alias_of="x")
    with pytest.raises(PlanError, match="not an earlier request"):
        b.request("y", 64, 1, 2, "activation", alias_of="nope")
    with pytest.raises(PlanError, match="region"):
        b.request("y", 64, 1, 2, "activation", alias_of="w")


def test_alias_counted_once_by_category():
    b = PlanBuilder()
    b.request("x", 100, 0, 1, "activation")  # 100 -> 112 bytes reserved
    b.request("y", 100, 1, 2, "saved", alias_of="x")  # same bytes: counted under x's category, once
    b.request("w", 20, 0, 2, "trainable", region="tail")  # 20 -> 32
    b.request("w2", 20, 0, 2, "trainable", region="tail", alias_of="w")  # shares w's 32 bytes
    plan = b.build()
    assert plan.by_category() == {"activation": 112, "saved": 0, "trainable": 32}
    assert (plan.head_bytes, plan.tail_bytes, plan.peak) == (112, 32, 144)
    assert plan["y"].offset == plan["x"].offset == 0
    assert plan["w2"].offset == plan["w"].offset == 112


# ---------------------------------------------------------------------------------------------
# PlanBuilder and Plan


def tail_plan():
    b = PlanBuilder()
    b.request("a", 100, 0, 1, "activation")  # 112 bytes aligned
    b.request("b", 30, 1, 2, "act_grad")  # 32
    b.request("w", 10, 0, 0, "trainable", region="tail")  # 16
    b.request("m", 33, 0, 0, "optimizer", region="tail")  # 48
    return b.build()


def test_tail_placement_exact():
    plan = tail_plan()
    # Head: a (112) at 0; b (32) meets a at t=1, so after it: 112; head = 144 bytes.
    assert (plan["a"].offset, plan["b"].offset, plan.head_bytes) == (0, 112, 144)
    # Tail = 16 + 48 = 64 bytes, peak = 144 + 64 = 208. Placed from the end downward in request order,
    # like SingleArenaBufferAllocator::AllocatePersistentBuffer: w at 208 - 16 = 192, m at 192 - 48 = 144.
    assert (plan.tail_bytes, plan.peak) == (64, 208)
    assert (plan["w"].offset, plan["m"].offset) == (192, 144)
    assert (plan["m"].nbytes, plan["m"].size) == (33, 48)
    assert plan.by_category() == {"activation": 112, "act_grad": 32, "trainable": 16, "optimizer": 48}


def test_tail_only_and_empty_plans():
    b = PlanBuilder()
    b.request("w", 1, 0, 0, "trainable", region="tail")
    plan = b.build()
    assert (plan.head_bytes, plan.tail_bytes, plan["w"].offset) == (0, 16, 0)  # 1 byte -> 16 reserved
    empty = PlanBuilder().build()
    assert (empty.peak, len(empty)) == (0, 0)
    empty.check()


def test_alignment_argument():
    b = PlanBuilder()
    b.request("a", 10, 0, 0, "activation")
    b.request("b", 10, 0, 0, "activation")
    # 10 bytes align to 16 by default (32 total) and to 32 with alignment=32 (64 total).
    assert b.build().peak == 32
    assert b.build(alignment=32).peak == 64
    with pytest.raises(PlanError, match="power of two"):
        b.build(alignment=12)
    with pytest.raises(PlanError, match="planner"):
        b.build(planner="best")


def test_linear_plan_keeps_everything():
    b = PlanBuilder()
    b.request("a", 100, 0, 1, "activation")
    b.request("b", 30, 2, 3, "activation")  # disjoint from a: greedy reuses, linear does not
    assert b.build().head_bytes == 112  # max(112, 32)
    assert b.build(planner="linear").head_bytes == 144  # 112 + 32


@pytest.mark.parametrize("kw", [dict(name=""), dict(nbytes=-1), dict(first=3), dict(category=""),
                                dict(region="flash"), dict(nbytes=2.0)])
def test_request_rejects_bad_input(kw):
    args = dict(name="x", nbytes=8, first=0, last=1, category="activation", region="head") | kw
    with pytest.raises(PlanError):
        PlanBuilder().request(**args)


def test_duplicate_names_rejected():
    b = PlanBuilder()
    b.request("x", 8, 0, 1, "activation")
    with pytest.raises(PlanError, match="already requested"):
        b.request("x", 8, 0, 1, "activation")


def test_unknown_buffer_name():
    with pytest.raises(PlanError, match="no buffer named 'nope'"):
        tail_plan()["nope"]


def corrupt(plan, name, **changes):
    """A copy of plan with one buffer's fields changed, built without checking."""
    return Plan(tuple(dataclasses.replace(b, **changes) if b.name == name else b for b in plan),
                plan.head_bytes, plan.tail_bytes, plan.alignment, plan.planner)


def test_check_catches_overlap():
    plan = tail_plan()
    plan.check()
    bad = corrupt(plan, "b", offset=96)  # b [96, 128) meets a [0, 112) at t=1
    with pytest.raises(PlanError, match="'a'.*'b'.*live at the same time"):
        bad.check()


def test_check_allows_reuse_across_time():
    b = PlanBuilder()
    b.request("a", 100, 0, 1, "activation")
    b.request("b", 30, 2, 3, "activation")
    plan = b.build()
    assert plan["a"].offset == plan["b"].offset == 0  # disjoint lifetimes share bytes: fine
    with pytest.raises(PlanError, match="'a'.*'b'"):
        corrupt(plan, "b", first=1).check()  # now both live at t=1


@pytest.mark.parametrize("name, changes, msg", [
    ("a", dict(offset=-16), "leaves the arena"),
    ("w", dict(offset=208), "leaves the arena"),  # 208 + 16 > peak 208
    ("m", dict(offset=128), "overlapping the head"),
    ("b", dict(offset=144), "past head_bytes"),
    ("b", dict(offset=120), "not a multiple of 16"),
    ("b", dict(size=16), "aligned up"),
    ("w", dict(offset=160), "'w'.*persistent.*'m'"),  # two tail buffers are always live together
])
def test_check_catches_corruption(name, changes, msg):
    with pytest.raises(PlanError, match=msg):
        corrupt(tail_plan(), name, **changes).check()


def test_check_catches_bad_alias():
    b = PlanBuilder()
    b.request("x", 32, 0, 1, "activation")
    b.request("z", 32, 0, 1, "activation")
    b.request("y", 32, 1, 2, "activation", alias_of="x")
    plan = b.build()
    with pytest.raises(PlanError, match="aliases 'x'"):
        corrupt(plan, "y", offset=plan["z"].offset).check()


def test_json_round_trip_and_stability():
    plan = tail_plan()
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert again.to_json() == text  # stable key order: byte-identical
    doc = json.loads(text)
    assert list(doc) == ["format", "version", "planner", "alignment", "head_bytes", "tail_bytes", "peak",
                         "buffers"]
    assert list(doc["buffers"][0]) == ["name", "category", "region", "offset", "nbytes", "size", "first",
                                       "last", "alias_of"]


def test_from_json_rejects_bad_documents():
    text = tail_plan().to_json()
    with pytest.raises(PlanError, match="malformed"):
        Plan.from_json("{not json")
    with pytest.raises(PlanError, match="version"):
        Plan.from_json(text.replace('"version": 1', '"version": 99'))
    with pytest.raises(PlanError, match="peak"):
        Plan.from_json(text.replace('"peak": 208', '"peak": 200'))
    bad = text.replace('"offset": 112', '"offset": 96')  # b onto a
    with pytest.raises(PlanError, match="share bytes"):
        Plan.from_json(bad)
    assert Plan.from_json(bad, check=False)["b"].offset == 96


def test_format_table_lists_every_buffer_and_totals():
    plan = tail_plan()
    table = plan.format_table()
    lines = table.splitlines()
    for b in plan:
        assert any(line.split()[:3] == [b.name, b.category, b.region] and str(b.offset) in line
                   for line in lines)
    assert "head 144 + tail 64 = peak 208 bytes" in table
    assert any(line.split() == ["optimizer", "48"] for line in lines)


def test_format_timeline_shape():
    plan = tail_plan()
    lines = plan.format_timeline(width=52).splitlines()
    # 208 bytes / 52 columns = 4 bytes per column; head times 0..2 give 3 rows.
    assert "one column = 4 bytes" in lines[0]
    rows = [line for line in lines if "|" in line]
    assert len(rows) == 3 and all(len(r.split("|")[1]) == 52 for r in rows)
    # t=1: a (112) + b (32) + tail (64) = 208 bytes live; t=2: b + tail = 96.
    assert rows[1].split("|")[2].strip() == "208" and rows[2].split("|")[2].strip() == "96"
    assert rows[2].split("|")[1] == "." * 28 + "1" * 8 + "3" * 12 + "2" * 4  # b, m, w; a is free
    assert "category" in plan.format_timeline(symbols="category")


def test_c_header_contains_every_buffer():
    b = PlanBuilder()
    b.request("conv0.out", 100, 0, 1, "activation")
    b.request("conv1/dw", 30, 1, 2, "weight_grad")
    b.request("head.w", 10, 0, 2, "trainable", region="tail")
    plan = b.build()
    h = plan.to_c_header("mt_plan")
    assert f"#define MT_PLAN_ARENA_SIZE {plan.peak}u" in h
    for buf, ident in zip(plan, ["CONV0_OUT", "CONV1_DW", "HEAD_W"]):
        assert f"#define MT_PLAN_{ident}_OFFSET {buf.offset}u" in h
        assert f"#define MT_PLAN_{ident}_BYTES {buf.nbytes}u" in h
        assert f"{{{buf.offset}u, {buf.nbytes}u}}, /* {buf.name} */" in h


def test_c_header_rejects_colliding_identifiers_and_bad_prefix():
    b = PlanBuilder()
    b.request("a.b", 8, 0, 0, "activation")
    b.request("a_b", 8, 0, 0, "activation")
    with pytest.raises(PlanError, match="both become C identifier"):
        b.build().to_c_header()
    with pytest.raises(PlanError, match="not a C identifier"):
        tail_plan().to_c_header("1bad")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_c_header_compiles_and_matches(tmp_path):
    plan = tail_plan()
    (tmp_path / "plan.h").write_text(plan.to_c_header("mt_plan"))
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "plan.h"\n'
        "static const mt_plan_buffer_t t[MT_PLAN_NUM_BUFFERS] = MT_PLAN_BUFFER_TABLE;\n"
        "int main(void) {\n"
        '  printf("%u %u\\n", (unsigned)MT_PLAN_ARENA_SIZE, (unsigned)t[MT_PLAN_M_INDEX].offset);\n'
        "  for (unsigned i = 0; i < MT_PLAN_NUM_BUFFERS; ++i)\n"
        '    printf("%u %u\\n", (unsigned)t[i].offset, (unsigned)t[i].bytes);\n'
        "  return 0;\n}\n")
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-o", str(tmp_path / "main"),
                    str(tmp_path / "main.c")], check=True)
    out = subprocess.run([str(tmp_path / "main")], check=True, capture_output=True, text=True).stdout
    lines = out.split("\n")
    assert lines[0] == f"{plan.peak} {plan['m'].offset}"
    assert lines[1:1 + len(plan)] == [f"{b.offset} {b.nbytes}" for b in plan]


def test_align_up():
    assert [align_up(n) for n in (0, 1, 15, 16, 17)] == [0, 16, 16, 16, 32]
    assert align_up(10, 32) == 32
