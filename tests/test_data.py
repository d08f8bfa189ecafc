"""Datasets and episodes: the Omniglot zip reader (counts on the shared zips), the image-folder reader and
its errors, N-way K-shot and Meta-Dataset samplers (shapes, determinism, disjointness, the varying-way
varying-shot rules against an independent re-statement), augmentation, the 95% CI, glyphs and digits."""

import math
import struct
import sys
import zlib

import numpy as np
import pytest

from microtrain.data import Dataset, SCRIPTS, digits, glyphs, image_folder, omniglot, parse_spec
from microtrain.episodes import (augment, describe_meta_dataset, describe_nway_kshot, load_episode, mean_ci95,
                                 sample_meta_dataset, sample_nway_kshot)
from microtrain.errors import DataError, InputError
from shared import OMNIGLOT

SMALL1 = OMNIGLOT / "images_background_small1.zip"
SMALL2 = OMNIGLOT / "images_background_small2.zip"


def need_omniglot():
    if not (SMALL1.is_file() and SMALL2.is_file()):
        pytest.skip(f"Omniglot zips not found in {OMNIGLOT} (set MICROTRAIN_SHARED to the shared folder)")


# ---------------------------------------------------------------------------------------------------- helpers

def png_bytes(img):
    """Minimal PNG encoder: uint8 (H, W) grey or (H, W, 3) RGB, 8-bit, filter 0 on every row."""
    img = np.ascontiguousarray(img, np.uint8)
    h, w = img.shape[:2]
    colour = 2 if img.ndim == 3 else 0

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_tree(root, classes):
    """classes: {name: [uint8 image, ...]} -> root/name/NN.png."""
    for name, imgs in classes.items():
        (root / name).mkdir(parents=True)
        for i, img in enumerate(imgs):
            (root / name / f"{i:02d}.png").write_bytes(png_bytes(img))
    return root


def coded(c, i, s=4):
    """uint8 (s, s, 3) image whose first pixels encode (class c, index i)."""
    img = np.full((s, s, 3), 7, np.uint8)
    img[0, 0] = (c % 256, c // 256, i % 256)
    img[0, 1] = (i // 256, 0, 0)
    return img


def synthetic(sizes, groups=None, s=4):
    """Dataset of len(sizes) classes with sizes[c] coded images each (no resize: already s x s)."""
    items = [[coded(c, i, s) for i in range(n)] for c, n in enumerate(sizes)]
    return Dataset("synthetic", [f"c{c}" for c in range(len(sizes))], items, lambda img: img, s, groups=groups)


def decode(x):
    """(class, index) pairs from coded images (N, s, s, 3)."""
    x = x.astype(np.int64)
    return x[:, 0, 0, 0] + 256 * x[:, 0, 0, 1], x[:, 0, 0, 2] + 256 * x[:, 0, 1, 0]


# ---------------------------------------------------------------------------------------------------- Omniglot

def test_omniglot_counts():
    need_omniglot()
    s1 = omniglot(SMALL1, 28)
    assert (s1.num_classes, s1.num_images) == (136, 2720)
    assert {g: len(c) for g, c in s1.group_classes().items()} == {
        "Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Korean": 40, "Latin": 26}
    s2 = parse_spec(f"omniglot:{SMALL2}", 28)
    assert (s2.num_classes, s2.num_images) == (156, 3120)
    assert {g: len(c) for g, c in s2.group_classes().items()} == {
        "Greek": 24, "Japanese_(katakana)": 47, "Latin": 26, "Sanskrit": 42, "Tagalog": 17}
    both = parse_spec(f"omniglot:{OMNIGLOT}", 28)
    # Greek (24) and Latin (26) are in both zips (byte-identical): kept once, from small1.
    # 136 + 156 - 24 - 26 = 242 characters in 8 alphabets, 20 drawers each -> 4840 images.
    assert (both.num_classes, both.num_images) == (242, 4840)
    assert len(both.group_classes()) == 8
    assert np.all(both.class_sizes == 20)
    assert both.class_names[0] == "Balinese/character01" and both.groups[0] == "Balinese"
    assert both.flip_ok is False
    assert sorted(both.class_names) == both.class_names
    if (OMNIGLOT / "all_runs.zip").is_file():  # the one-shot runs have another layout
        with pytest.raises(DataError, match="all_runs.zip is not"):
            omniglot(OMNIGLOT / "all_runs.zip", 28)


def test_omniglot_images():
    need_omniglot()
    d = omniglot(OMNIGLOT, 32)
    x = d.images(5, [0, 1, 19])
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])  # grey -> RGB
    assert x.mean() > 180 and x.min() < 60  # black strokes on white, kept as is
    assert d.image(5, 1) is d.image(5, 1)  # cached
    native = omniglot(SMALL1, 105).image(0, 0)  # no resize at the native 105 x 105: binary pixels
    assert set(np.unique(native).tolist()) <= {0, 255}


