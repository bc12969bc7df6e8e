"""Ultralytics .pt checkpoints (YOLOv8, YOLO11, YOLOv5u, YOLO12, YOLOv9, YOLOv6, YOLOv3u, Ghost, YOLO26, YOLOv10
detection; classification; YOLOv8 / YOLO11 / YOLO12 / YOLOv9 / YOLO26 segment, pose and OBB; YOLO26 semantic
segmentation and depth) as numpy: the plan and the arrays (the YOLOv3u / Ghost / YOLOv6 / YOLO12 / YOLOv9 rows:
backbones.py; YOLOv10's blocks: yolov10.py; the Detect heads: heads.py; the task heads: task_heads.py; the dense
heads: dense_heads.py; YOLO-World and YOLOE with their stored class embeddings: world.py). No TensorFlow.

The checkpoint is read by `torch_reader.checkpoint` (no torch, no pickle code run). The model is `ema` when
present and not None, else `model` (as Ultralytics' `attempt_load_one_weight`): the trainer's `last.pt` holds
`ema` (fp16) with `model` None, a `strip_optimizer`'d `best.pt` holds `model`. The layer graph comes from the
model's own `yaml` dict (backbone + head rows: from, number, module, args; the scale's depth, width and max
channels); each row is checked against the pickled module record of the same index (module type, 'from',
repeats, output channels, and a Conv row's kernel, stride and groups) before any tensor is used, and every
module's input channels against what feeds it.

Keras names derive from the module path: `model.2.m.0.cv1.conv` -> layer 'model_2_m_0_cv1_conv', its batch
norm -> 'model_2_m_0_cv1_bn'.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError
from ..torch_reader.checkpoint import load_torch_checkpoint
from ..torch_reader.modules import ConvBatch, ConvSpec, Ctx, activation_of, batchnorm, children, conv2d, is_class
from ..torch_reader.modules import class_names, maxpool, param, select_model, sequence  # ema when not None, else model (as Ultralytics)
from ..torch_reader.records import Record
from .backbones import ABSORBS_N, ROWS as _BACKBONE_ROWS
from .blocks import (C2, C2PSA, C3, SPPF, Attention, Bottleneck, C2f, Chain, Classify, Concat, Detect, MaxPool, Node,
                     Linear, PSABlock, Repeats, Upsample)
from .dense_heads import DENSE_HEADS, read_dense_head
from .heads import detect, ul as _ul
from .resnet import ROWS as _RESNET_ROWS
from .task_heads import TASK_HEADS, read_task_head
from .yolov10 import check_c2fcib, cib, row as v10_row
from .rtdetr import RTDETR_ABSORBS_N, RTDETR_ROWS, level_strides
from .world import ROWS as _WORLD_ROWS, TEXT_MODELS, class_embeddings

__all__ = ["read_plan", "UltralyticsPlan", "YAML_MODULES", "MODEL_CLASSES"]

ROWS = {**_BACKBONE_ROWS, **_RESNET_ROWS, **RTDETR_ROWS, **_WORLD_ROWS}  # yaml module -> (kind, row reader)


@dataclass
class UltralyticsPlan:
    path: str
    nodes: list  # blocks.Node
    convs: list  # every ConvSpec, for the arrays
    nc: int
    names: list
    strides: list  # per detection level
    reg_max: int
    dfl: list  # the DFL's integral weights (reg_max values; 0..reg_max-1 in every Ultralytics model)
    max_stride: int
    imgsz: int  # the training size the checkpoint records (640 when it records none)
    model_class: str
    task: str = "detect"  # "detect" (a Detect head) or "classify" (a Classify head)
    linears: list = field(default_factory=list)  # every Linear record, for the arrays
    tensors: dict = field(default_factory=dict)  # other arrays by Keras variable path (.rtdetr)
    end2end: object = None  # blocks.EndToEnd: the head has a one-to-one branch (YOLO26, YOLOv10; .end2end)


_NN = ("torch.nn.modules",)
_TASKS = {"DetectionModel": ("detect", "Detect"), "ClassificationModel": ("classify", "Classify"),  # class: task, head
          "SegmentationModel": ("segment", "Segment"), "PoseModel": ("pose", "Pose"), "OBBModel": ("obb", "OBB"),
          "SemanticSegmentationModel": ("semantic", "SemanticSegment"), "DepthModel": ("depth", "Depth"),
          "RTDETRDetectionModel": ("detect", "RTDETRDecoder"), "WorldModel": ("detect", "WorldDetect"),
          "YOLOEModel": ("detect", "YOLOEDetect"), "YOLOESegModel": ("segment", "YOLOESegment")}

MODEL_CLASSES = frozenset(_TASKS)  # the ultralytics.nn.tasks model classes read


class _Reader:
    def __init__(self, path, nms=False):
        self.ctx = Ctx(path)
        self.convs: list = []
        self.linears: list = []
        self.tensors: dict = {}  # other arrays by Keras variable path (RT-DETR's LayerNorm, MultiHeadAttention)
        self.nms = nms  # the model ends in NMS: an end-to-end head computes its one-to-many branch (.end2end)
        self.end2end = None  # blocks.EndToEnd of the head, when it has a one-to-one branch
        self.text = None  # the class embeddings [nc, embed] of a YOLO-World / YOLOE model (world.py)

    def err(self, mpath, msg):
        return self.ctx.err(mpath, msg)

    def expect(self, rec, mpath, *names):
        if not any(_ul(rec, n) for n in names):
            raise self.err(mpath, f"expected {' or '.join(names)}, found {short_repr(rec)}")
        return children(rec)

    # -- leaves

    def conv(self, rec, mpath) -> ConvSpec:
        """Conv / DWConv: Conv2d + BatchNorm2d (absent in fused models) + activation."""
        mods = self.expect(rec, mpath, "Conv", "DWConv")
        base = mpath.replace(".", "_")
        spec = conv2d(self.ctx, mods.get("conv"), mpath + ".conv", base + "_conv")
        if mods.get("bn") is not None:
            spec.bn = batchnorm(self.ctx, mods["bn"], mpath + ".bn", base + "_bn")
            if spec.bn.gamma.shape[0] != spec.out_channels:
                raise self.err(mpath, f"bn has {spec.bn.gamma.shape[0]} channels, conv {spec.out_channels}")
        spec.act = activation_of(self.ctx, mods.get("act"), mpath + ".act")
        spec.act_name = base + "_act"
        self.convs.append(spec)
        return spec

    def plain_conv(self, rec, mpath) -> ConvSpec:
        spec = conv2d(self.ctx, rec, mpath, mpath.replace(".", "_"))
        self.convs.append(spec)
        return spec

    def linear(self, rec, mpath) -> Linear:
        if not is_class(rec, "Linear", *_NN):
            raise self.err(mpath, f"expected a Linear, found {short_repr(rec)}")
        w, b = param(self.ctx, rec, mpath, "weight"), param(self.ctx, rec, mpath, "bias", required=False)
        if w.ndim != 2 or (b is not None and b.shape != (w.shape[0],)):
            raise self.err(mpath, f"weight {w.shape} and bias {None if b is None else b.shape}: expected (out, in), (out,)")
        if b is None:
            raise self.err(mpath, "a Linear without bias is not supported")
        lin = Linear(mpath.replace(".", "_"), w, b)
        self.linears.append(lin)
        return lin

    # -- blocks (records of .blocks)

    def classify(self, rec, mpath) -> Classify:
        mods = self.expect(rec, mpath, "Classify")
        pool = mods.get("pool")
        if not is_class(pool, "AdaptiveAvgPool2d", *_NN) or pool.attr("output_size") not in (1, (1, 1), [1, 1]):
            raise self.err(mpath + ".pool", f"expected AdaptiveAvgPool2d(1), found {short_repr(pool)}")
        if not is_class(mods.get("drop"), "Dropout", *_NN):
            raise self.err(mpath + ".drop", f"expected a Dropout, found {short_repr(mods.get('drop'))}")
        conv, lin = self.conv(mods.get("conv"), mpath + ".conv"), self.linear(mods.get("linear"), mpath + ".linear")
        if lin.weight.shape[1] != conv.out_channels:
            raise self.err(mpath + ".linear", f"expected {conv.out_channels} inputs (the conv's outputs), the weight "
                                              f"has {lin.weight.shape[1]}")
        return Classify(mpath.replace(".", "_"), conv, lin)

    def bottleneck(self, rec, mpath) -> Bottleneck:
        self.expect(rec, mpath, "Bottleneck")
        mods = children(rec)
        add = rec.attr("add")
        if not isinstance(add, bool):
            raise self.err(mpath, f"Bottleneck.add is {short_repr(add)}, expected a bool")
        cv1, cv2 = self.conv(mods.get("cv1"), mpath + ".cv1"), self.conv(mods.get("cv2"), mpath + ".cv2")
        if add and cv2.out_channels != cv1.in_channels:
            raise self.err(mpath, f"a shortcut adds {cv1.in_channels} input channels to {cv2.out_channels} outputs")
        return Bottleneck(mpath.replace(".", "_"), cv1, cv2, add)

    def c3(self, rec, mpath, kind="C3") -> C3:
        mods = self.expect(rec, mpath, kind)
        cv1, cv2, cv3 = (self.conv(mods.get(k), f"{mpath}.{k}") for k in ("cv1", "cv2", "cv3"))
        m = [self.bottleneck(r, f"{mpath}.m.{j}") for j, r in enumerate(sequence(self.ctx, mods.get("m"), mpath + ".m", "Bottleneck"))]
        return C3(mpath.replace(".", "_"), cv1, cv2, cv3, m)

    def attention(self, rec, mpath) -> Attention:
        mods = self.expect(rec, mpath, "Attention")
        nh, kd, hd, scale = (rec.attr(k) for k in ("num_heads", "key_dim", "head_dim", "scale"))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (nh, kd, hd)):
            raise self.err(mpath, f"num_heads={short_repr(nh)} key_dim={short_repr(kd)} head_dim={short_repr(hd)}: expected positive ints")
        if not isinstance(scale, float) or not scale > 0:
            raise self.err(mpath, f"scale {short_repr(scale)}: expected a positive float")
        qkv, proj, pe = (self.conv(mods.get(k), f"{mpath}.{k}") for k in ("qkv", "proj", "pe"))
        dim = nh * hd
        checks = ((qkv.out_channels, dim + 2 * nh * kd, "qkv outputs"), (qkv.in_channels, dim, "input channels"),
                  (proj.out_channels, dim, "proj outputs"), (pe.out_channels, dim, "pe outputs"),
                  (pe.groups, dim, "pe groups"))
        for got, want, what in checks:
            if got != want:
                raise self.err(mpath, f"{what}: expected {want} (num_heads {nh}, key_dim {kd}, head_dim {hd}), got {got}")
        return Attention(mpath.replace(".", "_"), qkv, proj, pe, nh, kd, hd, scale)

    def psablock(self, rec, mpath) -> PSABlock:
        mods = self.expect(rec, mpath, "PSABlock")
        add = rec.attr("add")
        if not isinstance(add, bool):
            raise self.err(mpath, f"PSABlock.add is {short_repr(add)}, expected a bool")
        ffn = [self.conv(r, f"{mpath}.ffn.{j}") for j, r in enumerate(sequence(self.ctx, mods.get("ffn"), mpath + ".ffn", "Conv"))]
        attn = self.attention(mods.get("attn"), mpath + ".attn")
        return PSABlock(mpath.replace(".", "_"), attn, ffn, add)

    def c2f_item(self, rec, mpath) -> Bottleneck | C3 | Chain:
        """One entry of C2f/C3k2's m: a Bottleneck, a C3k, or C3k2(attn=True)'s Sequential(Bottleneck, PSABlock)."""
        if _ul(rec, "Bottleneck"):
            return self.bottleneck(rec, mpath)
        if _ul(rec, "C3k"):
            return self.c3(rec, mpath, "C3k")
        if is_class(rec, "Sequential", *_NN):
            items = []
            for j, r in enumerate(sequence(self.ctx, rec, mpath, "blocks")):
                items.append(self.bottleneck(r, f"{mpath}.{j}") if _ul(r, "Bottleneck") else self.psablock(r, f"{mpath}.{j}"))
            return Chain(items)
        raise self.err(mpath, f"expected a Bottleneck, C3k or Sequential, found {short_repr(rec)}")

    def c2f(self, rec, mpath, kind) -> C2f:
        mods = self.expect(rec, mpath, kind)
        c = rec.attr("c")
        cv1, cv2 = self.conv(mods.get("cv1"), mpath + ".cv1"), self.conv(mods.get("cv2"), mpath + ".cv2")
        if not isinstance(c, int) or c <= 0 or cv1.out_channels != 2 * c:
            raise self.err(mpath, f"hidden channels c={short_repr(c)}, cv1 gives {cv1.out_channels} (expected 2 * c)")
        items = sequence(self.ctx, mods.get("m"), mpath + ".m", "blocks")
        item = {"C2PSA": self.psablock, "C2": self.bottleneck, "C2fCIB": lambda r, p: cib(self, r, p)}.get(kind, self.c2f_item)
        m = [item(r, f"{mpath}.m.{j}") for j, r in enumerate(items)]
        want = (2 + len(m)) * c if kind in ("C2f", "C3k2", "C2fCIB") else 2 * c
        if cv2.in_channels != want:
            raise self.err(mpath + ".cv2", f"expected {want} input channels, the weight has {cv2.in_channels}")
        return {"C2": C2, "C2PSA": C2PSA}.get(kind, C2f)(mpath.replace(".", "_"), cv1, cv2, c, m)

    def sppf(self, rec, mpath) -> SPPF:
        mods = self.expect(rec, mpath, "SPPF")
        n, add = rec.attr("n", 3), rec.attr("add", False)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 16 or not isinstance(add, bool):
            raise self.err(mpath, f"SPPF n={short_repr(n)} add={short_repr(add)}")
        cv1, cv2 = self.conv(mods.get("cv1"), mpath + ".cv1"), self.conv(mods.get("cv2"), mpath + ".cv2")
        if cv2.in_channels != (n + 1) * cv1.out_channels:
            raise self.err(mpath + ".cv2", f"expected {(n + 1) * cv1.out_channels} input channels, the weight has {cv2.in_channels}")
        pool = MaxPool(**maxpool(self.ctx, mods.get("m"), mpath + ".m"))
        return SPPF(mpath.replace(".", "_"), cv1, cv2, n, add, pool)


def _make_divisible(x, divisor=8) -> int:
    return int(math.ceil(x / divisor) * divisor)


_KINDS = {"Conv": "Conv", "DWConv": "Conv", "C2f": "C2f", "C3k2": "C3k2", "C2": "C2", "C3": "C3", "SPPF": "SPPF",
          "C2PSA": "C2PSA", "Concat": "Concat", "nn.Upsample": "Upsample", "Upsample": "Upsample", "Detect": "Detect",
          "Classify": "Classify", "v10Detect": "Detect", "C2fCIB": "C2fCIB", "SCDown": "SCDown", "PSA": "PSA",
          **{k: k for k in TASK_HEADS + DENSE_HEADS}}
YAML_MODULES = frozenset(_KINDS) | frozenset(ROWS)  # every yaml row module the reader reads
_ABSORBS_N = {"C2f", "C3k2", "C2", "C3", "C2PSA", "C2fCIB", "C2fAttn"} | ABSORBS_N | RTDETR_ABSORBS_N  # n is their inner block count, not a Sequential of repeats


def _imgsz(model: Record, ckpt) -> int:
    for args in (model.attr("args"), ckpt.get("train_args") if isinstance(ckpt, dict) else None):
        if isinstance(args, Record):
            args = args.state
        if isinstance(args, dict):
            v = args.get("imgsz")
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return 640


def read_plan(path, ckpt=None, nms=False) -> UltralyticsPlan:
    """The plan of a checkpoint file; `ckpt` is the file already loaded by `load_torch_checkpoint`, if it was;
    `nms`: the model ends in NMS (an end-to-end head then computes its one-to-many branch, see .end2end)."""
    path = os.fspath(path)
    ckpt = load_torch_checkpoint(path) if ckpt is None else ckpt
    model = select_model(ckpt, path)
    cname = model.cls.name
    if not (model.cls.module.startswith("ultralytics.") and cname in _TASKS):
        raise FormatError(f"{path}: model class '{model.cls.qualname}'; pyloader reads Ultralytics "
                          f"detection, classification, segmentation, pose and OBB models (ultralytics.nn.tasks."
                          f"DetectionModel with a Detect head, ClassificationModel with Classify, SegmentationModel "
                          f"with Segment, PoseModel with Pose, OBBModel with OBB, SemanticSegmentationModel with "
                          f"SemanticSegment, DepthModel with Depth, RTDETRDetectionModel with RTDETRDecoder, WorldModel "
                          f"with WorldDetect, YOLOEModel with YOLOEDetect, YOLOESegModel with YOLOESegment)")
    task, head = _TASKS[cname]
    cfg = model.attr("yaml")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise FormatError(f"{path}: the model has no yaml dict with backbone and head rows")
    depth, width = cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0)
    max_ch = float("inf")
    scales = cfg.get("scales")
    if scales:
        if not isinstance(scales, dict):
            raise FormatError(f"{path}: yaml scales {short_repr(scales)}: expected a dict")
        scale = cfg.get("scale") or next(iter(scales))
        if not isinstance(scale, str) or scale not in scales or not (isinstance(scales[scale], (list, tuple)) and len(scales[scale]) == 3):
            raise FormatError(f"{path}: yaml scale {short_repr(scale)} is not one of {list(scales)}")
        depth, width, max_ch = scales[scale]
    if not (all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (depth, width, max_ch))
            and 0 < depth <= 100 and 0 < width <= 100 and max_ch > 0):
        raise FormatError(f"{path}: yaml depth {short_repr(depth)}, width {short_repr(width)}, max channels {short_repr(max_ch)}")
    rows = cfg["backbone"] + cfg["head"]
    layers = sequence(Ctx(path), children(model).get("model"), "model", "layers")
    if len(layers) != len(rows):
        raise FormatError(f"{path}: the yaml has {len(rows)} rows, the model {len(layers)} layers")
    nc_yaml = cfg.get("nc")
    rd = _Reader(path, nms)
    if cname in TEXT_MODELS:
        rd.text = class_embeddings(model, path, cname)
    nodes, ch = [], []
    in_ch = cfg.get("channels", cfg.get("ch", 3))
    for i, (row, rec) in enumerate(zip(rows, layers)):
        mpath = f"model.{i}"
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise rd.err(mpath, f"yaml row {short_repr(row)}: expected [from, number, module, args]")
        f, n, mname, args = row
        if not (isinstance(f, int) or (isinstance(f, list) and f and all(isinstance(x, int) for x in f))):
            raise rd.err(mpath, f"yaml 'from' {short_repr(f)}")
        srcs = [f] if isinstance(f, int) else f
        if (srcs != [-1] if i == 0 else any(not -i <= s < i for s in srcs)):
            raise rd.err(mpath, f"yaml 'from' {short_repr(f)} refers to a layer that does not precede it")
        cin = [(ch[s] if s >= 0 else ch[i + s]) if i else in_ch for s in srcs]
        kind = _KINDS.get(mname) or ROWS.get(mname, (None,))[0]
        if kind is None:
            raise rd.err(mpath, f"yaml module {short_repr(mname)} is not supported")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise rd.err(mpath, f"yaml number {short_repr(n)}")
        if not isinstance(args, list):
            raise rd.err(mpath, f"yaml args {short_repr(args)}: expected a list")
        n_eff = max(round(n * depth), 1) if n > 1 else n
        rf = rec.attr("f") if isinstance(rec, Record) else None
        if rf is not None and rf != f:
            raise rd.err(mpath, f"module 'from' is {short_repr(rf)}, the yaml says {short_repr(f)}")
        if n_eff > 1 and kind not in _ABSORBS_N:
            reps = sequence(rd.ctx, rec, mpath, mname)
            if len(reps) != n_eff:
                raise rd.err(mpath, f"{len(reps)} repeats, the yaml's depth gives {n_eff}")
            if kind not in ("Conv", "Bottleneck", "GhostConv"):
                raise rd.err(mpath, f"repeated {mname} rows are not supported")
            sub, cout = [], cin
            for j, r in enumerate(reps):  # each repeat feeds the next: checked as the row's inputs
                p, c = _row(rd, r, f"{mpath}.{j}", kind, mname, args, cout, width, max_ch, nc_yaml, 1)
                sub.append(p)
                cout = [c]
            parts, cout, kind = Repeats(sub), cout[0], "Sequential"
        else:
            parts, cout = _row(rd, rec, mpath, kind, mname, args, cin, width, max_ch, nc_yaml, n_eff, cfg.get("kpt_shape"))
        nodes.append(Node(i, kind, f, mpath.replace(".", "_"), parts))  # kind: the yaml module (C2f, C3k2, C2PSA...)
        ch.append(cout)
    det = nodes[-1]
    if det.kind.removesuffix("26") != head or any(isinstance(n.parts, (Detect, Classify)) for n in nodes[:-1]):
        raise FormatError(f"{path}: the last layer is {det.kind}, expected {head} ({cname}), and only there")
    D = det.parts
    if head == "RTDETRDecoder":  # any multiple of the model's stride (32); the decoder's anchors follow the maps
        imgsz = _imgsz(model, ckpt)
        return UltralyticsPlan(path, nodes, rd.convs, D.nc, class_names(model, D.nc, path), level_strides(nodes, det),
                               0, [], 32, imgsz if imgsz % 32 == 0 else 640, model.cls.qualname, task, rd.linears,
                               rd.tensors)
    if task in ("semantic", "depth"):
        return _dense_plan(path, model, ckpt, nodes, rd, task, D, nc_yaml)
    names = class_names(model, D.nc, path)
    imgsz = _imgsz(model, ckpt)
    if task == "classify":  # any input size (the pool takes the whole map): max stride 1, as Ultralytics' stride
        return UltralyticsPlan(path, nodes, rd.convs, D.nc, names, [], 0, [], 1, imgsz, model.cls.qualname, task,
                               rd.linears)
    max_stride = int(max(D.strides))
    if imgsz % max_stride:
        imgsz = 640
    return UltralyticsPlan(path, nodes, rd.convs, D.nc, names, D.strides, D.reg_max, D.dfl, max_stride,
                           imgsz, model.cls.qualname, task, rd.linears, rd.tensors, rd.end2end)


def _dense_plan(path, model, ckpt, nodes, rd, task, D, nc_yaml) -> UltralyticsPlan:
    """A SemanticSegment or Depth model: no detection levels; the input a multiple of the model's stride (its
    deepest backbone level's, which the neck's concatenations need)."""
    stride = model.attr("stride")
    if not (isinstance(stride, np.ndarray) and stride.shape == (1,) and float(stride[0]) == int(stride[0]) > 0):
        raise FormatError(f"{path}: model stride {short_repr(stride)}: expected one positive integer")
    max_stride = int(stride[0])
    nc = D.nc if task == "semantic" else nc_yaml if isinstance(nc_yaml, int) and not isinstance(nc_yaml, bool) else 1
    imgsz = _imgsz(model, ckpt)
    return UltralyticsPlan(path, nodes, rd.convs, nc, class_names(model, nc, path), [], 0, [], max_stride,
                           imgsz if imgsz % max_stride == 0 else 640, model.cls.qualname, task)


def _check(rd, mpath, what, want, got):
    if want != got:
        raise rd.err(mpath, f"{what}: the yaml row gives {want}, the checkpoint has {got}")


def _row(rd: _Reader, rec, mpath, kind, mname, args, cin, width, max_ch, nc_yaml, n_eff, kpt_yaml=None):
    """One yaml row's module: parsed, checked against the row and its inputs; returns (its record, output channels)."""

    def c2_of(a0):  # the row's output channels as parse_model computes them
        if not isinstance(a0, (int, float)) or isinstance(a0, bool):
            raise rd.err(mpath, f"yaml channels {short_repr(a0)}")
        return _make_divisible(min(a0, max_ch) * width, 8)

    def check_in(spec, sub=""):
        if cin[0] is not None and spec.in_channels != cin[0]:
            raise rd.err(mpath + sub, f"expected {cin[0]} input channels (from the layers feeding it), the weight has {spec.in_channels}")

    if mname in ROWS:
        return ROWS[mname][1](rd, rec, mpath, args, cin, c2_of, n_eff)
    if kind == "Conv":
        spec = rd.conv(rec, mpath)
        if mname == "DWConv" and not _ul(rec, "DWConv"):
            raise rd.err(mpath, f"expected DWConv, found {short_repr(rec)}")
        if args:
            _check(rd, mpath, "output channels", c2_of(args[0]), spec.out_channels)
        k = args[1] if len(args) > 1 else 1
        s = args[2] if len(args) > 2 else 1
        if isinstance(k, int):
            _check(rd, mpath, "kernel", (k, k), tuple(int(v) for v in spec.kernel.shape[2:]))
        if isinstance(s, int):
            _check(rd, mpath, "stride", (s, s), spec.stride)
        if cin[0] is not None:
            g = math.gcd(cin[0], spec.out_channels) if mname == "DWConv" else (args[4] if len(args) > 4 and isinstance(args[4], int) else 1)
            _check(rd, mpath, "groups", g, spec.groups)
        check_in(spec)
        return spec, spec.out_channels
    if kind in ("C2f", "C3k2", "C2", "C2PSA", "C2fCIB"):
        P = rd.c2f(rec, mpath, kind)
        if len(P.m) != n_eff:
            raise rd.err(mpath, f"{len(P.m)} blocks, the yaml's depth gives {n_eff}")
        if kind == "C2fCIB":
            check_c2fcib(rd, P, args, mpath)
        _check(rd, mpath, "output channels", c2_of(args[0] if args else None), P.cv2.out_channels)
        check_in(P.cv1, ".cv1")
        return P, P.cv2.out_channels
    if kind == "C3":
        P = rd.c3(rec, mpath)
        if len(P.m) != n_eff:
            raise rd.err(mpath, f"{len(P.m)} bottlenecks, the yaml's depth gives {n_eff}")
        _check(rd, mpath, "output channels", c2_of(args[0] if args else None), P.cv3.out_channels)
        check_in(P.cv1, ".cv1")
        check_in(P.cv2, ".cv2")
        return P, P.cv3.out_channels
    if kind == "SPPF":
        P = rd.sppf(rec, mpath)
        _check(rd, mpath, "output channels", c2_of(args[0] if args else None), P.cv2.out_channels)
        check_in(P.cv1, ".cv1")
        if P.add and P.cv2.out_channels != cin[0]:
            raise rd.err(mpath, f"a shortcut adds {cin[0]} input channels to {P.cv2.out_channels} outputs")
        return P, P.cv2.out_channels
    if kind in ("SCDown", "PSA"):
        return v10_row(rd, rec, mpath, kind, args, c2_of(args[0] if args else None), cin[0])
    if kind == "Concat":
        rd.expect(rec, mpath, "Concat")
        if rec.attr("d") != 1:
            raise rd.err(mpath, f"Concat along dimension {short_repr(rec.attr('d'))}: only 1 (channels) is supported")
        return Concat(mpath.replace(".", "_")), sum(cin)
    if kind == "Upsample":
        if not is_class(rec, "Upsample", *_NN):
            raise rd.err(mpath, f"expected Upsample, found {short_repr(rec)}")
        if rec.attr("mode") != "nearest" or rec.attr("size") is not None:
            raise rd.err(mpath, f"Upsample mode {short_repr(rec.attr('mode'))} size {short_repr(rec.attr('size'))}: only nearest by scale_factor")
        sf = rec.attr("scale_factor")
        sf = (sf, sf) if isinstance(sf, (int, float)) else tuple(sf) if isinstance(sf, (tuple, list)) else None
        if sf is None or len(sf) != 2 or any(float(v) != int(v) or v < 1 for v in sf):
            raise rd.err(mpath, f"Upsample scale_factor {short_repr(rec.attr('scale_factor'))}: only integer factors")
        return Upsample(mpath.replace(".", "_"), tuple(int(v) for v in sf)), cin[0]
    if kind == "Detect" or kind in TASK_HEADS:
        P = (detect(rd, rec, mpath, mname) if kind == "Detect" else
             read_task_head(rd, rec, mpath, kind, args, cin, width, max_ch, kpt_yaml))
        if isinstance(nc_yaml, int) and not isinstance(nc_yaml, bool):
            _check(rd, mpath, "classes (nc)", nc_yaml, P.nc)
        if len(cin) != P.nl:
            raise rd.err(mpath, f"{len(cin)} inputs in the yaml row, the head has nl={P.nl} levels")
        for i, lv in enumerate(P.levels):
            for b, stages in (("cv2", lv.cv2), ("cv3", lv.cv3)) + ((("cv4", P.cv4[i]),) if kind in TASK_HEADS else ()):
                if stages[0].in_channels != cin[i]:
                    raise rd.err(f"{mpath}.{b}.{i}", f"expected {cin[i]} input channels, the weight has {stages[0].in_channels}")
        return P, 0
    if kind in DENSE_HEADS:
        P = read_dense_head(rd, rec, mpath, kind, args, cin)
        if kind == "SemanticSegment" and isinstance(nc_yaml, int) and not isinstance(nc_yaml, bool):
            _check(rd, mpath, "classes (nc)", nc_yaml, P.nc)
        return P, 0
    if kind == "Classify":
        P = rd.classify(rec, mpath)
        if isinstance(nc_yaml, int) and not isinstance(nc_yaml, bool):
            _check(rd, mpath, "classes (nc)", nc_yaml, P.nc)
        if P.conv.in_channels != sum(cin):
            raise rd.err(mpath + ".conv", f"expected {sum(cin)} input channels, the weight has {P.conv.in_channels}")
        return P, 0
    raise rd.err(mpath, f"module type {short_repr(kind)} is not supported")  # pragma: no cover


def plan_arrays(plan: UltralyticsPlan, fold_bn: bool) -> dict:
    out: dict = {}
    convs = ConvBatch(out)
    for spec in plan.convs:
        convs.add(spec, fold_bn)
    convs.run()
    for lin in plan.linears:  # Keras' Dense kernel is (in, out)
        out[f"{lin.name}/kernel"] = np.ascontiguousarray(lin.weight.T, dtype=np.float32)
        out[f"{lin.name}/bias"] = np.ascontiguousarray(lin.bias, dtype=np.float32)
    out.update(plan.tensors)
    return out
