#!/usr/bin/env python3
"""A small trained Ultralytics model for measuring int8 agreement (issue 22): generate a shapes dataset and train
yolov8n on it with the ultralytics package's own trainer, on the CPU, for a few minutes.

    python bench/int8_shapes.py OUT [--minutes 6] [--imgsz 224]

OUT/data: images (train 400, val 60, calib 16) of three classes (disc, box, triangle) of random colours and sizes
pasted on backgrounds (smooth noise, gradients and crops of the photos shipped in ultralytics/assets), with YOLO
labels. OUT/train: the ultralytics run; its weights/last.pt is the model (keep it out of git). Run once;
bench/int8_agreement.py measures it.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

CLASSES = ("disc", "box", "triangle")


def _background(rng, size, photos):
    from PIL import Image

    kind = rng.integers(3)
    if kind == 0 and photos:
        im = photos[rng.integers(len(photos))]
        s = rng.uniform(0.3, 1.0)
        w, h = int(im.width * s), int(im.height * s)
        x, y = rng.integers(0, im.width - w + 1), rng.integers(0, im.height - h + 1)
        return im.crop((x, y, x + w, y + h)).resize((size, size), Image.BILINEAR)
    if kind == 1:
        small = (rng.random((rng.integers(3, 9), rng.integers(3, 9), 3)) * 255).astype(np.uint8)
        return Image.fromarray(small).resize((size, size), Image.BICUBIC)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    return Image.fromarray(np.broadcast_to(a + (b - a) * t, (size, size, 3)).astype(np.uint8))


def make_image(rng, size, photos):
    """(PIL image, [(class, cx, cy, w, h) normalised])."""
    from PIL import ImageDraw

    im = _background(rng, size, photos)
    draw = ImageDraw.Draw(im)
    labels = []
    for _ in range(rng.integers(1, 5)):
        c = int(rng.integers(len(CLASSES)))
        w = h = int(rng.integers(size // 10, size // 3))
        if c == 1:
            h = int(np.clip(h * rng.uniform(0.6, 1.6), size // 12, size // 2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if c == 0:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        elif c == 1:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        else:
            draw.polygon([(x + w / 2, y), (x, y + h), (x + w, y + h)], fill=colour)
        labels.append((c, (x + w / 2) / size, (y + h / 2) / size, w / size, h / size))
    return im, labels


def make_dataset(root, size=224, counts=(("train", 400), ("val", 60), ("calib", 16)), seed=0):
    """The dataset under root (images/SPLIT, labels/SPLIT) and its data.yaml; returns the yaml's path."""
    import ultralytics
    from PIL import Image

    assets = os.path.join(os.path.dirname(ultralytics.__file__), "assets")
    photos = [Image.open(os.path.join(assets, n)).convert("RGB") for n in sorted(os.listdir(assets))]
    rng = np.random.default_rng(seed)
    for split, n in counts:
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        for i in range(n):
            im, labels = make_image(rng, size, photos)
            im.save(os.path.join(root, "images", split, f"{i:04d}.jpg"), quality=92)
            with open(os.path.join(root, "labels", split, f"{i:04d}.txt"), "w") as f:
                f.writelines(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in labels)
    path = os.path.join(root, "data.yaml")
    with open(path, "w") as f:
        f.write(f"path: {os.path.abspath(root)}\ntrain: images/train\nval: images/val\n"
                f"names: {dict(enumerate(CLASSES))}\n")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--imgsz", type=int, default=224)
    args = p.parse_args(argv)
    data = make_dataset(os.path.join(args.out, "data"), args.imgsz)
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").train(data=data, imgsz=args.imgsz, epochs=100, time=args.minutes / 60, batch=16,
                               workers=0, device="cpu", amp=False, plots=False, val=False, cache="ram",
                               project=os.path.abspath(args.out), name="train", exist_ok=True, seed=0, verbose=False)
    print(os.path.join(args.out, "train", "weights", "last.pt"))


if __name__ == "__main__":
    main()
