"""End to end: a real photo through preprocessing and int8 inference gives a sensible ImageNet class.

scikit-image's bundled `chelsea` (a tabby cat) through microtrain.preprocess and microtrain.inference with
MIT tiny-training's ImageNet weights: an ImageNet cat class (281 tabby .. 285 Egyptian cat) must be in the
top 5 of all three models, and TFLite Micro given the same int8 input must rank the same top 5.
"""

import numpy as np
import pytest

from microtrain.errors import InputError
from microtrain.graph import load_graph
from microtrain.inference import Inference
from microtrain.model import load_model, random_model
from microtrain.preprocess import quantize_table, resize_and_crop, resize_bilinear_aa, to_model_input
from microtrain.reference_models import NAMES
from microtrain.tflite import TFLMRunner, export_single_op, export_tflite
from settings import JIT_DISABLED
from shared import tiny_training_weights

CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def top5(logits):
    """Class indices of the 5 largest logits, ties broken by the lower index (a stable sort)."""
    return np.argsort(-logits.astype(np.int64), kind="stable")[:5]


@pytest.fixture(scope="module")
def chelsea():
    skimage_data = pytest.importorskip("skimage.data", reason="the chelsea photo comes with scikit-image: "
                                                               "pip install microtrain[images]")
    return skimage_data.chelsea()


@pytest.mark.shared
@pytest.mark.parametrize("name", NAMES)
def test_chelsea_is_a_cat_in_top5(name, chelsea):
    if JIT_DISABLED:
        pytest.skip("a whole 128x128 model takes minutes as pure Python (NUMBA_DISABLE_JIT=1)")
    model = load_model(name, tiny_training_weights(name))
    x = to_model_input(chelsea, model)
    assert x.shape == (1, 128, 128, 3) and x.dtype == np.int8
    logits = Inference(model).run(x)[0].copy()
    best = top5(logits)
    print(f"\n{name}: top-5 {best.tolist()} logits {logits[best].tolist()}")
    assert any(c in CATS for c in best), f"{name}: no cat class in the top 5 {best.tolist()}"
    # tie-robust form of the same claim: some cat's logit reaches the 5th largest logit
    assert max(logits[c] for c in CATS) >= np.sort(logits)[-5]

    pytest.importorskip("tflite_micro", reason="the TFLM comparison needs pip install microtrain[oracle]")
    theirs = TFLMRunner(export_tflite(model)).run(x)[0][0]
    assert top5(theirs).tolist() == best.tolist(), f"TFLM ranks {top5(theirs).tolist()}"


# ----------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------

def test_quantize_table_is_exact_round_half_away():
    """x_scale = 1/127.5: every pixel is a tie (u - 127.5); exact rounding sends it away from zero."""
    t = quantize_table(1 / 127.5, 0)
    u = np.arange(256)
    np.testing.assert_array_equal(t, np.clip(np.where(u >= 128, u - 127, u - 128), -128, 127))
    t2 = quantize_table(0.02, -5)  # generic scale: (2u/255 - 1) / 0.02 = (2u - 255) * 50 / 255
    expect = [min(127, max(-128, -5 + int(np.sign(2 * v - 255)) * ((abs(2 * v - 255) * 50 * 2 + 255) // 510)))
              for v in range(256)]
    np.testing.assert_array_equal(t2, expect)


def test_resize_matrix_properties():
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    np.testing.assert_allclose(resize_bilinear_aa(img, 37, 53), img)  # identity size: identity
    flat = np.full((40, 60, 3), 77, np.uint8)
    np.testing.assert_allclose(resize_bilinear_aa(flat, 13, 29), 77.0)  # weights sum to 1
    down = resize_bilinear_aa(img, 18, 26)
    assert down.min() >= img.min() and down.max() <= img.max()  # non-negative weights: no overshoot


def test_resize_and_crop_geometry():
    img = np.zeros((300, 451, 3), np.uint8)
    img[:, 225:] = 255  # left half black, right half white
    out = resize_and_crop(img, (128, 128))
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    # short side 300 -> 146, long side 451 -> 219; crop columns 45..172 of the resized image, so the
    # edge (at 225 * 219 / 451 = 109.3 resized) lands near column 64
    edge = int(np.argmax(out[64, :, 0] > 127))
    assert 62 <= edge <= 66


def test_to_model_input_matches_tflm_quantize_away_from_ties():
    """Where real / scale is not within float32 noise of a tie, the table equals TFLM's QUANTIZE."""
    pytest.importorskip("tflite_micro", reason="needs pip install microtrain[oracle]")
    from microtrain.graph import Op

    scale, zp = 0.0123, 7
    u = np.arange(256)
    real = ((2 * u - 255) / 255).astype(np.float32)
    q = real / np.float32(scale)
    far = np.abs(q - np.floor(q) - 0.5) > 1e-3
    x = real.reshape(1, 16, 16, 1)
    op = Op("q", "quantize", ("x",), "q")
    data = export_single_op(op, None, {"x": None, "q": (scale, zp)}, {"x": (16, 16, 1), "q": (16, 16, 1)})
    theirs = TFLMRunner(data).run(x)[0].ravel()
    np.testing.assert_array_equal(quantize_table(scale, zp)[far], theirs[far])


def test_to_model_input_rejects_bad_images():
    m = random_model(load_graph("mcunet-5fps"))
    with pytest.raises(InputError, match="uint8"):
        to_model_input(np.zeros((64, 64, 3), np.float32), m)
    with pytest.raises(InputError, match="shape"):
        to_model_input(np.zeros((64, 64, 2), np.uint8), m)
    grey = to_model_input(np.full((90, 120), 200, np.uint8), m)
    assert grey.shape == (1, 128, 128, 3)
