"""YOLOv5 .pt checkpoints as numpy: the architecture plan and the arrays in Keras layout. No TensorFlow.

The checkpoint is read by `torch_reader.checkpoint` (no torch, no pickle code run). The model is `ema` when present
and not None, else `model` (as YOLOv5 does). The layer graph comes from the model's own `yaml` dict
(backbone + head rows: from, number, module); each row is checked against the pickled module record of the
same index, which gives the actual sizes, activations, strides, paddings and batch-norm epsilons.

Keras names derive from the module path: module `model.0.conv` -> layer 'model_0_conv', its batch norm
`model.0.bn` -> 'model_0_bn', Detect's output convs `model.24.m.0` -> 'model_24_m_0'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from ..errors import FormatError
from ..torch_reader.pickle_reader import Record
from ..torch_reader.checkpoint import load_torch_checkpoint

__all__ = ["read_yolov5", "read_plan", "YoloV5Plan"]


# ---------------------------------------------------------------------------------------------------------
# The plan: what to build, with the checkpoint's arrays (OIHW, as stored)


@dataclass
class BatchNorm:
    name: str  # keras layer name
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass
class ConvSpec:
    name: str  # keras layer name
    kernel: np.ndarray  # OIHW
    bias: np.ndarray | None
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    bn: BatchNorm | None = None  # folded into this conv, or a separate keras layer after it
    bn_separate: bool = True  # False: bn is a slice of a shared norm (BottleneckCSP), folded only
    act: Any = None  # None, 'silu', 'hardswish', 'relu', 'sigmoid', ('leaky', slope)
    act_name: str = ""

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[0])


@dataclass
class Node:
    """One model layer (yaml row): kind, its 'from', and the parts to build."""

    index: int
    kind: str  # Conv, C3, BottleneckCSP, Bottleneck, SPP, SPPF, Focus, Concat, Upsample, MaxPool, ZeroPad,
    # Detect, Sequential
    source: Any  # -1, an int, or a list of ints
    name: str  # keras name prefix, e.g. 'model_4'
    parts: dict = field(default_factory=dict)


@dataclass
class YoloV5Plan:
    path: str
    nodes: list
    nc: int
    names: list
    strides: list  # per detection level
    anchors: np.ndarray  # (nl, na, 2) in pixels
    max_stride: int
    model_class: str


# ---------------------------------------------------------------------------------------------------------
# Reading the records


class _Ctx:
    def __init__(self, path):
        self.path = path

    def err(self, module_path: str, msg: str) -> FormatError:
        return FormatError(f"{self.path}: module '{module_path}': {msg}")


def _modules(rec: Record) -> dict:
    m = rec.attr("_modules")
    return m if isinstance(m, dict) else {}


def _param(ctx, rec: Record, mpath: str, name: str, required=True):
    for store in ("_parameters", "_buffers"):
        d = rec.attr(store)
        if isinstance(d, dict) and name in d:
            v = d[name]
            if v is None and not required:
                return None
            if not isinstance(v, np.ndarray):
                raise ctx.err(mpath, f"{name}: expected a tensor, got {type(v).__name__}")
            return v
    if required:
        raise ctx.err(mpath, f"has no parameter or buffer '{name}'")
    return None


def _is(rec, name: str, *suffixes: str) -> bool:
    if not isinstance(rec, Record):
        return False
    if rec.cls.name != name:
        return False
    mod = rec.cls.module
    return any(mod == s or mod.endswith("." + s) or mod.startswith(s + ".") for s in suffixes)


_YOLO = ("models.common", "models.yolo", "models.experimental")
_NN = ("torch.nn.modules",)


def _pair(v, mpath, ctx, what):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return tuple(v)
    raise ctx.err(mpath, f"{what}: expected an int or a pair of ints, got {v!r}")


def _act(ctx, rec, mpath):
    """The activation a module record stands for."""
    if rec is None or _is(rec, "Identity", *_NN):
        return None
    n = rec.cls.name if isinstance(rec, Record) else None
    if isinstance(rec, Record) and (rec.cls.module.startswith("torch.nn.modules.") or rec.cls.module.endswith("utils.activations")):
        if n == "SiLU":
            return "silu"
        if n == "Hardswish":
            return "hardswish"
        if n == "LeakyReLU":
            slope = rec.attr("negative_slope", 0.01)
            if not isinstance(slope, (int, float)):
                raise ctx.err(mpath, f"LeakyReLU negative_slope {slope!r}")
            return ("leaky", float(slope))
        if n == "ReLU":
            return "relu"
        if n == "Sigmoid":
            return "sigmoid"
    raise ctx.err(mpath, f"unsupported activation {rec!r}")


def _bn(ctx, rec, mpath, kname) -> BatchNorm:
    if not _is(rec, "BatchNorm2d", *_NN):
        raise ctx.err(mpath, f"expected a BatchNorm2d, found {rec!r}")
    eps = rec.attr("eps")
    if not isinstance(eps, float) or not (0 < eps < 1):
        raise ctx.err(mpath, f"batch-norm eps {eps!r}: expected a float in (0, 1)")
    if rec.attr("affine") is False:
        raise ctx.err(mpath, "batch norm without affine parameters is not supported")
    g = _param(ctx, rec, mpath, "weight")
    b = _param(ctx, rec, mpath, "bias")
    m = _param(ctx, rec, mpath, "running_mean")
    v = _param(ctx, rec, mpath, "running_var")
    n = g.shape
    for what, a in (("bias", b), ("running_mean", m), ("running_var", v)):
        if a.shape != n or a.ndim != 1:
            raise ctx.err(mpath, f"{what} has shape {a.shape}, expected {n}")
    return BatchNorm(kname, g, b, m, v, float(eps))


def _conv2d(ctx, rec, mpath, kname) -> ConvSpec:
    if not _is(rec, "Conv2d", *_NN):
        raise ctx.err(mpath, f"expected a Conv2d, found {rec!r}")
    w = _param(ctx, rec, mpath, "weight")
    b = _param(ctx, rec, mpath, "bias", required=False)
    if w.ndim != 4:
        raise ctx.err(mpath, f"weight of shape {w.shape}, expected 4 dims (OIHW)")
    groups = rec.attr("groups", 1)
    if rec.attr("padding_mode", "zeros") != "zeros":
        raise ctx.err(mpath, f"padding_mode {rec.attr('padding_mode')!r} is not supported (only 'zeros')")
    padding = rec.attr("padding")
    if isinstance(padding, str):
        raise ctx.err(mpath, f"string padding {padding!r} is not supported")
    spec = ConvSpec(
        name=kname, kernel=w, bias=b, stride=_pair(rec.attr("stride"), mpath, ctx, "stride"),
        padding=_pair(padding, mpath, ctx, "padding"), dilation=_pair(rec.attr("dilation", 1), mpath, ctx, "dilation"),
        groups=int(groups),
    )
    ks = rec.attr("kernel_size")
    if ks is not None and _pair(ks, mpath, ctx, "kernel_size") != tuple(w.shape[2:]):
        raise ctx.err(mpath, f"kernel_size {ks} does not match weight shape {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ctx.err(mpath, f"bias of shape {b.shape}, expected ({w.shape[0]},)")
    return spec


def _conv_module(ctx, rec, mpath) -> ConvSpec:
    """models.common.Conv: conv + bn + act."""
    if not _is(rec, "Conv", *_YOLO):
        raise ctx.err(mpath, f"expected a Conv module, found {rec!r}")
    mods = _modules(rec)
    base = mpath.replace(".", "_")
    spec = _conv2d(ctx, mods.get("conv"), mpath + ".conv", base + "_conv")
    if "bn" in mods:
        spec.bn = _bn(ctx, mods["bn"], mpath + ".bn", base + "_bn")
        if spec.bn.gamma.shape[0] != spec.out_channels:
            raise ctx.err(mpath, f"bn has {spec.bn.gamma.shape[0]} channels, conv {spec.out_channels}")
    spec.act = _act(ctx, mods.get("act"), mpath + ".act")
    spec.act_name = base + "_act"
    return spec


def _bottleneck(ctx, rec, mpath) -> dict:
    if not _is(rec, "Bottleneck", *_YOLO):
        raise ctx.err(mpath, f"expected a Bottleneck, found {rec!r}")
    mods = _modules(rec)
    add = rec.attr("add")
    if not isinstance(add, bool):
        raise ctx.err(mpath, f"Bottleneck.add is {add!r}, expected a bool")
    return {"cv1": _conv_module(ctx, mods.get("cv1"), mpath + ".cv1"),
            "cv2": _conv_module(ctx, mods.get("cv2"), mpath + ".cv2"), "add": add,
            "name": mpath.replace(".", "_")}


def _sequence(ctx, rec, mpath, what) -> list:
    if not (_is(rec, "Sequential", *_NN) or _is(rec, "ModuleList", *_NN)):
        raise ctx.err(mpath, f"expected a Sequential of {what}, found {rec!r}")
    mods = _modules(rec)
    keys = list(mods)
    if keys != [str(k) for k in range(len(keys))]:
        raise ctx.err(mpath, f"children {keys[:5]} are not numbered 0..{len(keys) - 1}")
    return [mods[k] for k in keys]


def _maxpool(ctx, rec, mpath):
    if not _is(rec, "MaxPool2d", *_NN):
        raise ctx.err(mpath, f"expected a MaxPool2d, found {rec!r}")
    k = _pair(rec.attr("kernel_size"), mpath, ctx, "kernel_size")
    s = rec.attr("stride")
    s = k if s is None else _pair(s, mpath, ctx, "stride")
    p = _pair(rec.attr("padding", 0), mpath, ctx, "padding")
    if _pair(rec.attr("dilation", 1), mpath, ctx, "dilation") != (1, 1) or rec.attr("ceil_mode", False):
        raise ctx.err(mpath, "MaxPool2d with dilation or ceil_mode is not supported")
    if rec.attr("return_indices", False):
        raise ctx.err(mpath, "MaxPool2d with return_indices is not supported")
    return {"kernel": k, "stride": s, "padding": p, "name": mpath.replace(".", "_")}


def _layer(ctx, rec, mpath, kind, index, source, yaml_n) -> Node:
    name = mpath.replace(".", "_")
    node = Node(index, kind, source, name)
    mods = _modules(rec)
    P = node.parts
    if kind == "Conv":
        P["conv"] = _conv_module(ctx, rec, mpath)
    elif kind == "Focus":
        if not _is(rec, "Focus", *_YOLO):
            raise ctx.err(mpath, f"expected Focus, found {rec!r}")
        P["conv"] = _conv_module(ctx, mods.get("conv"), mpath + ".conv")
    elif kind == "C3":
        if not _is(rec, "C3", *_YOLO):
            raise ctx.err(mpath, f"expected C3, found {rec!r}")
        for k in ("cv1", "cv2", "cv3"):
            P[k] = _conv_module(ctx, mods.get(k), f"{mpath}.{k}")
        P["m"] = [_bottleneck(ctx, r, f"{mpath}.m.{j}") for j, r in enumerate(_sequence(ctx, mods.get("m"), mpath + ".m", "Bottleneck"))]
        _check_depth(ctx, mpath, len(P["m"]), yaml_n)
    elif kind == "Bottleneck":
        P.update(_bottleneck(ctx, rec, mpath))
    elif kind == "BottleneckCSP":
        if not _is(rec, "BottleneckCSP", *_YOLO):
            raise ctx.err(mpath, f"expected BottleneckCSP, found {rec!r}")
        P["cv1"] = _conv_module(ctx, mods.get("cv1"), mpath + ".cv1")
        P["cv4"] = _conv_module(ctx, mods.get("cv4"), mpath + ".cv4")
        cv2 = _conv2d(ctx, mods.get("cv2"), mpath + ".cv2", name + "_cv2")
        cv3 = _conv2d(ctx, mods.get("cv3"), mpath + ".cv3", name + "_cv3")
        bn = _bn(ctx, mods.get("bn"), mpath + ".bn", name + "_bn")
        c3, c2 = cv3.out_channels, cv2.out_channels
        if bn.gamma.shape[0] != c3 + c2:
            raise ctx.err(mpath, f"bn has {bn.gamma.shape[0]} channels, cv3 + cv2 give {c3 + c2}")
        # torch.cat((cv3(...), cv2(x))) then bn: the first c3 channels of bn belong to cv3.
        for conv, sl in ((cv3, slice(0, c3)), (cv2, slice(c3, c3 + c2))):
            conv.bn = BatchNorm("", bn.gamma[sl], bn.beta[sl], bn.mean[sl], bn.var[sl], bn.eps)
            conv.bn_separate = False
        P.update(cv2=cv2, cv3=cv3, bn=bn, act=_act(ctx, mods.get("act"), mpath + ".act"), act_name=name + "_act")
        P["m"] = [_bottleneck(ctx, r, f"{mpath}.m.{j}") for j, r in enumerate(_sequence(ctx, mods.get("m"), mpath + ".m", "Bottleneck"))]
        _check_depth(ctx, mpath, len(P["m"]), yaml_n)
    elif kind in ("SPP", "SPPF"):
        if not _is(rec, kind, *_YOLO):
            raise ctx.err(mpath, f"expected {kind}, found {rec!r}")
        P["cv1"] = _conv_module(ctx, mods.get("cv1"), mpath + ".cv1")
        P["cv2"] = _conv_module(ctx, mods.get("cv2"), mpath + ".cv2")
        if kind == "SPP":
            P["pools"] = [_maxpool(ctx, r, f"{mpath}.m.{j}") for j, r in enumerate(_sequence(ctx, mods.get("m"), mpath + ".m", "MaxPool2d"))]
        else:
            P["pool"] = _maxpool(ctx, mods.get("m"), mpath + ".m")
    elif kind == "Concat":
        if not _is(rec, "Concat", *_YOLO):
            raise ctx.err(mpath, f"expected Concat, found {rec!r}")
        if rec.attr("d") != 1:
            raise ctx.err(mpath, f"Concat along dimension {rec.attr('d')!r}: only 1 (channels) is supported")
    elif kind == "Upsample":
        if not _is(rec, "Upsample", *_NN):
            raise ctx.err(mpath, f"expected Upsample, found {rec!r}")
        if rec.attr("mode") != "nearest" or rec.attr("size") is not None:
            raise ctx.err(mpath, f"Upsample mode {rec.attr('mode')!r} size {rec.attr('size')!r}: only nearest by scale_factor")
        sf = rec.attr("scale_factor")
        sf = (sf, sf) if isinstance(sf, (int, float)) else tuple(sf) if isinstance(sf, (tuple, list)) else None
        if sf is None or len(sf) != 2 or any(float(f) != int(f) or f < 1 for f in sf):
            raise ctx.err(mpath, f"Upsample scale_factor {rec.attr('scale_factor')!r}: only integer factors")
        P["size"] = tuple(int(f) for f in sf)
    elif kind == "MaxPool":
        P["pool"] = _maxpool(ctx, rec, mpath)
    elif kind == "ZeroPad":
        if not _is(rec, "ZeroPad2d", *_NN):
            raise ctx.err(mpath, f"expected ZeroPad2d, found {rec!r}")
        pad = rec.attr("padding")
        if not (isinstance(pad, (tuple, list)) and len(pad) == 4 and all(isinstance(v, int) and v >= 0 for v in pad)):
            raise ctx.err(mpath, f"ZeroPad2d padding {pad!r}: expected (left, right, top, bottom) >= 0")
        P["padding"] = tuple(pad)
    elif kind == "Detect":
        if not _is(rec, "Detect", *_YOLO):
            raise ctx.err(mpath, f"expected Detect, found {rec!r}")
        nl, na, nc, no = (rec.attr(k) for k in ("nl", "na", "nc", "no"))
        if not all(isinstance(v, int) and v > 0 for v in (nl, na, nc, no)) or no != nc + 5:
            raise ctx.err(mpath, f"Detect nl={nl} na={na} nc={nc} no={no}: inconsistent")
        anchors = _param(ctx, rec, mpath, "anchors")
        if anchors.shape != (nl, na, 2):
            raise ctx.err(mpath, f"anchors of shape {anchors.shape}, expected ({nl}, {na}, 2)")
        stride = rec.attr("stride")
        if not isinstance(stride, np.ndarray) or stride.shape != (nl,):
            raise ctx.err(mpath, f"stride {stride!r:.60}: expected a tensor of {nl} strides")
        convs = [_conv2d(ctx, r, f"{mpath}.m.{j}", f"{name}_m_{j}") for j, r in enumerate(_sequence(ctx, mods.get("m"), mpath + ".m", "Conv2d"))]
        if len(convs) != nl or any(c.out_channels != na * no or c.kernel.shape[2:] != (1, 1) for c in convs):
            raise ctx.err(mpath, f"expected {nl} 1x1 convs with {na * no} outputs")
        P.update(convs=convs, nl=nl, na=na, nc=nc, stride=[float(s) for s in stride.astype(np.float32)],
                 anchors=anchors.astype(np.float32))
    else:
        raise ctx.err(mpath, f"module type {kind!r} is not supported")
    return node


def _check_depth(ctx, mpath, n, yaml_n):
    if yaml_n is not None and n != yaml_n:
        raise ctx.err(mpath, f"{n} bottlenecks, but the yaml's depth gives {yaml_n}")


_YAML_KIND = {
    "Conv": "Conv", "C3": "C3", "Bottleneck": "Bottleneck", "BottleneckCSP": "BottleneckCSP", "SPP": "SPP",
    "SPPF": "SPPF", "Focus": "Focus", "Concat": "Concat", "nn.Upsample": "Upsample", "Upsample": "Upsample",
    "nn.MaxPool2d": "MaxPool", "MaxPool2d": "MaxPool", "nn.ZeroPad2d": "ZeroPad", "ZeroPad2d": "ZeroPad",
    "Detect": "Detect",
}
_REPEATED = {"C3", "BottleneckCSP"}  # n is their bottleneck count; other modules repeat as a Sequential


def select_model(ckpt, path) -> Record:
    """`ema` when present and not None, else `model` (YOLOv5's attempt_load)."""
    if isinstance(ckpt, Record):
        return ckpt
    if not isinstance(ckpt, dict):
        raise FormatError(f"{path}: expected a checkpoint dict or a model, found {type(ckpt).__name__}")
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if not isinstance(model, Record):
        raise FormatError(f"{path}: checkpoint has no model: 'ema' and 'model' are {type(model).__name__}")
    return model


def read_plan(path) -> YoloV5Plan:
    path = os.fspath(path)
    ctx = _Ctx(path)
    model = select_model(load_torch_checkpoint(path), path)
    if not (_is(model, "DetectionModel", "models.yolo") or _is(model, "Model", "models.yolo")):
        raise FormatError(f"{path}: model is {model!r}; expected models.yolo.DetectionModel or models.yolo.Model")
    cfg = model.attr("yaml")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise FormatError(f"{path}: the model has no yaml dict with backbone and head rows")
    gd = cfg.get("depth_multiple", 1.0)
    rows = cfg["backbone"] + cfg["head"]
    layers = _sequence(ctx, _modules(model).get("model"), "model", "layers")
    if len(layers) != len(rows):
        raise FormatError(f"{path}: the yaml has {len(rows)} rows, the model {len(layers)} layers")
    nodes = []
    for i, (row, rec) in enumerate(zip(rows, layers)):
        mpath = f"model.{i}"
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ctx.err(mpath, f"yaml row {row!r}: expected [from, number, module, args]")
        f, n, mname, _args = row
        kind = _YAML_KIND.get(mname)
        if kind is None:
            raise ctx.err(mpath, f"yaml module {mname!r} is not supported")
        if isinstance(n, str) or not isinstance(n, int):
            raise ctx.err(mpath, f"yaml number {n!r}")
        n_eff = max(round(n * gd), 1) if n > 1 else n
        rf = rec.attr("f")
        if rf is not None and rf != f:
            raise ctx.err(mpath, f"module 'from' is {rf!r}, the yaml says {f!r}")
        if not (isinstance(f, int) or (isinstance(f, list) and all(isinstance(x, int) for x in f))):
            raise ctx.err(mpath, f"yaml 'from' {f!r}")
        if n_eff > 1 and kind not in _REPEATED:
            children = _sequence(ctx, rec, mpath, mname)
            if len(children) != n_eff:
                raise ctx.err(mpath, f"{len(children)} repeats, the yaml's depth gives {n_eff}")
            sub = [_layer(ctx, c, f"{mpath}.{j}", kind, i, -1, None) for j, c in enumerate(children)]
            node = Node(i, "Sequential", f, mpath.replace(".", "_"), {"nodes": sub})
        else:
            node = _layer(ctx, rec, mpath, kind, i, f, n_eff if kind in _REPEATED else None)
        nodes.append(node)
    det = nodes[-1]
    if det.kind != "Detect":
        raise FormatError(f"{path}: the last layer is {det.kind}, expected Detect")
    stride = det.parts["stride"]
    anchors_px = det.parts["anchors"] * np.asarray(stride, np.float32)[:, None, None]
    names = model.attr("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if names is not None and not (isinstance(names, list) and all(isinstance(x, str) for x in names)):
        raise FormatError(f"{path}: model.names {names!r:.80} is not a list/dict of strings")
    if names is None:
        names = [f"class{k}" for k in range(det.parts["nc"])]
    if len(names) != det.parts["nc"]:
        raise FormatError(f"{path}: {len(names)} class names for nc={det.parts['nc']}")
    return YoloV5Plan(path, nodes, det.parts["nc"], names, stride, anchors_px, int(max(stride)), model.cls.qualname)


# ---------------------------------------------------------------------------------------------------------
# Arrays in Keras layout


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _fold(bn: BatchNorm, conv_bias):
    parts = [bn.gamma, bn.beta, bn.mean, bn.var] + ([conv_bias] if conv_bias is not None else [])
    if len({p.dtype for p in parts}) != 1 or parts[0].dtype not in (np.float16, np.float32):
        parts = [_f32(p) for p in parts]
    return _core.fold_batchnorm(*parts[:4], bn.eps, parts[4] if conv_bias is not None else None)


def conv_arrays(spec: ConvSpec, fold_bn: bool, out: dict) -> None:
    k = spec.kernel
    if k.dtype not in (np.float16, np.float32):
        k = _f32(k)
    if spec.bn is not None and (fold_bn or not spec.bn_separate):
        if not fold_bn:
            # BottleneckCSP's shared norm stays a separate layer when not folding: nothing to fold here.
            out[f"{spec.name}/kernel"] = _core.oihw_to_hwio(k)
            if spec.bias is not None:
                out[f"{spec.name}/bias"] = _f32(spec.bias)
            return
        scale, bias = _fold(spec.bn, spec.bias)
        out[f"{spec.name}/kernel"] = _core.oihw_to_hwio(k, scale)
        out[f"{spec.name}/bias"] = bias
        return
    out[f"{spec.name}/kernel"] = _core.oihw_to_hwio(k)
    if spec.bias is not None:
        out[f"{spec.name}/bias"] = _f32(spec.bias)
    if spec.bn is not None:
        bn_arrays(spec.bn, out)


def bn_arrays(bn: BatchNorm, out: dict) -> None:
    out[f"{bn.name}/gamma"] = _f32(bn.gamma)
    out[f"{bn.name}/beta"] = _f32(bn.beta)
    out[f"{bn.name}/moving_mean"] = _f32(bn.mean)
    out[f"{bn.name}/moving_variance"] = _f32(bn.var)


def _convs_of(node: Node):
    """Every ConvSpec of a node, in build order."""
    P = node.parts
    if node.kind == "Sequential":
        for sub in P["nodes"]:
            yield from _convs_of(sub)
    elif node.kind in ("Conv", "Focus"):
        yield P["conv"]
    elif node.kind == "Bottleneck":
        yield P["cv1"]
        yield P["cv2"]
    elif node.kind == "C3":
        yield P["cv1"]
        for b in P["m"]:
            yield b["cv1"]
            yield b["cv2"]
        yield P["cv2"]
        yield P["cv3"]
    elif node.kind == "BottleneckCSP":
        yield P["cv1"]
        for b in P["m"]:
            yield b["cv1"]
            yield b["cv2"]
        yield P["cv3"]
        yield P["cv2"]
        yield P["cv4"]
    elif node.kind in ("SPP", "SPPF"):
        yield P["cv1"]
        yield P["cv2"]
    elif node.kind == "Detect":
        yield from P["convs"]


def plan_arrays(plan: YoloV5Plan, fold_bn: bool) -> dict:
    out: dict = {}
    for node in plan.nodes:
        for spec in _convs_of(node):
            conv_arrays(spec, fold_bn, out)
        if node.kind == "BottleneckCSP" and not fold_bn:
            bn_arrays(node.parts["bn"], out)
    return out


class ArrayChunks:
    """plan_arrays one conv (with its norm) at a time, for build_streamed; `done(chunk)` drops the file pages
    of the conv's records (a private read-only map: they read back from the file if needed again)."""

    def __init__(self, plan: YoloV5Plan, fold_bn: bool):
        self.plan, self.fold_bn = plan, fold_bn
        self._sources: list = []

    def __iter__(self):
        for node in self.plan.nodes:
            for spec in _convs_of(node):
                out: dict = {}
                conv_arrays(spec, self.fold_bn, out)
                self._sources = [spec.kernel, spec.bias] + ([] if spec.bn is None else
                                                            [spec.bn.gamma, spec.bn.beta, spec.bn.mean, spec.bn.var])
                yield out
            if node.kind == "BottleneckCSP" and not self.fold_bn:
                out = {}
                bn_arrays(node.parts["bn"], out)
                self._sources = []
                yield out

    def done(self, chunk) -> None:
        for a in self._sources:
            if isinstance(a, np.ndarray) and a.nbytes >= 1 << 16 and _in_file_map(a):
                _core.discard_memory(a)
        self._sources = []


def _in_file_map(a: np.ndarray) -> bool:
    """Whether `a` views a read-only file map of the native core (never memory that holds computed data):
    following .base (numpy views, as_strided's wrapper) to an unwriteable array owned by a core capsule."""
    obj = a
    for _ in range(64):
        nxt = getattr(obj, "base", None)
        if nxt is None:
            return False
        if type(nxt).__name__ == "PyCapsule":
            return isinstance(obj, np.ndarray) and not obj.flags.writeable
        obj = nxt
    return False


def read_yolov5(path, fold_bn: bool = True) -> dict:
    """The checkpoint's arrays in Keras layout, keyed '<keras layer name>/<variable>' (float32).

    Conv kernels are HWIO. With fold_bn, each batch norm is folded into its conv's kernel and bias; without,
    the norms are separate ('<name>_bn/gamma', beta, moving_mean, moving_variance) and convs have no bias
    (Detect's output convs always have one).
    """
    return plan_arrays(read_plan(path), fold_bn)
