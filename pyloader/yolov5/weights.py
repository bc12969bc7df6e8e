"""YOLOv5 .pt checkpoints as numpy: the architecture plan and the arrays in Keras layout. No TensorFlow.

Detection (models.yolo.DetectionModel / Model: Detect), segmentation (SegmentationModel: Segment, Detect with mask
coefficients and Proto) and classification (ClassificationModel: a cut detection backbone ending in Classify; it
holds no yaml: its layers are read by their own classes and 'from' columns).

The checkpoint is read by `torch_reader.checkpoint` (no torch, no pickle code run). The model is `ema` when present
and not None, else `model` (as YOLOv5 does). The layer graph comes from the model's own `yaml` dict
(backbone + head rows: from, number, module); each row is checked against the pickled module record of the
same index, which gives the actual sizes, activations, strides, paddings and batch-norm epsilons.

Keras names derive from the module path: module `model.0.conv` -> layer 'model_0_conv', its batch norm
`model.0.bn` -> 'model_0_bn', Detect's output convs `model.24.m.0` -> 'model_24_m_0'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError
from ..torch_reader import state_dict as sd
from ..torch_reader.checkpoint import load_torch_checkpoint
from ..torch_reader.records import Record
from ..torch_reader.modules import (
    NN as _NN, YOLO as _YOLO, BatchNorm, ConvSpec, Ctx as _Ctx, activation_of as _act, batchnorm as _bn,
    ConvBatch, bn_arrays, children as _modules, conv2d as _conv2d, conv_arrays, conv_module as _conv_module,
    is_a as _is,
    class_names, maxpool as _maxpool, param as _param, select_model, sequence as _sequence,
)

from .blocks import (
    C3, SPP, SPPF, Bottleneck, BottleneckCSP, Classify, Concat, Conv, Detect, Focus, MaxPool, Node, Proto, Segment,
    Sequential, Upsample, ZeroPad,
)

__all__ = ["read_plan", "YoloV5Plan"]


# ---------------------------------------------------------------------------------------------------------
# The plan: what to build (blocks.py's records), with the checkpoint's arrays (OIHW, as stored)


@dataclass
class YoloV5Plan:
    path: str
    nodes: list  # blocks.Node, one per yaml row
    nc: int
    names: list
    strides: list  # per detection level
    anchors: np.ndarray  # (nl, na, 2) in pixels
    max_stride: int
    model_class: str
    task: str = "detect"  # "detect", "segment" or "classify"


# ---------------------------------------------------------------------------------------------------------
# Reading the records: one reader per record type, (ctx, module record, module path, yaml depth) -> record


def _name(mpath: str) -> str:
    return mpath.replace(".", "_")


def _check(ctx, rec, mpath, cls: str, what=None, modules=_YOLO):
    if not _is(rec, cls, *modules):
        raise ctx.err(mpath, f"expected {what or cls}, found {short_repr(rec)}")
    return _modules(rec)


def _conv_of(ctx, mods, mpath, key) -> ConvSpec:
    return _conv_module(ctx, mods.get(key), f"{mpath}.{key}")


def _bottleneck(ctx, rec, mpath, n=None) -> Bottleneck:
    mods = _check(ctx, rec, mpath, "Bottleneck", "a Bottleneck")
    add = rec.attr("add")
    if not isinstance(add, bool):
        raise ctx.err(mpath, f"Bottleneck.add is {short_repr(add)}, expected a bool")
    return Bottleneck(_name(mpath), _conv_of(ctx, mods, mpath, "cv1"), _conv_of(ctx, mods, mpath, "cv2"), add)


def _bottlenecks(ctx, mods, mpath, n) -> tuple:
    m = tuple(_bottleneck(ctx, r, f"{mpath}.m.{j}")
              for j, r in enumerate(_sequence(ctx, mods.get("m"), mpath + ".m", "Bottleneck")))
    if len(m) != n:
        raise ctx.err(mpath, f"{len(m)} bottlenecks, but the yaml's depth gives {n}")
    return m


def _conv(ctx, rec, mpath, n) -> Conv:
    return Conv(_name(mpath), _conv_module(ctx, rec, mpath))


def _focus(ctx, rec, mpath, n) -> Focus:
    mods = _check(ctx, rec, mpath, "Focus")
    return Focus(_name(mpath), _conv_of(ctx, mods, mpath, "conv"))


def _c3(ctx, rec, mpath, n) -> C3:
    mods = _check(ctx, rec, mpath, "C3")
    cv1, cv2, cv3 = (_conv_of(ctx, mods, mpath, k) for k in ("cv1", "cv2", "cv3"))
    return C3(_name(mpath), cv1, cv2, cv3, _bottlenecks(ctx, mods, mpath, n))


def _bottleneck_csp(ctx, rec, mpath, n) -> BottleneckCSP:
    mods = _check(ctx, rec, mpath, "BottleneckCSP")
    name = _name(mpath)
    cv1, cv4 = _conv_of(ctx, mods, mpath, "cv1"), _conv_of(ctx, mods, mpath, "cv4")
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
    act = _act(ctx, mods.get("act"), mpath + ".act")
    return BottleneckCSP(name, cv1, cv2, cv3, cv4, bn, act, name + "_act", _bottlenecks(ctx, mods, mpath, n))


def _pool(ctx, rec, mpath, n=None) -> MaxPool:
    return MaxPool(**_maxpool(ctx, rec, mpath))


def _spp(ctx, rec, mpath, n) -> SPP:
    mods = _check(ctx, rec, mpath, "SPP")
    cv1, cv2 = _conv_of(ctx, mods, mpath, "cv1"), _conv_of(ctx, mods, mpath, "cv2")
    pools = _sequence(ctx, mods.get("m"), mpath + ".m", "MaxPool2d")
    return SPP(_name(mpath), cv1, cv2, tuple(_pool(ctx, r, f"{mpath}.m.{j}") for j, r in enumerate(pools)))


def _sppf(ctx, rec, mpath, n) -> SPPF:
    mods = _check(ctx, rec, mpath, "SPPF")
    cv1, cv2 = _conv_of(ctx, mods, mpath, "cv1"), _conv_of(ctx, mods, mpath, "cv2")
    return SPPF(_name(mpath), cv1, cv2, _pool(ctx, mods.get("m"), mpath + ".m"))


def _concat(ctx, rec, mpath, n) -> Concat:
    _check(ctx, rec, mpath, "Concat")
    if rec.attr("d") != 1:
        raise ctx.err(mpath, f"Concat along dimension {short_repr(rec.attr('d'))}: only 1 (channels) is supported")
    return Concat(_name(mpath))


def _upsample(ctx, rec, mpath, n) -> Upsample:
    _check(ctx, rec, mpath, "Upsample", modules=_NN)
    if rec.attr("mode") != "nearest" or rec.attr("size") is not None:
        raise ctx.err(mpath, f"Upsample mode {short_repr(rec.attr('mode'))} size {short_repr(rec.attr('size'))}: only nearest by scale_factor")
    sf = rec.attr("scale_factor")
    sf = (sf, sf) if isinstance(sf, (int, float)) else tuple(sf) if isinstance(sf, (tuple, list)) else None
    if sf is None or len(sf) != 2 or any(float(f) != int(f) or f < 1 for f in sf):
        raise ctx.err(mpath, f"Upsample scale_factor {short_repr(rec.attr('scale_factor'))}: only integer factors")
    return Upsample(_name(mpath), tuple(int(f) for f in sf))


def _zero_pad(ctx, rec, mpath, n) -> ZeroPad:
    _check(ctx, rec, mpath, "ZeroPad2d", modules=_NN)
    pad = rec.attr("padding")
    if not (isinstance(pad, (tuple, list)) and len(pad) == 4 and all(isinstance(v, int) and v >= 0 for v in pad)):
        raise ctx.err(mpath, f"ZeroPad2d padding {short_repr(pad)}: expected (left, right, top, bottom) >= 0")
    return ZeroPad(_name(mpath), tuple(pad))


def _detect(ctx, rec, mpath, n, cls="Detect", nm=0) -> Detect:
    mods = _check(ctx, rec, mpath, cls)
    name = _name(mpath)
    nl, na, nc, no = (rec.attr(k) for k in ("nl", "na", "nc", "no"))
    if not all(isinstance(v, int) and v > 0 for v in (nl, na, nc, no)) or no != nc + 5 + nm:
        extra = f" nm={nm}" if cls != "Detect" else ""
        raise ctx.err(mpath, f"{cls} nl={nl} na={na} nc={nc} no={no}{extra}: inconsistent")
    anchors = _param(ctx, rec, mpath, "anchors")
    if anchors.shape != (nl, na, 2):
        raise ctx.err(mpath, f"anchors of shape {anchors.shape}, expected ({nl}, {na}, 2)")
    stride = rec.attr("stride")
    if not isinstance(stride, np.ndarray) or stride.shape != (nl,):
        raise ctx.err(mpath, f"stride {short_repr(stride)}: expected a tensor of {nl} strides")
    convs = [_conv2d(ctx, r, f"{mpath}.m.{j}", f"{name}_m_{j}") for j, r in enumerate(_sequence(ctx, mods.get("m"), mpath + ".m", "Conv2d"))]
    if len(convs) != nl or any(c.out_channels != na * no or c.kernel.shape[2:] != (1, 1) for c in convs):
        raise ctx.err(mpath, f"expected {nl} 1x1 convs with {na * no} outputs")
    return Detect(name, tuple(convs), nl, na, nc, [float(s) for s in stride.astype(np.float32)],
                  anchors.astype(np.float32))


def _segment(ctx, rec, mpath, n) -> Segment:
    """Detect with nm mask coefficients after each anchor's 5 + nc values, and Proto on level 0's input."""
    nm, npr = rec.attr("nm"), rec.attr("npr")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (nm, npr)):
        raise ctx.err(mpath, f"Segment nm={short_repr(nm)} npr={short_repr(npr)}: expected positive ints")
    det = _detect(ctx, rec, mpath, n, "Segment", nm)
    p = mpath + ".proto"
    mods = _check(ctx, _modules(rec).get("proto"), p, "Proto")
    cv1, cv2, cv3 = (_conv_of(ctx, mods, p, k) for k in ("cv1", "cv2", "cv3"))
    up = _upsample(ctx, mods.get("upsample"), p + ".upsample", None)
    chans = (cv1.in_channels, cv1.out_channels, cv2.in_channels, cv2.out_channels, cv3.in_channels, cv3.out_channels)
    want = (det.m[0].in_channels, npr, npr, npr, npr, nm)
    if chans != want:
        raise ctx.err(p, f"channels cv1 in/out, cv2 in/out, cv3 in/out: expected {want} (level 0's input, npr={npr}, "
                         f"nm={nm}), the weights have {chans}")
    return Segment(**vars(det), nm=nm, proto=Proto(_name(p), cv1, cv2, cv3, up.size))


def _classify(ctx, rec, mpath, n) -> Classify:
    """Classify: conv, AdaptiveAvgPool2d(1), Dropout, Linear (with bias) on the conv's outputs."""
    mods = _check(ctx, rec, mpath, "Classify")
    pool, lin = mods.get("pool"), mods.get("linear")
    if not _is(pool, "AdaptiveAvgPool2d", *_NN) or pool.attr("output_size") not in (1, (1, 1), [1, 1]):
        raise ctx.err(mpath + ".pool", f"expected AdaptiveAvgPool2d(1), found {short_repr(pool)}")
    if not _is(mods.get("drop"), "Dropout", *_NN):
        raise ctx.err(mpath + ".drop", f"expected a Dropout, found {short_repr(mods.get('drop'))}")
    conv = _conv_of(ctx, mods, mpath, "conv")
    _check(ctx, lin, mpath + ".linear", "Linear", "a Linear", _NN)
    w, b = _param(ctx, lin, mpath + ".linear", "weight"), _param(ctx, lin, mpath + ".linear", "bias", required=False)
    if w.ndim != 2 or w.shape[1] != conv.out_channels or b is None or b.shape != (w.shape[0],):
        raise ctx.err(mpath + ".linear", f"weight {w.shape}, bias {None if b is None else b.shape}: expected "
                                         f"(classes, {conv.out_channels}) (the conv's outputs) and (classes,)")
    linear = ConvSpec(_name(mpath) + "_linear", w.reshape(*w.shape, 1, 1), b, (1, 1), (0, 0), (1, 1), 1)
    return Classify(_name(mpath), conv, linear)


