"""YOLOv5 .pt checkpoint -> functional keras.Model (Keras layers and keras.ops only: TF, JAX, PyTorch backends).

Semantics follow PyTorch exactly:
* Conv2d padding is symmetric: 'same' only where Keras' 'same' is identical (stride 1, odd kernel, p = k//2),
  else ZeroPadding2D + 'valid';
* MaxPool2d(k, s, p) pads with -inf: Keras' MaxPooling2D where it takes the same windows, else `TorchMaxPool2D`;
  Upsample is nearest with integer factors;
* BatchNorm uses the checkpoint's epsilon (fold_bn=False), or is folded into the conv (fold_bn=True);
* activations are the ones each module record holds (SiLU, Hardswish, LeakyReLU(slope), ReLU, Sigmoid).

Input: NHWC float32 RGB in [0, 1] (YOLOv5 divides by 255), shape (input_size[0], input_size[1], 3); the
default size is 640x640, or 1280x1280 for P6 models (max stride 64). Both sides must be multiples of the
model's max stride.

Outputs (decode=False): one raw head tensor per detection level, NHWC [B, H/stride, W/stride, na*(5+nc)];
channel a*(5+nc)+k holds anchor a's k-th value: k=0..3 tx, ty, tw, th; k=4 objectness; k>=5 class scores,
all before the sigmoid (YOLOv5's Detect.m[i] output, NCHW there).
decode=True: one tensor [B, boxes, 5+nc] as YOLOv5's Detect returns in eval mode: x, y, w, h in input pixels
(box centre and size), objectness and class probabilities after the sigmoid; boxes ordered per level, then
anchor, then y, then x.

Segmentation (SegmentationModel): each head has na*(5+nc+nm) channels (the nm mask coefficients after each anchor's
5+nc values), then `prototypes` NHWC [B, 2H/stride0, 2W/stride0, nm] (Proto's output, NCHW there); decoded,
`detections` [B, boxes, 5+nc+nm] (the coefficients as they are) and `prototypes`, as SegmentationModel returns in
eval mode (its raw heads left out). Classification (ClassificationModel): `logits` [B, nc] (what the model returns);
decoded, `probabilities` (softmax, as YOLOv5's classify predict.py / val.py take them) and `logits`.

The model's `class_names` attribute is the checkpoint's class-name list (model.names, ordered by class id).
"""

from __future__ import annotations

import keras
from keras import layers

from ..keras_blocks.model import finish_plan_model, plan_input, run_nodes
from ..keras_blocks.torch_layers import (
    FocusSpaceToDepth, Hardswish, TorchMaxPool2D, YoloV5Decode, activation as _activation, conv as _conv, max_pool_layer,
)
from .blocks import (
    C3, SPP, SPPF, Bottleneck, BottleneckCSP, Classify, Concat, Conv, Detect, Focus, MaxPool, Segment, Sequential,
    Upsample, ZeroPad,
)
from .weights import YoloV5Plan

__all__ = ["build", "TorchMaxPool2D", "FocusSpaceToDepth", "Hardswish", "YoloV5Decode"]

def _bottleneck(x, b: Bottleneck, fold_bn):
    y = _conv(_conv(x, b.cv1, fold_bn), b.cv2, fold_bn)
    return layers.Add(name=b.name + "_add")([x, y]) if b.add else y


def _pool(x, p: MaxPool):
    return max_pool_layer(p.kernel, p.stride, p.padding, p.name, x.shape[1:3])(x)


def _sequential(x, b: Sequential, fold_bn):
    for sub in b.blocks:
        x = _block(x, sub, fold_bn)
    return x


def _focus(x, b: Focus, fold_bn):
    return _conv(FocusSpaceToDepth(name=b.name + "_focus")(x), b.conv, fold_bn)


def _c3(x, b: C3, fold_bn):
    y = _conv(x, b.cv1, fold_bn)
    for m in b.m:
        y = _bottleneck(y, m, fold_bn)
    z = _conv(x, b.cv2, fold_bn)
    return _conv(layers.Concatenate(axis=-1, name=b.name + "_cat")([y, z]), b.cv3, fold_bn)


def _bottleneck_csp(x, b: BottleneckCSP, fold_bn):
    y = _conv(x, b.cv1, fold_bn)
    for m in b.m:
        y = _bottleneck(y, m, fold_bn)
    y1 = _conv(y, b.cv3, fold_bn)
    y2 = _conv(x, b.cv2, fold_bn)
    z = layers.Concatenate(axis=-1, name=b.name + "_cat")([y1, y2])
    if not fold_bn:
        z = layers.BatchNormalization(epsilon=b.bn.eps, name=b.bn.name)(z)
    z = _activation(z, b.act, b.act_name)
    return _conv(z, b.cv4, fold_bn)


