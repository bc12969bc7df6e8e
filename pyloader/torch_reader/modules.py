"""PyTorch module records (torch.nn Conv2d, BatchNorm2d, activations, MaxPool2d, containers) as specs, and
their arrays in Keras layout. Shared by the .pt families; no TensorFlow, no torch.

A `ConvSpec` is one Conv2d (OIHW kernel as stored, optional bias, stride/padding/dilation/groups) with the
batch norm that follows it and its activation; `conv_arrays` turns it into Keras arrays (HWIO kernel, bias),
folding the norm when asked, all of a checkpoint's convs in one native call (`ConvBatch`, `_core.convs_to_hwio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from ..errors import FormatError
from ..boundary import short_repr
from .records import Record, is_broadcast

__all__ = ["BatchNorm", "ConvSpec", "MaxPool", "Upsample", "ADown", "AConv", "ELAN", "CBLinear", "CBFuse", "Ctx",
           "conv2d", "conv_module", "batchnorm", "activation_of", "model_record", "model_part", "select_model", "yaml_header", "conv_arrays", "ConvBatch",
           "bn_arrays"]


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

    @property
    def in_channels(self) -> int:
        return int(self.kernel.shape[1]) * int(self.groups)


# -- records of the modules several .pt families share (each family's builder dispatches on its records by type)


@dataclass(frozen=True)
class MaxPool:
    """nn.MaxPool2d (`maxpool` gives its fields)."""

    name: str
    kernel: tuple
    stride: tuple
    padding: tuple

    def convs(self):  # no convolution (the YOLOv5 family lists each record's)
        return ()


@dataclass(frozen=True)
class Upsample:
    """nn.Upsample, nearest, by integer factors (height, width)."""

    name: str
    size: tuple

    def convs(self):
        return ()


@dataclass(frozen=True)
class ADown:
    """YOLOv9's ADown: avg_pool2d(2, 1), then halves a, b: cat(cv1(a) (3x3 stride 2), cv2(max_pool2d(b, 3, 2, 1)))."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec


@dataclass(frozen=True)
class AConv:
    """YOLOv9's AConv: avg_pool2d(2, 1), then cv1 (3x3 stride 2)."""

    name: str
    cv1: ConvSpec


@dataclass(frozen=True)
class ELAN:
    """YOLOv9's RepNCSPELAN4 / ELAN1: cv1's output in halves a, b; c = cv2(b), d = cv3(c); cv4(cat(a, b, c, d)). cv2
    and cv3 are sequences of records applied in turn (RepNCSPELAN4: a RepNCSP, then a Conv; ELAN1: one Conv)."""

    name: str
    cv1: ConvSpec
    cv2: tuple | list
    cv3: tuple | list
    cv4: ConvSpec


@dataclass(frozen=True)
class CBLinear:
    """YOLOv9-E's CBLinear: one Conv2d (with bias, no norm, no activation), its outputs split in `splits` channel
    groups."""

    name: str
    conv: ConvSpec
    splits: tuple | list  # ints


@dataclass(frozen=True)
class CBFuse:
    """YOLOv9-E's CBFuse: the sum of the last input and, of each other input (a CBLinear's groups), group idx[i]
    resized (nearest) to the last one's size."""

    name: str
    idx: tuple | list  # ints, one per CBLinear input


class Ctx:
    def __init__(self, path):
        self.path = path

    def err(self, module_path: str, msg: str) -> FormatError:
        return FormatError(f"{self.path}: module '{module_path}': {msg}")


def children(rec: Record) -> dict:
    m = rec.attr("_modules")
    return m if isinstance(m, dict) else {}


