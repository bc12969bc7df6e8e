"""YOLOv7's modules as records: one per module kind, built by the reader (weights.py) and dispatched on by type by
the Keras builder (model.py) and the arrays (weights.plan_arrays). Numpy only.

A `Node` is one yaml row, its `parts` the row's record. A Conv row's record is a `torch_reader.modules.ConvSpec`
(conv, batch norm, activation), and so is a RepConv's in its deploy form (rbr_reparam with the RepConv's
activation); MP and SP rows are a `MaxPool`. Every `name` is the Keras name prefix of the module path:
`model.4` -> 'model_4'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..torch_reader.modules import BatchNorm, ConvSpec, MaxPool, Upsample

__all__ = ["Node", "MaxPool", "RepConv", "Concat", "Shortcut", "ReOrg", "Upsample", "SPPCSPC", "DownC", "Detect"]


@dataclass(frozen=True)
class RepConv:
    """models.common.RepConv in its training form: 3x3 conv + BN, 1x1 conv + BN and an optional identity BN,
    summed, then the activation; folded into one 3x3 convolution `reparam_name` when batch norm is folded."""

    name: str
    dense: ConvSpec  # rbr_dense
    one: ConvSpec  # rbr_1x1
    identity: BatchNorm | None  # rbr_identity
    act: Any  # as ConvSpec.act

    @property
    def act_name(self) -> str:
        return self.name + "_act"

    @property
    def reparam_name(self) -> str:
        return self.name + "_rbr_reparam"


@dataclass(frozen=True)
class _Named:
    """A module without parameters: its Keras name only."""

    name: str


class Concat(_Named):
    """models.common.Concat along the channels (ELAN blocks are Concat rows)."""


class Shortcut(_Named):
    """models.common.Shortcut: the sum of two layers."""


class ReOrg(_Named):
    """models.common.ReOrg: YOLOv5's Focus slicing (space to depth)."""


@dataclass(frozen=True)
class SPPCSPC:
    """models.common.SPPCSPC: cv1 -> cv3 -> cv4, its max pools, cv5 -> cv6; beside cv2; cv7 of both."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    cv3: ConvSpec
    cv4: ConvSpec
    cv5: ConvSpec
    cv6: ConvSpec
    cv7: ConvSpec
    pools: tuple  # MaxPool, stride 1

    @property
    def convs(self) -> tuple:
        return (self.cv1, self.cv2, self.cv3, self.cv4, self.cv5, self.cv6, self.cv7)


@dataclass(frozen=True)
class DownC:
    """models.common.DownC: cv1 -> cv2 (stride k) beside the max pool -> cv3, concatenated."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    cv3: ConvSpec
    pool: MaxPool

    @property
    def convs(self) -> tuple:
        return (self.cv1, self.cv2, self.cv3)


@dataclass(frozen=True)
class Detect:
    """The head (Detect, IDetect, IAuxDetect): one 1x1 convolution per level (ImplicitA/M folded in); of
    IAuxDetect only the main heads."""

    convs: tuple  # ConvSpec per level
    nl: int
    na: int
    nc: int
    stride: list  # per level, float
    anchors: np.ndarray  # (nl, na, 2) in pixels (anchor_grid)


@dataclass(frozen=True)
class Node:
    """One model layer (yaml row): its kind (the yaml module, as `pyloader inspect` counts it), 'from', and its
    record."""

    index: int
    kind: str  # Conv, RepConv, MP, ..., IDetect (weights.YAML_KIND's values)
    source: Any  # -1, an int, or a list of ints (YOLOv7's `from`)
    parts: Any  # a record above, or a ConvSpec (Conv, RepConv's deploy form)
