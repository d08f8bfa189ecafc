"""Image decoding without extra dependencies: PNG (zlib + the five PNG filters), binary PPM/PGM, .npy;
JPEG and others through Pillow when it is installed (`pip install microtrain[images]`).

Every decoder returns uint8 (H, W, 3) RGB. Errors are InputError with the file name and what to do.
PNG per the W3C PNG specification (2nd ed.), §7 (filters) and §11.2.2 (IHDR); no interlacing.
"""

import struct
import zlib
from pathlib import Path

import numpy as np

from microtrain.errors import InputError

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _unfilter(raw, height, stride, bpp):
    """Undo PNG scanline filters. raw: bytes of height * (1 + stride); bpp: bytes per pixel (>= 1)."""
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    pos = 0
    for y in range(height):
        ftype = raw[pos]
        line = np.frombuffer(raw, np.uint8, stride, pos + 1).astype(np.int32)
        pos += 1 + stride
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):  # Sub, Average, Paeth depend on the left neighbour: sequential
            cur = line.copy()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) >> 1
                else:
                    c = prev[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
        else:
            raise ValueError(f"unknown PNG filter type {ftype}")
        out[y] = cur
        prev = cur
    return out


def decode_png(data, where="PNG"):
    """uint8 (H, W, 3) RGB from PNG bytes (bit depth 1/2/4/8/16; grey, RGB, palette, +alpha dropped)."""
    if data[:8] != _PNG_SIG:
        raise InputError(f"{where}: not a PNG file")
    pos, idat, palette, hdr = 8, [], None, None
    try:
        while pos < len(data):
            length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
            chunk = data[pos + 8:pos + 8 + length]
            if len(chunk) != length:
                raise ValueError("truncated chunk")
            pos += 12 + length
            if ctype == b"IHDR":
                hdr = struct.unpack(">IIBBBBB", chunk)
            elif ctype == b"PLTE":
                palette = np.frombuffer(chunk, np.uint8).reshape(-1, 3)
            elif ctype == b"IDAT":
                idat.append(chunk)
            elif ctype == b"IEND":
                break
        if hdr is None:
            raise ValueError("no IHDR chunk")
        w, h, depth, color, _, _, interlace = hdr
        if interlace:
            raise ValueError("interlaced PNGs are not supported; re-save without interlacing")
        if color not in _PNG_CHANNELS:
            raise ValueError(f"unknown colour type {color}")
        ch = _PNG_CHANNELS[color]
        bits = depth * ch
        stride = (w * bits + 7) // 8
        raw = zlib.decompress(b"".join(idat))
        if len(raw) < h * (1 + stride):
            raise ValueError("image data is truncated")
        rows = _unfilter(raw, h, stride, max(1, bits // 8))
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{where}: cannot decode PNG ({e})") from None
    if depth < 8:
        vals = np.unpackbits(rows, axis=1)[:, : w * depth].reshape(h, w, depth)
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        px = (vals * weights).sum(axis=2).astype(np.uint8)[:, :, None]
        if color == 0:  # scale grey levels to 0..255
            px = (px.astype(np.uint16) * 255 // ((1 << depth) - 1)).astype(np.uint8)
    elif depth == 16:
        px = rows.reshape(h, w, ch, 2)[..., 0]  # high byte
    else:
        px = rows.reshape(h, w, ch)
    if color == 3:
        if palette is None:
            raise InputError(f"{where}: palette PNG without a PLTE chunk")
        return palette[px[..., 0]]
    if ch in (1, 2):
        return np.repeat(px[..., :1], 3, axis=2)
    return np.ascontiguousarray(px[..., :3])


def decode_pnm(data, where="PNM"):
    """Binary PGM (P5) / PPM (P6), maxval <= 255."""
    try:
        parts, pos = [], 0
        while len(parts) < 4:
            while data[pos:pos + 1].isspace():
                pos += 1
            if data[pos:pos + 1] == b"#":
                pos = data.index(b"\n", pos) + 1
                continue
            end = pos
            while not data[end:end + 1].isspace():
                end += 1
            parts.append(data[pos:end])
            pos = end
        pos += 1
        magic, w, h, maxval = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        ch = {b"P5": 1, b"P6": 3}[magic]
        if maxval > 255:
            raise ValueError("16-bit PNM is not supported")
        px = np.frombuffer(data, np.uint8, w * h * ch, pos).reshape(h, w, ch)
    except Exception as e:
        raise InputError(f"{where}: cannot decode PGM/PPM ({e})") from None
    return np.repeat(px, 3, axis=2) if ch == 1 else px.copy()


def load_image(path):
    """uint8 (H, W, 3) from a file: .npy (HxW or HxWx3 uint8), PNG, PGM/PPM; else Pillow if installed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read image {path}: {e}") from None
    if path.suffix == ".npy":
        try:
            import io

            a = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise InputError(f"{path}: not a readable .npy array ({e})") from None
        if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)):
            raise InputError(f"{path}: expected a uint8 image (H, W) or (H, W, 3), got {a.shape} {a.dtype}")
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else (np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a)
    if data[:8] == _PNG_SIG:
        return decode_png(data, str(path))
    if data[:2] in (b"P5", b"P6"):
        return decode_pnm(data, str(path))
    try:
        from PIL import Image
    except ImportError:
        raise InputError(f"{path}: only PNG, PGM/PPM and .npy are decoded without Pillow; "
                         "`pip install microtrain[images]` for JPEG and other formats") from None
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise InputError(f"{path}: cannot decode image ({e})") from None
