"""Plain state_dicts (`torch.save(model.state_dict())`): tensors by parameter name, no architecture.

`is_state_dict` recognises one; `read_yaml` reads the model yaml (path or dict) that gives the architecture;
`module_tree` arranges the tensors as the module tree their dotted names describe (for the families to build
their model records from the yaml). Numpy only.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError

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
        raise FormatError(f"{path}: cfg {cfg!r:.80} is not a model yaml (a dict with backbone and head rows)")
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
                raise FormatError(f"state_dict key {key!r}: '{m}' is both a tensor and a module")
        node[leaf] = value
    return tree
