"""Darknet .weights -> numpy arrays in Keras layout, through the native core (no TensorFlow import)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import _core
from ..boundary import fs_bytes, open_regular, shown, unchanged_file
from ..errors import FormatError
from .cfg import Network, parse_network

BN_EPSILON = 1e-5  # AlexeyAB darknet's batch-norm epsilon (normalize_cpu and fuse_conv_batchnorm)


@dataclass
class DarknetWeights:
    network: Network
    header: dict
    arrays: dict  # '<keras layer name>/<variable>' -> np.ndarray


def default_cfg(weights) -> str:
    """The .cfg of the same stem beside a .weights file."""
    stem, _ = os.path.splitext(os.fspath(weights))
    return stem + ".cfg"


def weight_plan(network: Network) -> list:
    """What each weighted layer stores, in file order, as the native reader's plan tuples."""
    plan = []
    for layer in network.layers:
        label = layer.where().encode("utf-8", "surrogateescape")  # bytes: any file name reaches the core
        if layer.type == "conv":
            p = layer.params
            c_in = _input_channels(network, layer)
            plan.append(("convolutional", label, p["filters"], c_in // p["groups"], p["size"], p["size"],
                         p["batch_normalize"]))
        elif layer.type == "shortcut" and layer.params["nweights"]:
            plan.append(("floats", label, layer.params["nweights"]))
    return plan


def _input_channels(network: Network, layer) -> int:
    i = layer.inputs[0]
    return network.channels if i < 0 else network.layers[i].shape[2]


def keras_arrays(network: Network, per_layer: list) -> dict:
    """Name the native reader's arrays by Keras layer and variable; reshape depthwise kernels."""
    arrays = {}
    weighted = [l for l in network.layers
                if l.type == "conv" or (l.type == "shortcut" and l.params["nweights"])]
    for layer, items in zip(weighted, per_layer):
        for role, a in items:
            if layer.type == "shortcut":
                arrays[f"shortcut_{layer.index}/weights"] = a
            elif role in ("kernel", "bias"):
                if role == "kernel" and is_depthwise(network, layer):
                    a = a.reshape(a.shape[0], a.shape[1], a.shape[3], 1)  # (kh, kw, 1, c) -> (kh, kw, c, 1): a view
                arrays[f"conv_{layer.index}/{role}"] = a
            else:
                arrays[f"bn_{layer.index}/{role}"] = a
    return arrays


def is_depthwise(network: Network, layer) -> bool:
    g = layer.params["groups"]
    return g > 1 and g == _input_channels(network, layer) == layer.params["filters"]


def read_header(weights) -> dict:
    """The header of a .weights file (version, images seen), from its first bytes."""
    with open_regular(weights) as f:
        head = f.read(20)
    try:
        return _core.darknet_header(head)
    except FormatError as e:
        raise FormatError(f"{shown(weights)}: {e}") from None


def read_darknet(weights, cfg=None, *, fold_bn: bool = True, network: Network | None = None,
                 threads: int = 0) -> DarknetWeights:
    """Validate `weights` against the cfg's layers and return the arrays (kernels HWIO, BN folded if asked), in
    memory of their own (read with pread: they outlive any change to the file; a change while it is read is a
    FormatError "changed while reading")."""
    weights = os.fspath(weights)
    if network is None:
        cfg = default_cfg(weights) if cfg is None else os.fspath(cfg)
        if not os.path.exists(cfg):
            raise FormatError(f"{weights}: no cfg given and none beside it (looked for {cfg})")
        network = parse_network(cfg)
    plan = weight_plan(network)
    with unchanged_file(weights) as (fd, size):
        header, per_layer = _core.read_darknet(fd, size, fs_bytes(weights), plan, fold_bn, BN_EPSILON, threads)
    return DarknetWeights(network, header, keras_arrays(network, per_layer))