_READERS = {
    Conv: _conv, Focus: _focus, C3: _c3, Bottleneck: _bottleneck, BottleneckCSP: _bottleneck_csp, SPP: _spp,
    SPPF: _sppf, Concat: _concat, Upsample: _upsample, MaxPool: _pool, ZeroPad: _zero_pad, Detect: _detect,
    Segment: _segment, Classify: _classify,
}
_YAML_KIND = {
    "Conv": Conv, "C3": C3, "Bottleneck": Bottleneck, "BottleneckCSP": BottleneckCSP, "SPP": SPP, "SPPF": SPPF,
    "Focus": Focus, "Concat": Concat, "nn.Upsample": Upsample, "Upsample": Upsample, "nn.MaxPool2d": MaxPool,
    "MaxPool2d": MaxPool, "nn.ZeroPad2d": ZeroPad, "ZeroPad2d": ZeroPad, "Detect": Detect,
    "Segment": Segment, "Classify": Classify,
}
_TASKS = {"Model": "detect", "DetectionModel": "detect", "SegmentationModel": "segment", "ClassificationModel": "classify"}
_HEADS = {"detect": Detect, "segment": Segment, "classify": Classify}
_REPEATED = (C3, BottleneckCSP)  # n is their bottleneck count; other modules repeat as a Sequential


