"""Ultralytics .pt checkpoint -> functional keras.Model (Keras layers and keras.ops only: TF, JAX, PyTorch backends).

Semantics follow PyTorch exactly (convolutions, padding, pooling, batch norm: keras_blocks.torch_layers):
* C2f / C3k2 split cv1's output in two halves and concatenate every block's output after them (C2: the
  blocks run on the first half, C2PSA: on the second);
* C2PSA's attention (`PSAAttention`) reproduces Attention.forward: per head, softmax(q^T k * scale) over the
  keys, v weighted by it, plus the depthwise positional conv `pe` of v, then `proj`;
* Detect's box branch (cv2) and class branch (cv3; YOLO11's with depthwise stages) per level;
* the YOLOv3u / Ghost / YOLOv6 / YOLO12 / YOLOv9 modules: backbone_model.py (YOLO12's area attention is
  PSAAttention with `area` > 1).

Input: NHWC float32 RGB in [0, 1] (Ultralytics divides by 255), shape (input_size[0], input_size[1], 3); the
default is the checkpoint's training size (`imgsz`, 640 when it records none). Both sides must be multiples
of the model's max stride.

Outputs (decode=False): one raw tensor per detection level, NHWC [B, H/stride, W/stride, 4 * reg_max + nc]:
channels 0..4*reg_max-1 are the box distribution (side-major: left, top, right, bottom, reg_max bins each),
the rest the class logits before the sigmoid (Ultralytics' Detect cv2[i] and cv3[i] outputs, NCHW there).
decode=True: one tensor [B, 4 + nc, anchors], what Ultralytics' DetectionModel returns in eval mode: x, y, w, h
(box centre and size, input pixels; DFL expectation, dist2bbox, times the stride) and the class probabilities
(sigmoid); anchors ordered per level, then y, then x. An end-to-end head whose checkpoint selects its one-to-one
branch (YOLO26, YOLOv10; pyloader.ultralytics.end2end): [B, min(max_det, anchors), 6], rows x1, y1, x2, y2, score,
class index (topk.EndToEndTopK); its raw heads are that branch's.
Segment / Pose / OBB models (UltralyticsTaskDecode): raw, head_i as above, then cv4's outputs per level
(mask_coefficients_i, keypoints_i or angle_i: NHWC, as the conv gives them), then (Segment) `prototypes`, NHWC
[B, 2H/stride0, 2W/stride0, nm]; decoded, `detections` [B, 4 + nc + channels, anchors] as Ultralytics' eval output
(mask coefficients, keypoints in pixels with visibility sigmoid, or the angle in radians with the rotated box's
centre) and, for Segment, `prototypes` (NHWC, as Ultralytics' own TF exports give them). YOLO26's Segment26 / Pose26 /
OBB26 likewise (their own keypoint and angle decoding); with the one-to-one branch selected, `detections` is the top-k
[B, k, 6 + channels] (x1, y1, x2, y2 or OBB's rotated x, y, w, h, score, class, the task's channels). YOLO26's
semantic and depth models: dense_model.py.

The model's `class_names` attribute is the checkpoint's class-name list (model.names, ordered by class id).
"""

from __future__ import annotations


import numpy as np

import keras
from keras import layers, ops

from ..keras_blocks.layers import cell_grid, spatial
from ..keras_blocks.model import finish_plan_model, plan_input, run_nodes
from ..keras_blocks.torch_layers import activation, conv as _conv, max_pool_layer
from ..torch_reader.modules import ConvSpec
from .blocks import (Attention, Bottleneck, C2, C2PSA, C2f, C3, CIB, Chain, Classify, Concat, Detect, OBB, OBB26,
                     PSABlock, Pose, Pose26, Proto, Proto26, RepVGGDW, Repeats, SPPF, Segment, Segment26, TransposeConv,
                     Upsample)
from .backbone_model import BUILDERS as BACKBONE_BUILDERS
from .dense_model import BUILDERS as DENSE_BUILDERS, dense_model
from .keras_layers import ChannelSplit
from .rtdetr_model import BUILDERS as RTDETR_BUILDERS, rtdetr_model
from .topk import EndToEndTopK
from .weights import UltralyticsPlan
from .world import TEXT_KEY
from .world_model import BUILDERS as WORLD_BUILDERS, world_nodes