def test_omniglot_bilevel_episodes():
    need_omniglot()
    d = omniglot(OMNIGLOT, 16)
    sizes = {g: len(c) for g, c in d.group_classes().items()}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        e = describe_meta_dataset(d, rng)
        assert {d.groups[c] for c in e.class_ids} == {e.group}  # one alphabet per episode
        assert 5 <= e.ways <= min(50, sizes[e.group])
        assert np.all(e.queries == 10)  # min(10, 20 // 2)
        assert np.all((e.shots >= 1) & (e.shots <= 10)) and e.shots.sum() <= 500
        seen.add(e.group)
    assert seen == set(sizes)
    ep = sample_meta_dataset(d, np.random.default_rng(1))
    assert ep.support_x.shape == (len(ep.support_y), 16, 16, 3) and ep.query_x.shape == (10 * ep.ways, 16, 16, 3)


def test_omniglot_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        parse_spec(f"omniglot:{tmp_path / 'nope'}", 28)
    with pytest.raises(DataError, match="no images_"):
        parse_spec(f"omniglot:{tmp_path}", 28)
    (tmp_path / "images_x.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        parse_spec(f"omniglot:{tmp_path}", 28)


# ---------------------------------------------------------------------------------------------------- folders

def test_folder_reader(tmp_path):
    red = np.zeros((10, 14, 3), np.uint8)
    red[..., 0] = 200
    grey = np.full((7, 5), 90, np.uint8)
    root = write_tree(tmp_path / "tree", {"b_cls": [red, red], "a_cls": [grey, red, grey]})
    (root / "a_cls" / ".hidden.png").write_bytes(b"junk")  # hidden: skipped
    (root / "a_cls" / "notes.txt").write_text("not an image")  # no image suffix: skipped
    (root / ".git").mkdir()  # hidden folder: not a class
    d = parse_spec(f"folder:{root}", 8)
    assert d.class_names == ["a_cls", "b_cls"] and d.class_sizes.tolist() == [3, 2]
    assert d.flip_ok is True and d.groups is None
    x = d.images(0, [0, 1])
    assert x.shape == (2, 8, 8, 3) and x.dtype == np.uint8
    assert np.all(x[0] == 90)  # a constant image stays constant through the resize, grey -> RGB
    assert np.all(x[1] == [200, 0, 0])


def test_folder_errors(tmp_path, monkeypatch):
    ok = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(DataError, match="not a folder"):
        image_folder(tmp_path / "missing", 8)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(png_bytes(ok))
    with pytest.raises(DataError, match="no class sub-folders"):
        image_folder(tmp_path / "flat", 8)

    root = write_tree(tmp_path / "empty", {"full": [ok]})
    (root / "hollow").mkdir()
    with pytest.raises(DataError, match="hollow.*holds no images"):
        image_folder(root, 8)

    root = write_tree(tmp_path / "junk", {"a": [ok]})
    (root / "a" / "bad.png").write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match=r"bad\.png.*undecodable"):
        image_folder(root, 8)

    root = write_tree(tmp_path / "trunc", {"a": [ok]})
    (root / "a" / "cut.png").write_bytes(png_bytes(ok)[:30])  # valid signature, truncated: fails on load
    d = image_folder(root, 8)
    with pytest.raises(DataError, match=r"cut\.png"):
        d.image(0, 1)

    root = write_tree(tmp_path / "jpeg", {"a": [ok]})
    (root / "a" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(20))
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(DataError, match=r"photo\.jpg.*pip install pillow"):
        image_folder(root, 8)


