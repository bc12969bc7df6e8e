"""`--verify`: run a written output in its own runtime on one image and compare it with the in-memory model.

Each format's module runs its output (pyloader.outputs: `run`): `.keras` in a fresh Python process that imports
pyloader and keras (nothing else) and calls `keras.saving.load_model`; `.weights.h5` in a fresh process that
builds the model from the source checkpoint with pyloader and loads the file's weights into it; SavedModel with
TensorFlow (`tf.saved_model.load`, the `serve` endpoint); TFLite with the TFLite interpreter (full-integer
inputs are quantized and outputs dequantized with the file's own parameters). The image is the first
calibration image, else a fixed random one.

The difference is the max over outputs of max|output - model| / max|model|. For NMS outputs (boxes, scores,
classes, num_detections) the detections are matched first (same class, IoU >= 0.5, in score order): when
all match, the difference is that of the matched boxes and scores; otherwise it is the fraction of
detections not in common (1 - matched / max(count)). Detection rows a model selects itself (an output whose
metadata entry has `rows: xyxy_score_class`, [B, k, 6]: Ultralytics' end-to-end top-k) may hold rows of
near-equal score in either order: each row is paired with the nearest row of its class in the other output, and
the difference is that of the pairs (boxes and scores each relative to their max), or the fraction of rows left
unpaired. An output fails verification when the difference is
above the format's tolerance (TOLERANCE) or it cannot be loaded or run.
"""

from __future__ import annotations

import numpy as np

from .errors import FormatError
from .keras_blocks.nms_options import NMS_OUTPUTS
from .outputs import output_format
from .outputs.runtime import as_dict

__all__ = ["verify_written", "verify_output", "compare_outputs", "compare_rows", "match_detections", "TOLERANCE"]

# float32 files compute the same graph (summation order aside); float16 weights ~1e-3; int8 is coarse (the
# number measures agreement, the check catches a broken file).
TOLERANCE = {"float32": 1e-3, "float16": 3e-2, "int8": 0.5}


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


def compare_rows(want: np.ndarray, got: np.ndarray) -> float:
    """Detection rows [B, k, 6] (x1, y1, x2, y2, score, class) as the module docstring says."""
    if got.shape != want.shape or not np.isfinite(got).all():
        return float("inf")
    scale = np.array([max(float(np.abs(want[..., :4]).max()), 1e-12)] * 4 + [max(float(np.abs(want[..., 4]).max()), 1e-12)])
    worst, unpaired = 0.0, 0
    for w, g in zip(want, got):
        free = np.ones(len(g), bool)
        for row in w:
            cand = np.flatnonzero(free & (g[:, 5] == row[5]))
            if not cand.size:
                unpaired += 1
                continue
            d = (np.abs(g[cand, :5] - row[:5]) / scale).max(1)
            free[cand[int(np.argmin(d))]] = False
            worst = max(worst, float(d.min()))
    return unpaired / max(want.shape[0] * want.shape[1], 1) if unpaired else worst


def compare_outputs(want: dict, got: dict, rows=()) -> float:
    """The difference defined in the module docstring (inf when the outputs' names or shapes differ); `rows`: the
    names of detection-rows outputs."""
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
        if k in rows:
            worst = max(worst, compare_rows(np.asarray(w), np.asarray(g)))
            continue
        if g.shape != w.shape:
            return float("inf")
        if not np.isfinite(g).all():
            return float("inf")
        scale = float(np.abs(w).max()) or 1.0
        worst = max(worst, float(np.abs(g.astype(np.float64) - w).max()) / scale)
    return worst


def _precision(job) -> str:
    return "int8" if getattr(job, "int8", False) else "float16" if getattr(job, "tflite_fp16", False) else "float32"


def verify_written(model, path: str, job, letterbox: bool) -> float:
    """verify_output on the verify image, prepared as the model's family expects (`letterbox`)."""
    return verify_output(model, path, job, _verify_image(model, job, letterbox))


def _verify_image(model, job, letterbox: bool):
    """One image for --verify: the first calibration image, else a fixed random one."""
    if job.calibration is not None:
        from .calibration import model_images

        return model_images(model, job.calibration, letterbox, 1)
    shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32)


def verify_output(model, path: str, job, image: np.ndarray) -> float:
    """Run the output at `path` (written for `job`) on `image` [1, H, W, 3]; return the difference, or raise
    FormatError when it is above the tolerance or the output cannot be run."""
    names = list(model.output_names)
    want = as_dict(model(image), names)
    try:
        got = output_format(job.format).run(path, image, names, job)
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the runtime raises, the output is not usable
        raise FormatError(f"{job.source}: verify: the written {job.format} output cannot be run: "
                          f"{type(e).__name__}: {e}") from None
    rows = {o.get("name") for o in (getattr(model, "metadata", None) or {}).get("outputs", [])
            if o.get("rows")}
    diff = compare_outputs(want, got, rows)
    tol = TOLERANCE[_precision(job)]
    if not diff <= tol:
        raise FormatError(f"{job.source}: verify: the written {job.format} output differs from the model: "
                          f"max relative difference {diff:.3g} > {tol:g}")
    return diff
