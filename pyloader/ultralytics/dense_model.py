"""YOLO26's dense heads as Keras (keras.ops only): SemanticSegment's classifier and the Depth decoder, with their
eval-mode outputs (blocks.SemanticHead, blocks.DepthHead).

* semantic: `logits` NHWC [B, H/8, W/8, nc], raw and decoded alike (Ultralytics' eval output, NCHW there; its
  predictor upsamples them to the image and takes the argmax);
* depth: raw `log_depth` NHWC [B, H/4, W/4, 1] (the head's last Conv2d); decoded `depth`, exp(cal_a * clamp(log
  depth, -4, 5) + cal_b) (Ultralytics' eval output, before its predictor resizes it to the image).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..keras_blocks.model import finish_plan_model
from ..keras_blocks.torch_layers import conv as _conv
from .backbone_model import BUILDERS as BACKBONE_BUILDERS
from .blocks import DepthHead, SemanticHead, TransposeConv

__all__ = ["BUILDERS", "dense_model", "AlignCornersUpsample", "DepthDecode"]

_PKG = "pyloader_ultralytics"


def _interp(n: int, factor: int) -> np.ndarray:
    """The (factor * n, n) matrix of bilinear interpolation with align_corners=True (torch's F.interpolate)."""
    m = factor * n
    src = np.arange(m, dtype=np.float64) * ((n - 1) / (m - 1) if m > 1 else 0.0)
    lo = np.minimum(np.floor(src).astype(int), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = src - lo
    a = np.zeros((m, n), np.float64)
    a[np.arange(m), lo] += 1 - w
    a[np.arange(m), hi] += w
    return a.astype(np.float32)


@keras.saving.register_keras_serializable(package=_PKG)
class AlignCornersUpsample(layers.Layer):
    """Bilinear upsampling by an integer factor with align_corners=True, NHWC: the rows, then the columns, each
    through its fixed interpolation matrix as a 2-D matmul (Keras' Resizing has no align_corners; TFLite runs
    these matmuls, not einsum)."""

    def __init__(self, factor=2, **kw):
        super().__init__(**kw)
        self.factor = int(factor)

    def call(self, x):
        h, w, c, f = int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), self.factor
        ah, aw = ops.convert_to_tensor(_interp(h, f).T), ops.convert_to_tensor(_interp(w, f).T)
        y = ops.reshape(ops.matmul(ops.reshape(ops.transpose(x, (0, 2, 3, 1)), (-1, h)), ah), (-1, w, c, f * h))
        y = ops.reshape(ops.matmul(ops.reshape(ops.transpose(y, (0, 3, 2, 1)), (-1, w)), aw), (-1, f * h, c, f * w))
        return ops.transpose(y, (0, 1, 3, 2))

    def compute_output_shape(self, shape):
        return (shape[0], shape[1] * self.factor, shape[2] * self.factor, shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package=_PKG)
class DepthDecode(layers.Layer):
    """Depth's eval output from its log depth: exp(cal_a * clamp(x, -4, 5) + cal_b)."""

    def __init__(self, cal_a=1.0, cal_b=0.0, **kw):
        super().__init__(**kw)
        self.cal_a, self.cal_b = float(cal_a), float(cal_b)

    def call(self, x):
        return ops.exp(self.cal_a * ops.clip(x, -4.0, 5.0) + self.cal_b)

    def get_config(self):
        return {**super().get_config(), "cal_a": self.cal_a, "cal_b": self.cal_b}


def _semantic(x, H: SemanticHead, fold_bn):
    y = x[0]
    for spec in H.classifier:
        y = _conv(y, spec, fold_bn)
    return y


def _depth(x, H: DepthHead, fold_bn):
    feats = [_conv(xi, p, fold_bn) for xi, p in zip(x, H.proj)]
    out = feats[-1]
    for i in range(len(feats) - 2, -1, -1):
        out = layers.Add(name=f"{H.name}_add{i}")([AlignCornersUpsample(2, name=f"{H.name}_up{i}")(out), feats[i]])
        for spec in H.refine[i]:
            out = _conv(out, spec, fold_bn)
    for part in H.head:
        out = (BACKBONE_BUILDERS[TransposeConv](out, part, fold_bn, None) if isinstance(part, TransposeConv)
               else _conv(out, part, fold_bn))
    return out


BUILDERS = {SemanticHead: _semantic, DepthHead: _depth}


def dense_model(inp, out, plan, decoded) -> keras.Model:
    """semantic: the logits; depth: the log depth, or (decoded) the depth."""
    if plan.task == "semantic":
        return finish_plan_model(inp, [out], [out], plan, "ultralytics", decode=decoded, names=["logits"])
    if not decoded:
        return finish_plan_model(inp, [out], [out], plan, "ultralytics", decode=False, names=["log_depth"])
    H = plan.nodes[-1].parts
    depth = DepthDecode(H.cal_a, H.cal_b, name="decode")(out)
    return finish_plan_model(inp, [out], [depth], plan, "ultralytics", decode=True, names=["depth"])
