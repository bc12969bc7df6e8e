#!/usr/bin/env python3
"""How many of the float model's detections int8 TFLite keeps (issue 22), and the error per output role.

    python bench/int8_agreement.py darknet ../shared/real/yolo-fastest-1.1.weights
    python bench/int8_agreement.py pt OUT/train/weights/last.pt --images OUT/data/images/val \\
        --calibration OUT/data/images/calib          (OUT: bench/int8_shapes.py's folder)

Darknet: test images are ultralytics/assets' photos, their mirror images and 12 crops of them, calibration images
16 other crops (seeded). Each quantization is converted from the decoded model (float input and output): `all int8` (every
operator, the decode included: the converter's plain int8), `float tail` (decode float, heads' last convolutions
int8), `float tail + heads` (the heads' last convolutions float too), `... + stem N%` (the first operators holding N% of
the weights float too; 10% is pyloader's --int8). Detections: the same NMS (conf 0.25, IoU 0.45) on the float
Keras output and the TFLite output, kept = same class and IoU >= 0.5 (pyloader.verify.match_detections). Per
role: max and mean |int8 - float| of box centre and size (pixels) and of the scores, over the candidates whose
float score is above 0.25.
Last, the `--int8 --nms` file pyloader writes is run against the float --nms file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import numpy as np
import torch  # noqa: F401  (torch before TensorFlow)


def _photos():
    import ultralytics

    assets = os.path.join(os.path.dirname(ultralytics.__file__), "assets")
    return [os.path.join(assets, n) for n in sorted(os.listdir(assets))]


def _darknet_images(size, tmp):
    from PIL import Image, ImageOps

    from pyloader.calibration import load_images

    test, cal = os.path.join(tmp, "test"), os.path.join(tmp, "cal")
    os.makedirs(test), os.makedirs(cal)
    rng = np.random.default_rng(0)
    for i, p in enumerate(_photos()):
        im = Image.open(p).convert("RGB")
        im.save(os.path.join(test, f"{i}.png"))
        ImageOps.mirror(im).save(os.path.join(test, f"{i}m.png"))
        for k in range(14):
            s = rng.uniform(0.5, 0.9)
            w, h = int(im.width * s), int(im.height * s)
            x, y = rng.integers(0, im.width - w), rng.integers(0, im.height - h)
            crop = im.crop((x, y, x + w, y + h))
            crop.save(os.path.join(cal, f"{i}_{k}.png") if k < 8 else os.path.join(test, f"{i}_{k}.png"))
    from pyloader.calibration import list_images

    return load_images(list_images(test), size, False), cal


def _run(data, x):
    import tensorflow as tf

    it = tf.lite.Interpreter(model_content=data)
    runner = it.get_signature_runner()
    (name, _), = runner.get_input_details().items()
    return runner(**{name: x})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("darknet", "pt"))
    p.add_argument("weights")
    p.add_argument("--images")
    p.add_argument("--calibration")
    p.add_argument("--count", type=int, default=30)
    args = p.parse_args(argv)
    import tensorflow as tf

    import pyloader
    from pyloader.calibration import list_images, load_images
    from pyloader.keras_blocks.nms import DetectionNMS
    from pyloader.outputs import savedmodel
    from pyloader.outputs.quantize import calibrate, int8_flatbuffer
    from pyloader.verify import match_detections

    tmp = tempfile.mkdtemp()
    model = pyloader.load(args.weights, decode=True)
    size = tuple(int(v) for v in model.inputs[0].shape[1:3])
    letterbox = args.kind == "pt"
    if args.kind == "darknet":
        images, cal = _darknet_images(size, tmp)
        layout = dict(layout="xywh_obj_cls", box_scale=(size[1], size[0]))
        roles = {"xy": slice(0, 2), "wh": slice(2, 4), "objectness": slice(4, 5), "class probs": slice(5, None)}
    else:
        images, cal = load_images(list_images(args.images)[:args.count], size, True), args.calibration
        layout = dict(layout="xywh_cls", channels_first=True)
        roles = {"xy": slice(0, 2), "wh": slice(2, 4), "class probs": slice(4, None)}
    cal_images = load_images(list_images(cal), size, letterbox)
    saved = os.path.join(tmp, "saved")
    savedmodel.export(model, saved, model.metadata)

    def converter():
        return tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])

    def all_int8():
        c = converter()
        calibrate(c, cal_images)
        return c.convert()

    variants = {"all int8": all_int8(),
                "float tail": int8_flatbuffer(converter(), cal_images, float_heads=False, float_stem=0),
                "float tail + heads": int8_flatbuffer(converter(), cal_images, float_stem=0),
                **{f"float tail + heads + stem {s:.0%}": int8_flatbuffer(converter(), cal_images, float_stem=s)
                   for s in (0.05, 0.1, 0.15)}}
    nms = DetectionNMS(**layout)
    want = [np.asarray(model(images[i:i + 1])) for i in range(len(images))]
    want_det = [{k: np.asarray(v) for k, v in zip(("boxes", "scores", "classes", "num_detections"), nms(w))}
                for w in want]
    print(f"{os.path.basename(args.weights)}: {len(images)} images {size}, calibration {len(cal_images)}")
    print("| quantization | kept | float | int8 | bytes | " + " | ".join(f"{r} max / mean" for r in roles) + " |")
    for name, data in variants.items():
        kept = n_float = n_int8 = 0
        err = {r: [] for r in roles}
        for i in range(len(images)):
            (got,) = _run(data, images[i:i + 1]).values()
            g, w = got, want[i]
            if layout.get("channels_first"):
                g, w = np.swapaxes(g, 1, 2), np.swapaxes(w, 1, 2)
            scale = np.array(layout.get("box_scale", (1, 1)) * 2, np.float32)
            score = w[..., roles["class probs"]].max(-1) * (w[..., 4] if "objectness" in roles else 1.0)
            for r, s in roles.items():
                a, b = g[score > 0.25][..., s], w[score > 0.25][..., s]
                if r in ("xy", "wh"):
                    a, b = a * scale[s], b * scale[s]
                err[r].append(np.abs(a - b).reshape(-1))
            det = {k: np.asarray(v) for k, v in zip(want_det[i], nms(got))}
            m, nw, ng, _ = match_detections(want_det[i], det)
            kept, n_float, n_int8 = kept + m, n_float + nw, n_int8 + ng
        cells = " | ".join(f"{np.concatenate(e).max():.3g} / {np.concatenate(e).mean():.2g}" for e in err.values())
        print(f"| {name} | {kept}/{n_float} ({kept / max(n_float, 1):.1%}) | {n_float} | {n_int8} | {len(data)} | {cells} |")
    out = os.path.join(tmp, "out")
    for int8 in (False, True):
        res, = pyloader.convert([args.weights], os.path.join(out, str(int8)), format="tflite", nms=True, int8=int8,
                                calibration=cal if int8 else None, overwrite=True)
        assert res.status == "converted", res
    paths = [os.path.join(out, str(v), os.path.basename(res.output)) for v in (False, True)]
    kept = n_float = n_int8 = 0
    for i in range(len(images)):
        a, b = (_run(open(p, "rb").read(), images[i:i + 1]) for p in paths)
        m, nw, ng, _ = match_detections(a, b)
        kept, n_float, n_int8 = kept + m, n_float + nw, n_int8 + ng
    print(f"--int8 --nms file vs float --nms file: {kept}/{n_float} kept ({kept / max(n_float, 1):.1%}), "
          f"int8 {n_int8}; sizes {os.path.getsize(paths[0])} / {os.path.getsize(paths[1])} bytes")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
