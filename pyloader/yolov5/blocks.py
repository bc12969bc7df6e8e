"""The records of a YOLOv5 plan: one per module kind the reader reads (numpy only, no Keras).

`weights.py` builds them from the checkpoint's module records, `model.py` builds a Keras block per record type.
Every record has `name`, the Keras name prefix of its module (module `model.4` -> 'model_4'); `convs()` gives
its ConvSpecs in build order (the order of the arrays). The class names are the node kinds `pyloader inspect`
counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..torch_reader.modules import BatchNorm, ConvSpec, MaxPool, Upsample

__all__ = ["Node", "Conv", "Focus", "Bottleneck", "C3", "BottleneckCSP", "MaxPool", "SPP", "SPPF", "Concat",
           "Upsample", "ZeroPad", "Detect", "Proto", "Segment", "Classify", "Sequential"]


@dataclass(frozen=True)
class Conv:
    name: str
    conv: ConvSpec

    def convs(self):
        yield self.conv


@dataclass(frozen=True)
class Focus(Conv):
    """Space-to-depth, then `conv`."""


@dataclass(frozen=True)
class Bottleneck:
    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    add: bool  # the shortcut: x + cv2(cv1(x))

    def convs(self):
        yield self.cv1
        yield self.cv2


@dataclass(frozen=True)
class C3:
    """cv3(cat(m(cv1(x)), cv2(x)))."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    cv3: ConvSpec
    m: tuple  # Bottleneck records

    def convs(self):
        yield self.cv1
        for b in self.m:
            yield from b.convs()
        yield self.cv2
        yield self.cv3


@dataclass(frozen=True)
class BottleneckCSP:
    """cv4(act(bn(cat(cv3(m(cv1(x))), cv2(x))))): cv2 and cv3 are plain Conv2d whose `bn` is their slice of the
    shared norm `bn` (folded into them, or `bn` as one layer after the concatenation)."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    cv3: ConvSpec
    cv4: ConvSpec
    bn: BatchNorm
    act: Any  # as ConvSpec.act
    act_name: str
    m: tuple  # Bottleneck records

    def convs(self):
        yield self.cv1
        for b in self.m:
            yield from b.convs()
        yield self.cv3
        yield self.cv2
        yield self.cv4


@dataclass(frozen=True)
class SPP:
    """cv2(cat(x, pool_1(x), ..., pool_k(x))) with x = cv1(input)."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    pools: tuple  # MaxPool records

    def convs(self):
        yield self.cv1
        yield self.cv2


@dataclass(frozen=True)
class SPPF:
    """cv2(cat(x, p(x), p(p(x)), p(p(p(x))))) with x = cv1(input), one pool p."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    pool: MaxPool

    def convs(self):
        yield self.cv1
        yield self.cv2


@dataclass(frozen=True)
class Concat:
    """Along the channels."""

    name: str

    def convs(self):
        return ()


@dataclass(frozen=True)
class ZeroPad:
    name: str
    padding: tuple  # (left, right, top, bottom), as torch's ZeroPad2d

    def convs(self):
        return ()


@dataclass(frozen=True)
class Detect:
    name: str
    m: tuple  # the output Conv2d of each level (1x1, na * (5 + nc) outputs)
    nl: int
    na: int
    nc: int
    stride: list  # per level, floats
    anchors: np.ndarray  # (nl, na, 2) in units of each level's stride, float32

    def convs(self):
        return self.m


@dataclass(frozen=True)
class Proto:
    """The mask prototypes of level 0's input: cv3(cv2(upsample(cv1(x)))), nearest upsampling by `scale`."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    cv3: ConvSpec
    scale: tuple  # (height factor, width factor)

    def convs(self):
        yield self.cv1
        yield self.cv2
        yield self.cv3


@dataclass(frozen=True)
class Segment(Detect):
    """Detect whose per-anchor outputs are 5 + nc + nm (the mask coefficients last), and the prototypes."""

    nm: int
    proto: Proto

    def convs(self):
        yield from self.m
        yield from self.proto.convs()


@dataclass(frozen=True)
class Classify:
    """linear(flatten(pool(conv(x)))) (its Dropout: nothing in eval); `linear` is a 1x1 ConvSpec of nn.Linear's
    weight (out, in, 1, 1) and bias, applied to the pooled 1x1 map."""

    name: str
    conv: ConvSpec
    linear: ConvSpec

    @property
    def nc(self) -> int:
        return self.linear.out_channels

    def convs(self):
        yield self.conv
        yield self.linear


@dataclass(frozen=True)
class Sequential:
    """A yaml row of a module other than C3 / BottleneckCSP repeated n > 1 times."""

    name: str
    blocks: tuple

    def convs(self):
        for b in self.blocks:
            yield from b.convs()


@dataclass
class Node:
    """One model layer (yaml row): its 'from' and the block it builds."""

    index: int
    source: Any  # -1, an int, or a list of ints
    block: Any  # one of the records above

    @property
    def kind(self) -> str:
        return type(self.block).__name__

    @property
    def name(self) -> str:
        return self.block.name
