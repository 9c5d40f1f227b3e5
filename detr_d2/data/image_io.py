"""``read_image``: Detectron2's, decoded by ``torchvision.io`` where that gives the same pixels
faster (a 640x480 JPEG, 1 thread: 2.01 ms against PIL's 2.57 ms; tools/benchmark.py --task data)."""

import io

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

# what torchvision decodes to the same pixels as PIL: (PIL format, PIL mode) of the file
_TORCHVISION_DECODES = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L")}
_READ_MODE = {"RGB": ImageReadMode.RGB, "BGR": ImageReadMode.RGB, "L": ImageReadMode.GRAY}


def read_image(file_name: str, image_format: str) -> np.ndarray:
    """Detectron2's ``read_image`` (same pixels, same errors): uint8 (H, W, C) in ``image_format``.
    An 8-bit RGB or gray JPEG / PNG is decoded by ``torchvision.io``, except an RGB file read as
    "L"; every other file, and one torchvision cannot decode, goes through PIL, so a bad file
    raises PIL's error. A 16-bit gray image is scaled to 8 bits (PIL's conversion clips at 255)."""
    with PathManager.open(file_name, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as im:  # parses the header only
        kind = (im.format, im.mode)
    # an RGB file read as "L": PIL's RGB-to-gray rounding differs from libjpeg's / libpng's by 1
    rgb_to_gray = image_format == "L" and kind[1] != "L"
    if kind in _TORCHVISION_DECODES and image_format in _READ_MODE and not rgb_to_gray:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            chw = decode_image(encoded, mode=_READ_MODE[image_format], apply_exif_orientation=True)
            hwc = chw.permute(1, 2, 0).numpy()
            return hwc[:, :, ::-1] if image_format == "BGR" else hwc  # views, as Detectron2's
        except RuntimeError:
            pass  # PIL reads it, or raises its own error for this file
    if not kind[1].startswith("I"):
        return utils.read_image(file_name, format=image_format)
    raw = utils.read_image(file_name)  # (H, W) integers in [0, 65535], EXIF orientation applied
    gray = (np.clip(raw, 0, 65535) >> 8).astype(np.uint8)[:, :, None]
    return gray if image_format == "L" else np.repeat(gray, 3, axis=2)  # gray in RGB or BGR
