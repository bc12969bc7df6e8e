"""Ultralytics' end-to-end selection in place of NMS (Detect.postprocess and get_topk_index of ultralytics 8.4.190),
as a Keras layer (keras.ops only; ops.top_k is TFLite's TOPK_V2)."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

__all__ = ["EndToEndTopK"]


@keras.saving.register_keras_serializable(package="pyloader_ultralytics")
class EndToEndTopK(layers.Layer):
    """[B, 4 + nc + extra, anchors] (x1, y1, x2, y2 in pixels, class probabilities, then a task head's `extra`
    channels: UltralyticsDecode with xyxy) -> [B, k, 6 + extra] rows (x1, y1, x2, y2, score, class index as a float,
    the extra channels), k = min(max_det, anchors), best first.

    Not agnostic (the default): the k anchors of highest best-class score, then the k highest of those anchors'
    (anchor, class) scores, so an anchor may give one row per class. Agnostic (Detect.agnostic_nms): the k anchors
    of highest best-class score, with that class (the first one reaching the max, as torch's max)."""

    def __init__(self, nc, max_det, agnostic=False, extra=0, **kw):
        super().__init__(**kw)
        self.nc, self.max_det, self.agnostic, self.extra = int(nc), int(max_det), bool(agnostic), int(extra)

    def call(self, y):
        x = ops.transpose(y, (0, 2, 1))
        nc, k = self.nc, min(self.max_det, int(x.shape[1]))
        boxes, scores, extra = x[..., :4], x[..., 4:4 + nc], x[..., 4 + nc:]
        best = ops.max(scores, axis=-1)
        score, index = ops.top_k(best, k=k, sorted=True)
        if self.agnostic:
            ids = ops.convert_to_tensor(np.arange(nc, dtype=np.int32))
            label = ops.min(ops.where(scores >= best[..., None], ids, nc), axis=-1)
            label = ops.take_along_axis(label, index, axis=1)
        else:
            cand = ops.reshape(ops.take_along_axis(scores, index[..., None], axis=1), (-1, k * nc))
            score, flat = ops.top_k(cand, k=k, sorted=True)
            label = flat % nc
            index = ops.take_along_axis(index, flat // nc, axis=1)
        box = ops.take_along_axis(boxes, index[..., None], axis=1)
        rows = [box, score[..., None], ops.cast(label, box.dtype)[..., None]]
        if self.extra:
            rows.append(ops.take_along_axis(extra, index[..., None], axis=1))
        return ops.concatenate(rows, axis=-1)

    def compute_output_shape(self, shape):
        return (shape[0], min(self.max_det, int(shape[2])), 6 + self.extra)

    def get_config(self):
        return {**super().get_config(), "nc": self.nc, "max_det": self.max_det, "agnostic": self.agnostic,
                "extra": self.extra}
