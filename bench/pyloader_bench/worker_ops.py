"""The single operations the generic worker times (worker.timed): each method's imports and set-up, and the
operation; the plain numpy Darknet reader it compares pyloader.read with."""

from __future__ import annotations

import os

from .probes import clear_keras


def numpy_read(weights: str, plan: list, fold_bn: bool = True, eps: float = 1e-5) -> dict:
    """A plain numpy Darknet reader: np.fromfile, slice in file order, OIHW -> HWIO, fold batch norm."""
    import numpy as np

    data = np.fromfile(weights, dtype=np.uint8)
    major, minor = (int(v) for v in data[:8].view("<i4"))
    seen = 8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4
    start = 12 + seen
    floats = data[start:start + (data.size - start) // 4 * 4].view("<f4")
    pos = 0
    out = {}
    for item in plan:
        if item[0] == "floats":
            out[item[1]] = floats[pos:pos + item[2]].copy()
            pos += item[2]
            continue
        _, label, n, cpg, kh, kw, bn = item
        bias = floats[pos:pos + n]
        pos += n
        size = n * cpg * kh * kw
        if bn:
            scale, mean, var = (floats[pos + i * n:pos + (i + 1) * n] for i in range(3))
            pos += 3 * n
        hwio = floats[pos:pos + size].reshape(n, cpg, kh, kw).transpose(2, 3, 1, 0)
        pos += size
        kernel = np.empty(hwio.shape, np.float32)
        if bn and fold_bn:
            f = scale / np.sqrt(var + np.float32(eps))
            np.multiply(hwio, f, out=kernel)
            out[label + "/kernel"] = kernel
            out[label + "/bias"] = bias - mean * f
        else:
            np.copyto(kernel, hwio)
            out[label + "/kernel"] = kernel
            out[label + "/bias"] = bias.copy()
            if bn:
                for k, v in (("gamma", scale), ("moving_mean", mean), ("moving_variance", var)):
                    out[f"{label}/{k}"] = v.copy()
    if pos != floats.size:
        raise ValueError(f"{weights}: {floats.size - pos} floats left over")
    return out


def prepare(spec: dict):
    """Imports and set-up (before the baseline); returns (op, cleanup, info)."""
    m = spec["method"]
    w, cfg = spec.get("weights"), spec.get("cfg")
    info = {}
    if m in ("memcpy", "memcpy_fresh"):
        import numpy as np

        buf = np.empty(os.path.getsize(w), np.uint8)
        buf.fill(1)  # pre-faulted

        def op():
            # memcpy: into the pre-faulted buffer (the floor); memcpy_fresh: into a new buffer, page faults included
            view = memoryview(buf if m == "memcpy" else np.empty(buf.size, np.uint8))
            with open(w, "rb", buffering=0) as f:
                got = 0
                while got < len(view):
                    k = f.readinto(view[got:])
                    if not k:
                        raise EOFError(w)
                    got += k
            return buf
        return op, None, info
    if m == "numpy":
        from pyloader.darknet.cfg import parse_network
        from pyloader.darknet.weights import weight_plan

        plan = weight_plan(parse_network(cfg))
        plan = [(p[0], f"layer{i}") + tuple(p[2:]) for i, p in enumerate(plan)]
        return (lambda: numpy_read(w, plan)), None, info
    if m == "pyloader_read":
        import pyloader

        return (lambda: pyloader.read(w, cfg)), None, info
    if m == "opencv":
        import cv2

        info["opencv"] = cv2.__version__
        return (lambda: cv2.dnn.readNetFromDarknet(cfg, w)), None, info
    if m == "pyloader_load":
        import keras  # noqa: F401

        import pyloader
        import pyloader.darknet.model  # noqa: F401

        return (lambda: pyloader.load(w, cfg)), clear_keras, info
    if m == "keras_load_weights":
        import keras  # noqa: F401

        from pyloader.darknet.cfg import parse_network
        from pyloader.darknet.model import build_darknet_model

        def op():
            model = build_darknet_model(parse_network(cfg))
            model.load_weights(spec["h5"])
            return model
        return op, clear_keras, info
    if m == "pt_pyloader":
        import keras  # noqa: F401

        import pyloader
        import pyloader.yolov5.model  # noqa: F401

        return (lambda: pyloader.load(w)), clear_keras, info
    if m == "pt_yolov5_tf":
        import warnings

        warnings.filterwarnings("ignore")
        import torch  # before TensorFlow: the other order crashes (SIGSEGV) with torch 2.14 + TF 2.21 here
        from yolov5.models.tf import TFModel

        import keras

        def op():
            ckpt = torch.load(w, map_location="cpu", weights_only=False)
            with torch.no_grad():
                model = (ckpt.get("ema") or ckpt["model"]).float().fuse().eval()
            for p in model.parameters():
                p.requires_grad_(False)
            size = tuple(spec.get("input_size") or (640, 640))
            tf_model = TFModel(cfg=model.yaml, model=model, nc=model.yaml["nc"], imgsz=size)
            inputs = keras.Input(shape=(*size, 3), batch_size=1)
            return keras.Model(inputs=inputs, outputs=tf_model.predict(inputs))
        return op, clear_keras, info
    if m == "ul_pyloader":
        import keras  # noqa: F401

        import pyloader
        import pyloader.ultralytics.model  # noqa: F401

        return (lambda: pyloader.load(w)), clear_keras, info
    if m == "ul_torch":
        import warnings

        warnings.filterwarnings("ignore")
        import torch
        import ultralytics.nn.tasks  # noqa: F401

        def op():  # ultralytics' attempt_load_one_weight + AutoBackend's fuse
            ckpt = torch.load(w, map_location="cpu", weights_only=False)
            model = (ckpt.get("ema") or ckpt["model"]).float()
            with torch.no_grad():
                return model.fuse().eval()
        return op, None, info
    raise ValueError(f"unknown method {m!r}")
