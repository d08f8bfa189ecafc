"""Image preprocessing for the int8 models: resize, centre crop, quantize to the model's input (NumPy only).

The ImageNet models (MIT tiny-training's mcunet-5fps, mbv2-w0.35, proxyless-w0.3, 128x128) expect the
standard ImageNet evaluation transform followed by quantization with their first layer's input parameters:

1. resize so that the short side is round(size / 0.875) (146 for 128), keeping the aspect ratio, with an
   antialiased bilinear filter (a triangle filter stretched by the downscaling factor, as PIL's BILINEAR
   resize does), rounded back to uint8;
2. centre crop to size x size (offset floor((side - size) / 2));
3. RGB p in [0, 1] (uint8 / 255) -> real = 2p - 1 in [-1, 1] (mean 0.5, std 0.5 per channel);
4. quantize with the input's (x_scale, x_zero) = (1/127.5, 0): q = clamp(x_zero + round_half_away(real /
   x_scale), -128, 127).

Step 4 is computed exactly (rational arithmetic, once per uint8 value, as a 256-entry table). With
x_scale = 1/127.5, real / x_scale = u - 127.5 for a pixel value u: every pixel lies exactly on a rounding
tie, so floating-point evaluation would decide ties by its representation error (float64 evaluation
flips 66 of the 256 values, TFLM's float32 QUANTIZE 126; each by 1 LSB). Exactly: u >= 128 -> u - 127
(255 clamps to 127), u <= 127 -> u - 128; zero is never produced.
"""

import math
from fractions import Fraction

import numpy as np

from microtrain.errors import InputError

CROP_FRACTION = 0.875  # ImageNet evaluation: resize to size / 0.875, centre crop to size


def resize_bilinear_aa(image, out_h, out_w):
    """Antialiased bilinear resize of an (H, W, C) image -> float64 (out_h, out_w, C).

    Separable: each axis is resampled with a matrix whose row i holds the normalised weights of a triangle
    filter centred at input coordinate (i + 0.5) * in / out - 0.5, of radius max(in / out, 1) input pixels
    (a plain bilinear interpolation when upscaling; averaging over the footprint when downscaling).
    """
    img = np.asarray(image, np.float64)
    rows = _resample_matrix(img.shape[0], out_h)
    cols = _resample_matrix(img.shape[1], out_w)
    return np.einsum("oh,hwc,pw->opc", rows, img, cols, optimize=True)


def _resample_matrix(n_in, n_out):
    """(n_out, n_in) float64 weights of the 1-D antialiased triangle filter; rows sum to 1."""
    scale = n_in / n_out
    support = max(scale, 1.0)  # filter radius in input pixels
    centre = (np.arange(n_out) + 0.5) * scale  # output pixel centres in input coordinates (pixel edges at integers)
    taps = np.arange(n_in) + 0.5  # input pixel centres
    wts = np.clip(1.0 - np.abs(taps[None, :] - centre[:, None]) / support, 0.0, None)
    return wts / wts.sum(axis=1, keepdims=True)


def _round_half_away(f):
    """C round() of an exact Fraction: nearest integer, ties away from zero."""
    r = math.floor(abs(f) + Fraction(1, 2))
    return r if f >= 0 else -r


def quantize_table(scale, zero_point):
    """int8 (256,) table: uint8 pixel u -> clamp(zero_point + round_half_away((2u/255 - 1) / scale)), exact."""
    s = Fraction(float(scale))
    q = [_round_half_away(Fraction(2 * u - 255, 255) / s) + int(zero_point) for u in range(256)]
    return np.clip(np.array(q, np.int64), -128, 127).astype(np.int8)


def _as_rgb(image):
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise InputError(f"image must be uint8 (H, W, 3) RGB, got dtype {a.dtype}; convert with "
                         "(np.clip(img, 0, 1) * 255).round().astype(np.uint8) for float images in [0, 1]")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise InputError(f"image must be (H, W, 3) RGB (grey (H, W) and RGBA are accepted), got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a[:, :, :3]


def resize_and_crop(image, size):
    """uint8 (H, W, 3) -> uint8 (size[0], size[1], 3): short side to round(max(size) / 0.875), centre crop."""
    img = _as_rgb(image)
    th, tw = size
    h, w = img.shape[:2]
    short = int(math.floor(max(th, tw) / CROP_FRACTION + 0.5))
    if h <= w:
        nh, nw = short, max(tw, int(math.floor(w * short / h + 0.5)))
    else:
        nh, nw = max(th, int(math.floor(h * short / w + 0.5))), short
    resized = resize_bilinear_aa(img, nh, nw)
    top, left = (nh - th) // 2, (nw - tw) // 2
    crop = resized[top:top + th, left:left + tw]
    # back to uint8 as an image library would: round half away from zero (values are >= 0), clip
    return np.clip(np.floor(crop + 0.5), 0, 255).astype(np.uint8)


def to_model_input(image, model, size=None):
    """uint8 (H, W, 3) RGB image -> int8 (1, H', W', 3) in `model`'s input quantization.

    size: an int (square crop) or (height, width); default the model graph's input size. See the module
    docstring for the exact transform (resize to size / 0.875, centre crop, 2p - 1, quantize).
    """
    if size is None:
        size = tuple(model.graph.input_shape[:2])
    elif isinstance(size, int):
        size = (size, size)
    if model.graph.input_shape[2] != 3:
        raise InputError(f"model {model.name} takes {model.graph.input_shape[2]} input channels, not RGB")
    crop = resize_and_crop(image, size)
    scale, zp = model.input_quant()
    return quantize_table(scale, zp)[crop][None]
