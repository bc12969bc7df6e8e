"""What a checkpoint holds, without TensorFlow, Keras or torch: format, header, architecture, tensor table.

`inspect(path, cfg=None) -> dict` gives the facts; `format_report(info) -> str` renders them for a terminal.
"""

from __future__ import annotations

import os
import numpy as np

from .boundary import fs_str, reads_file, short_repr
from .registry import container_of, open_checkpoint

__all__ = ["inspect", "format_report"]


@reads_file("path")
def inspect(path, cfg=None) -> dict:
    path = fs_str(path)
    cfg = None if cfg is None else fs_str(cfg)
    content, header = None, {}
    if container_of(path) == "torch":
        from .torch_reader.checkpoint import load_torch_checkpoint
        from .torch_reader.state_dict import is_state_dict

        content = load_torch_checkpoint(path)
        if is_state_dict(content) and cfg is None:  # no architecture: the tensors as stored
            return {
                "file": path,
                "format": "PyTorch state_dict (no architecture: load it with cfg= the model's yaml)",
                "size": os.path.getsize(path),
                "header": {},
                "architecture": None,
                "tensors": _tensors(content),
            }
        header = {} if is_state_dict(content) else _torch_header(content)
    family, plan = open_checkpoint(path, cfg, content=content)
    fmt, extra, architecture = family.summary(plan, content)
    return {
        "file": path,
        "format": fmt,
        "size": os.path.getsize(path),
        "header": {**header, **extra},
        "architecture": architecture,
        "tensors": _tensors(family.arrays(plan, False)),
    }


def _tensors(arrays: dict) -> list:
    return [(name, tuple(a.shape), str(a.dtype), int(a.nbytes)) for name, a in arrays.items()]


def _torch_header(ckpt) -> dict:
    """The scalar entries of a .pt checkpoint dict worth showing (its keys, epoch, date, ...)."""
    header = {}
    if isinstance(ckpt, dict):
        header["keys"] = ", ".join(k if isinstance(k, str) else short_repr(k) for k in list(ckpt)[:50])
        for k in ("epoch", "date", "best_fitness", "updates"):
            v = ckpt.get(k)
            if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                small = isinstance(v, float) or (isinstance(v, int) and abs(v) < 1 << 63)
                header[k] = v[:200] if isinstance(v, str) else v if small else short_repr(v)
            elif v is not None and not isinstance(v, (dict, list)):
                header[k] = short_repr(v.item() if isinstance(v, np.ndarray) and v.size == 1 else v)
    return header


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
