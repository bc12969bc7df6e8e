"""YOLOv5 .pt checkpoint -> functional keras.Model (Keras layers and keras.ops only: TF, JAX, PyTorch backends).

Semantics follow PyTorch exactly:
* Conv2d padding is symmetric: 'same' only where Keras' 'same' is identical (stride 1, odd kernel, p = k//2),
  else ZeroPadding2D + 'valid';
* MaxPool2d(k, s, p) pads with -inf (`TorchMaxPool2D`), Upsample is nearest with integer factors;
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

import os

import numpy as np

import keras
from keras import layers, ops

from ..errors import FormatError
from ..keras_blocks.assign import build_streamed
from .weights import ArrayChunks, ConvSpec, YoloV5Plan, read_plan

__all__ = ["load_yolov5", "build_yolov5", "TorchMaxPool2D", "FocusSpaceToDepth", "Hardswish", "YoloV5Decode"]

_PKG = "pyloader_yolov5"


@keras.saving.register_keras_serializable(package=_PKG)
class Hardswish(layers.Layer):
    """PyTorch's Hardswish: x * relu6(x + 3) / 6."""

    def call(self, x):
        return x * ops.relu6(x + 3.0) / 6.0

    def compute_output_shape(self, input_shape):  # no trace of call() while building
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package=_PKG)
class TorchMaxPool2D(layers.Layer):
    """PyTorch MaxPool2d(kernel, stride, padding): symmetric -inf padding, then a valid max pool."""

    def __init__(self, kernel, stride, padding, **kw):
        super().__init__(**kw)
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)

    def call(self, x):
        ph, pw = self.padding
        if ph or pw:
            x = ops.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=float("-inf"))
        return ops.max_pool(x, self.kernel, self.stride, padding="valid")

    def compute_output_shape(self, s):  # without it Keras runs a real max-pool while building (slow on torch)
        def out(n, k, st, p):
            return None if n is None else (n + 2 * p - k) // st + 1

        return (s[0], out(s[1], self.kernel[0], self.stride[0], self.padding[0]),
                out(s[2], self.kernel[1], self.stride[1], self.padding[1]), s[3])

    def get_config(self):
        return {**super().get_config(), "kernel": self.kernel, "stride": self.stride, "padding": self.padding}


@keras.saving.register_keras_serializable(package=_PKG)
class FocusSpaceToDepth(layers.Layer):
    """YOLOv5 Focus' slicing: cat(x[::2, ::2], x[1::2, ::2], x[::2, 1::2], x[1::2, 1::2]) over (rows, cols)."""

    def call(self, x):
        return ops.concatenate(
            [x[:, ::2, ::2, :], x[:, 1::2, ::2, :], x[:, ::2, 1::2, :], x[:, 1::2, 1::2, :]], axis=-1
        )

    def compute_output_shape(self, s):
        if any(n is not None and n % 2 for n in s[1:3]):
            raise ValueError(f"Focus needs an even height and width; got {tuple(s[1:3])}")
        return (s[0], None if s[1] is None else s[1] // 2, None if s[2] is None else s[2] // 2,
                None if s[3] is None else 4 * s[3])


@keras.saving.register_keras_serializable(package=_PKG)
class YoloV5Decode(layers.Layer):
    """Detect's eval-mode decoding of the raw heads into [B, boxes, 5 + nc] (pixels)."""

    def __init__(self, na, nc, strides, anchors, **kw):
        super().__init__(**kw)
        self.na, self.nc = int(na), int(nc)
        self.strides = [float(s) for s in strides]
        self.anchors = np.asarray(anchors, np.float32).tolist()  # (nl, na, 2) pixels

    def call(self, heads):
        no = self.nc + 5
        outs = []
        for i, x in enumerate(heads):
            ny, nx = int(x.shape[1]), int(x.shape[2])
            y = ops.reshape(x, (-1, ny, nx, self.na, no))
            y = ops.sigmoid(ops.transpose(y, (0, 3, 1, 2, 4)))  # [B, na, ny, nx, no]
            yv, xv = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
            grid = (np.stack((xv, yv), -1) - 0.5).reshape(1, 1, ny, nx, 2).astype(np.float32)
            anchor = np.asarray(self.anchors[i], np.float32).reshape(1, self.na, 1, 1, 2)
            xy = (y[..., 0:2] * 2.0 + ops.convert_to_tensor(grid)) * self.strides[i]
            wh = ops.square(y[..., 2:4] * 2.0) * ops.convert_to_tensor(anchor)
            y = ops.concatenate([xy, wh, y[..., 4:]], axis=-1)
            outs.append(ops.reshape(y, (-1, self.na * ny * nx, no)))
        return ops.concatenate(outs, axis=1)

    def compute_output_shape(self, shapes):
        cells = sum(int(s[1]) * int(s[2]) for s in shapes)
        return (shapes[0][0], self.na * cells, self.nc + 5)

    def get_config(self):
        return {**super().get_config(), "na": self.na, "nc": self.nc, "strides": self.strides, "anchors": self.anchors}