def read_plan(path, ckpt=None) -> YoloV5Plan:
    """The plan of a YOLOv5 checkpoint (`ckpt`: the already-unpickled checkpoint, to read the file once)."""
    path = os.fspath(path)
    model = select_model(load_torch_checkpoint(path) if ckpt is None else ckpt, path)
    return plan_from_model(model, path)


def plan_from_model(model, path) -> YoloV5Plan:
    """The plan of a YOLOv5 model record (pickled, or built from a yaml and a state_dict)."""
    ctx = _Ctx(path)
    task = next((t for c, t in _TASKS.items() if _is(model, c, "models.yolo")), None)
    if task is None:
        raise FormatError(f"{path}: model is {short_repr(model)}; expected models.yolo.DetectionModel (or Model), "
                          "SegmentationModel or ClassificationModel")
    yaml = None if task == "classify" else _yaml_rows(model, path)  # the yaml's types before any module is read
    layers = _sequence(ctx, _modules(model).get("model"), "model", "layers")
    nodes = _layer_nodes(ctx, layers) if yaml is None else _yaml_nodes(ctx, *yaml, layers, path)
    head, want = nodes[-1].block, _HEADS[task]
    if type(head) is not want or any(isinstance(n.block, (Detect, Classify)) for n in nodes[:-1]):
        raise FormatError(f"{path}: the last layer is {nodes[-1].kind}, expected {want.__name__} ({model.cls.name}), "
                          "and only there")
    names = class_names(model, head.nc, path)
    if task == "classify":  # any input size (the pool takes the whole map): max stride 1
        return YoloV5Plan(path, nodes, head.nc, names, [], np.zeros((0, 0, 2), np.float32), 1, model.cls.qualname, task)
    stride = head.stride
    anchors_px = head.anchors * np.asarray(stride, np.float32)[:, None, None]
    return YoloV5Plan(path, nodes, head.nc, names, stride, anchors_px, int(max(stride)), model.cls.qualname, task)


