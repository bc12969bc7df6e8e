"""Calibration images for int8 TFLite conversion (`--int8 --calibration DIR`).

Images are read with Pillow (an optional dependency: the `int8` extra, `pip install 'pyloader[int8]'`), converted
to RGB and prepared as each family's model expects: YOLOv5 letterboxes (the aspect ratio kept, padded with
grey 114, as its `letterbox`), Darknet resizes to the network size (darknet's `resize_image`); float32 in
[0, 1], NHWC. No TensorFlow import here.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import FormatError

__all__ = ["IMAGE_SUFFIXES", "list_images", "check_images", "load_images", "model_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError("int8 calibration reads images with Pillow: pip install 'pyloader[int8]' "
                           "(or pip install pillow)") from None
    return Image


def list_images(folder) -> list:
    """The image files in `folder` (sorted, not recursive); FormatError when it has none."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FormatError(f"{folder}: calibration folder not found (or not a folder)")
    paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder))
             if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, n))]
    if not paths:
        raise FormatError(f"{folder}: no calibration images (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    return paths


def check_images(paths) -> None:
    """Decode every image once (FormatError naming the first that cannot be read)."""
    Image = _pil()
    for p in paths:
        try:
            with Image.open(p) as im:
                im.convert("RGB").load()
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a broken file
            raise FormatError(f"{p}: cannot read this calibration image: {type(e).__name__}: {e}") from None


def load_images(paths, size, letterbox: bool) -> np.ndarray:
    """[N, height, width, 3] float32 in [0, 1]; `size` = (height, width)."""
    Image = _pil()
    h, w = (int(v) for v in size)
    out = np.empty((len(paths), h, w, 3), np.float32)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if letterbox:
                    r = min(h / im.height, w / im.width)
                    nw, nh = max(1, round(im.width * r)), max(1, round(im.height * r))
                    canvas = Image.new("RGB", (w, h), (114, 114, 114))
                    left, top = round((w - nw) / 2 - 0.1), round((h - nh) / 2 - 0.1)
                    canvas.paste(im.resize((nw, nh), Image.BILINEAR), (left, top))
                    im = canvas
                else:
                    im = im.resize((w, h), Image.BILINEAR)
                out[i] = np.asarray(im, np.float32) / 255.0
        except FormatError:
            raise
        except Exception as e:  # noqa: BLE001
            raise FormatError(f"{p}: cannot read this calibration image: {type(e).__name__}: {e}") from None
    return out


_LAST: dict = {}  # the last images prepared: (files with their size and mtime, input size, letterbox) -> array


def model_images(model, folder, letterbox: bool, count=None) -> np.ndarray:
    """The first `count` images of `folder` (all when None), prepared for `model`'s input size as its family
    expects (`letterbox`); read-only. The last set is kept while its files are unchanged: an int8 conversion and
    its --verify, and every checkpoint of a bulk run, decode the folder once."""
    size = tuple(int(v) for v in model.inputs[0].shape[1:3])
    paths = list_images(folder)[:count]
    key = (tuple((p, st.st_size, st.st_mtime_ns) for p, st in ((p, os.stat(p)) for p in paths)), size, bool(letterbox))
    if key not in _LAST:
        images = load_images(paths, size, letterbox=letterbox)
        images.setflags(write=False)
        _LAST.clear()
        _LAST[key] = images
    return _LAST[key]