def test_spec_errors():
    for bad in ("imagenet:/x", "omniglot", "folder:", "digits:3", "glyphs:"):
        with pytest.raises(DataError, match="omniglot:PATH") as e:
            parse_spec(bad, 28)
        assert "folder:PATH" in str(e.value) and "glyphs:SCRIPTS" in str(e.value) and "digits" in str(e.value)
    with pytest.raises(DataError, match="size must be a positive int"):
        Dataset("d", ["a"], [[coded(0, 0)]], lambda img: img, 0)


# ---------------------------------------------------------------------------------------------------- samplers

def test_nway_kshot_shapes_labels_disjoint():
    d = synthetic([30] * 12)
    e = sample_nway_kshot(d, 5, 3, 4, np.random.default_rng(0))
    assert e.support_x.shape == (15, 4, 4, 3) and e.query_x.shape == (20, 4, 4, 3)
    assert e.support_x.dtype == np.uint8
    assert e.support_y.tolist() == sorted([0, 1, 2, 3, 4] * 3) and e.query_y.tolist() == sorted(list(range(5)) * 4)
    assert len(set(e.class_ids.tolist())) == 5 and e.class_ids.max() < 12
    for x, y, index in ((e.support_x, e.support_y, e.support_index), (e.query_x, e.query_y, e.query_index)):
        c, i = decode(x)
        assert np.array_equal(c, e.class_ids[y]) and np.array_equal(i, index)  # images are the ones described
    for label in range(5):
        assert not set(e.support_index[e.support_y == label]) & set(e.query_index[e.query_y == label])


