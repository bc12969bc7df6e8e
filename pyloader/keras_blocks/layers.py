"""Keras layers for the operations darknet computes differently from Keras' built-ins.

Only Keras layers and keras.ops: the same model runs on the TensorFlow, JAX and PyTorch backends. Every
layer is registered for serialization, so saved .keras files reload without custom_objects.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

_PACKAGE = "pyloader"


def _register(cls):
    return keras.saving.register_keras_serializable(package=_PACKAGE)(cls)


def activation(name: str, x):
    """Apply a darknet activation by name (functional helper used inside layers)."""
    if name == "linear":
        return x
    if name == "leaky":
        return ops.where(x > 0, x, x * 0.1)
    if name == "relu":
        return ops.relu(x)
    if name == "logistic":
        return ops.sigmoid(x)
    if name == "tanh":
        return ops.tanh(x)
    if name in ("swish", "silu"):
        return x * ops.sigmoid(x)
    if name == "mish":
        # darknet: softplus with threshold 20 (x above: x; x below -20: exp(x)), then x * tanh(softplus)
        sp = ops.where(x > 20.0, x, ops.where(x < -20.0, ops.exp(x), ops.log(ops.exp(x) + 1.0)))
        return x * ops.tanh(sp)
    raise ValueError(f"unknown activation {name!r}")


def spatial(x):
    """(height, width) of an NHWC tensor: ints where known, scalar tensors where the model's input size is dynamic
    (a traced graph of unknown height and width)."""
    s = ops.shape(x)
    return s[1], s[2]


def cell_grid(ny, nx, offset: float):
    """(x + offset, y + offset) of each cell of an ny x nx grid, rows first, [ny * nx, 2] float32: a numpy
    constant where the size is known (a fixed-size model), keras.ops where it is dynamic (the same values)."""
    if isinstance(ny, int) and isinstance(nx, int):
        yv, xv = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
        return (np.stack((xv, yv), -1) + np.float32(offset)).reshape(-1, 2)
    yv, xv = ops.meshgrid(ops.arange(ny, dtype="float32"), ops.arange(nx, dtype="float32"), indexing="ij")
    return ops.reshape(ops.stack((xv, yv), -1) + offset, (-1, 2))


def as_float(n, dtype):
    """An int as it is, a dynamic size (tensor) cast to `dtype`: divisions by a static size stay as they were."""
    return n if isinstance(n, int) else ops.cast(n, dtype)


def channels(x, start: int, stop: int):
    """x[..., start:stop] as a static split: under JAX, basic indexing of a tensor with an unknown batch size
    becomes a dynamic gather, which TFLite's converter cannot translate (`vhlo.dynamic_gather_v1`)."""
    c = x.shape[-1]
    if start == 0 and stop == c:
        return x
    cuts = [v for v in (start, stop) if 0 < v < c]
    parts = ops.split(x, cuts, axis=-1)
    return parts[1] if start > 0 else parts[0]


@_register
class DarknetActivation(keras.layers.Layer):
    """An activation exactly as darknet computes it (leaky slope 0.1, mish with softplus threshold 20)."""

    def __init__(self, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation

    def call(self, x):
        return activation(self.activation, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@_register
class PaddedMaxPool(keras.layers.Layer):
    """darknet's maxpool: pads ((top, bottom), (left, right)) with -inf, then a 'valid' max pool."""

    def __init__(self, size, strides, pads, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.strides = tuple(int(s) for s in strides)
        self.pads = tuple(tuple(int(v) for v in p) for p in pads)

    def call(self, x):
        (t, b), (l, r) = self.pads
        if not (t or b or l or r):
            pass
        elif max(t, b, l, r) < self.size and x.shape[1] is not None and x.shape[2] is not None:
            # Every window holds an input value, so padding with the input's own minimum (per image and
            # channel) gives the same maxima as -inf -- and keeps -inf out of int8 TFLite calibration, whose
            # ranges (and the max pool's shared scale) it would otherwise make infinite.
            h, w = int(x.shape[1]), int(x.shape[2])
            inside = np.zeros((1, h + t + b, w + l + r, 1), bool)
            inside[:, t:t + h, l:l + w] = True
            low = ops.min(x, axis=(1, 2), keepdims=True)
            x = ops.where(ops.convert_to_tensor(inside), ops.pad(x, ((0, 0), (t, b), (l, r), (0, 0))), low)
        else:
            x = ops.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=-math.inf)
        return ops.max_pool(x, self.size, self.strides, padding="valid")

    def compute_output_shape(self, s):
        (t, b), (l, r) = self.pads
        h = None if s[1] is None else (s[1] + t + b - self.size) // self.strides[0] + 1
        w = None if s[2] is None else (s[2] + l + r - self.size) // self.strides[1] + 1
        return (s[0], h, w, s[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "strides": self.strides, "pads": self.pads}


@_register
class ChannelMaxPool(keras.layers.Layer):
    """maxpool_depth=1: output channel g is the max over input channels g, g + out_c, g + 2*out_c, ..."""

    def __init__(self, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)

    def call(self, x):
        c = x.shape[-1]
        groups = -(-c // self.out_channels)
        extra = groups * self.out_channels - c
        if extra:
            x = ops.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)), constant_values=-math.inf)
        x = ops.reshape(x, (-1, *spatial(x), groups, self.out_channels))
        return ops.max(x, axis=3)

    def compute_output_shape(self, s):
        return (s[0], s[1], s[2], self.out_channels)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels}


