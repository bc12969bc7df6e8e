"""WongKinYiu's YOLOv9 modules as records: one per module kind, built by the reader (weights.py) and dispatched on by
type by the Keras builder (model.py) and the arrays (weights.plan_arrays). Numpy only.

A `Node` is one yaml row, its `parts` the row's record; a Conv row's record is a `torch_reader.modules.ConvSpec`
(conv, batch norm, activation). Every `name` is the Keras name prefix of the module path: `model.4` -> 'model_4'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..torch_reader.modules import ADown, AConv, CBFuse, CBLinear, ConvSpec, ELAN, MaxPool, Upsample

__all__ = ["Node", "Named", "Upsample", "MaxPool", "RepConvN", "Bottleneck", "CSP", "ELAN", "ADown", "AConv", "SPPELAN",
           "CBLinear", "CBFuse", "Branch", "Head"]


@dataclass(frozen=True)
class Named:
    """A module without parameters (Silence, Concat): its Keras name and kind."""

    name: str
    kind: str


@dataclass(frozen=True)
class RepConvN:
    """act(conv1(x) + conv2(x)): a 3x3 and a 1x1 Conv with batch norm, no activation (training form); the fused form
    (fuse_convs) is its one convolution `fused`, with the activation."""

    name: str
    conv1: ConvSpec | None
    conv2: ConvSpec | None
    act: Any
    fused: ConvSpec | None = None

    @property
    def convs(self) -> tuple:
        return (self.fused,) if self.fused is not None else (self.conv1, self.conv2)


@dataclass(frozen=True)
class Bottleneck:
    """RepNBottleneck: cv2(cv1(x)), plus x when `add`."""

    name: str
    cv1: RepConvN
    cv2: ConvSpec
    add: bool


@dataclass(frozen=True)
class CSP:
    """RepNCSP: cv3(cat(m(cv1(x)), cv2(x)))."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    cv3: ConvSpec
    m: tuple  # Bottleneck


@dataclass(frozen=True)
class SPPELAN:
    """cv5(cat(y0, y1, y2, y3)) of y0 = cv1(x) and each SP max pool on the one before."""

    name: str
    cv1: ConvSpec
    pools: tuple  # MaxPool
    cv5: ConvSpec


@dataclass(frozen=True)
class Branch:
    """One detection branch of a head: per level, its box convolutions (Conv, Conv, Conv2d to 4 * reg_max) and its
    class convolutions (Conv, Conv, Conv2d to nc), and the DFL's bin weights."""

    box: tuple  # per level: (ConvSpec, ConvSpec, ConvSpec)
    cls: tuple  # per level: (ConvSpec, ConvSpec, ConvSpec)
    dfl: tuple  # reg_max floats (DFL.conv's weight: 0 .. reg_max - 1)
    sources: tuple  # the head's input positions of this branch, one per level


@dataclass(frozen=True)
class Head:
    """Detect, DDetect, DualDetect, DualDDetect, TripleDetect or TripleDDetect: the branches (in the module's order:
    cv2/cv3, cv4/cv5, cv6/cv7) and which of them its eval-mode forward returns (`outputs`)."""

    kind: str
    branches: tuple  # Branch
    outputs: tuple  # indices into branches, in the order the eval forward returns them
    nc: int
    reg_max: int
    strides: tuple  # per level, float

    @property
    def prefixes(self) -> list:
        """The output name prefix of each returned branch: the last (main) one none, before it 'aux_' (Dual*: the
        auxiliary branch), or 'aux_', 'coarse_' (TripleDetect)."""
        n = len(self.outputs)
        return [("aux_", "coarse_")[i] if i < n - 1 else "" for i in range(n)]


@dataclass(frozen=True)
class Node:
    """One model layer (yaml row): its kind (the yaml module), 'from', and its record."""

    index: int
    kind: str
    source: Any  # -1, an int, or a list of ints
    parts: Any
