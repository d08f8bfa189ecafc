"""Few-shot datasets: classes of images, decoded on demand and resized to the model's input size (DESIGN §6).

A Dataset is a list of classes, each a list of images, with class names, an optional group per class
(Omniglot's alphabet, used by Meta-Dataset's bilevel sampler) and a `flip_ok` flag (False where a mirrored
image is another class: characters, digits). `parse_spec("omniglot:PATH" | "folder:PATH" | "glyphs:SCRIPTS" |
"digits", size)` builds one. Runtime needs NumPy only; glyphs need Pillow + matplotlib (for its DejaVu fonts),
digits scikit-learn, non-PNG images in a folder Pillow. All are imported lazily.
"""

import math
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

from microtrain.errors import DataError, MicrotrainError
from microtrain.images import decode_png, load_image
from microtrain.preprocess import resize_bilinear_aa

DEFAULT_CACHE_BYTES = 256 << 20  # resized images kept in memory per Dataset; all of Omniglot at 128x128 is 238 MB

SPEC_FORMS = ("omniglot:PATH  (a folder holding Omniglot's images_*.zip, or one such zip)",
              "folder:PATH    (one sub-folder of images per class)",
              "glyphs:SCRIPTS[:STYLE] (comma list of scripts rendered from the DejaVu fonts, or 'all'; "
              "STYLE plain (default), graphpaper or chalk)",
              "digits         (scikit-learn's 8x8 digits)")


class Dataset:
    """Classes of images, loaded on demand and resized to uint8 (size, size, 3).

    name: str; size: int, the side every image is resized to; class_names: list of str (C,);
    groups: list of str (C,) or None (e.g. Omniglot's alphabet of each character; Meta-Dataset's bilevel
    sampler draws a group first); flip_ok: False when a mirrored image belongs to another class;
    class_sizes: int64 (C,) images per class.

    items[c][i] is an opaque reference to image i of class c, handed to `load(ref)`, which returns uint8
    (H, W, 3) (or (H, W) grey) and raises DataError naming the file when it cannot. Images are resized with
    `resize_bilinear_aa` to size x size (stretching, as Meta-Dataset's reader does; no crop), rounded half up.
    Resized images are cached until `cache_bytes` are used, then decoded on every access (bounded memory).
    """

    def __init__(self, name, class_names, items, load, size, *, groups=None, flip_ok=True,
                 cache_bytes=DEFAULT_CACHE_BYTES):
        size = _check_size(size)
        if len(class_names) != len(items):
            raise DataError(f"{name}: {len(class_names)} class names for {len(items)} classes")
        if groups is not None and len(groups) != len(items):
            raise DataError(f"{name}: {len(groups)} groups for {len(items)} classes")
        self.name = name
        self.size = size
        self.class_names = list(class_names)
        self.groups = None if groups is None else list(groups)
        self.flip_ok = bool(flip_ok)
        self.class_sizes = np.array([len(c) for c in items], np.int64)
        self._items = [list(c) for c in items]
        self._load = load
        self._cache = {}
        self._cache_bytes = int(cache_bytes)
        self._cache_left = int(cache_bytes)

    def __len__(self):
        return len(self._items)

    @property
    def num_classes(self):
        return len(self._items)

    @property
    def num_images(self):
        return int(self.class_sizes.sum())

    def __repr__(self):
        g = f", {len(self.group_classes())} groups" if self.groups is not None else ""
        return (f"Dataset({self.name!r}, {self.num_classes} classes{g}, {self.num_images} images, "
                f"{self.size}x{self.size}, flip_ok={self.flip_ok})")

    def image(self, c, i):
        """uint8 (size, size, 3): image i of class c."""
        key = (int(c), int(i))
        img = self._cache.get(key)
        if img is not None:
            return img
        try:
            ref = self._items[key[0]][key[1]]
        except IndexError:
            raise DataError(f"{self.name}: no image {i} in class {c}") from None
        img = to_size(self._load(ref), self.size, f"{self.name} class {self.class_names[key[0]]!r} image {i}")
        if img.nbytes <= self._cache_left:
            img.setflags(write=False)
            self._cache[key] = img
            self._cache_left -= img.nbytes
        return img

    def images(self, c, index):
        """uint8 (len(index), size, size, 3): the images of class c at the given indices."""
        index = np.asarray(index, np.int64).reshape(-1)
        out = np.empty((index.size, self.size, self.size, 3), np.uint8)
        for n, i in enumerate(index):
            out[n] = self.image(c, i)
        return out

    def group_classes(self):
        """dict group -> int64 array of class ids, groups in order of first appearance ({} without groups)."""
        if self.groups is None:
            return {}
        out = {}
        for c, g in enumerate(self.groups):
            out.setdefault(g, []).append(c)
        return {g: np.array(cs, np.int64) for g, cs in out.items()}

    def subset(self, class_ids, name=None):
        """A Dataset of the given classes only (e.g. a meta-train / meta-test split); the cache is not shared."""
        ids = [int(c) for c in class_ids]
        return Dataset(name or f"{self.name}[{len(ids)} classes]", [self.class_names[c] for c in ids],
                       [self._items[c] for c in ids], self._load, self.size,
                       groups=None if self.groups is None else [self.groups[c] for c in ids],
                       flip_ok=self.flip_ok, cache_bytes=self._cache_bytes)


