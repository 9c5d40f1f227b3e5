"""read_image: torchvision decoding gives Detectron2's pixels and errors, for every format."""

import numpy as np
import pytest
from detectron2.data import detection_utils as utils
from PIL import Image

from detr_d2.data import image_io


def _picture(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return (ramp + rng.normal(0, 25, (h, w, 3))).clip(0, 255).astype(np.uint8)


def _save(path, array, mode="RGB", orientation=None, **kwargs):
    im = Image.fromarray(array).convert(mode)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation  # EXIF Orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, **kwargs)
    return str(path)


CASES = {
    "jpeg_rgb": dict(suffix="jpg", mode="RGB"),
    "jpeg_rotated": dict(suffix="jpg", mode="RGB", orientation=6),  # 90 degrees: H and W swap
    "jpeg_mirrored": dict(suffix="jpg", mode="RGB", orientation=2),
    "jpeg_gray": dict(suffix="jpg", mode="L"),
    "png_rgb": dict(suffix="png", mode="RGB"),
    "png_gray": dict(suffix="png", mode="L"),
    "png_palette": dict(suffix="png", mode="P"),  # not decoded by torchvision: PIL, as Detectron2
    "png_rgba": dict(suffix="png", mode="RGBA"),
    "bmp": dict(suffix="bmp", mode="RGB"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("image_format", ["RGB", "BGR", "L"])
def test_same_pixels_as_detectron2(tmp_path, case, image_format):
    spec = dict(CASES[case])
    path = _save(tmp_path / f"im.{spec.pop('suffix')}", _picture(), **spec)
    ours = image_io.read_image(path, image_format)
    reference = utils.read_image(path, format=image_format)
    assert ours.dtype == np.uint8
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(ours, reference)
    if CASES[case].get("orientation") == 6:
        assert ours.shape[:2] == (53, 37)


def test_jpeg_and_png_are_decoded_by_torchvision(tmp_path, monkeypatch):
    paths = [_save(tmp_path / "a.jpg", _picture()), _save(tmp_path / "b.png", _picture())]
    expected = [utils.read_image(p, format="BGR") for p in paths]

    def no_pil(*args, **kwargs):
        raise AssertionError("decoded by PIL")

    monkeypatch.setattr(image_io.utils, "read_image", no_pil)
    for path, reference in zip(paths, expected):
        np.testing.assert_array_equal(image_io.read_image(path, "BGR"), reference)


def test_truncated_jpeg_raises_pils_error(tmp_path):
    path = _save(tmp_path / "full.jpg", _picture(200, 300), quality=95)
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated"):
        image_io.read_image(str(truncated), "RGB")
