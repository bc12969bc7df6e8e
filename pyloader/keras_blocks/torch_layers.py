"""Keras counterparts of PyTorch modules shared by the .pt families (Keras layers and keras.ops only).

* `conv` builds one `ConvSpec` (torch_reader.modules) as PyTorch computes it: symmetric padding ('same' only
  where Keras' 'same' is identical: stride 1, odd kernel, p = k//2; else ZeroPadding2D + 'valid'), groups,
  the batch norm folded or as a BatchNormalization with the checkpoint's epsilon, then the activation;
* `TorchMaxPool2D` pads with -inf as MaxPool2d does; `Hardswish` (PyTorch's x * relu6(x + 3) / 6) stays registered for files saved before
  Keras' own `hard_silu` replaced it.
"""

from __future__ import annotations

import numpy as np

import keras
from keras import layers, ops

from ..boundary import short_repr
from ..errors import FormatError
from .layers import cell_grid, spatial

__all__ = ["conv", "activation", "max_pool_layer", "TorchMaxPool2D", "Hardswish", "FocusSpaceToDepth", "YoloV5Decode"]

# Registered under the package name they had when they lived in pyloader.yolov5, so that .keras files saved
# then still load.
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
    """Detect's eval-mode decoding of the raw heads into [B, boxes, 5 + nc + nm] (pixels); YOLOv5's Segment: the nm
    mask coefficients after each anchor's 5 + nc values are left as they are (no sigmoid)."""

    def __init__(self, na, nc, strides, anchors, nm=0, **kw):
        super().__init__(**kw)
        self.na, self.nc, self.nm = int(na), int(nc), int(nm)
        self.strides = [float(s) for s in strides]
        self.anchors = np.asarray(anchors, np.float32).tolist()  # (nl, na, 2) pixels

    def call(self, heads):
        no = self.nc + 5 + self.nm
        outs = []
        for i, x in enumerate(heads):
            ny, nx = spatial(x)
            y = ops.reshape(x, (-1, ny, nx, self.na, no))
            y = ops.transpose(y, (0, 3, 1, 2, 4))  # [B, na, ny, nx, no]
            y = (ops.concatenate([ops.sigmoid(y[..., :5 + self.nc]), y[..., 5 + self.nc:]], axis=-1) if self.nm
                 else ops.sigmoid(y))
            grid = ops.reshape(cell_grid(ny, nx, -0.5), (1, 1, ny, nx, 2))
            anchor = np.asarray(self.anchors[i], np.float32).reshape(1, self.na, 1, 1, 2)
            xy = (y[..., 0:2] * 2.0 + grid) * self.strides[i]
            wh = ops.square(y[..., 2:4] * 2.0) * ops.convert_to_tensor(anchor)
            y = ops.concatenate([xy, wh, y[..., 4:]], axis=-1)
            outs.append(ops.reshape(y, (-1, self.na * ny * nx, no)))
        return ops.concatenate(outs, axis=1)

    def tflite_ops(self, w, inputs):
        """The converter's operators for `call` (pyloader.outputs.tflite_direct); no mask coefficients (nm 0)."""
        if self.nm:
            from ..outputs.tflite_direct import Uncovered

            raise Uncovered(f"{self.name}: mask coefficients (YOLOv5 Segment)")
        no, na, outs = self.nc + 5, self.na, []
        for i, x in enumerate(inputs):
            _, ny, nx, _ = w.shape(x)
            y = w.unary("LOGISTIC", w.transpose(w.reshape(x, (1, ny, nx, na, no)), (0, 3, 1, 2, 4)))
            grid = cell_grid(ny, nx, -0.5).reshape(1, 1, ny, nx, 2)
            xy = w.binary("MUL", w.binary("ADD", w.binary("MUL", w.slice(y, -1, 0, 2), np.float32(2.0)), grid),
                          np.float32(self.strides[i]))
            wh = w.binary("MUL", w.unary("SQUARE", w.binary("MUL", w.slice(y, -1, 2, 4), np.float32(2.0))),
                          np.asarray(self.anchors[i], np.float32).reshape(1, na, 1, 1, 2))
            outs.append(w.reshape(w.concat([xy, wh, w.slice(y, -1, 4, None)], -1), (1, na * ny * nx, no)))
        return w.concat(outs, 1)

    def compute_output_shape(self, shapes):
        cells = [None if None in s[1:3] else s[1] * s[2] for s in shapes]
        return (shapes[0][0], None if None in cells else self.na * sum(cells), self.nc + 5 + self.nm)

    def get_config(self):
        return {**super().get_config(), "na": self.na, "nc": self.nc, "strides": self.strides, "anchors": self.anchors,
                "nm": self.nm}


def activation(x, act, name):
    """The activation a ConvSpec names ('silu', 'hardswish', 'relu', 'sigmoid', ('leaky', slope), None)."""
    if act is None:
        return x
    if act == "silu":
        return layers.Activation("silu", name=name)(x)
    if act == "hardswish":  # Keras' hard_silu: x * relu6(x + 3) / 6, as PyTorch's Hardswish
        return layers.Activation("hard_silu", name=name)(x)
    if act == "relu":
        return layers.ReLU(name=name)(x)
    if act == "sigmoid":
        return layers.Activation("sigmoid", name=name)(x)
    if isinstance(act, tuple) and act[0] == "leaky":
        return layers.LeakyReLU(negative_slope=act[1], name=name)(x)
    raise FormatError(f"activation {short_repr(act)} is not supported")


def conv(x, spec, fold_bn: bool, with_activation=True):
    """`spec` (a torch_reader.modules.ConvSpec) applied to x: padding, Conv2D, batch norm, activation."""
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
    if with_activation:
        x = activation(x, spec.act, spec.act_name)
    return x


def max_pool_layer(kernel, stride, padding, name, in_hw):
    """Keras' MaxPooling2D where it takes the same windows as PyTorch's MaxPool2d (symmetric -inf padding,
    floor), else TorchMaxPool2D."""
    kernel, stride, padding = (tuple(int(v) for v in t) for t in (kernel, stride, padding))
    fits = {"same": True, "valid": True}
    for n, k, s, p in zip(in_hw, kernel, stride, padding):
        if n is None:
            fits = {}
            break
        out = (n + 2 * p - k) // s + 1
        same_out = -(-n // s)
        fits["same"] &= (same_out, max((same_out - 1) * s + k - n, 0) // 2) == (out, p)
        fits["valid"] &= ((n - k) // s + 1, 0) == (out, p)
    for padding_mode in ("valid", "same"):
        if fits.get(padding_mode):
            return layers.MaxPooling2D(kernel, stride, padding=padding_mode, name=name)
    return TorchMaxPool2D(kernel, stride, padding, name=name)