def _from(ctx, mpath, f, i):
    """A layer's 'from': -1 (the layer before, or the input for layer 0), an earlier layer's index, or a list."""
    srcs = [f] if isinstance(f, int) and not isinstance(f, bool) else f
    if not (isinstance(srcs, list) and srcs and all(isinstance(x, int) and not isinstance(x, bool) for x in srcs)
            and (srcs == [-1] if i == 0 else all(-i <= x < i for x in srcs))):
        raise ctx.err(mpath, f"'from' {short_repr(f)}: expected -1, or earlier layers' indices")
    return f


def _yaml_rows(model, path) -> list:
    """The model's yaml rows (backbone + head) and its depth_multiple, checked."""
    cfg = model.attr("yaml")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise FormatError(f"{path}: the model has no yaml dict with backbone and head rows")
    gd = cfg.get("depth_multiple", 1.0)
    # Types before use: `n * gd` with a string multiplier would be string repetition (memory from nothing).
    if isinstance(gd, bool) or not isinstance(gd, (int, float)) or not 0 < gd <= 100:
        raise FormatError(f"{path}: yaml depth_multiple {short_repr(gd)}: expected a number in (0, 100]")
    return cfg["backbone"] + cfg["head"], gd


def _yaml_nodes(ctx, rows, gd, layers, path) -> list:
    """Each yaml row read from the module record of the same index."""
    if len(layers) != len(rows):
        raise FormatError(f"{path}: the yaml has {len(rows)} rows, the model {len(layers)} layers")
    nodes = []
    for i, (row, rec) in enumerate(zip(rows, layers)):
        mpath = f"model.{i}"
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ctx.err(mpath, f"yaml row {short_repr(row)}: expected [from, number, module, args]")
        f, n, mname, _args = row
        kind = _YAML_KIND.get(mname) if isinstance(mname, str) else None
        if kind is None:
            raise ctx.err(mpath, f"yaml module {short_repr(mname)} is not supported")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 1000:
            raise ctx.err(mpath, f"yaml number {short_repr(n)}: expected an int in [0, 1000]")
        n_eff = max(round(n * gd), 1) if n > 1 else n
        _from(ctx, mpath, f, i)
        rf = rec.attr("f")
        if rf is not None and rf != f:
            raise ctx.err(mpath, f"module 'from' is {short_repr(rf)}, the yaml says {short_repr(f)}")
        if n_eff > 1 and kind not in _REPEATED:
            children = _sequence(ctx, rec, mpath, mname)
            if len(children) != n_eff:
                raise ctx.err(mpath, f"{len(children)} repeats, the yaml's depth gives {n_eff}")
            read = _READERS[kind]
            block = Sequential(_name(mpath), tuple(read(ctx, c, f"{mpath}.{j}", None) for j, c in enumerate(children)))
        else:
            block = _READERS[kind](ctx, rec, mpath, n_eff if kind in _REPEATED else None)
        nodes.append(Node(i, f, block))
    return nodes


