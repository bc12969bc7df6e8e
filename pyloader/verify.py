"""`--verify`: run a written output in its own runtime and compare it with the in-memory model.

Each format's module runs its output (pyloader.outputs: `run`): `.keras` in a fresh Python process that imports
pyloader and keras (nothing else) and calls `keras.saving.load_model`; `.weights.h5` in a fresh process that
builds the model from the source checkpoint with pyloader and loads the file's weights into it; SavedModel with
TensorFlow (`tf.saved_model.load`, the `serve` endpoint); TFLite with LiteRT (`ai-edge-litert`; TensorFlow's
deprecated tf.lite.Interpreter where it is not installed; the format's `runtime()` names it in the messages and
the CLI's report; full-integer inputs are quantized and outputs dequantized with the file's own parameters).

Images: float files run on one image (the first calibration image, else a fixed random one). int8 files run on
up to INT8_IMAGES calibration images chosen by their pixels (sorted by a digest of the prepared image), so the
verdict depends neither on file names nor on their order.

The difference is the max over outputs of max|output - model| / max|model|, over all images together. int8 outputs are
compared after the head's activation: raw heads (a model without decode) through the logistic, so logits an
int8 tensor clips (-88 vs -12) count for what they change (nothing); decoded outputs as they are. For NMS outputs
(boxes, scores, classes, num_detections) the detections are matched first (same class, IoU >= 0.5, in score
order), over all images together: when all match, the difference is that of the matched boxes and scores;
otherwise it is the fraction of detections not in common (1 - matched / max(count)). Detection rows a model
selects itself (an output whose metadata entry has `rows: xyxy_score_class`, [B, k, 6]: Ultralytics' end-to-end
top-k) may hold rows of near-equal score in either order: each row is paired with the nearest row of its class in
the other output, and the difference is that of the pairs (boxes and scores each relative to their max), or the
fraction of rows left unpaired. An output fails verification when the difference is above the format's tolerance
(TOLERANCE) or it cannot be loaded or run.
"""

from __future__ import annotations

import numpy as np

from .errors import FormatError
from .keras_blocks.nms_options import NMS_OUTPUTS
from .outputs import output_format
from .outputs.runtime import as_dict

__all__ = ["verify_written", "verify_output", "verify_images", "compare_outputs", "compare_rows", "match_detections",
           "TOLERANCE", "INT8_IMAGES"]

# float32 files compute the same graph (summation order aside); float16 weights ~1e-3; int8: activated outputs
# (probabilities, boxes) within a quarter of their range, a quarter of the detections at most not in common.
TOLERANCE = {"float32": 1e-3, "float16": 3e-2, "int8": 0.25}
INT8_IMAGES = 8


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
    """verify_output on the verify images, prepared as the model's family expects (`letterbox`)."""
    return verify_output(model, path, job, verify_images(model, job, letterbox))


def verify_images(model, job, letterbox: bool):
    """[N, H, W, 3] for --verify (module docstring): int8, up to INT8_IMAGES calibration images chosen by their
    pixels; otherwise the first calibration image, else a fixed random one."""
    if job.calibration is not None:
        import hashlib

        from .calibration import model_images

        if not getattr(job, "int8", False):
            return model_images(model, job.calibration, letterbox, 1)
        images = model_images(model, job.calibration, letterbox)
        order = sorted(range(len(images)), key=lambda i: hashlib.sha256(images[i].tobytes()).digest())
        return images[order[:INT8_IMAGES]]
    shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32)


def _activated(out: dict, meta: dict) -> dict:
    """Raw heads (a model without decode) through the logistic; other outputs as they are."""
    if meta.get("decode", True) or set(out) == set(NMS_OUTPUTS):
        return out
    return {k: 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64))) for k, v in out.items()}


def verify_output(model, path: str, job, images: np.ndarray) -> float:
    """Run the output at `path` (written for `job`) on `images` [N, H, W, 3] (one runtime, one load); return the
    difference, or raise FormatError when it is above the tolerance or the output cannot be run."""
    names = list(model.output_names)
    meta = getattr(model, "metadata", None) or {}
    int8 = _precision(job) == "int8"
    fmt = output_format(job.format)
    ran = f" (run in {fmt.runtime()})" if hasattr(fmt, "runtime") else ""
    want = as_dict(model(images), names)
    try:
        got = fmt.run(path, images, names, job)
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the runtime raises, the output is not usable
        raise FormatError(f"{job.source}: verify: the written {job.format} output{ran} cannot be run: "
                          f"{type(e).__name__}: {e}") from None
    if int8:
        want, got = _activated(want, meta), _activated(got, meta)
    rows = {o.get("name") for o in meta.get("outputs", []) if o.get("rows")}
    diff = compare_outputs(want, got, rows)
    tol = TOLERANCE[_precision(job)]
    if not diff <= tol:
        raise FormatError(f"{job.source}: verify: the written {job.format} output{ran} differs from the model: "
                          f"max relative difference {diff:.3g} > {tol:g}")
    return diff