def test_nway_kshot_determinism():
    d = synthetic([25] * 20)
    a = sample_nway_kshot(d, 5, 2, 3, np.random.default_rng(7))
    b = sample_nway_kshot(d, 5, 2, 3, np.random.default_rng(7))
    c = sample_nway_kshot(d, 5, 2, 3, np.random.default_rng(8))
    for f in ("support_x", "support_y", "query_x", "query_y", "class_ids", "support_index", "query_index"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not (np.array_equal(a.class_ids, c.class_ids) and np.array_equal(a.support_index, c.support_index))


def test_nway_kshot_errors():
    d = synthetic([10, 10, 4, 10])
    with pytest.raises(DataError, match="4 classes.*5-way"):
        sample_nway_kshot(d, 5, 1, 1, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"'c2' has 4.*needs 6 \(shots \+ queries\)"):
        sample_nway_kshot(d, 2, 1, 5, np.random.default_rng(0))  # checked over every class, not just drawn ones


def md_reference(sizes, groups, rng):
    """Meta-Dataset's rules re-stated from the paper notes, drawing in the documented order."""
    pool = np.arange(len(sizes))
    group = None
    if groups is not None:
        names = list(dict.fromkeys(groups))
        eligible = [g for g in names if groups.count(g) >= 5]
        group = eligible[rng.integers(len(eligible))]
        pool = np.array([c for c in range(len(sizes)) if groups[c] == group])
    ways = rng.integers(5, min(50, len(pool)) + 1)
    ids = rng.choice(pool, ways, replace=False)
    n = np.array(sizes)[ids]
    q = min(10, min(n // 2))
    beta = rng.uniform()
    total = min(500, sum(math.floor(beta * min(100, m - q) + 1) for m in n))
    w = n * np.exp(rng.uniform(math.log(0.5), math.log(2), ways))
    shots = [min(math.floor(wc / w.sum() * (total - ways)) + 1, m - q) for wc, m in zip(w, n)]
    parts = [rng.permutation(m)[:q + k] for m, k in zip(n, shots)]
    return group, ids, q, total, shots, parts


@pytest.mark.parametrize("bilevel", [False, True])
def test_meta_dataset_rules(bilevel):
    rng = np.random.default_rng(123)
    sizes = rng.integers(2, 400, 70).tolist()  # small classes bound q; big ones hit the 100 and 500 caps
    groups = [f"g{c % 4}" for c in range(70)]
    groups[0] = "tiny"  # a group with one class: never drawn (fewer than min_ways)
    d = synthetic(sizes, groups if bilevel else None)
    ways_seen, totals = set(), []
    ref_rng, rng = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(400):
        e = describe_meta_dataset(d, rng)
        group, ids, q, total, shots, parts = md_reference(sizes, groups if bilevel else None, ref_rng)
        assert e.group == group and np.array_equal(e.class_ids, ids) and e.shots.tolist() == shots
        assert all(np.array_equal(np.concatenate([a, b]), p) for a, b, p in zip(e.query, e.support, parts))
        n = d.class_sizes[e.class_ids]
        pool = len(d.group_classes()[e.group]) if bilevel else 70
        assert 5 <= e.ways <= min(50, pool) and len(set(e.class_ids.tolist())) == e.ways
        assert np.all(e.queries == min(10, (n // 2).min())) and np.all(e.queries <= 10)
        assert np.all(e.shots >= 1) and np.all(e.shots <= n - e.queries)
        assert e.ways <= e.shots.sum() <= total <= 500
        for s, qq in zip(e.support, e.query):
            assert not set(s.tolist()) & set(qq.tolist())
        if bilevel:
            assert {d.groups[c] for c in e.class_ids} == {e.group} and e.group != "tiny"
        ways_seen.add(e.ways)
        totals.append(total)
    top = min(50, 17) if bilevel else 50  # g1..g3 hold 17 or 18 classes (g0 lost class 0 to "tiny")
    assert min(ways_seen) == 5 and max(ways_seen) >= top
    assert min(totals) < 60 and max(totals) == 500  # the support size varies and reaches the cap


def test_meta_dataset_episode_and_determinism():
    d = synthetic([40] * 8 + [6] * 4)
    a = sample_meta_dataset(d, np.random.default_rng(3))
    b = sample_meta_dataset(d, np.random.default_rng(3))
    assert np.array_equal(a.support_x, b.support_x) and np.array_equal(a.query_y, b.query_y)
    c, i = decode(a.support_x)
    assert np.array_equal(c, a.class_ids[a.support_y]) and np.array_equal(i, a.support_index)
    assert a.support_y.max() == a.ways - 1 and a.query_y.max() == a.ways - 1
    assert len(a.query_y) == a.ways * min(10, d.class_sizes[a.class_ids].min() // 2)


def test_meta_dataset_errors():
    with pytest.raises(DataError, match="4 classes.*min_ways=5"):
        describe_meta_dataset(synthetic([10] * 4), np.random.default_rng(0))
    with pytest.raises(DataError, match="'c3' has 1"):
        describe_meta_dataset(synthetic([10, 10, 10, 1, 10, 10]), np.random.default_rng(0))
    with pytest.raises(DataError, match="no class groups"):
        describe_meta_dataset(synthetic([10] * 6), np.random.default_rng(0), bilevel=True)
    with pytest.raises(DataError, match="max_support"):
        describe_meta_dataset(synthetic([10] * 6), np.random.default_rng(0), max_support=20)


def test_load_episode_matches_description():
    d = synthetic([12] * 9)
    desc = describe_nway_kshot(d, 3, 2, 2, np.random.default_rng(4))
    e = load_episode(d, desc)
    assert np.array_equal(e.support_index, np.concatenate(desc.support))
    assert np.array_equal(e.class_ids, desc.class_ids)


# ---------------------------------------------------------------------------------------------------- augmentation

def batch(n=6, s=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3)).astype(np.uint8)


def test_augment_shapes_identity_determinism():
    x = batch()
    y = augment(x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.uint8
    f = augment(x, np.random.default_rng(0), dtype=np.float32)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 255
    assert np.array_equal(np.floor(f + 0.5).astype(np.uint8), y)
    assert np.array_equal(augment(x, np.random.default_rng(0), p=0.0), x)
    assert np.array_equal(augment(x, np.random.default_rng(0), p=0.0, dtype=np.float32), x.astype(np.float32))
    assert np.array_equal(augment(x, np.random.default_rng(5)), augment(x, np.random.default_rng(5)))
    assert not np.array_equal(augment(x, np.random.default_rng(5)), augment(x, np.random.default_rng(6)))
    still = augment(x, np.random.default_rng(1), p=1.0, flip=False, translate=0, brightness=0, contrast=(1, 1),
                    saturation=(1, 1))
    assert np.array_equal(still, x)  # every step at its neutral setting
    with pytest.raises(InputError):
        augment(x[0], np.random.default_rng(0))
    with pytest.raises(InputError):
        augment(x, np.random.default_rng(0), fill="edge")


def test_augment_flip_and_translate():
    x = batch(n=40)
    neutral = dict(brightness=0, contrast=(1, 1), saturation=(1, 1))
    y = augment(x, np.random.default_rng(2), p=1.0, translate=0, **neutral)
    flipped = [np.array_equal(a, b[:, ::-1]) for a, b in zip(x, y)]
    kept = [np.array_equal(a, b) for a, b in zip(x, y)]
    assert all(f or k for f, k in zip(flipped, kept)) and 5 < sum(flipped) < 35
    assert np.array_equal(augment(x, np.random.default_rng(2), p=1.0, flip=False, translate=0, **neutral), x)

    y = augment(x, np.random.default_rng(3), p=1.0, flip=False, fill=17, **neutral)  # 32 * 0.125 = 4 pixels
    for a, b in zip(x, y):
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                if np.array_equal(b[max(0, dy):32 + min(0, dy), max(0, dx):32 + min(0, dx)],
                                  a[max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)])]
        assert len(hits) == 1
        dy, dx = hits[0]
        uncovered = np.ones((32, 32), bool)
        uncovered[max(0, dy):32 + min(0, dy), max(0, dx):32 + min(0, dx)] = False
        assert np.all(b[uncovered] == 17)

    white = np.full((4, 32, 32, 3), 255, np.uint8)
    white[:, 10:20, 10:20] = 0
    y = augment(white, np.random.default_rng(4), p=1.0, flip=False, **neutral)  # "border" fill: stays white
    assert np.all(y[:, :4] == 255) and np.all(y[:, -4:] == 255) and (y == 0).sum() == (white == 0).sum()


def test_augment_colour():
    x = np.full((50, 8, 8, 3), 128, np.uint8)
    x[:, :, :4] = 100
    y = augment(x, np.random.default_rng(0), p=1.0, flip=False, translate=0, contrast=(1, 1), saturation=(1, 1))
    shift = y.astype(np.int64) - x
    assert np.all(shift == shift[:, :1, :1, :1])  # one brightness shift per image
    assert np.abs(shift).max() <= 64 and np.abs(shift).max() > 40  # +-0.5 in [-1, 1] units = +-63.75
    y = augment(x, np.random.default_rng(0), p=1.0, flip=False, translate=0, brightness=0, saturation=(1, 1))
    spread = y[:, 0, 7, 0].astype(np.int64) - y[:, 0, 0, 0]  # was 28
    assert spread.min() >= 13 and spread.max() <= 43 and spread.min() < 20 and spread.max() > 36


# ---------------------------------------------------------------------------------------------------- statistics

def test_mean_ci95():
    m, h = mean_ci95([0.5, 0.6, 0.7, 0.8])
    assert m == pytest.approx(0.65)
    assert h == pytest.approx(1.96 * np.std([0.5, 0.6, 0.7, 0.8], ddof=1) / 2)
    assert mean_ci95([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.0, abs=1e-12))
    assert math.isnan(mean_ci95([0.9])[1])
    with pytest.raises(InputError):
        mean_ci95([])


# ---------------------------------------------------------------------------------------------------- glyphs, digits

def test_glyphs():
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    d = parse_spec("glyphs:greek,hebrew", 32)
    assert d.num_classes == 49 + 27 and set(d.groups) == {"greek", "hebrew"} and d.flip_ok is False
    assert np.all(d.class_sizes == 20) and d.class_names[0] == "U+0391 GREEK CAPITAL LETTER ALPHA"
    x = d.images(3, range(6))
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 2]) and x.mean() > 150 and x.min() < 80  # dark ink on white
    assert len({im.tobytes() for im in x}) == 6  # renderings vary within a class
    again = glyphs(["hebrew", "greek"], 32, per_class=3)  # a rendering depends on (seed, code point, j) only
    assert np.array_equal(again.images(27 + 3, range(3)), x[:3])
    other = glyphs("greek", 32, per_class=3, seed=1)
    assert not np.array_equal(other.images(3, range(3)), x[:3])
    mixed = glyphs("latin,greek", 32, per_class=1)  # Greek capitals drawn like Latin ones are dropped
    assert 52 < mixed.num_classes < 52 + 49 and mixed.group_classes()["latin"].size == 52
    with pytest.raises(DataError, match="unknown script.*klingon.*choose from: all, latin"):
        parse_spec("glyphs:latin,klingon", 32)


@pytest.mark.parametrize("style", ["graphpaper", "chalk"])
def test_glyph_paper_styles(style):
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    plain = glyphs("hebrew", 64, per_class=4)
    d = parse_spec(f"glyphs:hebrew:{style.upper()}", 64)
    assert d.name == f"glyphs:hebrew:{style}" and d.class_names == plain.class_names and d.flip_ok is False
    x, ref = d.images(5, range(4)), plain.images(5, range(4))
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.uint8
    assert not np.array_equal(x[..., 0], x[..., 1])  # in colour
    assert np.array_equal(x, glyphs("hebrew", 64, per_class=4, style=style).images(5, range(4)))  # seeded
    assert not np.array_equal(x, glyphs("hebrew", 64, per_class=4, style=style, seed=1).images(5, range(4)))
    # the same glyph drawn on another page: ink pixels of the plain rendering stand out from the page the
    # other way round on a chalkboard (light on dark) and the same way on graph paper
    lum = x.astype(np.float64).mean(axis=3)
    ink, page = ref[..., 0] < 60, ref[..., 0] > 220
    diff = np.array([lum[i][ink[i]].mean() - lum[i][page[i]].mean() for i in range(4)])
    assert np.all(diff > 60) if style == "chalk" else np.all(diff < -60)
    with pytest.raises(DataError, match="unknown style 'sepia'.*plain, graphpaper, chalk"):
        parse_spec("glyphs:hebrew:sepia", 32)


def test_glyphs_scripts_all_render():
    pytest.importorskip("PIL", reason="glyphs need Pillow")
    pytest.importorskip("matplotlib", reason="glyphs need matplotlib's DejaVu fonts")
    d = glyphs("all", 16, per_class=2)
    assert set(d.groups) == set(SCRIPTS) and d.num_classes > 1500
    for g, cs in d.group_classes().items():  # every script's first class renders some ink
        assert d.image(cs[0], 1).min() < 128, g


def test_glyphs_without_pillow(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match="pip install matplotlib pillow"):
        parse_spec("glyphs:latin", 32)


def test_digits():
    pytest.importorskip("sklearn", reason="digits need scikit-learn")
    d = digits(24)
    assert (d.num_classes, d.num_images) == (10, 1797) and d.class_names == [str(k) for k in range(10)]
    x = d.images(0, [0])
    assert x.shape == (1, 24, 24, 3) and x[0, 0, 0, 0] == 255 and x.min() < 100  # black ink on white


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        parse_spec("digits", 32)


def test_letter_scripts_hold_letters_and_the_symbol_blocks_none():
    """LETTER_SCRIPTS names the writing systems; every other SCRIPTS entry is a symbol block without a letter
    (what `pretrain.py --scripts` relies on to pretrain with no letter of any script)."""
    import unicodedata

    from microtrain.data import LETTER_SCRIPTS

    assert set(LETTER_SCRIPTS) < set(SCRIPTS)
    for name, ranges in SCRIPTS.items():
        cats = {unicodedata.category(chr(u))[0] for lo, hi in ranges for u in range(lo, hi + 1)} - {"C"}
        assert (cats == {"L"}) if name in LETTER_SCRIPTS else ("L" not in cats), (name, cats)
