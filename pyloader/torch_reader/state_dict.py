"""Plain state_dicts (`torch.save(model.state_dict())`): tensors by parameter name, no architecture.

`is_state_dict` recognises one; `read_yaml` reads the model yaml (path or dict) that gives the architecture;
`module_tree` arranges the tensors as the module tree their dotted names describe (for the families to build
their model records from the yaml). Numpy only.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError
from .records import ClassRef, Record

__all__ = ["is_state_dict", "read_yaml", "module_tree"]


def is_state_dict(obj) -> bool:
    """A non-empty dict of tensors keyed by dotted parameter names, and nothing else."""
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()))


def read_yaml(cfg, path: str) -> dict:
    """The model yaml as a dict: `cfg` is a dict already, or a .yaml file (read with yaml.safe_load)."""
    if isinstance(cfg, dict):
        data = cfg
    else:
        where = os.fspath(cfg)
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML comes with the test and torch installs
            raise FormatError(f"{path}: reading the yaml {where} needs PyYAML (pip install pyyaml)") from None
        try:
            with open(where, encoding="utf-8", errors="ignore") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise FormatError(f"{where}: cannot open: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise FormatError(f"{where}: not a yaml file: {e}") from None
    if not (isinstance(data, dict) and isinstance(data.get("backbone"), list) and isinstance(data.get("head"), list)):
        raise FormatError(f"{path}: cfg {short_repr(cfg)} is not a model yaml (a dict with backbone and head rows)")
    return data


def module_tree(state: dict) -> dict:
    """{'model': {'0': {'conv': {'weight': array}}}} from {'model.0.conv.weight': array}."""
    tree: dict = {}
    for key, value in state.items():
        *mods, leaf = key.split(".")
        node = tree
        for m in mods:
            node = node.setdefault(m, {})
            if not isinstance(node, dict):
                raise FormatError(f"state_dict key {short_repr(key)}: '{m}' is both a tensor and a module")
        node[leaf] = value
    return tree


# ---------------------------------------------------------------------------------------------------------
# Module records made from a yaml row and the state_dict's tensors (what the pickled modules would hold)

_ACT = re.compile(r"^nn\.(SiLU|ReLU|Hardswish|Sigmoid|Identity|LeakyReLU)\(\s*([0-9.eE+-]*)\s*(,\s*inplace\s*=\s*\w+\s*)?\)$")


class Tensors:
    """The state_dict's tensors under one module path ('model.3.cv1')."""

    def __init__(self, tree: dict, mpath: str, path: str):
        self.tree, self.mpath, self.path = tree, mpath, path

    def has(self, name: str) -> bool:
        return name in self.tree

    def sub(self, name: str) -> "Tensors":
        node = self.tree.get(name)
        where = f"{self.mpath}.{name}" if self.mpath else name
        if not isinstance(node, dict):
            raise FormatError(f"{self.path}: the state_dict has no tensors for module '{where}'")
        return Tensors(node, where, self.path)

    def tensor(self, name: str, required: bool = True):
        v = self.tree.get(name)
        if v is None and not required:
            return None
        if not isinstance(v, np.ndarray):
            raise FormatError(f"{self.path}: the state_dict has no tensor '{self.mpath}.{name}'")
        return v


def record(module: str, name: str, children: dict | None = None, params: dict | None = None,
           buffers: dict | None = None, **attrs) -> Record:
    state = {"_modules": dict(children or {}), "_parameters": dict(params or {}), "_buffers": dict(buffers or {}),
             **attrs}
    return Record(ClassRef(module, name), (), state)


def sequential(items, name: str = "Sequential") -> Record:
    return record("torch.nn.modules.container", name, {str(i): m for i, m in enumerate(items)})


def conv2d(t: Tensors, stride: int, padding: int, groups: int = 1) -> Record:
    w = t.tensor("weight")
    return record("torch.nn.modules.conv", "Conv2d", params={"weight": w, "bias": t.tensor("bias", False)},
                  stride=(stride, stride), padding=(padding, padding), dilation=(1, 1), groups=groups,
                  kernel_size=tuple(int(v) for v in w.shape[2:]) if w.ndim == 4 else None, padding_mode="zeros")


def batchnorm(t: Tensors, eps: float) -> Record:
    return record("torch.nn.modules.batchnorm", "BatchNorm2d",
                  params={"weight": t.tensor("weight"), "bias": t.tensor("bias")},
                  buffers={"running_mean": t.tensor("running_mean"), "running_var": t.tensor("running_var")},
                  eps=eps, affine=True)


def maxpool(k: int, s: int, p: int) -> Record:
    return record("torch.nn.modules.pooling", "MaxPool2d", kernel_size=k, stride=s, padding=p, dilation=1,
                  ceil_mode=False, return_indices=False)


def activation(spec, default: str, path: str) -> Record:
    """The activation module a yaml value names: True (the family's default), False/None (identity), or a
    string like 'nn.LeakyReLU(0.1)' / 'nn.SiLU()'."""
    if spec is True:
        spec = default
    if spec is False or spec is None or spec == "None":
        return record("torch.nn.modules.linear", "Identity")
    m = _ACT.match(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise FormatError(f"{path}: activation {short_repr(spec)} in the yaml is not supported")
    name, arg = m.group(1), m.group(2)
    if name == "LeakyReLU":
        return record("torch.nn.modules.activation", name, negative_slope=float(arg) if arg else 0.01)
    return record("torch.nn.modules.activation" if name != "Identity" else "torch.nn.modules.linear", name)


def common_conv(t: Tensors, k: int, s: int, p, g: int, act, path: str, eps: float) -> Record:
    """models.common.Conv (YOLOv5's and YOLOv7's: Conv2d, BatchNorm2d unless fused away, activation) from its
    tensors; `act` as in `activation`, SiLU by default."""
    kids = {"conv": conv2d(t.sub("conv"), s, autopad(k, p), g), "act": activation(act, "nn.SiLU()", path)}
    if t.has("bn"):
        kids["bn"] = batchnorm(t.sub("bn"), eps)
    return record("models.common", "Conv", kids)


def autopad(k: int, p) -> int:
    return k // 2 if p in (None, "None") else p


def yaml_rows(cfg: dict) -> list:
    return list(cfg["backbone"]) + list(cfg["head"])