def _spp(x, b: SPP, fold_bn):
    x = _conv(x, b.cv1, fold_bn)
    cat = layers.Concatenate(axis=-1, name=b.name + "_cat")([x] + [_pool(x, p) for p in b.pools])
    return _conv(cat, b.cv2, fold_bn)


def _sppf(x, b: SPPF, fold_bn):
    x = _conv(x, b.cv1, fold_bn)
    pool = max_pool_layer(b.pool.kernel, b.pool.stride, b.pool.padding, b.pool.name, x.shape[1:3])
    y1 = pool(x)
    y2 = pool(y1)
    return _conv(layers.Concatenate(axis=-1, name=b.name + "_cat")([x, y1, y2, pool(y2)]), b.cv2, fold_bn)


def _zero_pad(x, b: ZeroPad, fold_bn):
    left, right, top, bottom = b.padding
    return layers.ZeroPadding2D(((top, bottom), (left, right)), name=b.name)(x)


def _segment(x, b: Segment, fold_bn):
    """The heads, then the prototypes of level 0's input."""
    p = b.proto
    y = layers.UpSampling2D(size=p.scale, interpolation="nearest", name=p.name + "_upsample")(_conv(x[0], p.cv1, fold_bn))
    return [_conv(xi, c, fold_bn) for xi, c in zip(x, b.m)] + [_conv(_conv(y, p.cv2, fold_bn), p.cv3, fold_bn)]


def _classify(x, b: Classify, fold_bn):
    """Classify in eval mode: (the inputs concatenated), conv, global average pool, Linear (a 1x1 conv on the pooled
    map)."""
    if isinstance(x, list):
        x = layers.Concatenate(axis=-1, name=b.name + "_cat")(x)
    y = layers.GlobalAveragePooling2D(keepdims=True, name=b.name + "_pool")(_conv(x, b.conv, fold_bn))
    return layers.Reshape((b.nc,), name=b.name + "_flatten")(_conv(y, b.linear, fold_bn))


_BUILDERS = {
    Sequential: _sequential,
    Conv: lambda x, b, fold_bn: _conv(x, b.conv, fold_bn),
    Focus: _focus,
    Bottleneck: _bottleneck,
    C3: _c3,
    BottleneckCSP: _bottleneck_csp,
    SPP: _spp,
    SPPF: _sppf,
    Concat: lambda x, b, fold_bn: layers.Concatenate(axis=-1, name=b.name)(list(x)),
    Upsample: lambda x, b, fold_bn: layers.UpSampling2D(size=b.size, interpolation="nearest", name=b.name)(x),
    MaxPool: lambda x, b, fold_bn: _pool(x, b),
    ZeroPad: _zero_pad,
    Detect: lambda x, b, fold_bn: [_conv(xi, c, fold_bn) for xi, c in zip(x, b.m)],
    Segment: _segment,
    Classify: _classify,
}


def _block(x, block, fold_bn):
    """The Keras layers of one plan record (blocks.py), by its type."""
    return _BUILDERS[type(block)](x, block, fold_bn)


def default_input_size(plan: YoloV5Plan) -> tuple:
    """YOLOv5 has no fixed size: 640x640, or 1280x1280 for P6 models (max stride 64); classifiers 224x224 (YOLOv5's
    classify/train.py default)."""
    s = 224 if plan.task == "classify" else 1280 if plan.max_stride >= 64 else 640
    return (s, s)


def build(plan: YoloV5Plan, options) -> keras.Model:
    """The family's empty model (pyloader.family): raw heads, or YOLOv5's decoded eval output."""
    inp, _ = plan_input(plan, options.input_size, default_input_size(plan))
    heads = run_nodes(inp, plan.nodes, lambda x, node: _block(x, node.block, options.fold_bn))
    det = plan.nodes[-1].block
    if plan.task == "classify":
        if not options.decoded:
            return finish_plan_model(inp, [heads], [heads], plan, "yolov5", decode=False, names=["logits"])
        probs = layers.Softmax(axis=-1, name="softmax")(heads)
        return finish_plan_model(inp, [heads], [probs, heads], plan, "yolov5", decode=True,
                                 names=["probabilities", "logits"])
    proto = heads[det.nl:]  # Segment's prototypes
    heads = heads[:det.nl]
    if not options.decoded:
        names = [f"head_{i}" for i in range(det.nl)] + ["prototypes"] * len(proto) if proto else None
        return finish_plan_model(inp, heads, heads + proto, plan, "yolov5", decode=False, names=names)
    dec = YoloV5Decode(det.na, det.nc, plan.strides, plan.anchors, getattr(det, "nm", 0), name="decode")(heads)
    return finish_plan_model(inp, heads, [dec] + proto if proto else dec, plan, "yolov5", decode=True,
                             names=["detections", "prototypes"] if proto else None)
