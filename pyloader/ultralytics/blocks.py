"""The typed records of an Ultralytics plan (numpy only): one per module kind the reader reads, built by
`weights` and dispatched on by type in `model`. Convolutions are the shared `torch_reader.modules.ConvSpec`.

A `Node` is one yaml row; its `parts` is the row's record: a ConvSpec (Conv, DWConv), `Repeats` (a Conv row
with n > 1), `Concat`, `Upsample`, `C2f` / `C2` / `C2PSA`, `C3`, `SPPF`, `Detect` (or its task forms `Segment`,
`Pose`, `OBB`) or `Classify`. Blocks nest: C2f's `m`
holds Bottleneck, C3 (C3k) or Chain (Bottleneck, PSABlock) records. `name` is the Keras layer-name prefix
of the module (its path with '_': 'model_2_m_0').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..torch_reader.modules import ADown, AConv, CBFuse, CBLinear, ConvSpec, ELAN, MaxPool, Upsample

__all__ = ["Node", "Repeats", "Concat", "Upsample", "MaxPool", "Bottleneck", "C3", "Attention", "PSABlock",
           "Chain", "C2f", "C2", "C2PSA", "SPPF", "DetectLevel", "Detect", "Linear", "Classify",
           "Proto", "Segment", "Pose", "OBB", "Proto26", "Segment26", "Pose26", "OBB26", "SemanticHead", "DepthHead",
           "ZeroPad", "SPP", "GhostConv", "GhostBottleneck", "TransposeConv", "A2C2f", "RepConv", "ELAN", "ADown",
           "AConv", "Identity", "CBLinear", "CBFuse", "EndToEnd", "RepVGGDW", "CIB", "ResNetBlock"]


@dataclass(frozen=True)
class Repeats:
    """A row repeated n times (an nn.Sequential of Conv, Bottleneck or GhostConv, each feeding the next), or YOLOv10's
    SCDown (cv1, then the strided depthwise cv2)."""

    convs: list  # ConvSpec, Bottleneck or GhostConv


@dataclass(frozen=True)
class Concat:
    name: str


@dataclass(frozen=True)
class Bottleneck:
    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    add: bool  # the shortcut: x + cv2(cv1(x))


@dataclass(frozen=True)
class C3:
    """C3 (YOLOv5u) and C3k (YOLO11's C3k2 blocks): cv3(cat(m(cv1(x)), cv2(x)))."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    cv3: ConvSpec
    m: list  # Bottleneck


@dataclass(frozen=True)
class Attention:
    """C2PSA's Attention: qkv, per-head softmax(q^T k * scale) v, plus the positional conv pe of v, then proj."""

    name: str
    qkv: ConvSpec
    proj: ConvSpec
    pe: ConvSpec
    num_heads: int
    key_dim: int
    head_dim: int
    scale: float
    area: int = 1  # YOLO12's AAttn: the flattened map cut in `area` runs of rows, each attending within itself


@dataclass(frozen=True)
class PSABlock:
    """C2PSA's PSABlock and YOLO12's ABlock: x + attn(x), then x + ffn(x) (add False: no shortcuts)."""

    name: str
    attn: Attention
    ffn: list  # ConvSpec
    add: bool  # the shortcuts around attn and ffn


@dataclass(frozen=True)
class Chain:
    """An nn.Sequential of blocks (C3k2(attn=True)'s Bottleneck, PSABlock)."""

    items: list


@dataclass(frozen=True)
class C2f:
    """C2f / C3k2: cv1's output split in halves of c channels, each block on the last output, all concatenated
    into cv2. C2 and C2PSA have the same fields."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    c: int
    m: list  # Bottleneck, C3 or Chain


@dataclass(frozen=True)
class C2(C2f):
    """cv2(cat(m(a), b)) of cv1's halves a, b."""


@dataclass(frozen=True)
class C2PSA(C2f):
    """cv2(cat(a, m(b))) of cv1's halves a, b; m holds PSABlocks."""


@dataclass(frozen=True)
class SPPF:
    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    n: int  # pools chained
    add: bool  # shortcut: x + cv2(...)
    pool: MaxPool


@dataclass(frozen=True)
class DetectLevel:
    cv2: list  # the box branch: ConvSpecs, the last the plain output Conv2d (4 * reg_max)
    cv3: list  # the class branch (nc)


@dataclass(frozen=True)
class Detect:
    name: str
    levels: list  # DetectLevel
    nc: int
    reg_max: int
    strides: list  # float, per level
    dfl: list  # the DFL's integral weights (reg_max floats)

    @property
    def nl(self) -> int:
        return len(self.levels)


@dataclass(frozen=True)
class Proto:
    """Segment's mask prototypes: cv3(cv2(upsample(cv1(x)))) on the first level's input (2x its size)."""

    name: str
    cv1: ConvSpec
    upsample: "TransposeConv"
    cv2: ConvSpec
    cv3: ConvSpec


@dataclass(frozen=True)
class Segment(Detect):
    """Detect plus cv4 (per level: ConvSpecs, the last the output Conv2d of nm mask coefficients) and the Proto."""

    cv4: list
    nm: int
    proto: Proto
    output: ClassVar[str] = "mask_coefficients"  # cv4's outputs are named output_i

    @property
    def channels(self) -> int:  # cv4's channels per anchor
        return self.nm


@dataclass(frozen=True)
class Pose(Detect):
    """Detect plus cv4 (per level, nk = kpt_shape[0] * kpt_shape[1] keypoint values: x, y[, visibility] each)."""

    cv4: list
    kpt_shape: tuple  # (keypoints, 2 or 3)
    output: ClassVar[str] = "keypoints"

    @property
    def channels(self) -> int:
        return self.kpt_shape[0] * self.kpt_shape[1]


@dataclass(frozen=True)
class OBB(Detect):
    """Detect plus cv4 (per level, ne angle logits; the angle is (sigmoid - 0.25) * pi radians)."""

    cv4: list
    ne: int
    output: ClassVar[str] = "angle"

    @property
    def channels(self) -> int:
        return self.ne


@dataclass(frozen=True)
class Proto26:
    """YOLO26's Proto: the first level's input plus each deeper level's refine Conv (1x1) upsampled (nearest) to its
    size, feat_fuse (3x3), then the Proto chain (cv1, upsample, cv2, cv3)."""

    name: str
    refine: list  # ConvSpec per level after the first
    fuse: ConvSpec
    proto: Proto


@dataclass(frozen=True)
class Segment26(Segment):
    """YOLO26's Segment: as Segment, its prototypes from every level (Proto26)."""


@dataclass(frozen=True)
class Pose26(Pose):
    """YOLO26's Pose: cv4 is two Convs then cv4_kpts' Conv2d (kept as one stage list); keypoints decode as
    (value + cell centre) * stride."""


@dataclass(frozen=True)
class OBB26(OBB):
    """YOLO26's OBB: cv4 gives the angle itself (radians), no sigmoid."""


@dataclass(frozen=True)
class Linear:
    """nn.Linear: `weight` (out, in) and `bias` (out), as stored; a Keras Dense named `name`."""

    name: str
    weight: Any
    bias: Any


@dataclass(frozen=True)
class Classify:
    """The classification head: Conv (to 1280 channels), global average pool, Dropout (nothing in eval), Linear."""

    name: str
    conv: ConvSpec
    linear: Linear

    @property
    def nc(self) -> int:
        return int(self.linear.weight.shape[0])


@dataclass(frozen=True)
class Node:
    """One model layer (yaml row): its kind (the yaml module, as `pyloader inspect` counts it), 'from', and its
    record."""

    index: int
    kind: str
    source: Any  # -1, an int, or a list of ints
    name: str  # keras name prefix, e.g. 'model_4'
    parts: Any  # ConvSpec, Repeats, Concat, Upsample, C2f, C2, C2PSA, C3, SPPF, Detect (Segment, Pose, OBB) or Classify


# -- end-to-end heads (YOLO26's Detect, YOLOv10's v10Detect: read by .end2end) and YOLOv10's blocks (.yolov10)


@dataclass(frozen=True)
class EndToEnd:
    """A head with a one-to-one branch (one2one_cv2 / one2one_cv3 beside cv2 / cv3). `selected`: the model's
    decoded output is that branch's top-k selection (Detect.end2end in eval mode, Detect.postprocess): boxes
    x1, y1, x2, y2, then k = min(max_det, anchors) rows of (box, score, class); not selected: the one-to-many branch
    decoded as a plain Detect (the checkpoint's end2end off, or nms=True as Ultralytics' exporter does)."""

    max_det: int
    agnostic: bool  # Detect.agnostic_nms: one top-k over each anchor's best class instead of over (anchor, class)
    selected: bool


@dataclass(frozen=True)
class RepVGGDW:
    """act(conv(x) + conv1(x)): a 7x7 and a 3x3 depthwise Conv without activation, added (conv1 None once fused)."""

    name: str
    conv: ConvSpec
    conv1: Any
    act: Any


@dataclass(frozen=True)
class CIB:
    """YOLOv10's CIB: x + cv1(x) (add) or cv1(x); cv1 chains ConvSpec and RepVGGDW records."""

    name: str
    cv1: list
    add: bool


# -- the backbone and neck modules of YOLOv3u, the Ghost variants, YOLOv6, YOLO12 and YOLOv9 (read by .backbones)


@dataclass(frozen=True)
class ZeroPad:
    """nn.ZeroPad2d: zeros around the map."""

    name: str
    pad: tuple  # (left, right, top, bottom), as torch stores it


@dataclass(frozen=True)
class SPP:
    """cv2(cat(y, pool_1(y), ..., pool_k(y))) of y = cv1(x), the pools side by side (not chained as SPPF)."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    pools: list  # MaxPool


@dataclass(frozen=True)
class GhostConv:
    """cat(y, cv2(y)) of y = cv1(x); cv2 is a depthwise 5x5 Conv."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec

    @property
    def out_channels(self) -> int:
        return 2 * self.cv1.out_channels


@dataclass(frozen=True)
class GhostBottleneck:
    """conv(x) + shortcut(x): conv is GhostConv, (a stride-2 DWConv,) GhostConv; shortcut is x itself (stride 1)
    or DWConv, Conv (stride 2)."""

    name: str
    conv: list  # GhostConv and ConvSpec records, in order
    shortcut: list  # ConvSpec; empty: the identity


@dataclass(frozen=True)
class TransposeConv:
    """nn.ConvTranspose2d (groups 1, dilation 1, no output padding): `spec.kernel` is torch's (in, out, kh, kw)
    weight as stored, which `conv_arrays` turns into Keras' Conv2DTranspose layout (kh, kw, out, in)."""

    spec: ConvSpec

    @property
    def out_channels(self) -> int:
        return int(self.spec.kernel.shape[1])


@dataclass(frozen=True)
class A2C2f:
    """YOLO12's A2C2f: y = [cv1(x)], each block on the last output, cv2(cat(y)); with gamma (a2 and residual):
    x + gamma * that."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    m: list  # Chain (of PSABlocks: ABlock) or C3 (C3k)
    gamma: Any = None  # (c2,) array or None


@dataclass(frozen=True)
class RepConv:
    """RepConv (training form, as checkpoints store it): act(conv1(x) + conv2(x)), a 3x3 and a 1x1 Conv without
    activation; `act` is RepConv's own."""

    name: str
    conv1: ConvSpec
    conv2: ConvSpec
    act: Any

    @property
    def out_channels(self) -> int:
        return self.conv1.out_channels


@dataclass(frozen=True)
class Identity:
    """nn.Identity (YOLOv9-E's first row): the input as it is."""

    name: str


# -- YOLO26's dense heads (read by .dense_heads): no boxes, one map per pixel block


@dataclass(frozen=True)
class SemanticHead:
    """SemanticSegment in eval mode: its classifier (Conv 3x3, then the Conv2d to nc logits) on the first level's
    input; the auxiliary head on the second level is training-only."""

    name: str
    classifier: list  # ConvSpec: the Conv, then the plain output Conv2d

    @property
    def nc(self) -> int:
        return int(self.classifier[-1].out_channels)


@dataclass(frozen=True)
class DepthHead:
    """Depth: proj[i] (1x1) per level; from the deepest, out = refine[i](bilinear 2x (align_corners) of out + proj[i]);
    then head (Conv, ConvTranspose2d 2x, Conv, the Conv2d to one log-depth channel); depth = exp(cal_a * clamp(log
    depth, -4, 5) + cal_b)."""

    name: str
    proj: list  # ConvSpec per level
    refine: list  # per level but the last: ConvSpecs
    head: list  # ConvSpec, TransposeConv, ConvSpec, ConvSpec (plain)
    cal_a: float
    cal_b: float


@dataclass(frozen=True)
class ResNetBlock:
    """Ultralytics' ResNetBlock or torchvision's BasicBlock / Bottleneck: relu(convs(x) + shortcut(x)), the convs
    chained (each with its batch norm, all but the last with its activation), the shortcut a Conv + batch norm without
    activation (the strided or widening projection) or None (the identity)."""

    name: str
    convs: list  # ConvSpec
    shortcut: Any  # ConvSpec or None
