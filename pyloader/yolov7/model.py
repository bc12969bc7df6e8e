"""YOLOv7 .pt checkpoint -> functional keras.Model (Keras layers and keras.ops only: TF, JAX, PyTorch backends).

Semantics follow PyTorch exactly (see keras_blocks.torch_layers): symmetric convolution padding, -inf padded
max pools, nearest upsampling, the checkpoint's batch-norm epsilon (fold_bn=False) or folded batch norm.

Input: NHWC float32 RGB in [0, 1] (YOLOv7 divides by 255); the default size is 640x640, or 1280x1280 for P6
models (max stride 64); both sides must be multiples of the max stride.

Outputs (decode=False): one raw head tensor per detection level (the main heads; IAuxDetect's auxiliary heads
are training-only), NHWC [B, H/stride, W/stride, na*(5+nc)]; channel a*(5+nc)+k is anchor a's k-th value
(tx, ty, tw, th, objectness, classes) before the sigmoid: YOLOv7's eval-mode `x[i]` ([B, na, H, W, 5+nc])
in NHWC. decode=True: one tensor [B, boxes, 5+nc] as the first output of YOLOv7's model in eval mode: x, y, w, h
in input pixels, sigmoid objectness and class probabilities; boxes per level, then anchor, then y, then x.

The model's `class_names` attribute is the checkpoint's class-name list.
"""

from __future__ import annotations


import keras
from keras import layers

from ..keras_blocks.model import finish_plan_model, plan_input, run_nodes
from ..keras_blocks.torch_layers import (
    FocusSpaceToDepth, YoloV5Decode, activation as torch_activation, conv as _conv, max_pool_layer,
)
from ..torch_reader.modules import ConvSpec
from .blocks import SPPCSPC, Concat, Detect, DownC, MaxPool, ReOrg, RepConv, Shortcut, Upsample
from .weights import YoloV7Plan

__all__ = ["build", "default_input_size"]


def torch_conv(x, spec, fold_bn, activation=True):
    return _conv(x, spec, fold_bn, with_activation=activation)


def _pool(x, p: MaxPool):
    return max_pool_layer(p.kernel, p.stride, p.padding, p.name, x.shape[1:3])(x)


def _repconv(x, b: RepConv, fold_bn):
    if fold_bn:
        d = b.dense
        y = layers.ZeroPadding2D(((1, 1), (1, 1)), name=b.reparam_name + "_pad")(x) if d.stride != (1, 1) else x
        y = layers.Conv2D(
            int(d.kernel.shape[0]), (3, 3), strides=d.stride, padding="same" if d.stride == (1, 1) else "valid",
            groups=d.groups, use_bias=True, name=b.reparam_name, kernel_initializer="zeros",
            bias_initializer="zeros",
        )(y)
    else:
        branches = [torch_conv(x, b.dense, False, activation=False), torch_conv(x, b.one, False, activation=False)]
        if b.identity is not None:
            branches.append(layers.BatchNormalization(epsilon=b.identity.eps, name=b.identity.name)(x))
        y = layers.Add(name=b.name + "_add")(branches)
    return torch_activation(y, b.act, b.act_name)


def _sppcspc(x, b: SPPCSPC, fold_bn):
    x1 = torch_conv(torch_conv(torch_conv(x, b.cv1, fold_bn), b.cv3, fold_bn), b.cv4, fold_bn)
    cat = layers.Concatenate(axis=-1, name=b.name + "_cat1")([x1] + [_pool(x1, p) for p in b.pools])
    y1 = torch_conv(torch_conv(cat, b.cv5, fold_bn), b.cv6, fold_bn)
    y2 = torch_conv(x, b.cv2, fold_bn)
    return torch_conv(layers.Concatenate(axis=-1, name=b.name + "_cat2")([y1, y2]), b.cv7, fold_bn)


def _downc(x, b: DownC, fold_bn):
    y1 = torch_conv(torch_conv(x, b.cv1, fold_bn), b.cv2, fold_bn)
    y2 = torch_conv(_pool(x, b.pool), b.cv3, fold_bn)
    return layers.Concatenate(axis=-1, name=b.name + "_cat")([y1, y2])


_BUILD = {  # record type -> (x, record, fold_bn) -> Keras output
    ConvSpec: torch_conv,
    RepConv: _repconv,
    Concat: lambda x, b, fold_bn: layers.Concatenate(axis=-1, name=b.name)(list(x)),
    Shortcut: lambda x, b, fold_bn: layers.Add(name=b.name)(list(x)),
    MaxPool: lambda x, b, fold_bn: _pool(x, b),
    ReOrg: lambda x, b, fold_bn: FocusSpaceToDepth(name=b.name)(x),  # the same slicing as YOLOv5's Focus
    Upsample: lambda x, b, fold_bn: layers.UpSampling2D(size=b.size, interpolation="nearest", name=b.name)(x),
    SPPCSPC: _sppcspc,
    DownC: _downc,
    Detect: lambda x, b, fold_bn: [torch_conv(xi, c, fold_bn) for xi, c in zip(x, b.convs)],
}


def default_input_size(plan: YoloV7Plan) -> tuple:
    """640x640, or 1280x1280 for P6 models (max stride 64), as YOLOv7's own defaults."""
    s = 1280 if plan.max_stride >= 64 else 640
    return (s, s)


def build(plan: YoloV7Plan, options) -> keras.Model:
    """The family's empty model (pyloader.family): the main heads, or YOLOv7's decoded eval output."""
    inp, _ = plan_input(plan, options.input_size, default_input_size(plan))
    det = plan.nodes[-1]
    head = det.parts
    heads = run_nodes(inp, plan.nodes, lambda x, node: _BUILD[type(node.parts)](x, node.parts, options.fold_bn),
                      used=plan.used, source=lambda node: node.source[: head.nl] if node is det else node.source)
    outputs = (YoloV5Decode(head.na, head.nc, plan.strides, plan.anchors, name="decode")(heads)
               if options.decoded else heads)
    return finish_plan_model(inp, heads, outputs, plan, "yolov7", decode=options.decoded)
