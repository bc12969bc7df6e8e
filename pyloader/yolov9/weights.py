"""WongKinYiu's YOLOv9 .pt checkpoints (github.com/WongKinYiu/yolov9; PyPI `yolo9`) as numpy: the plan and the
arrays in Keras layout.

No TensorFlow, no torch. The checkpoint is read by `torch_reader.checkpoint` (no pickle code runs); the model is
`ema` when present and not None, else `model` (torch_reader.modules.model_record). The layer graph comes from the
model's own `yaml` (backbone + head rows: from, number, module, args), each row checked against the pickled module
of the same index as parse_model builds it: every convolution's shape, stride, padding and groups must be what the
row (and the channels flowing into it) give, else a FormatError names the module path, expected and actual.

Modules: Conv, Silence, Concat, nn.Upsample, RepNCSPELAN4 (RepNCSP, RepNBottleneck, RepConvN in its training or
fused form), ELAN1, ADown, AConv, SPPELAN, CBLinear, CBFuse; heads Detect, DDetect, DualDetect, DualDDetect,
TripleDetect, TripleDDetect (anchor-free, DFL). Rows that only feed a branch the eval forward does not return
(TripleDDetect's first two) are left out.

Keras names derive from the module path: `model.3.cv1.conv` -> 'model_3_cv1_conv'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError
from ..torch_reader.modules import (
    NN, YOLO, ConvBatch, ConvSpec, Ctx, activation_of, children, class_names, conv2d, conv_module, is_a, maxpool,
    param, sequence, yaml_header,
)
from ..torch_reader.records import Record
from .blocks import (ADown, AConv, Bottleneck, Branch, CBFuse, CBLinear, CSP, ELAN, Head, MaxPool, Named, Node, RepConvN,
                     SPPELAN, Upsample)

__all__ = ["YoloV9Plan", "is_yolov9_model", "plan_from_model", "plan_arrays", "HEADS"]

# head -> (branches, the branches its eval forward returns, grouped box convolutions: the "D" heads)
HEADS = {"Detect": (1, (0,), False), "DDetect": (1, (0,), True), "DualDetect": (2, (0, 1), False),
         "DualDDetect": (2, (0, 1), True), "TripleDetect": (3, (0, 1, 2), False), "TripleDDetect": (3, (2,), True)}
# yaml modules only YOLOv9's yamls use (YOLOv5 / YOLOv7 share Conv, Concat, nn.Upsample and Detect)
YOLOV9_MODULES = frozenset({"RepNCSPELAN4", "ELAN1", "ADown", "AConv", "SPPELAN", "CBLinear", "CBFuse", "Silence",
                            *(h for h in HEADS if h != "Detect")})
_KINDS = {"Conv", "Silence", "Concat", "nn.Upsample", "RepNCSPELAN4", "ELAN1", "ADown", "AConv", "SPPELAN", "CBLinear",
          "CBFuse", *HEADS}


@dataclass
class YoloV9Plan:
    path: str
    nodes: list
    used: set  # indices of the rows the returned branches need
    returned: tuple  # the head's branches the model returns (the last one alone under NMS)
    nc: int
    names: list
    strides: list  # per detection level
    reg_max: int
    max_stride: int
    model_class: str
    task: str = "detect"

    @property
    def head(self) -> Head:
        return self.nodes[-1].parts


def _rows(cfg) -> list:
    return (cfg.get("backbone") or []) + (cfg.get("head") or []) if isinstance(cfg, dict) else []


def is_yolov9_model(model) -> bool:
    """Whether a pickled `models.yolo.DetectionModel` is YOLOv9's: its yaml names a module only YOLOv9 has, or its
    last row is YOLOv9's anchor-free Detect (a `dfl` module; YOLOv5's P2 / P7 yamls also give anchors as a count)."""
    cfg = model.attr("yaml") if isinstance(model, Record) else None
    rows = [r for r in _rows(cfg) if isinstance(r, (list, tuple)) and len(r) == 4]
    return bool(rows) and (any(r[2] in YOLOV9_MODULES for r in rows)
                           or (rows[-1][2] == "Detect" and isinstance(cfg.get("anchors"), int) and _has_dfl(model)))


def _has_dfl(model) -> bool:
    layers = children(model).get("model")
    last = children(layers).get(str(len(children(layers)) - 1)) if isinstance(layers, Record) else None
    return isinstance(last, Record) and "dfl" in children(last)


def _make_divisible(x, divisor):
    return math.ceil(x / divisor) * divisor


def _int(ctx, mpath, v, what, low=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ctx.err(mpath, f"yaml argument {what} is {short_repr(v)}, expected an int >= {low}")
    return v


def _expect(ctx, rec, mpath, cls):
    if not is_a(rec, cls, *YOLO):
        raise ctx.err(mpath, f"expected a {cls} module, found {short_repr(rec)}")
    return children(rec)


def _check(ctx, mpath, spec: ConvSpec, cin, cout, k, s=1, g=1, p=None, bias=False):
    """A convolution against what its module's constructor gives: (out, in/groups, k, k), stride, padding, groups."""
    p = k // 2 if p is None else p
    want = (cout, cin // g, k, k)
    got = tuple(int(v) for v in spec.kernel.shape)
    if (got, spec.stride, spec.padding, spec.groups, spec.dilation) != (want, (s, s), (p, p), g, (1, 1)) or cin % g:
        raise ctx.err(mpath, f"convolution weight {got}, stride {spec.stride}, padding {spec.padding}, groups "
                             f"{spec.groups}, dilation {spec.dilation}; the yaml row gives weight {want} (out, in/groups, "
                             f"kernel, kernel), stride {(s, s)}, padding {(p, p)}, groups {g}, dilation (1, 1)")
    if bias and spec.bias is None:
        raise ctx.err(mpath, "convolution without bias")
    return spec


def _conv(ctx, rec, mpath, cin, cout, k=1, s=1, g=1, p=None, act=True):
    """models.common.Conv(cin, cout, k, s, p, g): conv + batch norm (absent after fuse()) + act."""
    spec = _check(ctx, mpath, conv_module(ctx, rec, mpath), cin, cout, k, s, g, p)
    if not act and spec.act is not None:
        raise ctx.err(mpath + ".act", f"activation {short_repr(spec.act)}; this Conv has none (act=False)")
    return spec


def _plain_conv(ctx, rec, mpath, cin, cout, k=1, g=1):
    return _check(ctx, mpath, conv2d(ctx, rec, mpath, mpath.replace(".", "_")), cin, cout, k, 1, g, bias=True)


def _repconvn(ctx, rec, mpath, cin, cout) -> RepConvN:
    mods = _expect(ctx, rec, mpath, "RepConvN")
    act = activation_of(ctx, mods.get("act"), mpath + ".act")
    name = mpath.replace(".", "_")
    if isinstance(mods.get("bn"), Record):
        raise ctx.err(mpath + ".bn", "RepConvN with an identity batch-norm branch: YOLOv9 builds it without (bn None)")
    if "conv" in mods:  # fuse_convs(): one 3x3 convolution with bias
        spec = _check(ctx, mpath + ".conv", conv2d(ctx, mods["conv"], mpath + ".conv", name + "_conv"), cin, cout, 3,
                      bias=True)
        spec.act, spec.act_name = act, name + "_act"
        return RepConvN(name, None, None, act, spec)
    return RepConvN(name, _conv(ctx, mods.get("conv1"), mpath + ".conv1", cin, cout, 3, act=False),
                    _conv(ctx, mods.get("conv2"), mpath + ".conv2", cin, cout, 1, p=0, act=False), act)


def _csp(ctx, rec, mpath, cin, cout, n) -> CSP:
    """RepNCSP(cin, cout, n): hidden channels cout // 2, n RepNBottlenecks (e=1.0, shortcut)."""
    mods = _expect(ctx, rec, mpath, "RepNCSP")
    c_ = int(cout * 0.5)
    blocks = sequence(ctx, mods.get("m"), mpath + ".m", "RepNBottleneck")
    if len(blocks) != n:
        raise ctx.err(mpath + ".m", f"{len(blocks)} RepNBottlenecks, the yaml row gives {n}")
    cv1, cv2, cv3 = (_conv(ctx, mods.get(k), f"{mpath}.{k}", ci, co) for k, ci, co in
                     (("cv1", cin, c_), ("cv2", cin, c_), ("cv3", 2 * c_, cout)))
    m = []
    for j, b in enumerate(blocks):
        p = f"{mpath}.m.{j}"
        bm = _expect(ctx, b, p, "RepNBottleneck")
        if b.attr("add") is not True:
            raise ctx.err(p, f"add is {short_repr(b.attr('add'))}; RepNCSP's bottlenecks have the shortcut (True)")
        m.append(Bottleneck(p.replace(".", "_"), _repconvn(ctx, bm.get("cv1"), p + ".cv1", c_, c_),
                            _conv(ctx, bm.get("cv2"), p + ".cv2", c_, c_, 3), True))
    return CSP(mpath.replace(".", "_"), cv1, cv2, cv3, tuple(m))


def _elan(ctx, rec, mpath, kind, cin, c2, args) -> ELAN:
    """RepNCSPELAN4(c1, c2, c3, c4, c5=1) or ELAN1(c1, c2, c3, c4): c3 and c4 as the yaml writes them."""
    mods = _expect(ctx, rec, mpath, kind)
    c3 = _int(ctx, mpath, args[1] if len(args) > 1 else None, "c3", 2)
    c4 = _int(ctx, mpath, args[2] if len(args) > 2 else None, "c4")
    if c3 % 2:
        raise ctx.err(mpath, f"c3 {c3} is odd: cv1's output is chunked in two halves")
    branches = []
    for key, ci in (("cv2", c3 // 2), ("cv3", c4)):
        p = f"{mpath}.{key}"
        if kind == "ELAN1":
            branches.append((_conv(ctx, mods.get(key), p, ci, c4, 3),))
            continue
        n = _int(ctx, mpath, args[3] if len(args) > 3 else 1, "c5 (RepNCSP blocks)")
        items = sequence(ctx, mods.get(key), p, "RepNCSP and Conv")
        if len(items) != 2:
            raise ctx.err(p, f"{len(items)} modules, expected RepNCSP and Conv")
        branches.append((_csp(ctx, items[0], p + ".0", ci, c4, n), _conv(ctx, items[1], p + ".1", c4, c4, 3)))
    return ELAN(mpath.replace(".", "_"), _conv(ctx, mods.get("cv1"), mpath + ".cv1", cin, c3), *branches,
                _conv(ctx, mods.get("cv4"), mpath + ".cv4", c3 + 2 * c4, c2))


def _sppelan(ctx, rec, mpath, cin, c2, args) -> SPPELAN:
    mods = _expect(ctx, rec, mpath, "SPPELAN")
    c3 = _int(ctx, mpath, args[1] if len(args) > 1 else None, "c3")
    pools = []
    for key in ("cv2", "cv3", "cv4"):
        pool = MaxPool(**maxpool(ctx, _expect(ctx, mods.get(key), f"{mpath}.{key}", "SP").get("m"),
                                 f"{mpath}.{key}.m"))
        if (pool.kernel, pool.stride, pool.padding) != ((5, 5), (1, 1), (2, 2)):
            raise ctx.err(f"{mpath}.{key}.m", f"MaxPool2d kernel {pool.kernel} stride {pool.stride} padding "
                                              f"{pool.padding}; SPPELAN's SP(5) is kernel 5, stride 1, padding 2")
        pools.append(pool)
    return SPPELAN(mpath.replace(".", "_"), _conv(ctx, mods.get("cv1"), mpath + ".cv1", cin, c3), tuple(pools),
                   _conv(ctx, mods.get("cv5"), mpath + ".cv5", 4 * c3, c2))


def _upsample(ctx, rec, mpath) -> Upsample:
    if not is_a(rec, "Upsample", *NN):
        raise ctx.err(mpath, f"expected Upsample, found {short_repr(rec)}")
    sf = rec.attr("scale_factor")
    sf = (sf, sf) if isinstance(sf, (int, float)) else tuple(sf) if isinstance(sf, (tuple, list)) else ()
    if rec.attr("mode") != "nearest" or rec.attr("size") is not None or len(sf) != 2 or any(
            not isinstance(v, (int, float)) or float(v) != int(v) or v < 1 for v in sf):
        raise ctx.err(mpath, f"Upsample mode {short_repr(rec.attr('mode'))} size {short_repr(rec.attr('size'))} "
                             f"scale_factor {short_repr(rec.attr('scale_factor'))}: only nearest by integer factors")
    return Upsample(mpath.replace(".", "_"), tuple(int(v) for v in sf))


def _branch(ctx, mods, mpath, b, chs, nc, reg_max, grouped, sources) -> Branch:
    """Branch b of a head: cv{2+2b} (boxes) and cv{3+2b} (classes) per level, dfl{'' or b+1}; channels as the head's
    constructor computes them from the branch's first input."""
    c0, g = chs[0], 4 if grouped else 1
    c_box = max(c0 // 4, reg_max * 4, 16)
    c_box = _make_divisible(c_box, 4) if grouped else c_box
    c_cls = max(c0, min(nc * 2, 128))
    box_key, cls_key, dfl_key = f"cv{2 + 2 * b}", f"cv{3 + 2 * b}", "dfl" if b == 0 else f"dfl{b + 1}"
    box_l, cls_l = (sequence(ctx, mods.get(k), f"{mpath}.{k}", "level heads") for k in (box_key, cls_key))
    if len(box_l) != len(chs) or len(cls_l) != len(chs):
        raise ctx.err(mpath, f"{box_key} / {cls_key} have {len(box_l)} / {len(cls_l)} levels, expected {len(chs)}")
    box, cls = [], []
    for i, ci in enumerate(chs):
        for key, levels, c, out, gg, dest in ((box_key, box_l, c_box, 4 * reg_max, g, box),
                                              (cls_key, cls_l, c_cls, nc, 1, cls)):
            p = f"{mpath}.{key}.{i}"
            seq = sequence(ctx, levels[i], p, "Conv, Conv, Conv2d")
            if len(seq) != 3:
                raise ctx.err(p, f"{len(seq)} modules, expected Conv, Conv and Conv2d")
            dest.append((_conv(ctx, seq[0], p + ".0", ci, c, 3), _conv(ctx, seq[1], p + ".1", c, c, 3, g=gg),
                         _plain_conv(ctx, seq[2], p + ".2", c, out, g=gg)))
    dfl = _expect(ctx, mods.get(dfl_key), f"{mpath}.{dfl_key}", "DFL").get("conv")
    w = param(ctx, dfl, f"{mpath}.{dfl_key}.conv", "weight") if isinstance(dfl, Record) else None
    if w is None or w.shape != (1, reg_max, 1, 1):
        raise ctx.err(f"{mpath}.{dfl_key}.conv", f"DFL weight {None if w is None else w.shape}, expected (1, {reg_max}, 1, 1)")
    return Branch(tuple(box), tuple(cls), tuple(float(v) for v in w.reshape(-1)), tuple(sources))


def _head(ctx, rec, mpath, kind, nc, chs) -> Head:
    mods = _expect(ctx, rec, mpath, kind)
    nb, outputs, grouped = HEADS[kind]
    nl, reg_max = rec.attr("nl"), rec.attr("reg_max")
    if (rec.attr("nc"), nl, reg_max) != (nc, len(chs) // nb, 16) or len(chs) % nb or rec.attr("no") != nc + 64:
        raise ctx.err(mpath, f"{kind} nc={short_repr(rec.attr('nc'))} nl={short_repr(nl)} reg_max={short_repr(reg_max)} "
                             f"no={short_repr(rec.attr('no'))}; the yaml row gives nc={nc}, nl={len(chs) / nb:g} "
                             f"({len(chs)} inputs, {nb} branches), reg_max 16, no={nc + 64}")
    stride = rec.attr("stride")
    if not isinstance(stride, np.ndarray) or stride.shape != (nl,) or not all(float(s) >= 1 for s in stride):
        raise ctx.err(mpath, f"stride {short_repr(stride)}: expected a tensor of {nl} strides")
    branches = tuple(_branch(ctx, mods, mpath, b, chs[b * nl:(b + 1) * nl], nc, reg_max, grouped,
                             range(b * nl, (b + 1) * nl)) for b in range(nb))
    return Head(kind, branches, outputs, nc, reg_max, tuple(float(s) for s in stride.astype(np.float32)))


def _layer(ctx, rec, mpath, kind, args, chs, nc, gw):
    """(record, output channels) of one yaml row, checked against its module record."""
    name, cin = mpath.replace(".", "_"), chs[0]
    if kind in ("Conv", "AConv", "ADown", "RepNCSPELAN4", "ELAN1", "SPPELAN"):
        c2 = _int(ctx, mpath, args[0] if args else None, "c2")
        c2 = c2 if c2 == 3 * (nc + 5) else _make_divisible(c2 * gw, 8)  # parse_model: the output layer is not scaled
    if kind == "Conv":
        k, s = (_int(ctx, mpath, args[j] if len(args) > j else d, w) for j, d, w in ((1, 1, "k"), (2, 1, "s")))
        p = args[3] if len(args) > 3 and args[3] is not None else None
        g = _int(ctx, mpath, args[4] if len(args) > 4 else 1, "g")
        return _conv(ctx, rec, mpath, cin, c2, k, s, g, p), c2
    if kind == "AConv":
        return AConv(name, _conv(ctx, _expect(ctx, rec, mpath, kind).get("cv1"), mpath + ".cv1", cin, c2, 3, 2, p=1)), c2
    if kind == "ADown":
        mods = _expect(ctx, rec, mpath, kind)
        if cin % 2:
            raise ctx.err(mpath, f"ADown input of {cin} channels: it is chunked in two halves")
        return ADown(name, _conv(ctx, mods.get("cv1"), mpath + ".cv1", cin // 2, c2 // 2, 3, 2, p=1),
                     _conv(ctx, mods.get("cv2"), mpath + ".cv2", cin // 2, c2 // 2, 1, 1, p=0)), 2 * (c2 // 2)
    if kind in ("RepNCSPELAN4", "ELAN1"):
        return _elan(ctx, rec, mpath, kind, cin, c2, args), c2
    if kind == "SPPELAN":
        return _sppelan(ctx, rec, mpath, cin, c2, args), c2
    if kind in ("Silence", "Concat"):
        _expect(ctx, rec, mpath, kind)
        if kind == "Concat" and rec.attr("d") != 1:
            raise ctx.err(mpath, f"Concat along dimension {short_repr(rec.attr('d'))}: only 1 (channels) is supported")
        return Named(name, kind), (sum(chs) if kind == "Concat" else cin)
    if kind == "nn.Upsample":
        return _upsample(ctx, rec, mpath), cin
    if kind == "CBLinear":
        splits = args[0] if args else None
        if not (isinstance(splits, list) and splits and all(isinstance(c, int) and c > 0 for c in splits)):
            raise ctx.err(mpath, f"CBLinear channel groups {short_repr(splits)}: expected a list of ints")
        k, s = (_int(ctx, mpath, args[j] if len(args) > j else 1, w) for j, w in ((1, "k"), (2, "s")))
        conv = conv2d(ctx, _expect(ctx, rec, mpath, kind).get("conv"), mpath + ".conv", name + "_conv")
        if rec.attr("c2s") != splits:
            raise ctx.err(mpath, f"c2s {short_repr(rec.attr('c2s'))}, the yaml row gives {splits}")
        return CBLinear(name, _check(ctx, mpath + ".conv", conv, cin, sum(splits), k, s, bias=True), tuple(splits)), splits
    if kind == "CBFuse":
        _expect(ctx, rec, mpath, kind)
        idx = args[0] if args else None
        if not (isinstance(idx, list) and rec.attr("idx") == idx and len(idx) == len(chs) - 1 and all(
                isinstance(c, list) and isinstance(i, int) and 0 <= i < len(c) and c[i] == chs[-1]
                for c, i in zip(chs, idx))):
            raise ctx.err(mpath, f"CBFuse idx {short_repr(rec.attr('idx'))} (yaml {short_repr(idx)}) over inputs of "
                                 f"channels {short_repr(chs)}: expected one CBLinear group of {chs[-1]} channels per input "
                                 "but the last")
        return CBFuse(name, tuple(idx)), chs[-1]
    raise ctx.err(mpath, f"module type {short_repr(kind)} is not supported")


def _sources(i, f):
    return [i + j if j < 0 else j for j in ([f] if isinstance(f, int) else f)]


def plan_from_model(model: Record, path: str, nms: bool = False) -> YoloV9Plan:
    """The plan of a YOLOv9 `models.yolo.DetectionModel` record; with `nms`, of its last (main) branch alone."""
    ctx = Ctx(path)
    cfg = model.attr("yaml")
    gd, gw, nc = yaml_header(cfg, path)
    rows = _rows(cfg)
    layers = sequence(ctx, children(model).get("model"), "model", "layers")
    if len(layers) != len(rows):
        raise FormatError(f"{path}: the yaml has {len(rows)} rows, the model {len(layers)} layers")
    ch, nodes = [cfg.get("ch", 3)], []
    for i, (row, rec) in enumerate(zip(rows, layers)):
        mpath = f"model.{i}"
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ctx.err(mpath, f"yaml row {short_repr(row)}: expected [from, number, module, args]")
        f, n, kind, args = row
        if kind not in _KINDS:
            raise ctx.err(mpath, f"yaml module {short_repr(kind)} is not supported (YOLOv9 modules: {', '.join(sorted(_KINDS))})")
        if not (isinstance(f, int) or (isinstance(f, list) and f and all(isinstance(x, int) for x in f))):
            raise ctx.err(mpath, f"yaml 'from' {short_repr(f)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (max(round(n * gd), 1) if n > 1 else n) != 1:
            raise ctx.err(mpath, f"yaml number {short_repr(n)}: repeated rows are not used by YOLOv9's yamls and not supported")
        if not isinstance(args, list):
            raise ctx.err(mpath, f"yaml args {short_repr(args)}")
        if isinstance(rec, Record) and rec.attr("f") is not None and rec.attr("f") != f:
            raise ctx.err(mpath, f"module 'from' is {short_repr(rec.attr('f'))}, the yaml says {short_repr(f)}")
        srcs = _sources(i, f)
        if i > 0 and any(not 0 <= j < i for j in srcs):
            raise ctx.err(mpath, f"yaml 'from' {short_repr(f)} refers to a row that does not precede it")
        chs = [ch[j + 1] for j in srcs] if i > 0 else [ch[0]]
        if kind not in ("CBFuse",) and any(isinstance(c, list) for c in chs):
            raise ctx.err(mpath, f"{kind} takes a CBLinear's output (only CBFuse does)")
        if kind in HEADS:
            if i != len(rows) - 1:
                raise ctx.err(mpath, f"{kind} is not the last row")
            block, c2 = _head(ctx, rec, mpath, kind, nc, chs), None
        else:
            block, c2 = _layer(ctx, rec, mpath, kind, args, chs, nc, gw)
        nodes.append(Node(i, kind, f, block))
        ch.append(c2)
    if nodes[-1].kind not in HEADS:
        raise FormatError(f"{path}: the last layer is {nodes[-1].kind}, expected one of {', '.join(HEADS)}")
    head, last = nodes[-1].parts, len(nodes) - 1
    inputs = _sources(last, nodes[-1].source)
    returned = head.outputs[-1:] if nms else head.outputs
    used, stack = {last}, [inputs[j] for b in returned for j in head.branches[b].sources]
    while stack:  # the rows the returned branches need (row 0 reads the input)
        j = stack.pop()
        if j not in used:
            used.add(j)
            stack.extend(_sources(j, nodes[j].source) if j > 0 else [])
    return YoloV9Plan(path, nodes, used, returned, nc, class_names(model, nc, path), list(head.strides), head.reg_max,
                      int(max(head.strides)), model.cls.qualname)


# ---------------------------------------------------------------------------------------------------------
# Arrays in Keras layout


def _specs(block):
    """The ConvSpecs of a record, nested records included."""
    if isinstance(block, ConvSpec):
        yield block
    elif isinstance(block, (tuple, list)):
        for b in block:
            yield from _specs(b)
    elif isinstance(block, RepConvN):
        yield from block.convs
    elif isinstance(block, Bottleneck):
        yield from _specs((block.cv1, block.cv2))
    elif isinstance(block, (CSP, ELAN, ADown, AConv, SPPELAN)):
        yield from _specs(tuple(getattr(block, k) for k in ("cv1", "cv2", "cv3", "m", "cv4", "cv5")
                                if isinstance(getattr(block, k, None), (ConvSpec, tuple))))
    elif isinstance(block, CBLinear):
        yield block.conv


def plan_arrays(plan: YoloV9Plan, fold_bn: bool) -> dict:
    out: dict = {}
    convs = ConvBatch(out)  # every conv in one native call
    for node in plan.nodes[:-1]:
        if node.index in plan.used:
            for spec in _specs(node.parts):
                convs.add(spec, fold_bn)
    for b in plan.returned:
        for spec in _specs(plan.head.branches[b].box + plan.head.branches[b].cls):
            convs.add(spec, fold_bn)
    convs.run()
    return out
