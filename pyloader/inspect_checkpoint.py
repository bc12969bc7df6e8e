"""What a checkpoint holds, without TensorFlow, Keras or torch: format, header, architecture, tensor table.

`inspect(path, cfg=None) -> dict` gives the facts; `format_report(info) -> str` renders them for a terminal.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from .boundary import fs_str, reads_file, short_repr
from .errors import FormatError

__all__ = ["inspect", "format_report"]


@reads_file("path")
def inspect(path, cfg=None) -> dict:
    from .api import _family

    path = fs_str(path)
    cfg = None if cfg is None else fs_str(cfg)
    if _family(path) == "torch":
        return _inspect_torch(path, cfg)
    return _inspect_darknet(path, cfg)


def _tensors(arrays: dict) -> list:
    return [(name, tuple(a.shape), str(a.dtype), int(a.nbytes)) for name, a in arrays.items()]


def _inspect_darknet(path: str, cfg) -> dict:
    from . import _core
    from .darknet.cfg import parse_network
    from .darknet.weights import default_cfg, read_darknet

    cfg = default_cfg(path) if cfg is None else cfg
    if not os.path.exists(cfg):
        raise FormatError(f"{path}: no cfg given and none beside it (looked for {cfg})")
    header = _core.darknet_header(os.fsencode(path))
    network = parse_network(cfg)
    data = read_darknet(path, network=network, fold_bn=False)
    heads = []
    for h in network.heads:
        p = h.params
        anchors = p.get("anchors")
        heads.append({"layer": h.name, "type": h.type, "grid": "x".join(map(str, h.shape)),
                      "classes": p.get("classes"),
                      "anchors": " ".join(f"{a[0]:g},{a[1]:g}" for a in anchors) if anchors else None})
    return {
        "file": path,
        "format": "darknet .weights",
        "size": os.path.getsize(path),
        "header": {"version": f"{header['major']}.{header['minor']}.{header['revision']}",
                   "seen": header["seen"], "header_bytes": header["header_bytes"]},
        "architecture": {
            "cfg": cfg,
            "input": (network.height, network.width, network.channels),
            "layers": len(network.layers),
            "by_type": dict(Counter(l.type for l in network.layers).most_common()),
            "heads": heads,
        },
        "tensors": _tensors(data.arrays),
    }


def _inspect_torch(path: str, cfg) -> dict:
    from .api import torch_plan
    from .torch_reader.checkpoint import load_torch_checkpoint
    from .torch_reader.state_dict import is_state_dict

    ckpt = load_torch_checkpoint(path)
    state_dict = is_state_dict(ckpt)
    if state_dict and cfg is None:  # no architecture: the tensors as stored
        return {
            "file": path,
            "format": "PyTorch state_dict (no architecture: load it with cfg= the model's yaml)",
            "size": os.path.getsize(path),
            "header": {},
            "architecture": None,
            "tensors": _tensors(ckpt),
        }
    header = {}
    if isinstance(ckpt, dict) and not state_dict:
        header["keys"] = ", ".join(k if isinstance(k, str) else short_repr(k) for k in list(ckpt)[:50])
        for k in ("epoch", "date", "best_fitness", "updates"):
            v = ckpt.get(k)
            if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                small = isinstance(v, float) or (isinstance(v, int) and abs(v) < 1 << 63)
                header[k] = v[:200] if isinstance(v, str) else v if small else short_repr(v)
            elif v is not None and not isinstance(v, (dict, list)):
                header[k] = short_repr(v.item() if isinstance(v, np.ndarray) and v.size == 1 else v)
    fam, plan = torch_plan(path, cfg, ckpt=ckpt)
    weights = fam.weights()
    nodes = [n for n in plan.nodes if n.index in plan.used] if fam.name == "yolov7" else plan.nodes
    kinds = Counter(n.kind for n in nodes)
    det = plan.nodes[-1].parts
    if fam.name == "ultralytics":
        s = plan.imgsz  # the checkpoint's training size, the model's default input
        heads = [{"layer": f"level {i}", "type": "Detect (anchor-free, DFL)", "stride": int(st), "classes": plan.nc,
                  "reg_max": plan.reg_max} for i, st in enumerate(plan.strides)]
        fmt = "Ultralytics PyTorch checkpoint"
        if isinstance(ckpt, dict) and isinstance(ckpt.get("version"), str):
            header["version"] = ckpt["version"][:200]
    else:
        s = 1280 if plan.max_stride >= 64 else 640  # the families' default size (model.default_input_size)
        heads = [{"layer": f"level {i}", "type": plan.nodes[-1].kind, "stride": int(st), "classes": plan.nc,
                  "anchors": int(det.get("na", len(plan.anchors[i])))} for i, st in enumerate(plan.strides)]
        fmt = f"{'YOLOv7' if fam.name == 'yolov7' else 'YOLOv5'} PyTorch " + (
            "state_dict with the given yaml" if state_dict else "checkpoint")
    return {
        "file": path,
        "format": fmt,
        "size": os.path.getsize(path),
        "header": header,
        "architecture": {
            "model": plan.model_class,
            "input": (s, s, 3),
            "layers": len(nodes),
            "by_type": dict(kinds.most_common()),
            "heads": heads,
            "classes": plan.nc,
            "names": ", ".join(plan.names[:8]) + (" ..." if len(plan.names) > 8 else ""),
        },
        "tensors": _tensors(weights.plan_arrays(plan, fold_bn=False)),
    }


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_report(info: dict) -> str:
    a = info["architecture"]
    lines = [f"file:    {info['file']} ({_human(info['size'])})", f"format:  {info['format']}"]
    for k, v in info["header"].items():
        lines.append(f"  {k}: {v}")
    if a is None:
        return "\n".join(lines + _tensor_lines(info["tensors"]))
    lines.append("architecture:")
    for k in ("cfg", "model", "classes", "names"):
        if k in a:
            lines.append(f"  {k}: {a[k]}")
    h, w, c = a["input"]
    lines.append(f"  input: {h}x{w}x{c}")
    lines.append(f"  layers: {a['layers']} (" + ", ".join(f"{t} {n}" for t, n in a["by_type"].items()) + ")")
    lines.append(f"  heads: {len(a['heads'])}")
    for hd in a["heads"]:
        extra = ", ".join(f"{k} {v}" for k, v in hd.items() if k not in ("layer", "type") and v is not None)
        lines.append(f"    {hd['layer']} ({hd['type']}): {extra}")
    return "\n".join(lines + _tensor_lines(info["tensors"]))


def _tensor_lines(t) -> list:
    lines = []
    total = sum(x[3] for x in t)
    lines.append(f"tensors: {len(t)}, {_human(total)}")
    rows = [("name", "shape", "dtype", "bytes")] + [(n, "x".join(map(str, s)) or "scalar", d, str(b))
                                                    for n, s, d, b in t]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append(f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}")
    return lines