def param(ctx, rec: Record, mpath: str, name: str, required=True):
    for store in ("_parameters", "_buffers"):
        d = rec.attr(store)
        if isinstance(d, dict) and name in d:
            v = d[name]
            if v is None and not required:
                return None
            if not isinstance(v, np.ndarray):
                raise ctx.err(mpath, f"{name}: expected a tensor, got {type(v).__name__}")
            if is_broadcast(v):  # would be materialised by the transforms: memory from nothing
                raise ctx.err(mpath, f"{name}: a broadcast tensor (shape {v.shape}, a zero stride); parameters "
                                     "are stored in full")
            return v
    if required:
        raise ctx.err(mpath, f"has no parameter or buffer '{name}'")
    return None


def is_class(rec, name: str, *suffixes: str) -> bool:
    if not isinstance(rec, Record):
        return False
    if rec.cls.name != name:
        return False
    mod = rec.cls.module
    return any(mod == s or mod.endswith("." + s) or mod.startswith(s + ".") for s in suffixes)


NN = ("torch.nn.modules",)
YOLO = ("models.common", "models.yolo", "models.experimental")  # YOLOv5 / YOLOv7 module paths (any prefix)
is_a = is_class


def pair(v, mpath, ctx, what):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return tuple(v)
    raise ctx.err(mpath, f"{what}: expected an int or a pair of ints, got {short_repr(v)}")


def activation_of(ctx, rec, mpath):
    """The activation a module record stands for."""
    if rec is None or is_class(rec, "Identity", *NN):
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
                raise ctx.err(mpath, f"LeakyReLU negative_slope {short_repr(slope)}")
            return ("leaky", float(slope))
        if n == "ReLU":
            return "relu"
        if n == "Sigmoid":
            return "sigmoid"
    raise ctx.err(mpath, f"unsupported activation {short_repr(rec)}")


def batchnorm(ctx, rec, mpath, kname) -> BatchNorm:
    if not is_class(rec, "BatchNorm2d", *NN):
        raise ctx.err(mpath, f"expected a BatchNorm2d, found {short_repr(rec)}")
    eps = rec.attr("eps")
    if not isinstance(eps, float) or not (0 < eps < 1):
        raise ctx.err(mpath, f"batch-norm eps {short_repr(eps)}: expected a float in (0, 1)")
    if rec.attr("affine") is False:
        raise ctx.err(mpath, "batch norm without affine parameters is not supported")
    g = param(ctx, rec, mpath, "weight")
    b = param(ctx, rec, mpath, "bias")
    m = param(ctx, rec, mpath, "running_mean")
    v = param(ctx, rec, mpath, "running_var")
    n = g.shape
    for what, a in (("bias", b), ("running_mean", m), ("running_var", v)):
        if a.shape != n or a.ndim != 1:
            raise ctx.err(mpath, f"{what} has shape {a.shape}, expected {n}")
    return BatchNorm(kname, g, b, m, v, float(eps))


