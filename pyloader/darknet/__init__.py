"""Darknet `.cfg` + `.weights`: the cfg parser (cfg.py), the weights reader (weights.py, numpy only), the Keras model
builder (model.py), and this family's declaration (FAMILY, pyloader.family)."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

from ..boundary import open_regular
from ..errors import FormatError
from ..family import Family, OutputLayout
from ..metadata import class_names


@dataclass
class DarknetPlan:
    path: str  # the .weights file
    cfg: str  # its .cfg
    network: object  # pyloader.darknet.cfg.Network
    cfg_sha256: str
    names: object = None  # the class names (pyloader.darknet.names), None: class0, class1, ...


def recognise(ckpt) -> bool:
    return ckpt.container == "darknet"


def read_plan(ckpt, options) -> DarknetPlan:
    from .names import checkpoint_names
    from .weights import default_cfg

    cfg = ckpt.cfg if ckpt.cfg is not None else default_cfg(ckpt.path)
    if not os.path.exists(cfg):
        raise FormatError(f"{ckpt.path}: no cfg given and none beside it (looked for {cfg})")
    with open_regular(cfg) as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    size = options.input_size
    network = _network(cfg, data, None if size is None else tuple(size))
    nc = network.heads[0].params["classes"] if network.heads else 0
    return DarknetPlan(ckpt.path, cfg, network, digest, checkpoint_names(ckpt.path, options.names, nc, cfg))


@functools.lru_cache(maxsize=8)
def _network(cfg: str, data: bytes, input_size):
    """The Network of the cfg's bytes `data`, built once per (path, bytes, input size): repeated reads of one
    checkpoint skip the parse and shape inference (a few ms for yolov4). A Network is never modified after it is
    built."""
    from .cfg import build_network, parse_cfg_bytes

    return build_network(parse_cfg_bytes(data, cfg), input_size)


def arrays(plan: DarknetPlan, fold_bn: bool) -> dict:
    from .weights import read_darknet

    return read_darknet(plan.path, network=plan.network, fold_bn=fold_bn).arrays


def model_arrays(plan: DarknetPlan, arrays: dict) -> dict:
    """The arrays of layers that feed an output: the others are not part of the Keras graph."""
    network = plan.network
    needed, stack = set(), [h.index for h in network.outputs]
    while stack:
        i = stack.pop()
        if i >= 0 and i not in needed:
            needed.add(i)
            stack.extend(network.layers[i].inputs)
    return {k: v for k, v in arrays.items() if int(k.split("/", 1)[0].rsplit("_", 1)[1]) in needed}


def metadata(plan: DarknetPlan, input_size, options) -> dict:
    network = plan.network
    heads = network.heads
    nc = heads[0].params["classes"] if heads else 0
    outputs = []
    if options.decoded:
        outputs.append({"name": "detections", "layout": "[batch, boxes, 5 + classes]: x, y, w, h (normalised "
                        "to the input), objectness, class probabilities; boxes per head by y, x, anchor"})
    else:
        for i, h in enumerate(network.outputs):
            gh, gw, c = h.shape
            entry = {"name": f"head_{i}", "layer": h.name, "shape": [None, gh, gw, c]}
            if h.type in ("yolo", "region"):
                entry["layout"] = "NHWC; channel a * (5 + classes) + k: tx, ty, tw, th, objectness, classes"
                entry["stride"] = [network.height // gh, network.width // gw]
                entry["anchors"] = [list(a) for a in h.params["anchors"]]
                entry["anchor_units"] = "pixels" if h.type == "yolo" else "grid cells"
            outputs.append(entry)
    return {
        "architecture": os.path.basename(network.path),
        "input": {"name": "image", "shape": [None, network.height, network.width, network.channels],
                  "layout": "NHWC float32 in [0, 1]", "size": [network.height, network.width]},
        "class_names": plan.names or class_names(None, nc, network.path),  # plan.names: checked by checkpoint_names
        "strides": [o["stride"] for o in outputs if "stride" in o],
        "anchors": [o["anchors"] for o in outputs if "anchors" in o],
        "outputs": outputs,
    }


def summary(plan: DarknetPlan, content) -> tuple:
    from collections import Counter

    from .weights import read_header

    network = plan.network
    header = read_header(plan.path)
    heads = []
    for h in network.heads:
        p = h.params
        anchors = p.get("anchors")
        heads.append({"layer": h.name, "type": h.type, "grid": "x".join(map(str, h.shape)),
                      "classes": p.get("classes"),
                      "anchors": " ".join(f"{a[0]:g},{a[1]:g}" for a in anchors) if anchors else None})
    return "darknet .weights", {
        "version": f"{header['major']}.{header['minor']}.{header['revision']}", "seen": header["seen"],
        "header_bytes": header["header_bytes"]}, {
        "cfg": plan.cfg,
        "input": (network.height, network.width, network.channels),
        "layers": len(network.layers),
        "by_type": dict(Counter(l.type for l in network.layers).most_common()),
        "heads": heads,
    }


def layout(plan: DarknetPlan) -> OutputLayout:
    # decoded boxes are normalised to the input: NMS scales them into pixels
    return OutputLayout("xywh_obj_cls", box_scale=(plan.network.width, plan.network.height))


FAMILY = Family(
    name="darknet",
    reads="Darknet .weights with its .cfg",
    recognise=recognise,
    plan=read_plan,
    arrays=arrays,
    metadata=metadata,
    layout=layout,
    summary=summary,
    keras="pyloader.darknet.model",
    keras_modules=("pyloader.keras_blocks.layers",),
    model_arrays=model_arrays,
    # the model is named after its cfg's stem (darknet.model.build): part of what a template or reused model holds
    fingerprint=lambda plan: (f"{plan.cfg_sha256}:{plan.network.height}x{plan.network.width}:"
                              f"{os.path.splitext(os.path.basename(plan.cfg))[0]}"),
    takes_names=True,
)