def _layer_nodes(ctx, layers) -> list:
    """A ClassificationModel's layers (YOLOv5's classify/train.py cuts a DetectionModel and keeps no yaml): each read
    by its own class (an nn.Sequential: a row repeated), wired by its 'from' attribute; C3 / BottleneckCSP by their
    bottleneck count."""
    nodes = []
    for i, rec in enumerate(layers):
        mpath = f"model.{i}"
        if rec.attr("i") not in (None, i):
            raise ctx.err(mpath, f"the module says it is layer {short_repr(rec.attr('i'))}")
        repeated = _is(rec, "Sequential", *_NN)
        items = _sequence(ctx, rec, mpath, "repeats") if repeated else [rec]
        kinds = {_YAML_KIND.get(r.cls.name) if isinstance(r, Record) else None for r in items}
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind is None or (repeated and kind in _REPEATED + (Classify,)):
            raise ctx.err(mpath, f"{short_repr(rec)} is not a module YOLOv5 reads here")
        f = _from(ctx, mpath, rec.attr("f"), i)

        def read(r, p):
            n = len(_sequence(ctx, _modules(r).get("m"), p + ".m", "Bottleneck")) if kind in _REPEATED else None
            return _READERS[kind](ctx, r, p, n)

        block = (Sequential(_name(mpath), tuple(read(r, f"{mpath}.{j}") for j, r in enumerate(items))) if repeated
                 else read(rec, mpath))
        nodes.append(Node(i, f, block))
    return nodes


# ---------------------------------------------------------------------------------------------------------
# Arrays in Keras layout


def plan_arrays(plan: YoloV5Plan, fold_bn: bool) -> dict:
    out: dict = {}
    convs = ConvBatch(out)  # every conv in one native call
    for node in plan.nodes:
        for spec in node.block.convs():
            convs.add(spec, fold_bn)
        if isinstance(node.block, BottleneckCSP) and not fold_bn:
            bn_arrays(node.block.bn, out)
    convs.run()
    return out


class ArrayChunks:
    """plan_arrays one conv (with its norm) at a time, for build_streamed."""

    def __init__(self, plan: YoloV5Plan, fold_bn: bool):
        self.plan, self.fold_bn = plan, fold_bn

    def __iter__(self):
        for node in self.plan.nodes:
            for spec in node.block.convs():
                out: dict = {}
                conv_arrays(spec, self.fold_bn, out)
                yield out
            if isinstance(node.block, BottleneckCSP) and not self.fold_bn:
                out = {}
                bn_arrays(node.block.bn, out)
                yield out


# ---------------------------------------------------------------------------------------------------------
# Plain state_dicts: the yaml gives the modules, the state_dict their tensors

_BN_EPS = 1e-3  # YOLOv5's initialize_weights sets every BatchNorm2d's eps to 1e-3


def _sd_conv(t, k, s, p, g, act, path) -> Record:
    return sd.common_conv(t, k, s, p, g, act, path, _BN_EPS)


def _sd_inner(t, name, act, path, s=1, g=1) -> Record:
    k = int(t.sub(name).sub("conv").tensor("weight").shape[-1])
    return _sd_conv(t.sub(name), k, s, None, g, act, path)


