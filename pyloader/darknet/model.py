"""Keras model builder for darknet networks: one functional keras.Model per parsed cfg.

Layer names follow the darknet layer index (conv_12, bn_12, leaky_12, route_30, yolo_139, ...), so they are
stable across runs and line up with OpenCV's names for the same layers.
"""

from __future__ import annotations

import os

import keras

from ..keras_blocks import layers as L
from ..errors import FormatError
from ..keras_blocks.model import DetectionModel, name_outputs
from ..metadata import output_names
from .cfg import Network
from .weights import BN_EPSILON, is_depthwise


def build(plan, options) -> keras.Model:
    """The family's empty model (pyloader.family): named after the cfg, raw heads or decoded (options)."""
    stem = os.path.splitext(os.path.basename(plan.cfg))[0]
    return build_darknet_model(plan.network, fold_bn=options.fold_bn, decode=options.decoded, name=_model_name(stem),
                               for_nms=options.nms is not None)


def build_darknet_model(network: Network, *, fold_bn: bool = True, decode: bool = False,
                        name: str | None = None, for_nms: bool = False) -> keras.Model:
    """The keras.Model for `network` (weights zero until assigned). for_nms: the decoded boxes feed NMS
    (pyloader.assemble adds it)."""
    image = keras.Input((network.height, network.width, network.channels), name="image")
    out: dict = {-1: image}
    for layer in network.layers:
        out[layer.index] = _BUILDERS[layer.type](network, layer, [out[i] for i in layer.inputs], fold_bn)
        if tuple(out[layer.index].shape[1:]) != layer.shape:  # the cfg's arithmetic and Keras' must agree
            raise FormatError(f"{network.path}: {layer.where()}: Keras computed {tuple(out[layer.index].shape[1:])}"
                              f", darknet {layer.shape}")
    heads = network.outputs
    if decode:
        if not network.heads:
            raise FormatError(f"{network.path}: {'nms' if for_nms else 'decode=True'} needs [yolo] or "
                              "[region] layers; the cfg has none")
        classes = {h.params["classes"] for h in network.heads}
        if len(classes) != 1:
            raise FormatError(f"{network.path}: heads disagree on the class count ({sorted(classes)}); "
                              "cannot concatenate decoded boxes")
        decoded = [_decode(network, h, out[h.inputs[0]]) for h in network.heads]
        outputs = decoded[0] if len(decoded) == 1 else keras.layers.Concatenate(
            axis=1, name="decoded" if for_nms else "boxes")(decoded)
        if not for_nms:
            outputs = name_outputs(outputs, output_names(1, True))
    else:
        outputs = [out[h.index] for h in heads]  # a head's output is its raw input (see _identity)
        outputs = name_outputs(outputs, output_names(len(outputs), False))
    return DetectionModel(image, outputs, name=name or "darknet")


def _model_name(stem: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in stem)
    return cleaned or "darknet"


# darknet activations that Keras computes the same way (mish: x * tanh(softplus(x)); darknet's softplus
# thresholds at +-20 change nothing in float32 -- tested against darknet's formula in test_darknet_semantics).
_KERAS_ACTIVATIONS = {"logistic": "sigmoid", "relu": "relu", "tanh": "tanh", "mish": "mish", "swish": "silu",
                      "silu": "silu"}


def _act(name: str, index: int, x):
    if name == "linear":
        return x
    if name == "leaky":
        return keras.layers.LeakyReLU(negative_slope=0.1, name=f"leaky_{index}")(x)
    if name in _KERAS_ACTIVATIONS:
        return keras.layers.Activation(_KERAS_ACTIVATIONS[name], name=f"{name}_{index}")(x)
    return L.DarknetActivation(name, name=f"{name}_{index}")(x)


def _conv(network, layer, inputs, fold_bn):
    (x,) = inputs
    p, i = layer.params, layer.index
    size, (sy, sx), pad, d = p["size"], p["stride"], p["padding"], p["dilation"]
    use_bias = fold_bn or not p["batch_normalize"]
    eff_pad = pad * d
    if sy == sx == 1 and 2 * eff_pad == d * (size - 1):
        padding = "same"  # identical to darknet's symmetric padding here, and cheaper
    else:
        padding = "valid"
        if eff_pad:
            x = keras.layers.ZeroPadding2D(eff_pad, name=f"pad_{i}")(x)
    common = dict(strides=(sy, sx), padding=padding, dilation_rate=d, use_bias=use_bias, name=f"conv_{i}",
                  bias_initializer="zeros")
    if is_depthwise(network, layer):
        x = keras.layers.DepthwiseConv2D(size, depthwise_initializer="zeros", **common)(x)
    else:
        x = keras.layers.Conv2D(p["filters"], size, groups=p["groups"], kernel_initializer="zeros", **common)(x)
    if p["batch_normalize"] and not fold_bn:
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"bn_{i}")(x)
    return _act(p["activation"], i, x)


