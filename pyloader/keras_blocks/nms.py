"""End-to-end detection: decoded YOLO boxes -> non-maximum suppression with fixed-size outputs.

The layer `DetectionNMS` takes a family's decoded output, laid out as the family declares it
(pyloader.family.OutputLayout), and returns boxes, scores, classes, num_detections: the algorithm and the outputs
are docs/FORMATS.md, section 10. `add_nms` puts it on a built model (pyloader.assemble does, when options.nms).

Task models (Ultralytics Segment, Pose, OBB) carry columns after the class probabilities (`extras`: mask
coefficients, decoded keypoints, the angle); each kept box's columns come out as one more output per extra,
[B, max_det, columns], zero past num_detections, so that concatenating boxes, scores, classes and the extras on the
last axis gives Ultralytics' own nms=True export rows. Rotated boxes (`rotated`, OBB: x, y, w, h and the angle as
the last extra column) stay x, y, w, h and are suppressed as Ultralytics does (keras_blocks.rotated_nms).

Backends: the candidate selection and the outputs are keras.ops; the suppression itself uses TensorFlow's own
NonMaxSuppressionV4 op on the TensorFlow backend (so SavedModel and TFLite files carry the NMS builtin), and an
exact keras.ops formulation of the same greedy algorithm elsewhere (JAX, PyTorch); rotated boxes use keras.ops on
every backend (NonMaxSuppressionV4 is axis-aligned only).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .nms_options import DEFAULTS, NMS_OUTPUTS, nms_options
from .rotated_nms import keep_rotated

__all__ = ["DetectionNMS", "nms_options", "add_nms", "NMS_OUTPUTS", "DEFAULTS"]

LAYOUTS = ("xywh_obj_cls", "xywh_cls")


@keras.saving.register_keras_serializable(package="pyloader")
class DetectionNMS(keras.layers.Layer):
    """Decoded YOLO output -> (boxes, scores, classes, num_detections); see the module docstring."""

    def __init__(self, layout="xywh_obj_cls", box_scale=(1.0, 1.0), channels_first=False, iou=0.45, score=0.25,
                 max_det=300, agnostic=False, candidates=3000, use_tf_op=None, extras=(), rotated=False, **kwargs):
        super().__init__(**kwargs)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
        self.layout = layout
        self.box_scale = [float(v) for v in box_scale]
        self.channels_first = bool(channels_first)
        self.iou, self.score = float(iou), float(score)
        self.max_det, self.candidates = int(max_det), int(candidates)
        self.agnostic = bool(agnostic)
        self.use_tf_op = use_tf_op  # None: TensorFlow's op on the TF backend; False: the keras.ops path
        self.extras = [int(c) for c in extras]  # columns of each extra output, after the class probabilities
        self.rotated = bool(rotated)
        if self.rotated and not self.extras:
            raise ValueError("rotated boxes need their angle as the last extra column")

    def get_config(self):
        return {**super().get_config(), "layout": self.layout, "box_scale": self.box_scale,
                "channels_first": self.channels_first, "iou": self.iou, "score": self.score,
                "max_det": self.max_det, "agnostic": self.agnostic, "candidates": self.candidates,
                "use_tf_op": self.use_tf_op, "extras": self.extras, "rotated": self.rotated}

    def compute_output_spec(self, x):
        if x.shape[2 if self.channels_first else 1] is None:  # top-k over min(boxes, candidates); box_scale
            raise ValueError(f"{self.name}: NMS needs a known box count (a fixed input height and width)")
        b, m = x.shape[0], self.max_det
        return (keras.KerasTensor((b, m, 4), "float32"), keras.KerasTensor((b, m), "float32"),
                keras.KerasTensor((b, m), "int32"), keras.KerasTensor((b,), "int32"),
                *(keras.KerasTensor((b, m, c), "float32") for c in self.extras))

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.channels_first:
            x = ops.transpose(x, (0, 2, 1))
        n, stop = int(x.shape[1]), int(x.shape[2]) - sum(self.extras)
        xywh = x[..., :4] * ops.convert_to_tensor(np.array(self.box_scale * 2, np.float32))
        probs = x[..., 5:stop] * x[..., 4:5] if self.layout == "xywh_obj_cls" else x[..., 4:stop]
        best = ops.max(probs, axis=-1)
        # argmax as the first class reaching the max (ops.argmax's -0.0 handling on TF is not a TFLite builtin)
        nc = int(probs.shape[-1])
        ids = ops.convert_to_tensor(np.arange(nc, dtype=np.int32))
        cls = ops.min(ops.where(probs >= best[..., None], ids, nc), axis=-1)
        k = min(n, self.candidates)
        masked = ops.where(best > self.score, best, ops.zeros_like(best) - 1.0)
        top_scores, idx = ops.top_k(masked, k=k, sorted=True)  # [B, K], best first
        xywh = ops.take_along_axis(xywh, ops.expand_dims(idx, -1), axis=1)
        cls = ops.take_along_axis(cls, idx, axis=1)
        extra = ops.take_along_axis(x[..., stop:], ops.expand_dims(idx, -1), axis=1) if self.extras else None
        valid = top_scores > self.score
        if self.rotated:
            keep = keep_rotated(xywh, extra[..., -1], valid, cls, self.iou, self.agnostic)
            return _select(xywh, top_scores, cls, extra, keep, self.max_det, self.extras)
        xy, wh = xywh[..., :2], xywh[..., 2:4]
        xyxy = ops.concatenate([xy - wh / 2.0, xy + wh / 2.0], axis=-1)  # [B, K, 4]
        use_tf = self.use_tf_op if self.use_tf_op is not None else keras.backend.backend() == "tensorflow"
        keep = _keep_tf(xyxy, top_scores, cls, self) if use_tf else _keep_ops(xyxy, valid, cls, self)
        keep = ops.logical_and(keep, valid)
        return _select(xyxy, top_scores, cls, extra, keep, self.max_det, self.extras)


def _keep_ops(xyxy, valid, cls, cfg):
    """Greedy NMS in keras.ops: keep[i] = valid[i] and no kept j < i (higher score) overlaps i by > iou.

    Iterated to its fixed point from keep = valid: after t rounds the first t entries are final, and it
    usually settles in a few rounds (the loop stops when nothing changes)."""
    k = int(xyxy.shape[1])
    x1, y1, x2, y2 = (xyxy[..., i] for i in range(4))
    area = ops.maximum(x2 - x1, 0.0) * ops.maximum(y2 - y1, 0.0)
    iw = ops.maximum(ops.minimum(x2[:, :, None], x2[:, None, :]) - ops.maximum(x1[:, :, None], x1[:, None, :]), 0.0)
    ih = ops.maximum(ops.minimum(y2[:, :, None], y2[:, None, :]) - ops.maximum(y1[:, :, None], y1[:, None, :]), 0.0)
    inter = iw * ih
    union = area[:, :, None] + area[:, None, :] - inter
    iou = ops.where(union > 0, inter / ops.where(union > 0, union, ops.ones_like(union)), ops.zeros_like(union))
    earlier = ops.convert_to_tensor(np.tril(np.ones((k, k), bool), -1))  # [i, j]: j < i
    s = ops.logical_and(iou > cfg.iou, earlier[None])
    if not cfg.agnostic:
        s = ops.logical_and(s, ops.equal(cls[:, :, None], cls[:, None, :]))
    s = ops.logical_and(s, valid[:, None, :])
    sf = ops.cast(s, "float32")

    def body(keep, changed):
        suppressed = ops.einsum("bij,bj->bi", sf, ops.cast(keep, "float32")) > 0.5
        new = ops.logical_and(valid, ops.logical_not(suppressed))
        return new, ops.any(ops.not_equal(new, keep))

    keep, _ = ops.while_loop(lambda keep, changed: changed, body, (valid, ops.convert_to_tensor(True)),
                             maximum_iterations=k + 1)
    return keep


def _keep_tf(xyxy, scores, cls, cfg):
    """The same greedy NMS with TensorFlow's NonMaxSuppressionV4 (a TFLite builtin): one call over the whole
    batch, boxes of other images (and other classes unless agnostic) moved apart so they never overlap."""
    import tensorflow as tf

    b = tf.shape(xyxy)[0]
    k = int(xyxy.shape[1])
    span = tf.reduce_max(tf.abs(xyxy)) * 2.0 + 1.0
    img = tf.cast(tf.range(b), tf.float32)[:, None] * tf.ones_like(scores)
    cshift = tf.zeros_like(scores) if cfg.agnostic else tf.cast(cls, tf.float32)
    shift = tf.stack([img, cshift, img, cshift], axis=-1) * span  # y offset by image, x by class
    flat = tf.reshape(tf.gather(xyxy, [1, 0, 3, 2], axis=-1) + shift, (-1, 4))  # y1, x1, y2, x2
    flat_scores = tf.reshape(scores, (-1,))
    selected, _ = tf.raw_ops.NonMaxSuppressionV4(
        boxes=flat, scores=flat_scores, max_output_size=tf.size(flat_scores),
        iou_threshold=tf.constant(cfg.iou, tf.float32), score_threshold=tf.constant(cfg.score, tf.float32),
        pad_to_max_output_size=False)
    hits = tf.scatter_nd(selected[:, None], tf.ones_like(selected), tf.shape(flat_scores))
    return tf.reshape(hits > 0, (b, k))


def _select(xyxy, scores, cls, extra, keep, max_det, extras):
    """The first max_det kept boxes (in score order, the order of the candidates), zero-padded, and their extra
    columns split into one output per `extras` entry."""
    k = int(xyxy.shape[1])
    order = ops.where(keep, ops.convert_to_tensor(np.arange(k, 0, -1, dtype=np.float32))[None],
                      ops.zeros_like(scores))
    take = min(k, max_det)
    rank, idx = ops.top_k(order, k=take, sorted=True)
    used = rank > 0
    boxes = ops.take_along_axis(xyxy, ops.expand_dims(idx, -1), axis=1)
    boxes = ops.where(used[..., None], boxes, ops.zeros_like(boxes))
    out_scores = ops.where(used, ops.take_along_axis(scores, idx, axis=1), ops.zeros_like(rank))
    out_cls = ops.where(used, ops.take_along_axis(cls, idx, axis=1), ops.zeros_like(idx) - 1)
    if extras:
        extra = ops.take_along_axis(extra, ops.expand_dims(idx, -1), axis=1)
        extra = ops.where(used[..., None], extra, ops.zeros_like(extra))
    num = ops.sum(ops.cast(used, "int32"), axis=1)
    if take < max_det:  # fewer candidates than max_det: pad the rows
        pad = max_det - take
        boxes = ops.pad(boxes, ((0, 0), (0, pad), (0, 0)))
        out_scores = ops.pad(out_scores, ((0, 0), (0, pad)))
        out_cls = ops.pad(out_cls, ((0, 0), (0, pad)), constant_values=-1)
        extra = ops.pad(extra, ((0, 0), (0, pad), (0, 0))) if extras else None
    split = ops.split(extra, np.cumsum(extras)[:-1].tolist(), axis=-1) if len(extras) > 1 else [extra] * len(extras)
    return (boxes, out_scores, ops.cast(out_cls, "int32"), ops.cast(num, "int32"), *split)


def add_nms(model, options: dict, layout):
    """A model on `model`'s inputs whose outputs are boxes, scores, classes, num_detections, then one output per
    layout.extras entry (in that order, named so), computed from `model`'s first decoded output laid out as
    `layout` (pyloader.family.OutputLayout), then `model`'s other outputs as they are (layout.passthrough)."""
    from .model import DetectionModel, name_outputs

    outs, rest = model.outputs, list(model.output_names[1:])
    if rest != list(layout.passthrough):
        raise ValueError(f"NMS takes one decoded output and passes {list(layout.passthrough)} through; the model's "
                         f"outputs are {list(model.output_names)}")
    results = DetectionNMS(layout=layout.boxes, box_scale=layout.box_scale or (1.0, 1.0),
                           channels_first=layout.channels_first, extras=[c for _, c, _ in layout.extras],
                           rotated=layout.rotated, name="nms", **options)(outs[0])
    names = list(NMS_OUTPUTS) + [name for name, _, _ in layout.extras]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return DetectionModel(inputs, name_outputs(list(results), names) + list(outs[1:]), name=model.name)
