"""`--verify`: run a written output in its own runtime on one image and compare it with the in-memory model.

* `.keras`: a fresh Python process that imports pyloader and keras (nothing else) and calls
  `keras.saving.load_model`.
* `.weights.h5`: a fresh process that builds the model from the source checkpoint with pyloader and loads the
  file's weights into it.
* SavedModel: TensorFlow (`tf.saved_model.load`, the `serve` endpoint).
* TFLite: the TFLite interpreter (full-integer inputs are quantized and outputs dequantized with the file's
  own parameters).

The difference is the max over outputs of max|output - model| / max|model|. For NMS outputs (boxes, scores,
classes, num_detections) the detections are matched first (same class, IoU >= 0.5, in score order): when
all match, the difference is that of the matched boxes and scores; otherwise it is the fraction of
detections not in common (1 - matched / max(count)). An output fails verification when the difference is
above the format's tolerance (TOLERANCE) or it cannot be loaded or run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from .errors import FormatError
from .keras_blocks.nms_options import NMS_OUTPUTS

__all__ = ["verify_output", "compare_outputs", "match_detections", "TOLERANCE"]

# float32 files compute the same graph (summation order aside); float16 weights ~1e-3; int8 is coarse (the
# number measures agreement, the check catches a broken file).
TOLERANCE = {"float32": 1e-3, "float16": 3e-2, "int8": 0.5}


def _as_dict(outputs, names) -> dict:
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {n: np.asarray(v) for n, v in zip(names, outputs)}


def _iou(a, b):
    iw = np.maximum(0.0, np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]))
    ih = np.maximum(0.0, np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(want: dict, got: dict, iou: float = 0.5):
    """(matched, n_want, n_got, [(i_want, i_got)]) summed over the batch: greedy same-class IoU matching."""
    matched, nw_total, ng_total, pairs = 0, 0, 0, []
    for b in range(len(want["num_detections"])):
        nw, ng = int(want["num_detections"][b]), int(got["num_detections"][b])
        wb, wc = want["boxes"][b][:nw], want["classes"][b][:nw]
        gb, gc = got["boxes"][b][:ng], got["classes"][b][:ng]
        free = np.ones(ng, bool)
        for i in range(nw):
            cand = np.flatnonzero(free & (gc == wc[i]))
            if cand.size:
                ious = _iou(wb[i], gb[cand])
                j = int(np.argmax(ious))
                if ious[j] >= iou:
                    free[cand[j]] = False
                    matched += 1
                    pairs.append((b, i, int(cand[j])))
        nw_total, ng_total = nw_total + nw, ng_total + ng
    return matched, nw_total, ng_total, pairs


def compare_outputs(want: dict, got: dict) -> float:
    """The difference defined in the module docstring (inf when the outputs' names or shapes differ)."""
    if set(want) != set(got):
        return float("inf")
    if set(want) == set(NMS_OUTPUTS):
        matched, nw, ng, pairs = match_detections(want, got)
        if matched != max(nw, ng):
            return 1.0 - matched / max(nw, ng)
        if not pairs:
            return 0.0
        wb = np.stack([want["boxes"][b][i] for b, i, _ in pairs])
        gb = np.stack([got["boxes"][b][j] for b, _, j in pairs])
        ws = np.array([want["scores"][b][i] for b, i, _ in pairs])
        gs = np.array([got["scores"][b][j] for b, _, j in pairs])
        return float(max(np.abs(wb - gb).max() / max(np.abs(wb).max(), 1e-12),
                         np.abs(ws - gs).max() / max(np.abs(ws).max(), 1e-12)))
    worst = 0.0
    for k, w in want.items():
        g = got[k]
        if g.shape != w.shape:
            return float("inf")
        if not np.isfinite(g).all():
            return float("inf")
        scale = float(np.abs(w).max()) or 1.0
        worst = max(worst, float(np.abs(g.astype(np.float64) - w).max()) / scale)
    return worst


def _precision(job) -> str:
    return "int8" if getattr(job, "int8", False) else "float16" if getattr(job, "tflite_fp16", False) else "float32"


def verify_output(model, path: str, job, image: np.ndarray) -> float:
    """Run the output at `path` (written for `job`) on `image` [1, H, W, 3]; return the difference, or raise
    FormatError when it is above the tolerance or the output cannot be run."""
    names = list(model.output_names)
    want = _as_dict(model(image), names)
    try:
        if job.format in ("keras", "weights.h5"):
            got = _run_subprocess(path, job, image)
        elif job.format == "savedmodel":
            got = _run_savedmodel(path, image, names)
        elif job.format == "tflite":
            got = _run_tflite(path, image, names)
        else:  # pragma: no cover
            raise ValueError(f"unknown format {job.format!r}")
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the runtime raises, the output is not usable
        raise FormatError(f"{job.source}: verify: the written {job.format} output cannot be run: "
                          f"{type(e).__name__}: {e}") from None
    diff = compare_outputs(want, got)
    tol = TOLERANCE[_precision(job)]
    if not diff <= tol:
        raise FormatError(f"{job.source}: verify: the written {job.format} output differs from the model: "
                          f"max relative difference {diff:.3g} > {tol:g}")
    return diff


_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules.setdefault("triton", None)
    import numpy as np
    import pyloader  # as a user: pyloader registers its layers when Keras is imported
    import keras
    path, fmt, x_path, out_path = sys.argv[1:5]
    x = np.load(x_path)
    if fmt == "keras":
        model = keras.saving.load_model(path)
    else:
        import json
        opts = json.loads(sys.argv[5])
        model = pyloader.load(opts["source"], opts["cfg"], fold_bn=opts["fold_bn"], decode=opts["decode"],
                              input_size=opts["input_size"], nms=opts["nms"])
        model.load_weights(path)
    out = model(x)
    if not isinstance(out, dict):
        out = out if isinstance(out, (list, tuple)) else [out]
        out = dict(zip(model.output_names, out))
    np.savez(out_path, **{k: np.asarray(v) for k, v in out.items()})
""")


def _run_subprocess(path, job, image) -> dict:
    import json

    import keras

    with tempfile.TemporaryDirectory(prefix="pyloader-verify-") as d:
        x_path, out_path = os.path.join(d, "x.npy"), os.path.join(d, "y.npz")
        np.save(x_path, image)
        args = [sys.executable, "-c", _SCRIPT, path, job.format, x_path, out_path]
        if job.format == "weights.h5":
            args.append(json.dumps({"source": job.source, "cfg": job.cfg, "fold_bn": job.fold_bn,
                                    "decode": job.decode, "input_size": job.input_size, "nms": job.nms}))
        env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
        if r.returncode != 0:
            last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit {r.returncode}"]
            raise RuntimeError(f"a fresh process could not load and run it: {last[0]}")
        with np.load(out_path) as z:
            return {k: z[k] for k in z.files}


def _run_savedmodel(path, image, names) -> dict:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    out = loaded.serve(tf.constant(image))
    return _as_dict({k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else
                    [v.numpy() for v in (out if isinstance(out, (list, tuple)) else [out])], names)


def _run_tflite(path, image, names) -> dict:
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=path)
    runner = it.get_signature_runner()
    (in_name, in_detail), = runner.get_input_details().items()
    x = image
    if in_detail["dtype"] != np.float32:
        scale, zero = in_detail["quantization"]
        info = np.iinfo(in_detail["dtype"])
        x = np.clip(np.round(image / scale + zero), info.min, info.max).astype(in_detail["dtype"])
    out = runner(**{in_name: x})
    details = runner.get_output_details()
    res = {}
    for k, v in out.items():
        scale, zero = details[k]["quantization"]
        if v.dtype in (np.int8, np.uint8, np.int16) and scale:
            v = (v.astype(np.float32) - zero) * scale
        res[k] = v
    if set(res) == set(names):
        return res
    # unnamed signature outputs (output_0, output_1, ...) follow the model's output order
    keys = sorted(res, key=lambda k: int(k.rsplit("_", 1)[1]) if k.rsplit("_", 1)[-1].isdigit() else -1)
    return dict(zip(names, (res[k] for k in keys)))
