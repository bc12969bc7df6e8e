"""Rotated-box suppression as Ultralytics does it (ultralytics.utils.nms non_max_suppression(rotated=True) and its
nms=True export): Fast-NMS (Bolya et al.; TorchNMS.fast_nms) with the probabilistic IoU of the boxes' Gaussians
(ultralytics.utils.metrics.batch_probiou): a candidate is dropped when any candidate of higher score (kept or not)
of its class (or any class when agnostic) overlaps it by more than the threshold. One [B, K, K] matrix, no loop:
keras.ops only, so every backend and TFLite (builtin ops) run it.
"""

from __future__ import annotations

from keras import ops

__all__ = ["probiou", "keep_rotated"]

EPS = 1e-7  # batch_probiou's


def _covariance(xywhr):
    """The [[a, c], [c, b]] covariance of each box's Gaussian (Ultralytics _get_covariance_matrix)."""
    w2, h2 = ops.square(xywhr[..., 2]) / 12.0, ops.square(xywhr[..., 3]) / 12.0
    cos, sin = ops.cos(xywhr[..., 4]), ops.sin(xywhr[..., 4])
    return w2 * cos * cos + h2 * sin * sin, w2 * sin * sin + h2 * cos * cos, (w2 - h2) * cos * sin


def probiou(xywhr):
    """[B, K, 5] rotated boxes (x, y, w, h, angle in radians) -> [B, K, K] probabilistic IoU of every pair."""
    x, y = xywhr[..., 0], xywhr[..., 1]
    a, b, c = _covariance(xywhr)
    det = ops.maximum(a * b - ops.square(c), 0.0)
    x1, y1, a1, b1, c1, d1 = (t[:, :, None] for t in (x, y, a, b, c, det))
    x2, y2, a2, b2, c2, d2 = (t[:, None, :] for t in (x, y, a, b, c, det))
    sa, sb, sc = a1 + a2, b1 + b2, c1 + c2
    den = sa * sb - ops.square(sc)
    t1 = (sa * ops.square(y1 - y2) + sb * ops.square(x1 - x2)) / (den + EPS) * 0.25
    t2 = (sc * (x2 - x1) * (y1 - y2)) / (den + EPS) * 0.5
    t3 = ops.log(den / (4.0 * ops.sqrt(d1 * d2) + EPS) + EPS) * 0.5
    bd = ops.clip(t1 + t2 + t3, EPS, 100.0)
    return 1.0 - ops.sqrt(1.0 - ops.exp(-bd) + EPS)


def keep_rotated(xywh, angle, valid, cls, iou: float, agnostic: bool):
    """keep[b, i]: candidate i (candidates in descending score order, `valid` those above the score threshold)
    survives Fast-NMS with probiou > `iou` against the valid candidates before it."""
    k = int(xywh.shape[1])
    overlap = probiou(ops.concatenate([xywh, angle[..., None]], axis=-1)) > iou
    order = ops.arange(k)
    s = ops.logical_and(overlap, (order[:, None] > order[None, :])[None])  # [b, i, j]: j before i
    if not agnostic:
        s = ops.logical_and(s, ops.equal(cls[:, :, None], cls[:, None, :]))
    s = ops.logical_and(s, valid[:, None, :])
    return ops.logical_and(valid, ops.logical_not(ops.any(s, axis=-1)))
