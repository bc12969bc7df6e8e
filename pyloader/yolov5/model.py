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

The model's `class_names` attribute is the checkpoint's class-name list (model.names, ordered by class id).
"""

from __future__ import annotations

import keras
from keras import layers

from ..boundary import short_repr
from ..errors import FormatError
from ..keras_blocks.model import finish_plan_model, plan_input, run_nodes
from ..keras_blocks.torch_layers import (
    FocusSpaceToDepth, Hardswish, TorchMaxPool2D, YoloV5Decode, activation as _activation, conv as _conv, max_pool_layer,
)
from .weights import YoloV5Plan

__all__ = ["build", "TorchMaxPool2D", "FocusSpaceToDepth", "Hardswish", "YoloV5Decode"]

_PKG = "pyloader_yolov5"


def _bottleneck(x, b, fold_bn):
    y = _conv(_conv(x, b["cv1"], fold_bn), b["cv2"], fold_bn)
    return layers.Add(name=b["name"] + "_add")([x, y]) if b["add"] else y


def _pool(x, p):
    return max_pool_layer(p["kernel"], p["stride"], p["padding"], p["name"], x.shape[1:3])(x)


def _node(x, node, fold_bn):
    P, name = node.parts, node.name
    k = node.kind
    if k == "Sequential":
        for sub in P["nodes"]:
            x = _node(x, sub, fold_bn)
        return x
    if k == "Conv":
        return _conv(x, P["conv"], fold_bn)
    if k == "Focus":
        return _conv(FocusSpaceToDepth(name=name + "_focus")(x), P["conv"], fold_bn)
    if k == "Bottleneck":
        return _bottleneck(x, P, fold_bn)
    if k == "C3":
        y = _conv(x, P["cv1"], fold_bn)
        for b in P["m"]:
            y = _bottleneck(y, b, fold_bn)
        z = _conv(x, P["cv2"], fold_bn)
        return _conv(layers.Concatenate(axis=-1, name=name + "_cat")([y, z]), P["cv3"], fold_bn)
    if k == "BottleneckCSP":
        y = _conv(x, P["cv1"], fold_bn)
        for b in P["m"]:
            y = _bottleneck(y, b, fold_bn)
        y1 = _conv(y, P["cv3"], fold_bn)
        y2 = _conv(x, P["cv2"], fold_bn)
        z = layers.Concatenate(axis=-1, name=name + "_cat")([y1, y2])
        if not fold_bn:
            z = layers.BatchNormalization(epsilon=P["bn"].eps, name=P["bn"].name)(z)
        z = _activation(z, P["act"], P["act_name"])
        return _conv(z, P["cv4"], fold_bn)
    if k == "SPP":
        x = _conv(x, P["cv1"], fold_bn)
        cat = layers.Concatenate(axis=-1, name=name + "_cat")([x] + [_pool(x, p) for p in P["pools"]])
        return _conv(cat, P["cv2"], fold_bn)
    if k == "SPPF":
        x = _conv(x, P["cv1"], fold_bn)
        pool = max_pool_layer(P["pool"]["kernel"], P["pool"]["stride"], P["pool"]["padding"], P["pool"]["name"],
                         x.shape[1:3])
        y1 = pool(x)
        y2 = pool(y1)
        return _conv(layers.Concatenate(axis=-1, name=name + "_cat")([x, y1, y2, pool(y2)]), P["cv2"], fold_bn)
    if k == "Concat":
        return layers.Concatenate(axis=-1, name=name)(list(x))
    if k == "Upsample":
        return layers.UpSampling2D(size=P["size"], interpolation="nearest", name=name)(x)
    if k == "MaxPool":
        return _pool(x, P["pool"])
    if k == "ZeroPad":
        left, right, top, bottom = P["padding"]
        return layers.ZeroPadding2D(((top, bottom), (left, right)), name=name)(x)
    if k == "Detect":
        return [_conv(xi, c, fold_bn) for xi, c in zip(x, P["convs"])]
    raise FormatError(f"module kind {short_repr(k)} is not supported")


def default_input_size(plan: YoloV5Plan) -> tuple:
    """YOLOv5 has no fixed size: 640x640, or 1280x1280 for P6 models (max stride 64)."""
    s = 1280 if plan.max_stride >= 64 else 640
    return (s, s)


def build(plan: YoloV5Plan, options) -> keras.Model:
    """The family's empty model (pyloader.family): raw heads, or YOLOv5's decoded eval output."""
    inp, _ = plan_input(plan, options.input_size, default_input_size(plan))
    heads = run_nodes(inp, plan.nodes, lambda x, node: _node(x, node, options.fold_bn))
    det = plan.nodes[-1].parts
    outputs = (YoloV5Decode(det["na"], det["nc"], plan.strides, plan.anchors, name="decode")(heads)
               if options.decoded else heads)
    return finish_plan_model(inp, heads, outputs, plan, "yolov5", decode=options.decoded)