def _check_size(size):
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(f"image size must be a positive int (the model's input side, e.g. 128), got {size!r}")
    return int(size)


def to_size(img, size, where):
    """uint8 (H, W, 3) or (H, W) -> uint8 (size, size, 3), antialiased bilinear, rounded half up."""
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or 0 in a.shape:
        raise DataError(f"{where}: expected a uint8 (H, W, 3) or (H, W) image, got {a.dtype} {a.shape}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[:2] == (size, size):
        return np.ascontiguousarray(a)
    r = resize_bilinear_aa(a, size, size)
    return np.clip(np.floor(r + 0.5), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- specs

def parse_spec(spec, size, *, seed=0, cache_bytes=DEFAULT_CACHE_BYTES):
    """Dataset from a SPEC string (see SPEC_FORMS): omniglot:PATH, folder:PATH, glyphs:SCRIPTS, digits.

    seed only affects glyphs (its renderings are random but seeded).
    """
    if not isinstance(spec, str):
        raise DataError(f"dataset spec must be a string, got {type(spec).__name__}")
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "omniglot" and sep and arg:
        return omniglot(arg, size, cache_bytes=cache_bytes)
    if kind == "folder" and sep and arg:
        return image_folder(arg, size, cache_bytes=cache_bytes)
    if kind == "glyphs" and sep and arg:
        scripts, _, style = arg.partition(":")
        return glyphs(scripts, size, seed=seed, style=style.strip().lower() or "plain", cache_bytes=cache_bytes)
    if kind == "digits" and not arg:
        return digits(size, cache_bytes=cache_bytes)
    raise DataError(f"unknown dataset spec {spec!r}; the forms are:\n  " + "\n  ".join(SPEC_FORMS))


# ---------------------------------------------------------------------------------------------------- Omniglot

def omniglot(path, size, *, cache_bytes=DEFAULT_CACHE_BYTES):
    """Omniglot characters (Lake et al. 2015) read straight from its zips, never extracted to disk.

    path: a folder (every `images_*.zip` in it, in name order) or one zip. Members are
    `<set>/<Alphabet>/<characterNN>/<id>_<drawer>.png`, 105x105 1-bit PNGs, black strokes on white, kept as
    is (grey repeated to RGB). A class is one (alphabet, character); its group is the alphabet. A class
    present in several zips is taken from the first zip only (Greek and Latin appear in both
    images_background_small1 and _small2, byte-identical), so small1 + small2 give 8 alphabets, 242
    characters, 4840 images. Classes are ordered by (alphabet, character), images by file name. The PNG bytes
    (about 1.7 MB for both small sets) are read eagerly; decoding happens on first access.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        zips = sorted(p.glob("images_*.zip"))
        if not zips:
            raise DataError(f"omniglot: no images_*.zip in {p} (expected Omniglot's images_background_small1.zip, "
                            "images_background_small2.zip, images_background.zip or images_evaluation.zip)")
    elif p.is_file():
        zips = [p]
    else:
        raise DataError(f"omniglot: {p} does not exist (give the folder holding the Omniglot zips, or one zip)")
    classes = {}  # (alphabet, character) -> list of (member name, bytes)
    for z in zips:
        found, valid = {}, 0
        try:
            with zipfile.ZipFile(z) as zf:
                for info in zf.infolist():
                    parts = info.filename.split("/")
                    if info.is_dir() or len(parts) != 4 or not parts[3].lower().endswith(".png"):
                        continue
                    valid += 1
                    key = (parts[1], parts[2])
                    if key in classes:  # already read from an earlier zip: keep the first
                        continue
                    found.setdefault(key, []).append((f"{z.name}:{info.filename}", zf.read(info)))
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"omniglot: cannot read {z} ({e})") from None
        if not valid:
            raise DataError(f"omniglot: {z} holds no <set>/<Alphabet>/<character>/<image>.png members; "
                            "is it an Omniglot background/evaluation zip? (all_runs.zip is not)")
        for key, members in found.items():
            classes[key] = sorted(members)
    keys = sorted(classes)
    return Dataset(f"omniglot:{p}", [f"{a}/{c}" for a, c in keys], [classes[k] for k in keys], _decode_member,
                   size, groups=[a for a, _ in keys], flip_ok=False, cache_bytes=cache_bytes)


def _decode_member(ref):
    where, data = ref
    try:
        return decode_png(data, where)
    except MicrotrainError as e:
        raise DataError(str(e)) from None


# ---------------------------------------------------------------------------------------------------- folders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".npy")
_NATIVE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"P5", b"P6", b"\x93NUMPY")  # decoded by microtrain.images itself
_PILLOW_MAGIC = (b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")  # + RIFF....WEBP


def image_folder(path, size, *, cache_bytes=DEFAULT_CACHE_BYTES):
    """An image-folder tree: PATH/<class>/<image>, one sub-folder per class (names sorted; hidden entries
    and files without an image suffix (IMAGE_SUFFIXES) skipped; images directly in each class folder).

    Every file's first bytes are checked here, so a non-image file, or a JPEG etc. without Pillow installed,
    fails now with a DataError naming the file; a file that looks right but does not decode fails when it is
    first loaded, again naming the file. Images of any size and aspect are stretched to size x size.
    flip_ok is True (natural images).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"folder: {root} is not a folder (expected {root}/<class>/<image files>)")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"folder: no class sub-folders in {root} (expected {root}/<class>/<image files>)")
    have_pillow = None
    names, items = [], []
    for d in class_dirs:
        files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"folder: class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "remove it or add images")
        for f in files:
            try:
                with open(f, "rb") as fh:
                    head = fh.read(12)
            except OSError as e:
                raise DataError(f"folder: cannot read {f} ({e})") from None
            if head.startswith(_NATIVE_MAGIC):
                continue
            if not (head.startswith(_PILLOW_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
                raise DataError(f"folder: {f} is not a PNG, JPEG, GIF, BMP, WebP, TIFF, PGM/PPM or .npy image "
                                "(undecodable); remove or replace it")
            if have_pillow is None:
                have_pillow = _has_pillow()
            if not have_pillow:
                raise DataError(f"folder: {f} is not PNG/PGM/PPM/.npy, which is all microtrain decodes without "
                                "Pillow; `pip install pillow` (or `pip install microtrain[images]`), or convert "
                                "the images to PNG")
        names.append(d.name)
        items.append(files)
    return Dataset(f"folder:{root}", names, items, _load_file, size, flip_ok=True, cache_bytes=cache_bytes)


def _has_pillow():
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def _load_file(path):
    try:
        return load_image(path)
    except MicrotrainError as e:
        raise DataError(f"folder: {e}") from None


# ---------------------------------------------------------------------------------------------------- glyphs

# Unicode ranges per script (blocks the DejaVu Sans face covers). Within them a character is a class when it
# is a letter, digit, symbol or punctuation (not a mark, modifier, space or unassigned), DejaVu Sans draws it,
# and its DejaVu Sans bitmap differs from every earlier selected character's (drops homoglyphs such as Latin A
# / Greek Alpha / Cyrillic A when scripts are combined; near-homoglyphs like l / I stay).
SCRIPTS = {
    "latin": ((0x41, 0x5A), (0x61, 0x7A)),
    "greek": ((0x391, 0x3A9), (0x3B1, 0x3C9)),
    "cyrillic": ((0x410, 0x44F),),
    "armenian": ((0x531, 0x556), (0x561, 0x586)),
    "georgian": ((0x10D0, 0x10FA),),
    "hebrew": ((0x5D0, 0x5EA),),
    "arabic": ((0x621, 0x64A),),
    "nko": ((0x7CA, 0x7EA),),
    "lao": ((0xE81, 0xEAE),),
    "ogham": ((0x1681, 0x169A),),
    "tifinagh": ((0x2D30, 0x2D67),),
    "canadian": ((0x1401, 0x166C),),  # Unified Canadian Aboriginal Syllabics
    "ipa": ((0x250, 0x2AF),),
    "math": ((0x2200, 0x22FF),),  # Mathematical Operators
    "arrows": ((0x2190, 0x21FF),),
    "box": ((0x2500, 0x257F),),  # Box Drawing
    "shapes": ((0x25A0, 0x25FF),),  # Geometric Shapes
    "braille": ((0x2801, 0x28FF),),  # U+2800 is blank
    "yijing": ((0x4DC0, 0x4DFF),),  # hexagrams
    "technical": ((0x2300, 0x23FF),),  # Miscellaneous Technical
    "symbols": ((0x2600, 0x26FF),),  # Miscellaneous Symbols
    "dingbats": ((0x2700, 0x27BF),),
    "blocks": ((0x2580, 0x259F),),  # Block Elements
    "mathsymbols": ((0x27C0, 0x27EF), (0x2980, 0x29FF)),  # Miscellaneous Mathematical Symbols-A and -B
    "supmath": ((0x2A00, 0x2AFF),),  # Supplemental Mathematical Operators
    # Supplemental Arrows-A and -B, Miscellaneous Symbols and Arrows
    "suparrows": ((0x27F0, 0x27FF), (0x2900, 0x297F), (0x2B00, 0x2BFF)),
}
# Scripts whose characters are letters of a writing system; the others are symbol blocks.
LETTER_SCRIPTS = ("latin", "greek", "cyrillic", "armenian", "georgian", "hebrew", "arabic", "nko", "lao", "ogham",
                  "tifinagh", "canadian", "ipa")
_CLASS_CATEGORIES = {"Lu", "Ll", "Lt", "Lo", "Nd", "Nl", "No", "Sm", "Sc", "Sk", "So",
                     "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"}
# The twelve text faces in matplotlib's wheel (the Display faces cover little and are for large sizes).
DEJAVU_FACES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
                "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
                "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique")


def glyphs(scripts, size, *, per_class=20, seed=0, canvas=105, style="plain", cache_bytes=DEFAULT_CACHE_BYTES):
    """Characters rendered from the DejaVu fonts in matplotlib's wheel: each character a class, per_class
    renderings each (an Omniglot-like set: black ink on white, intra-class variation instead of drawers).

    scripts: comma-separated names from SCRIPTS (or a list), or "all"; each class's group is its script.
    Rendering j of code point u is drawn on a canvas x canvas grey image from a Generator seeded with
    (seed, u, j), so it does not depend on which other scripts are selected: a face among the DejaVu faces
    that draw u (Sans/Serif/Mono x regular/bold/oblique), an em size of 0.4-0.7 canvas (shrunk so the glyph
    box is at most 0.7 canvas), an extra stroke of 0 or 1 pixel, a rotation in [-15, 15] degrees and a shift
    of up to 0.1 canvas that keeps the rotated box inside. Then resized to size x size like every dataset.
    style: how the ink meets the page (PAPER_STYLES): "plain" is black ink on white paper, as above and as the
    shipped weights were pretrained; "graphpaper" and "chalk" draw the same renderings in colour on a page those
    weights never saw (see paper_style), a change of appearance on top of the change of script.
    Identical for a seed given the same Pillow/FreeType and font files. Needs Pillow and matplotlib.
    """
    names = script_names(scripts)
    if per_class < 1 or canvas < 8:
        raise DataError(f"glyphs: need per_class >= 1 and canvas >= 8, got {per_class} and {canvas}")
    if style not in PAPER_STYLES:
        raise DataError(f"glyphs: unknown style {style!r}; choose from {', '.join(PAPER_STYLES)}")
    renderer = GlyphRenderer(canvas, int(seed))
    code_points, groups = renderer.select(names)
    class_names = [f"U+{u:04X} {unicodedata.name(chr(u), '?')}" for u in code_points]
    items = [[(u, j) for j in range(per_class)] for u in code_points]
    load, suffix = renderer.render, ""
    if style != "plain":
        load, suffix = _Styled(renderer.render, style, int(seed)), f":{style}"
    return Dataset(f"glyphs:{','.join(names)}{suffix}", class_names, items, load, size, groups=groups,
                   flip_ok=False, cache_bytes=cache_bytes)


def script_names(scripts):
    """Script names from "a,b" / a list / "all", checked against SCRIPTS (DataError names the choices)."""
    if isinstance(scripts, str):
        scripts = [s.strip().lower() for s in scripts.split(",") if s.strip()]
    names = list(SCRIPTS) if list(scripts) == ["all"] else list(dict.fromkeys(scripts))
    unknown = [s for s in names if s not in SCRIPTS]
    if not names or unknown:
        raise DataError(f"glyphs: unknown script(s) {unknown or names!r}; choose from: all, {', '.join(SCRIPTS)}")
    return names


class GlyphRenderer:
    """Holds the DejaVu fonts (per face and pixel size) and each code point's faces that draw it."""

    def __init__(self, canvas, seed):
        try:
            import matplotlib
            from PIL import Image, ImageDraw, ImageFont
        except ImportError as e:
            raise DataError(f"glyphs need Pillow and matplotlib (for its DejaVu fonts): `pip install matplotlib "
                            f"pillow` ({e})") from None
        self._Image, self._ImageDraw, self._ImageFont = Image, ImageDraw, ImageFont
        fontdir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        self.paths = {f: fontdir / f"{f}.ttf" for f in DEJAVU_FACES}
        missing = [str(p) for p in self.paths.values() if not p.is_file()]
        if missing:
            raise DataError(f"glyphs: DejaVu font files missing from matplotlib's data: {missing[0]} ...")
        self.canvas = int(canvas)
        self.seed = seed
        self.faces_of = {}  # code point -> tuple of faces that draw it
        self._fonts = {}

    def font(self, face, px):
        key = (face, px)
        if key not in self._fonts:
            # BASIC layout: no shaping engine, so results do not depend on whether libraqm is installed
            self._fonts[key] = self._ImageFont.truetype(str(self.paths[face]), px,
                                                        layout_engine=self._ImageFont.Layout.BASIC)
        return self._fonts[key]

    def select(self, names):
        """Code points and their script for the named scripts (see SCRIPTS for the rules)."""
        probe = {f: self.font(f, 32) for f in DEJAVU_FACES}
        notdef = {f: _mask_key(probe[f], chr(0x10FFFD)) for f in DEJAVU_FACES}  # a code point no font has
        seen, code_points, groups = set(), [], []
        for name in names:
            for lo, hi in SCRIPTS[name]:
                for u in range(lo, hi + 1):
                    if unicodedata.category(chr(u)) not in _CLASS_CATEGORIES:
                        continue
                    faces = tuple(f for f in DEJAVU_FACES if _draws(probe[f], chr(u), notdef[f]))
                    if "DejaVuSans" not in faces:
                        continue
                    key = _mask_key(probe["DejaVuSans"], chr(u))
                    if key in seen:
                        continue
                    seen.add(key)
                    self.faces_of[u] = faces
                    code_points.append(u)
                    groups.append(name)
        if not code_points:
            raise DataError(f"glyphs: the DejaVu fonts draw no character of {', '.join(names)}")
        return code_points, groups

    def render(self, ref):
        """uint8 (canvas, canvas) grey rendering j of code point u (ref = (u, j)); see glyphs()."""
        u, j = ref
        C = self.canvas
        rng = np.random.default_rng([self.seed, u, j])
        faces = self.faces_of[u]
        face = faces[int(rng.integers(len(faces)))]
        em = rng.uniform(0.4, 0.7) * C
        stroke = int(rng.integers(0, 2))
        angle = rng.uniform(-15.0, 15.0)
        jitter = rng.uniform(-1.0, 1.0, 2)
        ch = chr(u)
        font = self.font(face, max(4, int(round(em))))
        left, top, right, bottom = font.getbbox(ch, stroke_width=stroke)
        ext = max(right - left, bottom - top, 1)
        if ext > 0.7 * C:
            font = self.font(face, max(4, int(em * 0.7 * C / ext)))
            left, top, right, bottom = font.getbbox(ch, stroke_width=stroke)
        w, h = right - left, bottom - top
        cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        rw, rh = w * cos + h * sin, w * sin + h * cos  # box of the rotated glyph
        dx = jitter[0] * min(0.1 * C, max(0.0, (C - rw) / 2 - 1))
        dy = jitter[1] * min(0.1 * C, max(0.0, (C - rh) / 2 - 1))
        cx, cy = C / 2 + dx, C / 2 + dy
        ink = self._Image.new("L", (C, C), 0)
        self._ImageDraw.Draw(ink).text((cx - (left + right) / 2, cy - (top + bottom) / 2), ch, fill=255, font=font,
                                       stroke_width=stroke, stroke_fill=255)
        ink = ink.rotate(angle, resample=self._Image.Resampling.BILINEAR, center=(cx, cy), fillcolor=0)
        return 255 - np.asarray(ink, np.uint8)


# ---------------------------------------------------------------------------------------------------- paper styles

PAPER_STYLES = ("plain", "graphpaper", "chalk")


class _Styled:
    """load(ref) for a styled glyph set: the plain rendering, then paper_style with its own seeded stream."""

    def __init__(self, render, style, seed):
        self.render, self.style, self.seed = render, style, seed

    def __call__(self, ref):
        u, j = ref
        # (seed, u, j, 1): a stream of its own, so the glyph's shape is the plain set's rendering j exactly
        return paper_style(self.render(ref), self.style, np.random.default_rng([self.seed, u, j, 1]))


def paper_style(grey, style, rng):
    """uint8 (S, S, 3): the black-on-white rendering `grey` (uint8 (S, S)) drawn in colour on another page.

    The ink coverage is alpha = (255 - grey) / 255; the page and the ink are drawn from rng per image:
      graphpaper: pale paper of a random tint, shaded by a smooth low-frequency field (+-8 %, uneven light),
                  blue-grey grid lines every 9-15 px at a random offset, ink of a random dark colour (blue-ish
                  pen or near-black), Gaussian pixel noise sigma 6;
      chalk:      a dark green board shaded +-25 %, chalk of a random light grey whose coverage is thinned by a
                  per-pixel grain (x U(0.6, 1)), noise sigma 8. Light on dark: the opposite polarity to "plain".
    Pretraining (reference_models/pretrain.py) only varies the ink and paper grey levels of the plain style, so
    both are appearance shifts the shipped weights have not seen.
    """
    n = grey.shape[0]
    alpha = ((255.0 - grey.astype(np.float64)) / 255.0)[..., None]
    if style == "graphpaper":
        page = rng.uniform(200, 255, 3) * (1 + 0.08 * _smooth_field(rng, n, 3))[..., None]
        step = int(rng.integers(9, 16))
        first = int(rng.integers(0, step))
        line = rng.uniform([60, 90, 160], [140, 170, 230])
        grid = np.zeros((n, n), bool)
        grid[first::step, :] = True
        grid[:, first::step] = True
        page = np.where(grid[..., None], 0.5 * page + 0.5 * line, page)
        ink = rng.uniform([0, 0, 40], [80, 80, 160]) if rng.random() < 0.5 else rng.uniform(0, 70, 3)
        noise = 6.0
    elif style == "chalk":
        page = rng.uniform([20, 40, 25], [60, 90, 60]) * (1 + 0.25 * _smooth_field(rng, n, 4))[..., None]
        ink = rng.uniform(200, 250, 3)
        alpha = alpha * rng.uniform(0.6, 1.0, alpha.shape)
        noise = 8.0
    else:
        raise DataError(f"paper_style: unknown style {style!r}; choose from {', '.join(PAPER_STYLES[1:])}")
    out = page * (1 - alpha) + ink * alpha + rng.normal(0.0, noise, (n, n, 3))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _smooth_field(rng, n, cells):
    """float64 (n, n): N(0, 1) values on a (cells + 1)^2 lattice, bilinearly interpolated over n x n pixels."""
    g = rng.standard_normal((cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, n)
    i = np.minimum(pos.astype(np.int64), cells - 1)
    f = pos - i
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]  # (n, cells + 1): interpolated down the rows
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _mask_key(font, ch):
    m = font.getmask(ch)
    return m.size, bytes(m)


def _draws(font, ch, notdef):
    left, top, right, bottom = font.getbbox(ch)
    return right > left and bottom > top and _mask_key(font, ch) != notdef


# ---------------------------------------------------------------------------------------------------- digits

def digits(size, *, cache_bytes=DEFAULT_CACHE_BYTES):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes of 174-183), upsampled.

    Pixel values 0..16 (16 = ink) become black ink on white, as Omniglot and glyphs: u = 255 - round(v * 255
    / 16). flip_ok False. Needs scikit-learn.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(f"digits need scikit-learn: `pip install scikit-learn` ({e})") from None
    d = load_digits()
    pix = (255 - np.floor(np.asarray(d.images, np.float64) * 255 / 16 + 0.5)).astype(np.uint8)  # (1797, 8, 8)
    target = np.asarray(d.target)
    labels = sorted(set(target.tolist()))
    items = [[pix[i] for i in np.flatnonzero(target == k)] for k in labels]
    return Dataset("digits", [str(k) for k in labels], items, _identity, size, flip_ok=False,
                   cache_bytes=cache_bytes)


def _identity(img):
    return img
