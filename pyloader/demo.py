"""A demo checkpoint that needs no download: a small YOLO cfg written for pyloader, with generated weights.

    python -m pyloader.demo [-v] [DIR]    # writes DIR/demo-yolo.cfg and .weights, loads them, runs one image

DIR defaults to pyloader-demo/ (git ignores it in a checkout). TensorFlow's C++ log lines are hidden unless -v.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np

from .darknet.synthetic import write_weights

# A tiny-YOLOv4-style network (CSP blocks with grouped routes, maxpools, an upsample, two yolo heads, 3 classes).
DEMO_CFG = """[net]
width=320
height=256
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1,-2

[convolutional]
batch_normalize=1
filters=32
size=1
stride=1
pad=1
activation=leaky

[route]
layers=-6,-1

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=64
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=128
size=3
stride=1
pad=1
activation=mish

[maxpool]
size=2
stride=1

[convolutional]
batch_normalize=1
filters=64
size=1
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=128
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=3
num=6
scale_x_y=1.05

[route]
layers=-4

[convolutional]
batch_normalize=1
filters=32
size=1
stride=1
pad=1
activation=leaky

[upsample]
stride=2

[route]
layers=-1,-11

[convolutional]
batch_normalize=1
filters=64
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=3
num=6
scale_x_y=1.05
"""


def write_demo(directory, seed: int = 0):
    """Write demo-yolo.cfg and demo-yolo.weights (well-scaled random values) into `directory`."""
    os.makedirs(directory, exist_ok=True)
    cfg = os.path.join(directory, "demo-yolo.cfg")
    weights = os.path.join(directory, "demo-yolo.weights")
    with open(cfg, "w") as f:
        f.write(DEMO_CFG)
    write_weights(weights, cfg, seed=seed)  # well-scaled random values
    return weights, cfg


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    directory = args[0] if args else "pyloader-demo"
    weights, cfg = write_demo(directory)
    print(f"wrote {weights} and {cfg}")
    from .cli import CppLogFilter, quiet_framework_logs

    if not verbose:
        quiet_framework_logs()
    with contextlib.nullcontext() if verbose else CppLogFilter():
        t = time.perf_counter()
        import keras  # noqa: F401  (the framework import, timed apart from the load)

        imported = time.perf_counter() - t
        import pyloader

        t = time.perf_counter()
        model = pyloader.load(weights, cfg)
        took = time.perf_counter() - t
        image = np.random.default_rng(1).uniform(0, 1, (1, 256, 320, 3)).astype(np.float32)
        outputs = model(image)
        print(f"framework import: {imported:.2f} s (Keras and its backend, once per process)")
        print(f"pyloader.load: {took:.2f} s -> keras.Model '{model.name}' with {model.count_params():,} parameters")
        for out in outputs:
            print(f"  head output {tuple(out.shape)}")
        boxes = pyloader.load(weights, cfg, decode=True)(image)
        print(f"  decoded boxes {tuple(boxes.shape)} (x, y, w, h, objectness, 3 class probabilities)")
    out = os.path.join(directory, "out")
    print("next: convert it to a file you can deploy, and look inside:\n"
          f"  pyloader convert {weights} -o {out} --format tflite\n"
          f"  pyloader inspect {os.path.join(out, 'demo-yolo.tflite')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