def _maxpool(network, layer, inputs, fold_bn):
    (x,) = inputs
    p = layer.params
    if p["depth"]:
        return L.ChannelMaxPool(p["out_channels"], name=f"maxpool_{layer.index}")(x)
    padding = keras_pool_padding(x.shape[1:3], p["size"], p["stride"], p["pads"], layer.shape[:2])
    if padding is not None:  # Keras' own pooling takes the same windows (padding counts as -inf in both)
        return keras.layers.MaxPooling2D(p["size"], p["stride"], padding=padding, name=f"maxpool_{layer.index}")(x)
    return L.PaddedMaxPool(p["size"], p["stride"], p["pads"], name=f"maxpool_{layer.index}")(x)


def keras_pool_padding(in_hw, size, strides, pads, out_hw):
    """'same' or 'valid' where Keras' MaxPooling2D takes exactly the windows given by `pads` ((top, bottom),
    (left, right)) and the output size, else None."""
    fits = {"same": True, "valid": True}
    for n, s, (before, _), out in zip(in_hw, strides, pads, out_hw):
        if n is None:
            return None
        same_out = -(-n // s)
        same_before = max((same_out - 1) * s + size - n, 0) // 2
        fits["same"] &= (same_out, same_before) == (out, before)
        fits["valid"] &= ((n - size) // s + 1, 0) == (out, before)
    return "valid" if fits["valid"] else "same" if fits["same"] else None


def _avgpool(network, layer, inputs, fold_bn):
    return keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"avgpool_{layer.index}")(inputs[0])


def _identity(network, layer, inputs, fold_bn):
    return inputs[0]  # [dropout] at inference, [yolo] and [region] (their decode is applied at the end)


def _route(network, layer, inputs, fold_bn):
    g, gid, i = layer.params["groups"], layer.params["group_id"], layer.index
    parts = []
    for k, (src, x) in enumerate(zip(layer.inputs, inputs)):
        if g > 1:
            c = network.layers[src].shape[2] // g
            x = L.ChannelSlice(gid * c, (gid + 1) * c, name=f"route_{i}_slice{k}")(x)
        parts.append(x)
    if len(parts) == 1:
        return parts[0]
    return keras.layers.Concatenate(axis=-1, name=f"route_{i}")(parts)


def _shortcut(network, layer, inputs, fold_bn):
    p = layer.params
    if p["weights_type"] == "none" and len({x.shape[-1] for x in inputs}) == 1:  # a plain sum: Keras' Add
        return _act(p["activation"], layer.index, keras.layers.Add(name=f"shortcut_{layer.index}")(inputs))
    return L.Shortcut(p["activation"], p["weights_type"], p["weights_normalization"],
                      name=f"shortcut_{layer.index}")(inputs)


def _upsample(network, layer, inputs, fold_bn):
    p = layer.params
    if p["stride"] > 0 and p["scale"] == 1.0:  # nearest neighbour by an integer factor: Keras' UpSampling2D
        return keras.layers.UpSampling2D(p["stride"], interpolation="nearest",
                                         name=f"upsample_{layer.index}")(inputs[0])
    return L.Upsample(p["stride"], p["scale"], name=f"upsample_{layer.index}")(inputs[0])


def _reorg3d(network, layer, inputs, fold_bn):
    return L.SpaceToDepth(layer.params["stride"], name=f"reorg3d_{layer.index}")(inputs[0])


def _reorg(network, layer, inputs, fold_bn):
    return L.DarknetReorg(layer.params["stride"], name=f"reorg_{layer.index}")(inputs[0])


def _multiply(network, layer, inputs, fold_bn):
    if layer.params["activation"] == "linear":  # inputs[1] * inputs[0], broadcast: Keras' Multiply
        return keras.layers.Multiply(name=f"{layer.type}_{layer.index}")(inputs)
    return L.Multiply(layer.params["activation"], name=f"{layer.type}_{layer.index}")(inputs)


def _decode(network, head, x):
    p = head.params
    if head.type == "yolo":
        (gh, gw), net = head.shape[:2], (network.height, network.width)
        exact = net[0] % gh == 0 and net[1] % gw == 0  # a whole stride: the net's size at any input size
        return L.YoloDecode(p["anchors"], p["classes"], p["scale_x_y"], p["new_coords"], net,
                            (net[0] // gh, net[1] // gw) if exact else None, name=f"yolo_{head.index}")(x)
    return L.RegionDecode(p["anchors"], p["classes"], p["softmax"], name=f"region_{head.index}")(x)


_BUILDERS = {
    "conv": _conv,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "dropout": _identity,
    "yolo": _identity,
    "region": _identity,
    "route": _route,
    "shortcut": _shortcut,
    "upsample": _upsample,
    "reorg3d": _reorg3d,
    "reorg": _reorg,
    "sam": _multiply,
    "scale_channels": _multiply,
}