def _activation(x, act, name):
    if act is None:
        return x
    if act == "silu":
        return layers.Activation("silu", name=name)(x)
    if act == "hardswish":
        return Hardswish(name=name)(x)
    if act == "relu":
        return layers.ReLU(name=name)(x)
    if act == "sigmoid":
        return layers.Activation("sigmoid", name=name)(x)
    if isinstance(act, tuple) and act[0] == "leaky":
        return layers.LeakyReLU(negative_slope=act[1], name=name)(x)
    raise FormatError(f"activation {act!r} is not supported")


def _conv(x, spec: ConvSpec, fold_bn: bool, activation=True):
    o, _, kh, kw = spec.kernel.shape
    ph, pw = spec.padding
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    same = (sh, sw) == (1, 1) and kh % 2 == 1 and kw % 2 == 1 and ph == dh * (kh // 2) and pw == dw * (kw // 2)
    if not same and (ph or pw):
        x = layers.ZeroPadding2D(((ph, ph), (pw, pw)), name=spec.name + "_pad")(x)
    folded = spec.bn is not None and fold_bn
    x = layers.Conv2D(
        int(o), (int(kh), int(kw)), strides=(sh, sw), padding="same" if same else "valid", dilation_rate=(dh, dw),
        groups=spec.groups, use_bias=spec.bias is not None or folded, name=spec.name,
        # The checkpoint's values are assigned right after building: skip the random initialisation
        # (glorot for ~86M weights of yolov5x costs about a second).
        kernel_initializer="zeros", bias_initializer="zeros",
    )(x)
    if spec.bn is not None and not fold_bn and spec.bn_separate:
        x = layers.BatchNormalization(epsilon=spec.bn.eps, name=spec.bn.name)(x)
    if activation:
        x = _activation(x, spec.act, spec.act_name)
    return x


def _bottleneck(x, b, fold_bn):
    y = _conv(_conv(x, b["cv1"], fold_bn), b["cv2"], fold_bn)
    return layers.Add(name=b["name"] + "_add")([x, y]) if b["add"] else y


def _pool(x, p):
    return TorchMaxPool2D(p["kernel"], p["stride"], p["padding"], name=p["name"])(x)


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
        pool = TorchMaxPool2D(P["pool"]["kernel"], P["pool"]["stride"], P["pool"]["padding"], name=P["pool"]["name"])
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
    raise FormatError(f"module kind {k!r} is not supported")


def default_input_size(plan: YoloV5Plan) -> tuple:
    """YOLOv5 has no fixed size: 640x640, or 1280x1280 for P6 models (max stride 64)."""
    s = 1280 if plan.max_stride >= 64 else 640
    return (s, s)


def build_yolov5(plan: YoloV5Plan, *, fold_bn=True, decode=False, input_size=None) -> keras.Model:
    h, w = default_input_size(plan) if input_size is None else tuple(int(v) for v in input_size)
    if h <= 0 or w <= 0 or h % plan.max_stride or w % plan.max_stride:
        raise ValueError(
            f"{plan.path}: input_size {(h, w)} must be positive multiples of the model's max stride {plan.max_stride}"
        )
    inp = keras.Input(shape=(h, w, 3), name="images")
    ys = []
    x = inp
    for node in plan.nodes:
        src = node.source
        if src != -1:
            x = ys[src] if isinstance(src, int) else [x if j == -1 else ys[j] for j in src]
        x = _node(x, node, fold_bn)
        ys.append(x)
    heads = x
    det = plan.nodes[-1].parts
    outputs = YoloV5Decode(det["na"], det["nc"], plan.strides, plan.anchors, name="decode")(heads) if decode else heads
    stem = os.path.splitext(os.path.basename(plan.path))[0]
    name = "".join(c if c.isalnum() or c in "_-." else "_" for c in stem) or "yolov5"
    return keras.Model(inp, outputs, name=name)


def load_yolov5(path, fold_bn=True, decode=False, input_size=None) -> keras.Model:
    """A keras.Model with the checkpoint's weights; `model.class_names` holds its class names."""
    plan = read_plan(path)
    model = build_streamed(lambda: build_yolov5(plan, fold_bn=fold_bn, decode=decode, input_size=input_size),
                           ArrayChunks(plan, fold_bn), os.fspath(path), discard_arrays=True)
    model.class_names = list(plan.names)
    return model