def conv2d(ctx, rec, mpath, kname) -> ConvSpec:
    if not is_class(rec, "Conv2d", *NN):
        raise ctx.err(mpath, f"expected a Conv2d, found {short_repr(rec)}")
    w = param(ctx, rec, mpath, "weight")
    b = param(ctx, rec, mpath, "bias", required=False)
    if w.ndim != 4:
        raise ctx.err(mpath, f"weight of shape {w.shape}, expected 4 dims (OIHW)")
    groups = rec.attr("groups", 1)
    if rec.attr("padding_mode", "zeros") != "zeros":
        raise ctx.err(mpath, f"padding_mode {short_repr(rec.attr('padding_mode'))} is not supported (only 'zeros')")
    padding = rec.attr("padding")
    if isinstance(padding, str):
        raise ctx.err(mpath, f"string padding {short_repr(padding)} is not supported")
    spec = ConvSpec(
        name=kname, kernel=w, bias=b, stride=pair(rec.attr("stride"), mpath, ctx, "stride"),
        padding=pair(padding, mpath, ctx, "padding"), dilation=pair(rec.attr("dilation", 1), mpath, ctx, "dilation"),
        groups=int(groups),
    )
    ks = rec.attr("kernel_size")
    if ks is not None and pair(ks, mpath, ctx, "kernel_size") != tuple(w.shape[2:]):
        raise ctx.err(mpath, f"kernel_size {ks} does not match weight shape {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ctx.err(mpath, f"bias of shape {b.shape}, expected ({w.shape[0]},)")
    return spec


def conv_module(ctx, rec, mpath, cls: str = "Conv") -> ConvSpec:
    """models.common.Conv: conv + bn + act."""
    if not is_class(rec, cls, *YOLO):
        raise ctx.err(mpath, f"expected a Conv module, found {short_repr(rec)}")
    mods = children(rec)
    base = mpath.replace(".", "_")
    spec = conv2d(ctx, mods.get("conv"), mpath + ".conv", base + "_conv")
    if "bn" in mods:
        spec.bn = batchnorm(ctx, mods["bn"], mpath + ".bn", base + "_bn")
        if spec.bn.gamma.shape[0] != spec.out_channels:
            raise ctx.err(mpath, f"bn has {spec.bn.gamma.shape[0]} channels, conv {spec.out_channels}")
    spec.act = activation_of(ctx, mods.get("act"), mpath + ".act")
    spec.act_name = base + "_act"
    return spec


def sequence(ctx, rec, mpath, what) -> list:
    if not (is_class(rec, "Sequential", *NN) or is_class(rec, "ModuleList", *NN)):
        raise ctx.err(mpath, f"expected a Sequential of {what}, found {short_repr(rec)}")
    mods = children(rec)
    keys = list(mods)
    if keys != [str(k) for k in range(len(keys))]:
        raise ctx.err(mpath, f"children {keys[:5]} are not numbered 0..{len(keys) - 1}")
    return [mods[k] for k in keys]


def maxpool(ctx, rec, mpath):
    if not is_class(rec, "MaxPool2d", *NN):
        raise ctx.err(mpath, f"expected a MaxPool2d, found {short_repr(rec)}")
    k = pair(rec.attr("kernel_size"), mpath, ctx, "kernel_size")
    s = rec.attr("stride")
    s = k if s is None else pair(s, mpath, ctx, "stride")
    p = pair(rec.attr("padding", 0), mpath, ctx, "padding")
    if pair(rec.attr("dilation", 1), mpath, ctx, "dilation") != (1, 1) or rec.attr("ceil_mode", False):
        raise ctx.err(mpath, "MaxPool2d with dilation or ceil_mode is not supported")
    if rec.attr("return_indices", False):
        raise ctx.err(mpath, "MaxPool2d with return_indices is not supported")
    return {"kernel": k, "stride": s, "padding": p, "name": mpath.replace(".", "_")}


def yaml_header(cfg, path) -> tuple:
    """(depth_multiple, width_multiple, nc) of a model's yaml dict, checked: backbone and head lists of rows, positive
    multiples (1.0 where absent), nc a positive int (YOLOv7's and YOLOv9's yaml)."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise FormatError(f"{path}: the model has no yaml dict with backbone and head rows")
    gd, gw = cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0)
    if not all(isinstance(v, (int, float)) and v > 0 for v in (gd, gw)):
        raise FormatError(f"{path}: yaml depth_multiple {short_repr(gd)} / width_multiple {short_repr(gw)}")
    nc = cfg.get("nc")
    if isinstance(nc, bool) or not isinstance(nc, int) or nc <= 0:
        raise FormatError(f"{path}: yaml nc {short_repr(nc)}")
    return gd, gw, nc


def class_names(model: Record, nc: int, path) -> list:
    """The model's `names` (a list, or a dict by class id, as YOLOv5, YOLOv7 and Ultralytics store them) as a list of
    nc strings; class0, class1, ... when it has none."""
    names = model.attr("names")
    if isinstance(names, dict):
        if not all(isinstance(k, int) for k in names):
            raise FormatError(f"{path}: model.names keys must be class ids")
        names = [names[k] for k in sorted(names)]
    if names is not None and not (isinstance(names, list) and all(isinstance(x, str) for x in names)):
        raise FormatError(f"{path}: model.names {short_repr(names)} is not a list/dict of strings")
    if names is None:
        names = [f"class{k}" for k in range(nc)]
    if len(names) != nc:
        raise FormatError(f"{path}: {len(names)} class names for nc={nc}")
    return names


def model_record(ckpt):
    """The checkpoint's model record: the checkpoint itself when it is one, else `ema` when present and not None,
    else `model` (YOLOv5's attempt_load); None when that is not a record. The one rule for which model is read
    (the families) and which tensors are read at all (pyloader.registry)."""
    if isinstance(ckpt, Record):
        return ckpt
    if not isinstance(ckpt, dict):
        return None
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    return model if isinstance(model, Record) else None


def model_part(ckpt):
    """The part of a checkpoint whose tensors are read (load_torch_checkpoint's `used`): its model record, else all
    of it (a state_dict)."""
    return model_record(ckpt) or ckpt


def select_model(ckpt, path) -> Record:
    """model_record, or a FormatError saying what the checkpoint holds instead."""
    model = model_record(ckpt)
    if model is not None:
        return model
    if not isinstance(ckpt, dict):
        raise FormatError(f"{path}: expected a checkpoint dict or a model, found {type(ckpt).__name__}")
    found = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    raise FormatError(f"{path}: checkpoint has no model: 'ema' and 'model' are {type(found).__name__}")


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


_FLOATS = (np.float16, np.float32)


class ConvBatch:
    """Convolutions whose Keras arrays one native call makes (`_core.convs_to_hwio`: one pass over all of them,
    one thread start and one output arena for a checkpoint's hundreds of kernels): `add` puts a conv's keys into
    `out` in order (and a separate norm's arrays), `run` fills them."""

    __slots__ = ("out", "jobs", "names")

    def __init__(self, out: dict):
        self.out, self.jobs, self.names = out, [], []

    def add(self, spec: ConvSpec, fold_bn: bool) -> None:
        k = spec.kernel if spec.kernel.dtype in _FLOATS else _f32(spec.kernel)
        folded = spec.bn is not None and (fold_bn or not spec.bn_separate)  # BottleneckCSP's shared norm: never separate
        norm, bias = None, spec.bias
        if folded and fold_bn:
            bn = spec.bn
            parts = [bn.gamma, bn.beta, bn.mean, bn.var] + ([bias] if bias is not None else [])
            if len({p.dtype for p in parts}) != 1 or parts[0].dtype not in _FLOATS:
                parts = [_f32(p) for p in parts]
            norm, bias = (*parts[:4], bn.eps), (parts[4] if bias is not None else None)
        elif bias is not None and bias.dtype not in _FLOATS:
            bias = _f32(bias)
        self.out[f"{spec.name}/kernel"] = None
        if norm is not None or bias is not None:
            self.out[f"{spec.name}/bias"] = None
        self.jobs.append((k, norm, bias))
        self.names.append(spec.name)
        if spec.bn is not None and not folded:
            bn_arrays(spec.bn, self.out)

    def run(self) -> None:
        for name, (kernel, bias) in zip(self.names, _core.convs_to_hwio(self.jobs)):
            self.out[f"{name}/kernel"] = kernel
            if bias is not None:
                self.out[f"{name}/bias"] = bias
        self.jobs, self.names = [], []


def conv_arrays(spec: ConvSpec, fold_bn: bool, out: dict) -> None:
    """One conv's arrays into `out` now (a family with many convs adds them to one ConvBatch instead)."""
    batch = ConvBatch(out)
    batch.add(spec, fold_bn)
    batch.run()


def bn_arrays(bn: BatchNorm, out: dict) -> None:
    out[f"{bn.name}/gamma"] = _f32(bn.gamma)
    out[f"{bn.name}/beta"] = _f32(bn.beta)
    out[f"{bn.name}/moving_mean"] = _f32(bn.mean)
    out[f"{bn.name}/moving_variance"] = _f32(bn.var)