__all__ = ["build", "PSAAttention", "ChannelSplit", "UltralyticsDecode", "UltralyticsTaskDecode"]

_PKG = "pyloader_ultralytics"


@keras.saving.register_keras_serializable(package=_PKG)
class PSAAttention(layers.Layer):
    """Ultralytics Attention's core on qkv (NHWC): returns (attention output, v), both [B, H, W, heads*head_dim].

    Channel layout of qkv per head: key_dim q, key_dim k, head_dim v (qkv.view(B, heads, 2*key_dim+head_dim, N)).
    area > 1 (YOLO12's AAttn): the H*W positions, flattened row-major, are cut in `area` equal runs that each
    attend only within themselves.
    """

    def __init__(self, num_heads, key_dim, head_dim, scale, area=1, **kw):
        super().__init__(**kw)
        self.num_heads, self.key_dim, self.head_dim = int(num_heads), int(key_dim), int(head_dim)
        self.scale, self.area = float(scale), int(area)

    def call(self, qkv):
        h, w = spatial(qkv)
        nh, kd, hd = self.num_heads, self.key_dim, self.head_dim
        if isinstance(h * w, int) and (h * w) % self.area:
            raise ValueError(f"{self.name}: {h}x{w} positions do not split in {self.area} areas")
        t = ops.reshape(qkv, (-1, h * w // self.area, nh, 2 * kd + hd))  # area > 1: runs of rows as batch items
        t = ops.transpose(t, (0, 2, 1, 3))  # [B, nh, N, 2kd+hd]
        q, k, v = t[..., :kd], t[..., kd:2 * kd], t[..., 2 * kd:]
        attn = ops.softmax(ops.matmul(q * self.scale, ops.transpose(k, (0, 1, 3, 2))), axis=-1)  # [B, nh, Nq, Nk]
        out = ops.matmul(attn, v)  # [B, nh, N, hd]
        to_map = lambda z: ops.reshape(ops.transpose(z, (0, 2, 1, 3)), (-1, h, w, nh * hd))  # noqa: E731
        return to_map(out), to_map(v)

    def tflite_ops(self, w, inputs):
        """The converter's operators for `call` (pyloader.outputs.tflite_direct); area 1 only."""
        (qkv,) = inputs
        _, h, wd, _ = w.shape(qkv)
        if self.area != 1:
            from ..outputs.tflite_direct import Uncovered

            raise Uncovered(f"{self.name}: area attention ({self.area} areas)")
        nh, kd, hd = self.num_heads, self.key_dim, self.head_dim
        t = w.transpose(w.reshape(qkv, (1, h * wd, nh, 2 * kd + hd)), (0, 2, 1, 3))
        q = w.binary("MUL", w.slice(t, -1, 0, kd), np.float32(self.scale))
        attn = w.softmax(w.batch_matmul(q, w.slice(t, -1, kd, 2 * kd), adj_y=True))
        v = w.slice(t, -1, 2 * kd, None)
        return [w.reshape(w.transpose(z, (0, 2, 1, 3)), (1, h, wd, nh * hd)) for z in (w.batch_matmul(attn, v), v)]

    def compute_output_shape(self, shape):
        s = (*shape[:-1], self.num_heads * self.head_dim)
        return s, s

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "head_dim": self.head_dim, "scale": self.scale, "area": self.area}


@keras.saving.register_keras_serializable(package=_PKG)
class UltralyticsDecode(layers.Layer):
    """Detect's eval-mode decoding of the raw heads into [B, 4 + nc, anchors]: boxes in pixels (x, y, w, h, or
    x1, y1, x2, y2 with xyxy: an end-to-end head's, Detect.decode_bboxes), class sigmoid. reg_max 1 (YOLO26): the
    four channels are the distances themselves (no DFL)."""

    def __init__(self, nc, reg_max, strides, dfl, xyxy=False, **kw):
        super().__init__(**kw)
        self.nc, self.reg_max = int(nc), int(reg_max)
        self.strides = [float(s) for s in strides]
        self.dfl = [float(v) for v in dfl]
        self.xyxy = bool(xyxy)

    def parts(self, heads):
        """(ltrb distances [B, A, 4] in grid cells: the DFL expectation, class logits [B, A, nc], anchor centres
        [1, A, 2] and strides [1, A, 1]) of the raw heads."""
        rm, nc = self.reg_max, self.nc
        boxes, scores, anchors, strides = [], [], [], []
        for x, s in zip(heads, self.strides):
            ny, nx = spatial(x)
            x = ops.reshape(x, (-1, ny * nx, 4 * rm + nc))
            boxes.append(x[..., :4 * rm])
            scores.append(x[..., 4 * rm:])
            anchors.append(cell_grid(ny, nx, 0.5))
            strides.append(np.full((ny * nx, 1), s, np.float32) if isinstance(ny * nx, int) else
                           ops.full((ny * nx, 1), s, "float32"))
        box = ops.concatenate(boxes, axis=1) if len(boxes) > 1 else boxes[0]
        score = ops.concatenate(scores, axis=1) if len(scores) > 1 else scores[0]
        dist = box
        if rm > 1:
            dist = ops.softmax(ops.reshape(box, (-1, ops.shape(box)[1], 4, rm)), axis=-1)  # DFL: softmax over the bins
            dist = ops.sum(dist * ops.convert_to_tensor(np.asarray(self.dfl, np.float32)), axis=-1)  # [B, A, 4] ltrb
        anchor, stride = ((ops.convert_to_tensor(np.concatenate(v)) if all(isinstance(t, np.ndarray) for t in v) else
                           ops.concatenate(v, axis=0))[None] for v in (anchors, strides))  # tensors: on the left of
        # an operator a numpy array would not take a PyTorch tensor
        return dist, score, anchor, stride

    @staticmethod
    def xywh(dist, anchor, stride):
        """dist2bbox: box centre and size in pixels from the ltrb distances."""
        x1y1 = anchor - dist[..., :2]
        x2y2 = anchor + dist[..., 2:]
        return ops.concatenate([(x1y1 + x2y2) / 2.0, x2y2 - x1y1], axis=-1) * stride

    def call(self, heads):
        dist, score, anchor, stride = self.parts(heads)
        box = (ops.concatenate([anchor - dist[..., :2], anchor + dist[..., 2:]], axis=-1) * stride if self.xyxy else
               self.xywh(dist, anchor, stride))
        y = ops.concatenate([box, ops.sigmoid(score)], axis=-1)
        return ops.transpose(y, (0, 2, 1))

    def tflite_ops(self, w, inputs):
        """The converter's operators for `call` (pyloader.outputs.tflite_direct): the DFL as SOFTMAX, MUL by the
        bins and SUM; divisions by 2 as products by 0.5."""
        box, score, _, _ = self.tflite_parts(w, inputs)
        return w.transpose(w.concat([box, w.unary("LOGISTIC", score)], -1), (0, 2, 1))

    def tflite_parts(self, w, inputs):
        """(boxes [1, A, 4] in pixels, class logits [1, A, nc]: tensors; anchor centres [1, A, 2] and strides
        [1, A, 1]: arrays) of the raw heads `inputs`, as `call` computes them."""
        rm, nc = self.reg_max, self.nc
        flat = [w.reshape(x, (1, w.shape(x)[1] * w.shape(x)[2], 4 * rm + nc)) for x in inputs]
        box, score = (w.concat(parts, 1) if len(parts) > 1 else parts[0] for parts in
                      ([w.slice(x, -1, 0, 4 * rm) for x in flat], [w.slice(x, -1, 4 * rm, None) for x in flat]))
        a = w.shape(box)[1]
        dist = box
        if rm > 1:
            dist = w.reduce_sum(w.binary("MUL", w.softmax(w.reshape(box, (1, a, 4, rm))),
                                         np.asarray(self.dfl, np.float32)), -1)
        anchor = np.concatenate([cell_grid(*w.shape(x)[1:3], 0.5) for x in inputs])[None]
        stride = np.concatenate([np.full((np.prod(w.shape(x)[1:3]), 1), s, np.float32)
                                 for x, s in zip(inputs, self.strides)])[None]
        x1y1 = w.binary("SUB", anchor, w.slice(dist, -1, 0, 2))
        x2y2 = w.binary("ADD", anchor, w.slice(dist, -1, 2, None))
        if self.xyxy:
            parts = [x1y1, x2y2]
        else:
            parts = [w.binary("MUL", w.binary("ADD", x1y1, x2y2), np.float32(0.5)), w.binary("SUB", x2y2, x1y1)]
        return w.binary("MUL", w.concat(parts, -1), stride), score, anchor, stride

    def compute_output_shape(self, shapes):
        cells = [None if None in s[1:3] else s[1] * s[2] for s in shapes]
        return (shapes[0][0], 4 + self.nc, None if None in cells else sum(cells))

    def get_config(self):
        return {**super().get_config(), "nc": self.nc, "reg_max": self.reg_max, "strides": self.strides, "dfl": self.dfl,
                "xyxy": self.xyxy}


@keras.saving.register_keras_serializable(package=_PKG)
class UltralyticsTaskDecode(UltralyticsDecode):
    """Segment / Pose / OBB in eval mode: [B, 4 + nc + channels, anchors] from the raw heads followed by cv4's raw
    outputs per level: boxes and class probabilities as Detect, then (segment) the mask coefficients as they are,
    (pose) the keypoints decoded as Pose.kpts_decode: x, y = (2 * raw + anchor - 0.5) * stride, visibility sigmoid,
    (obb) the angle (sigmoid - 0.25) * pi, the box centre rotated by it (dist2rbox). head26 (Pose26, OBB26): the
    keypoints are (raw + anchor) * stride, the angle is the raw value. xyxy (an end-to-end head's selected branch):
    Segment / Pose boxes as x1, y1, x2, y2 (OBB keeps its rotated x, y, w, h, as OBB.decode_bboxes)."""

    def __init__(self, nc, reg_max, strides, dfl, task, channels, kpt_shape=None, head26=False, **kw):
        super().__init__(nc, reg_max, strides, dfl, **kw)
        self.task, self.channels, self.head26 = str(task), int(channels), bool(head26)
        self.kpt_shape = None if kpt_shape is None else [int(v) for v in kpt_shape]

    def call(self, inputs):
        nl = len(self.strides)
        dist, score, anchor, stride = self.parts(inputs[:nl])
        extra = ops.concatenate([ops.reshape(x, (-1, spatial(x)[0] * spatial(x)[1], self.channels))
                                 for x in inputs[nl:]], axis=1)  # [B, A, channels]
        if self.task == "obb":
            extra = extra if self.head26 else (ops.sigmoid(extra) - 0.25) * np.pi
            lt, rb = dist[..., :2], dist[..., 2:]
            xf, yf = (rb[..., :1] - lt[..., :1]) / 2.0, (rb[..., 1:] - lt[..., 1:]) / 2.0
            cos, sin = ops.cos(extra), ops.sin(extra)
            xy = ops.concatenate([xf * cos - yf * sin, xf * sin + yf * cos], axis=-1) + anchor
            box = ops.concatenate([xy, lt + rb], axis=-1) * stride
        elif self.xyxy:
            box = ops.concatenate([anchor - dist[..., :2], anchor + dist[..., 2:]], axis=-1) * stride
        else:
            box = self.xywh(dist, anchor, stride)
        if self.task == "pose":
            k, ndim = self.kpt_shape
            kp = ops.reshape(extra, (-1, ops.shape(extra)[1], k, ndim))
            offset = kp[..., :2] if self.head26 else kp[..., :2] * 2.0 - 0.5
            xy = (offset + anchor[:, :, None, :]) * stride[:, :, None, :]
            kp = ops.concatenate([xy, ops.sigmoid(kp[..., 2:])], axis=-1) if ndim == 3 else xy
            extra = ops.reshape(kp, (-1, ops.shape(extra)[1], k * ndim))
        y = ops.concatenate([box, ops.sigmoid(score), extra], axis=-1)
        return ops.transpose(y, (0, 2, 1))

    def tflite_ops(self, w, inputs):
        """The converter's operators for `call` (pyloader.outputs.tflite_direct): segment and pose (not head26);
        `kp * 2 - 0.5` as MUL and SUB."""
        if self.task not in ("segment", "pose") or self.head26 or self.xyxy:
            from ..outputs.tflite_direct import Uncovered

            raise Uncovered(f"{self.name}: the {self.task} decoding{' (head26)' if self.head26 else ''}"
                            f"{' (xyxy)' if self.xyxy else ''}")
        nl = len(self.strides)
        box, score, anchor, stride = self.tflite_parts(w, inputs[:nl])
        flat = [w.reshape(x, (1, w.shape(x)[1] * w.shape(x)[2], self.channels)) for x in inputs[nl:]]
        extra = w.concat(flat, 1) if len(flat) > 1 else flat[0]
        if self.task == "pose":
            (k, ndim), a = self.kpt_shape, w.shape(extra)[1]
            kp = w.reshape(extra, (1, a, k, ndim))
            xy = w.binary("SUB", w.binary("MUL", w.slice(kp, -1, 0, 2), np.float32(2.0)), np.float32(0.5))
            xy = w.binary("MUL", w.binary("ADD", xy, anchor[:, :, None, :]), stride[:, :, None, :])
            if ndim == 3:
                xy = w.concat([xy, w.unary("LOGISTIC", w.slice(kp, -1, 2, None))], -1)
            extra = w.reshape(xy, (1, a, k * ndim))
        return w.transpose(w.concat([box, w.unary("LOGISTIC", score), extra], -1), (0, 2, 1))

    def compute_output_shape(self, shapes):
        b, c, a = super().compute_output_shape(shapes[:len(self.strides)])
        return (b, c + self.channels, a)

    def get_config(self):
        return {**super().get_config(), "task": self.task, "channels": self.channels, "kpt_shape": self.kpt_shape,
                "head26": self.head26}


def _convs(x, specs, fold_bn):  # ConvSpecs (a class branch may hold world.L2Norm)
    for spec in specs:
        x = _conv(x, spec, fold_bn) if isinstance(spec, ConvSpec) else _block(x, spec, fold_bn)
    return x


def _blocks(x, blocks, fold_bn):
    for b in blocks:
        x = _block(x, b, fold_bn)
    return x


def _bottleneck(x, B: Bottleneck, fold_bn):
    y = _conv(_block(x, B.cv1, fold_bn), B.cv2, fold_bn)  # cv1: a ConvSpec, or RepBottleneck's RepConv
    return layers.Add(name=B.name + "_add")([x, y]) if B.add else y


def _c3(x, B: C3, fold_bn):
    y = _blocks(_conv(x, B.cv1, fold_bn), B.m, fold_bn)
    z = _conv(x, B.cv2, fold_bn)
    return _conv(layers.Concatenate(axis=-1, name=B.name + "_cat")([y, z]), B.cv3, fold_bn)


def _attention(x, A: Attention, fold_bn):
    qkv = _conv(x, A.qkv, fold_bn)
    out, v = PSAAttention(A.num_heads, A.key_dim, A.head_dim, A.scale, A.area, name=A.name + "_core")(qkv)
    pe = _conv(v, A.pe, fold_bn)
    return _conv(layers.Add(name=A.name + "_add")([out, pe]), A.proj, fold_bn)


def _psablock(x, B: PSABlock, fold_bn):
    a = _attention(x, B.attn, fold_bn)
    x = layers.Add(name=B.name + "_add1")([x, a]) if B.add else a
    f = _convs(x, B.ffn, fold_bn)
    return layers.Add(name=B.name + "_add2")([x, f]) if B.add else f


def _c2f(x, B: C2f, fold_bn):
    """C2f / C3k2: each block on the last output; C2: the blocks on cv1's first half; C2PSA: on its second."""
    c, name = B.c, B.name
    y = _conv(x, B.cv1, fold_bn)
    ys = [ChannelSplit(0, c, name=name + "_split0")(y), ChannelSplit(c, 2 * c, name=name + "_split1")(y)]
    if type(B) is C2f:
        for blk in B.m:
            ys.append(_block(ys[-1], blk, fold_bn))
    else:
        i = 0 if type(B) is C2 else 1
        ys[i] = _blocks(ys[i], B.m, fold_bn)
    return _conv(layers.Concatenate(axis=-1, name=name + "_cat")(ys), B.cv2, fold_bn)


def _sppf(x, B: SPPF, fold_bn):
    y = _conv(x, B.cv1, fold_bn)
    p = B.pool
    pool = max_pool_layer(p.kernel, p.stride, p.padding, p.name, y.shape[1:3])
    ys = [y]
    for _ in range(B.n):
        ys.append(pool(ys[-1]))
    y = _conv(layers.Concatenate(axis=-1, name=B.name + "_cat")(ys), B.cv2, fold_bn)
    return layers.Add(name=B.name + "_add")([y, x]) if B.add else y


def _detect(x, D: Detect, fold_bn):
    """Per level, the box branch (cv2) and the class branch (cv3) concatenated."""
    return [layers.Concatenate(axis=-1, name=f"{D.name}_out{i}")([_convs(xi, lv.cv2, fold_bn),
                                                                  _convs(xi, lv.cv3, fold_bn)])
            for i, (xi, lv) in enumerate(zip(x, D.levels))]


def _repvggdw(x, R: RepVGGDW, fold_bn):
    y = _conv(x, R.conv, fold_bn)
    if R.conv1 is not None:
        y = layers.Add(name=R.name + "_add")([y, _conv(x, R.conv1, fold_bn)])
    return activation(y, R.act, R.name + "_act")


def _cib(x, B: CIB, fold_bn):
    y = _blocks(x, B.cv1, fold_bn)
    return layers.Add(name=B.name + "_add")([x, y]) if B.add else y


def _proto(x, P: Proto, fold_bn):
    """Proto: cv1, the ConvTranspose2d upsampling (as YOLOv6's rows: backbone_model), cv2, cv3."""
    y = BACKBONE_BUILDERS[TransposeConv](_conv(x, P.cv1, fold_bn), P.upsample, fold_bn, None)
    return _convs(_conv(y, P.cv2, fold_bn), [P.cv3], fold_bn)


def _proto26(x, P: Proto26, fold_bn):
    """Proto26: x[0] + each deeper level's refine conv upsampled (nearest) to x[0]'s size, feat_fuse, the Proto."""
    feat = x[0]
    for i, (xi, spec) in enumerate(zip(x[1:], P.refine)):
        up = layers.UpSampling2D(2 ** (i + 1), interpolation="nearest", name=f"{P.name}_up{i}")(_conv(xi, spec, fold_bn))
        feat = layers.Add(name=f"{P.name}_add{i}")([feat, up])
    return _proto(_conv(feat, P.fuse, fold_bn), P.proto, fold_bn)


def _task_head(x, H, fold_bn):
    """Segment / Pose / OBB: Detect's per-level outputs, then cv4's per level, then (Segment) the prototypes."""
    cv4 = [_convs(xi, stages, fold_bn) for xi, stages in zip(x, H.cv4)]
    protos = []
    if isinstance(H, Segment):
        protos = [_proto26(x, H.proto, fold_bn) if isinstance(H.proto, Proto26) else _proto(x[0], H.proto, fold_bn)]
    return _detect(x, H, fold_bn) + cv4 + protos


def _classify(x, H: Classify, fold_bn):
    """Classify in eval mode up to the logits: conv, global average pool, (Dropout: nothing), Linear."""
    y = layers.GlobalAveragePooling2D(name=H.name + "_pool")(_conv(x, H.conv, fold_bn))
    return layers.Dense(H.nc, name=H.linear.name)(y)


_BUILDERS = {
    ConvSpec: _conv,
    Repeats: lambda x, R, fold_bn: _blocks(x, R.convs, fold_bn),
    Concat: lambda x, P, fold_bn: layers.Concatenate(axis=-1, name=P.name)(list(x)),
    Upsample: lambda x, P, fold_bn: layers.UpSampling2D(size=P.size, interpolation="nearest", name=P.name)(x),
    Bottleneck: _bottleneck, C3: _c3, Chain: lambda x, S, fold_bn: _blocks(x, S.items, fold_bn), PSABlock: _psablock,
    C2f: _c2f, C2: _c2f, C2PSA: _c2f, SPPF: _sppf, Detect: _detect, Classify: _classify,
    Segment: _task_head, Pose: _task_head, OBB: _task_head, RepVGGDW: _repvggdw, CIB: _cib,
    Segment26: _task_head, Pose26: _task_head, OBB26: _task_head, **DENSE_BUILDERS, **RTDETR_BUILDERS,
    **WORLD_BUILDERS,
}


def _block(x, record, fold_bn):
    """A plan record (a yaml row's, or a block inside one) applied to x, by its type."""
    build = _BUILDERS.get(type(record))
    if build is None:  # the YOLOv3u / Ghost / YOLOv6 / YOLO12 / YOLOv9 modules
        return BACKBONE_BUILDERS[type(record)](x, record, fold_bn, _block)
    return build(x, record, fold_bn)


def build(plan: UltralyticsPlan, options) -> keras.Model:
    """The family's empty model (pyloader.family): raw heads, or Ultralytics' decoded eval output."""
    inp, _ = plan_input(plan, options.input_size, (plan.imgsz, plan.imgsz))
    heads = (world_nodes(inp, plan, options.fold_bn, _block) if TEXT_KEY in plan.tensors else
             run_nodes(inp, plan.nodes, lambda x, node: _block(x, node.parts, options.fold_bn)))
    if plan.task == "classify":  # eval mode: (softmax, logits); raw: the logits
        if not options.decoded:
            return finish_plan_model(inp, [heads], [heads], plan, "ultralytics", decode=False, names=["logits"])
        probs = layers.Softmax(axis=-1, name="softmax")(heads)
        return finish_plan_model(inp, [heads], [probs, heads], plan, "ultralytics", decode=True,
                                 names=["probabilities", "logits"])
    if plan.task in ("segment", "pose", "obb"):
        return _task_model(inp, heads, plan, options.decoded)
    if plan.task in ("semantic", "depth"):
        return dense_model(inp, heads, plan, options.decoded)
    if plan.nodes[-1].kind == "RTDETRDecoder":
        return rtdetr_model(inp, heads, plan, options.decoded)
    outputs = heads
    if options.decoded:  # an end-to-end head's selection (.end2end): xyxy boxes, then Detect.postprocess's top-k
        e2e = plan.end2end is not None and plan.end2end.selected
        outputs = UltralyticsDecode(plan.nc, plan.reg_max, plan.strides, plan.dfl, xyxy=e2e, name="decode")(heads)
        if e2e:
            outputs = EndToEndTopK(plan.nc, plan.end2end.max_det, plan.end2end.agnostic, name="topk")(outputs)
    return finish_plan_model(inp, heads, outputs, plan, "ultralytics", decode=options.decoded)


def _task_model(inp, out, plan, decoded):
    """Raw: head_i, then <H.output>_i per level, then (segment) prototypes; decoded: detections (+ prototypes)."""
    H, nl = plan.nodes[-1].parts, len(plan.strides)
    proto = out[2 * nl:]
    if decoded:  # an end-to-end head's selection (.end2end): Detect.postprocess's top-k, the task's channels kept
        e2e = plan.end2end is not None and plan.end2end.selected
        det = UltralyticsTaskDecode(plan.nc, plan.reg_max, plan.strides, plan.dfl, plan.task, H.channels,
                                    getattr(H, "kpt_shape", None), isinstance(H, (Pose26, OBB26)), xyxy=e2e,
                                    name="decode")(out[:2 * nl])
        if e2e:
            det = EndToEndTopK(plan.nc, plan.end2end.max_det, plan.end2end.agnostic, H.channels, name="topk")(det)
        return finish_plan_model(inp, out, [det] + proto, plan, "ultralytics", decode=True,
                                 names=["detections"] + ["prototypes"] * len(proto))
    names = [f"head_{i}" for i in range(nl)] + [f"{H.output}_{i}" for i in range(nl)] + ["prototypes"] * len(proto)
    return finish_plan_model(inp, out, out, plan, "ultralytics", decode=False, names=names)