def _sd_row(t, i, row, cfg, path, act, strides) -> Record:
    f, n, mname, args = row
    kind = _YAML_KIND.get(mname)
    a = lambda j, d: args[j] if len(args) > j and args[j] not in (None, "None") else d  # noqa: E731
    common = "models.common"
    src = strides[f if isinstance(f, int) else f[0]] if i else 1
    if kind in (Conv, Focus):
        k, s = a(1, 1), a(2, 1)
        strides.append(src * s * (2 if kind is Focus else 1))
        if kind is Focus:
            return sd.record(common, "Focus", {"conv": _sd_conv(t.sub("conv"), k, s, a(3, None), a(4, 1), act, path)})
        return _sd_conv(t, k, s, a(3, None), a(4, 1), act, path)
    strides.append(src)
    if kind is C3:
        depth = max(round(n * cfg.get("depth_multiple", 1.0)), 1) if n > 1 else n
        shortcut = a(1, True)
        m = [sd.record(common, "Bottleneck", {"cv1": _sd_inner(t.sub("m").sub(str(j)), "cv1", act, path),
                                              "cv2": _sd_inner(t.sub("m").sub(str(j)), "cv2", act, path)},
                       add=bool(shortcut)) for j in range(depth)]
        kids = {k: _sd_inner(t, k, act, path) for k in ("cv1", "cv2", "cv3")}
        kids["m"] = sd.sequential(m)
        return sd.record(common, "C3", kids)
    if kind in (SPPF, SPP):
        kids = {k: _sd_inner(t, k, act, path) for k in ("cv1", "cv2")}
        if kind is SPPF:
            k = a(1, 5)
            kids["m"] = sd.maxpool(k, 1, k // 2)
        else:
            kids["m"] = sd.sequential([sd.maxpool(k, 1, k // 2) for k in a(1, (5, 9, 13))], "ModuleList")
        return sd.record(common, kind.__name__, kids)
    if kind is Concat:
        return sd.record(common, "Concat", d=a(0, 1))
    if kind is Upsample:
        sf = a(1, None)
        strides[-1] = src / sf if isinstance(sf, (int, float)) and sf > 0 else src
        return sd.record("torch.nn.modules.upsampling", "Upsample", size=a(0, None), scale_factor=sf,
                         mode=a(2, "nearest"))
    if kind is Detect:
        anchors = t.tensor("anchors")
        if anchors.ndim != 3 or anchors.shape[2] != 2:
            raise FormatError(f"{path}: module 'model.{i}': anchors of shape {anchors.shape}, expected (nl, na, 2)")
        nl, na = int(anchors.shape[0]), int(anchors.shape[1])
        nc = cfg.get("nc")
        stride = np.asarray([strides[j] for j in f], np.float32) if isinstance(f, list) else None
        convs = [sd.conv2d(t.sub("m").sub(str(j)), 1, 0) for j in range(nl)]
        return sd.record("models.yolo", "Detect", {"m": sd.sequential(convs, "ModuleList")},
                         buffers={"anchors": anchors}, nl=nl, na=na, nc=nc,
                         no=nc + 5 if isinstance(nc, int) else None, stride=stride)
    raise FormatError(f"{path}: module 'model.{i}': yaml module {short_repr(mname)} is not supported for state_dicts "
                      f"(Conv, Focus, C3, SPP, SPPF, Concat, nn.Upsample, Detect)")


def plan_from_state_dict(state: dict, cfg: dict, path: str) -> YoloV5Plan:
    """The plan of a YOLOv5 state_dict (`torch.save(model.state_dict())`) with the model's yaml dict."""
    tree = sd.Tensors(sd.module_tree(state), "", path)
    model_t = tree.sub("model")
    act = cfg.get("activation", True)
    layers, strides = [], []
    for i, row in enumerate(sd.yaml_rows(cfg)):
        if not (isinstance(row, (list, tuple)) and len(row) == 4 and isinstance(row[3], list)
                and isinstance(row[1], int)):
            raise FormatError(f"{path}: module 'model.{i}': yaml row {short_repr(row)}: expected [from, number, module, args]")
        if row[1] > 1 and row[2] != "C3":
            raise FormatError(f"{path}: module 'model.{i}': repeated {row[2]} rows are not supported for state_dicts")
        t = model_t.sub(str(i)) if model_t.has(str(i)) else sd.Tensors({}, f"model.{i}", path)
        layers.append(_sd_row(t, i, row, cfg, path, act, strides))
    names = cfg.get("names")
    model = sd.record("models.yolo", "DetectionModel", {"model": sd.sequential(layers)}, yaml=cfg,
                      names=list(names) if isinstance(names, (list, tuple)) else names)
    return plan_from_model(model, path)