@_register
class ChannelSlice(keras.layers.Layer):
    """Channels [start, stop) of the input (a route layer's groups/group_id)."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return channels(x, self.start, self.stop)

    def tflite_ops(self, w, inputs):
        """The converter's operator for `channels`' split: SPLIT_V (pyloader.outputs.tflite_direct)."""
        c = w.shape(inputs[0])[-1]
        cuts = [0] + [v for v in (self.start, self.stop) if 0 < v < c] + [c]
        if len(cuts) == 2:
            return inputs[0]
        return w.split(inputs[0], np.diff(cuts), -1)[1 if self.start > 0 else 0]

    def compute_output_shape(self, s):
        return (*s[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@_register
class Shortcut(keras.layers.Layer):
    """darknet's [shortcut]: input + sum of the `from` layers, then an activation.

    Each added layer contributes to the leading min(c, c_from) channels (darknet adds overlapping channels
    only). With weights_type per_feature / per_channel, each input is scaled by a learned weight
    (normalized by relu or softmax as darknet does, with its 1e-4 epsilon).
    """

    def __init__(self, activation="linear", weights_type="none", weights_normalization="none", **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self.weights_type = weights_type
        self.weights_normalization = weights_normalization

    def build(self, input_shapes):
        n = len(input_shapes) - 1
        c = input_shapes[0][-1]
        count = {"none": 0, "per_feature": n + 1, "per_channel": (n + 1) * c}[self.weights_type]
        if count:
            self.shortcut_weights = self.add_weight(name="weights", shape=(count,), initializer="ones")

    def _normalized_weights(self, n, c):
        w = self.shortcut_weights
        w = ops.reshape(w, (n + 1, 1) if self.weights_type == "per_feature" else (n + 1, c))
        if self.weights_normalization == "relu":
            r = ops.relu(w)
            w = r / (1e-4 + ops.sum(r, axis=0, keepdims=True))
        elif self.weights_normalization == "softmax":
            e = ops.exp(w - ops.max(w, axis=0, keepdims=True))
            w = e / (1e-4 + ops.sum(e, axis=0, keepdims=True))
        return w

    def call(self, inputs):
        x, others = inputs[0], inputs[1:]
        c = x.shape[-1]
        w = self._normalized_weights(len(others), c) if self.weights_type != "none" else None
        out = x if w is None else x * w[0]
        for i, y in enumerate(others, start=1):
            cy = y.shape[-1]
            if cy > c:
                y = channels(y, 0, c)
            if w is not None:
                y = y * (w[i] if cy >= c else w[i][:cy])
            if cy < c:
                y = ops.pad(y, ((0, 0), (0, 0), (0, 0), (0, c - cy)))
            out = out + y
        return activation(self.activation, out)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "weights_type": self.weights_type,
                "weights_normalization": self.weights_normalization}


@_register
class Multiply(keras.layers.Layer):
    """[sam] and [scale_channels]: inputs[1] * inputs[0] with broadcasting, then an activation."""

    def __init__(self, activation="linear", **kwargs):
        super().__init__(**kwargs)
        self.activation = activation

    def call(self, inputs):
        return activation(self.activation, inputs[1] * inputs[0])

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@_register
class Upsample(keras.layers.Layer):
    """darknet's [upsample]: nearest-neighbour by `stride` times `scale`; a negative stride sums each
    stride x stride block instead (times `scale`)."""

    def __init__(self, stride: int, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.scale = int(stride), float(scale)

    def call(self, x):
        s = self.stride
        if s > 0:
            x = ops.repeat(ops.repeat(x, s, axis=1), s, axis=2)
        else:
            s = -s
            h, w = (v // s for v in spatial(x))
            x = x[:, : h * s, : w * s, :]
            x = ops.reshape(x, (-1, h, s, w, s, x.shape[-1]))
            x = ops.sum(x, axis=(2, 4))
        return x if self.scale == 1.0 else x * self.scale

    def compute_output_shape(self, s):
        k = self.stride
        if k > 0:
            return (s[0], s[1] * k, s[2] * k, s[3])
        return (s[0], s[1] // -k, s[2] // -k, s[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "scale": self.scale}


@_register
class SpaceToDepth(keras.layers.Layer):
    """[reorg3d]: output channel (dy * stride + dx) * C + c takes input (y * stride + dy, x * stride + dx, c)."""

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, x):
        s = self.stride
        (h, w), c = spatial(x), x.shape[-1]
        x = ops.reshape(x, (-1, h // s, s, w // s, s, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, h // s, w // s, s * s * c))

    def compute_output_shape(self, sh):
        s = self.stride
        return (sh[0], sh[1] // s, sh[2] // s, sh[3] * s * s)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@_register
class DarknetReorg(SpaceToDepth):
    """The old [reorg] of YOLOv2, exactly as darknet's reorg_cpu(forward=0) lays memory out.

    In darknet's CHW memory the input (C, H, W) is read as (C/s², H*s, W*s); output channel
    k = offset * C/s² + c2 (offset = dy*s + dx) at (j, i) takes that view's (c2, j*s + dy, i*s + dx); the result,
    (C, H, W) in memory, is then labelled (C*s², H/s, W/s). Same output shape as [reorg3d], but not a
    space_to_depth, not even up to channel order.
    """

    def call(self, x):
        s = self.stride
        (h, w), c = spatial(x), x.shape[-1]
        cin = c // (s * s)
        x = ops.transpose(x, (0, 3, 1, 2))  # NCHW, so reshapes follow darknet's memory order
        x = ops.reshape(x, (-1, cin, h, s, w, s))  # the (C/s², H*s, W*s) view, split as (j, dy), (i, dx)
        x = ops.transpose(x, (0, 3, 5, 1, 2, 4))  # (dy, dx, c2, j, i)
        x = ops.reshape(x, (-1, c * s * s, h // s, w // s))  # the same memory relabelled
        return ops.transpose(x, (0, 2, 3, 1))


@_register
class YoloDecode(keras.layers.Layer):
    """darknet's [yolo] layer and get_yolo_box, for one head: raw (B, H, W, A*(5+C)) -> (B, H*W*A, 5+C).

    Rows are [x, y, w, h, objectness, class probabilities...]; x, y, w, h normalized to the network input
    (darknet's convention). Classic heads apply the logistic to x, y, objectness and classes and
    w = exp(t) * anchor; new_coords heads (the conv before is logistic) use w = (2 t)^2 * anchor.
    Box order: y, x, anchor (as darknet and OpenCV enumerate them).
    """

    def __init__(self, anchors, classes, scale_x_y=1.0, new_coords=False, net_size=(416, 416), stride=None,
                 **kwargs):
        super().__init__(**kwargs)
        # (y, x) input pixels per grid cell: the network's size at another input size (None: net_size only)
        self.stride = None if stride is None else tuple(int(v) for v in stride)
        self.anchors = [tuple(float(v) for v in a) for a in anchors]
        self.classes = int(classes)
        self.scale_x_y = float(scale_x_y)
        self.new_coords = bool(new_coords)
        self.net_size = tuple(int(v) for v in net_size)

    def call(self, x):
        h, w = spatial(x)
        a, n = len(self.anchors), 5 + self.classes
        x = ops.reshape(x, (-1, h, w, a, n))
        xy, wh, rest = x[..., 0:2], x[..., 2:4], x[..., 4:]
        if not self.new_coords:
            xy = ops.sigmoid(xy)
            rest = ops.sigmoid(rest)
        s = self.scale_x_y
        xy = xy * s - 0.5 * (s - 1.0)
        gx = ops.reshape(ops.arange(w, dtype=x.dtype), (1, 1, -1, 1))
        gy = ops.reshape(ops.arange(h, dtype=x.dtype), (1, -1, 1, 1))
        bx = (xy[..., 0] + gx) / as_float(w, x.dtype)
        by = (xy[..., 1] + gy) / as_float(h, x.dtype)
        net_h, net_w = self.net_size if self.stride is None else (as_float(h * self.stride[0], x.dtype),
                                                                    as_float(w * self.stride[1], x.dtype))
        anchors = ops.convert_to_tensor(self.anchors, dtype=x.dtype)
        scale = wh * wh * 4.0 if self.new_coords else ops.exp(wh)
        bw = scale[..., 0] * anchors[:, 0] / net_w
        bh = scale[..., 1] * anchors[:, 1] / net_h
        box = ops.stack([bx, by, bw, bh], axis=-1)
        out = ops.concatenate([box, rest], axis=-1)
        return ops.reshape(out, (-1, h * w * a, n))

    def tflite_ops(self, w, inputs):
        """The converter's operators for `call` (pyloader.outputs.tflite_direct): constants folded, divisions
        by a size as products by its reciprocal."""
        (x,) = inputs
        _, h, wd, _ = w.shape(x)
        if self.new_coords:
            from ..outputs.tflite_direct import Uncovered

            raise Uncovered(f"{self.name}: new_coords")
        a, n = len(self.anchors), 5 + self.classes
        x = w.reshape(x, (1, h, wd, a, n))
        xy = w.unary("LOGISTIC", w.slice(x, -1, 0, 2))
        s = self.scale_x_y
        if s != 1.0:
            xy = w.binary("SUB", w.binary("MUL", xy, np.float32(s)), np.float32(0.5 * (s - 1.0)))
        net_h, net_w = self.net_size if self.stride is None else (h * self.stride[0], wd * self.stride[1])
        grid = (np.arange(wd, dtype=np.float32).reshape(1, 1, -1, 1), np.arange(h, dtype=np.float32).reshape(1, -1, 1, 1))
        box = [w.binary("MUL", w.binary("ADD", w.slice(xy, -1, i, i + 1, shrink=True), grid[i]),
                        np.float32(1.0 / (wd, h)[i])) for i in (0, 1)]
        scale = w.unary("EXP", w.slice(x, -1, 2, 4))
        anchors = np.asarray(self.anchors, np.float32)
        box += [w.binary("MUL", w.binary("MUL", w.slice(scale, -1, i, i + 1, shrink=True), anchors[:, i]),
                         np.float32(1.0 / (net_w, net_h)[i])) for i in (0, 1)]
        rest = w.unary("LOGISTIC", w.slice(x, -1, 4, None))
        return w.reshape(w.concat([w.pack(box, -1), rest], -1), (1, h * wd * a, n))

    def compute_output_shape(self, s):
        if self.stride is None and None in s[1:3]:
            raise ValueError(f"{self.name}: no stride given, so the input size must be known")
        return (s[0], _cells(s, len(self.anchors)), 5 + self.classes)

    def get_config(self):
        return {**super().get_config(), "anchors": self.anchors, "classes": self.classes,
                "scale_x_y": self.scale_x_y, "new_coords": self.new_coords, "net_size": self.net_size,
                "stride": self.stride}


@_register
class RegionDecode(keras.layers.Layer):
    """darknet's [region] layer (YOLOv2), for one head: raw (B, H, W, A*(5+C)) -> (B, H*W*A, 5+C).

    x = (i + logistic(tx)) / W, y likewise, w = exp(tw) * anchor_w / W, h = exp(th) * anchor_h / H (anchors in
    grid cells), objectness logistic, classes softmax when softmax=1 (else left as they are, as darknet does).
    """

    def __init__(self, anchors, classes, softmax=True, **kwargs):
        super().__init__(**kwargs)
        self.anchors = [tuple(float(v) for v in a) for a in anchors]
        self.classes = int(classes)
        self.softmax = bool(softmax)

    def call(self, x):
        h, w = spatial(x)
        a, n = len(self.anchors), 5 + self.classes
        x = ops.reshape(x, (-1, h, w, a, n))
        fh, fw = as_float(h, x.dtype), as_float(w, x.dtype)
        gx = ops.reshape(ops.arange(w, dtype=x.dtype), (1, 1, -1, 1))
        gy = ops.reshape(ops.arange(h, dtype=x.dtype), (1, -1, 1, 1))
        anchors = ops.convert_to_tensor(self.anchors, dtype=x.dtype)
        bx = (ops.sigmoid(x[..., 0]) + gx) / fw
        by = (ops.sigmoid(x[..., 1]) + gy) / fh
        bw = ops.exp(x[..., 2]) * anchors[:, 0] / fw
        bh = ops.exp(x[..., 3]) * anchors[:, 1] / fh
        obj = ops.sigmoid(x[..., 4:5])
        cls = x[..., 5:]
        if self.softmax:
            cls = ops.softmax(cls, axis=-1)
        out = ops.concatenate([ops.stack([bx, by, bw, bh], axis=-1), obj, cls], axis=-1)
        return ops.reshape(out, (-1, h * w * a, n))

    def compute_output_shape(self, s):
        return (s[0], _cells(s, len(self.anchors)), 5 + self.classes)

    def get_config(self):
        return {**super().get_config(), "anchors": self.anchors, "classes": self.classes, "softmax": self.softmax}


def _cells(s, per_cell: int):
    """Boxes of a head of shape `s` (None where its size is dynamic)."""
    return None if s[1] is None or s[2] is None else s[1] * s[2] * per_cell
