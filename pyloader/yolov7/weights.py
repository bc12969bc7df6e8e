"""YOLOv7 .pt checkpoints (WongKinYiu's YOLOv7) as numpy: the architecture plan and the arrays in Keras layout.

No TensorFlow, no torch. The checkpoint is read by `torch_reader.checkpoint` (no pickle code runs); the model is
`ema` when present and not None, else `model` (YOLOv7's attempt_load). The layer graph comes from the model's
own `yaml` (backbone + head rows: from, number, module, args); each row is checked against the pickled module
of the same index: every convolution's channels, kernel, stride and groups must be what the yaml row (and the
channels flowing into it) give, else a FormatError names the module path, expected and actual.

Modules: Conv, Concat (ELAN blocks are Concat rows), MP, SP, SPPCSPC, RepConv (training form: 3x3+BN, 1x1+BN
and identity BN; deploy form: rbr_reparam), nn.Upsample, ReOrg, DownC, Shortcut, and the heads Detect, IDetect
and IAuxDetect. ImplicitA/ImplicitM are folded into the head convolutions (as YOLOv7's fuse() does); of
IAuxDetect only the main heads are kept (the auxiliary heads and the rows that only feed them are training-only).
Each row becomes a Node whose `parts` is the module's typed record (blocks.py).

Keras names derive from the module path: `model.3.conv` -> 'model_3_conv', `model.3.bn` -> 'model_3_bn'; a
RepConv folded into one convolution (fold_bn, or the deploy form) is 'model_102_rbr_reparam', its unfolded
branches 'model_102_rbr_dense_0' / '_1', 'model_102_rbr_1x1_0' / '_1', 'model_102_rbr_identity'; head
convolutions 'model_105_m_0'.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError
from ..torch_reader.checkpoint import load_torch_checkpoint
from ..torch_reader.modules import (
    NN, YOLO, BatchNorm, ConvBatch, ConvSpec, Ctx, activation_of, batchnorm, bn_arrays, children, conv2d, conv_module,
    is_a, class_names, maxpool, param, select_model, sequence, yaml_header,
)
from ..torch_reader.records import MethodRef, Record
from .blocks import SPPCSPC, Concat, Detect, DownC, MaxPool, Node, ReOrg, RepConv, Shortcut, Upsample

__all__ = ["read_plan", "plan_from_model", "YoloV7Plan", "is_yolov7_model", "YOLOV7_MODULES"]

# yaml module names only YOLOv7 uses (YOLOv5 shares Conv, Concat, nn.Upsample and Detect).
YOLOV7_MODULES = frozenset({"MP", "SP", "SPPCSPC", "RepConv", "IDetect", "IAuxDetect", "ReOrg", "DownC", "Shortcut"})

YAML_KIND = {
    "Conv": "Conv", "Concat": "Concat", "MP": "MP", "SP": "SP", "SPPCSPC": "SPPCSPC", "RepConv": "RepConv",
    "nn.Upsample": "Upsample", "Upsample": "Upsample", "ReOrg": "ReOrg", "DownC": "DownC", "Shortcut": "Shortcut",
    "Detect": "Detect", "IDetect": "IDetect", "IAuxDetect": "IAuxDetect",
}
HEADS = ("Detect", "IDetect", "IAuxDetect")


@dataclass
class YoloV7Plan:
    path: str
    nodes: list
    used: set  # indices of the nodes the main heads need (IAuxDetect's auxiliary branches are left out)
    nc: int
    names: list
    strides: list  # per detection level
    anchors: np.ndarray  # (nl, na, 2) in pixels (Detect.anchor_grid)
    max_stride: int
    model_class: str


def is_yolov7_model(model) -> bool:
    """Whether a pickled `models.yolo.Model` is YOLOv7's: its yaml names a module only YOLOv7 has."""
    cfg = model.attr("yaml") if isinstance(model, Record) else model
    if not isinstance(cfg, dict):
        return False
    rows = (cfg.get("backbone") or []) + (cfg.get("head") or [])
    return any(isinstance(r, (list, tuple)) and len(r) == 4 and r[2] in YOLOV7_MODULES for r in rows)


def _make_divisible(x, divisor=8):
    return math.ceil(x / divisor) * divisor


def _int_arg(ctx, mpath, args, i, default, what):
    v = args[i] if len(args) > i and args[i] not in (None, "None") else default  # yaml.safe_load: 'None' 
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.err(mpath, f"yaml argument {what} is {short_repr(v)}, expected an int")
    return v


def _check_conv(ctx, mpath, spec: ConvSpec, cin, cout, k, s, g):
    """A convolution against what its yaml row gives: (out, in/groups, k, k), stride, groups."""
    want = (cout, cin // g if g and cin % g == 0 else cin, k, k)
    got = tuple(int(v) for v in spec.kernel.shape)
    if got != want or spec.stride != (s, s) or spec.groups != g:
        raise ctx.err(
            mpath,
            f"convolution weight {got}, stride {spec.stride}, groups {spec.groups}; the yaml row gives "
            f"weight {want} (out, in/groups, kernel, kernel), stride {(s, s)}, groups {g}",
        )


def _conv_of(ctx, rec, mpath, cin, cout, k, s, g=1) -> ConvSpec:
    spec = conv_module(ctx, rec, mpath)
    _check_conv(ctx, mpath, spec, cin, cout, k, s, g)
    return spec


def _pool(ctx, rec, mpath, k, s, p) -> MaxPool:
    pool = MaxPool(**maxpool(ctx, rec, mpath))
    if pool.kernel != (k, k) or pool.stride != (s, s) or pool.padding != (p, p):
        raise ctx.err(mpath, f"MaxPool2d kernel {pool.kernel} stride {pool.stride} padding {pool.padding}; "
                             f"the yaml row gives kernel {(k, k)} stride {(s, s)} padding {(p, p)}")
    return pool


def _expect(ctx, rec, mpath, cls):
    if not is_a(rec, cls, *YOLO):
        raise ctx.err(mpath, f"expected a {cls} module, found {short_repr(rec)}")


def _repconv(ctx, rec, mpath, cin, cout, k, s, g) -> RepConv | ConvSpec:
    """The training form as a RepConv record; the deploy form as its one convolution with the activation."""
    _expect(ctx, rec, mpath, "RepConv")
    if k != 3:
        raise ctx.err(mpath, f"RepConv kernel {k}: YOLOv7's RepConv is 3x3 only")
    mods = children(rec)
    name = mpath.replace(".", "_")
    act = activation_of(ctx, mods.get("act"), mpath + ".act")
    if isinstance(mods.get("rbr_reparam"), Record):  # the deploy form, or a training form after fuse_repvgg_block
        spec = conv2d(ctx, mods["rbr_reparam"], mpath + ".rbr_reparam", name + "_rbr_reparam")
        if spec.bias is None:
            raise ctx.err(mpath + ".rbr_reparam", "the reparameterised convolution has no bias")
        _check_conv(ctx, mpath + ".rbr_reparam", spec, cin, cout, 3, s, g)
        if spec.padding != (1, 1):
            raise ctx.err(mpath + ".rbr_reparam", f"padding {spec.padding}, expected (1, 1)")
        spec.act, spec.act_name = act, name + "_act"
        return spec
    branch = {}
    for b, kk, pad in (("rbr_dense", 3, 1), ("rbr_1x1", 1, 0)):
        seq = sequence(ctx, mods.get(b), f"{mpath}.{b}", "Conv2d and BatchNorm2d")
        if len(seq) != 2:
            raise ctx.err(f"{mpath}.{b}", f"{len(seq)} children, expected Conv2d and BatchNorm2d")
        spec = conv2d(ctx, seq[0], f"{mpath}.{b}.0", f"{name}_{b}_0")
        spec.bn = batchnorm(ctx, seq[1], f"{mpath}.{b}.1", f"{name}_{b}_1")
        _check_conv(ctx, f"{mpath}.{b}.0", spec, cin, cout, kk, s, g)
        if spec.padding != (pad, pad) or spec.bias is not None or spec.bn.gamma.shape != (cout,):
            raise ctx.err(f"{mpath}.{b}", f"padding {spec.padding}, bias {spec.bias is not None}, batch norm of "
                                          f"{spec.bn.gamma.shape}; expected padding {(pad, pad)}, no bias, ({cout},)")
        branch[b] = spec
    ident = mods.get("rbr_identity")
    if ident is not None:
        if cin != cout or s != 1:
            raise ctx.err(mpath + ".rbr_identity", f"an identity branch needs in == out channels and stride 1 "
                                                   f"(in {cin}, out {cout}, stride {s})")
        ident = batchnorm(ctx, ident, mpath + ".rbr_identity", name + "_rbr_identity")
        if ident.gamma.shape != (cin,):
            raise ctx.err(mpath + ".rbr_identity", f"batch norm of {ident.gamma.shape}, expected ({cin},)")
    elif cin == cout and s == 1:
        raise ctx.err(mpath, "RepConv with in == out channels and stride 1 has no identity branch (rbr_identity)")
    return RepConv(name, branch["rbr_dense"], branch["rbr_1x1"], ident, act)


def _head(ctx, rec, mpath, kind, cfg, chs, name) -> Detect:
    _expect(ctx, rec, mpath, kind)
    mods = children(rec)
    nl, na, nc, no = (rec.attr(k) for k in ("nl", "na", "nc", "no"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (nl, na, nc, no)) or no != nc + 5:
        raise ctx.err(mpath, f"{kind} nl={nl} na={na} nc={nc} no={no}: inconsistent")
    ynl, yna = yaml_anchors(ctx, mpath, cfg)
    if (nl, na, nc) != (ynl, yna, cfg.get("nc")):
        raise ctx.err(mpath, f"{kind} has nl={nl} na={na} nc={nc}; the yaml gives nl={ynl} na={yna} nc={cfg.get('nc')}")
    n_in = 2 * nl if kind == "IAuxDetect" else nl
    if len(chs) != n_in:
        raise ctx.err(mpath, f"the yaml row feeds {len(chs)} layers into {kind}, expected {n_in}")
    grid = param(ctx, rec, mpath, "anchor_grid")
    if grid.shape != (nl, 1, na, 1, 1, 2):
        raise ctx.err(mpath, f"anchor_grid of shape {grid.shape}, expected ({nl}, 1, {na}, 1, 1, 2)")
    stride = rec.attr("stride")
    if not isinstance(stride, np.ndarray) or stride.shape != (nl,):
        raise ctx.err(mpath, f"stride {short_repr(stride)}: expected a tensor of {nl} strides")
    convs = []
    for j, r in enumerate(sequence(ctx, mods.get("m"), mpath + ".m", "Conv2d")):
        spec = conv2d(ctx, r, f"{mpath}.m.{j}", f"{name}_m_{j}")
        if j < nl:
            _check_conv(ctx, f"{mpath}.m.{j}", spec, chs[j], na * no, 1, 1, 1)
        if spec.bias is None:
            raise ctx.err(f"{mpath}.m.{j}", "head convolution without bias")
        convs.append(spec)
    if len(convs) != nl:
        raise ctx.err(mpath + ".m", f"{len(convs)} convolutions, expected {nl}")
    fwd = rec.attr("forward")
    if fwd is not None and not (isinstance(fwd, MethodRef) and fwd.name == "fuseforward"):
        raise ctx.err(mpath, f"forward is {short_repr(fwd)}; only YOLOv7's fuse() (forward = fuseforward) is known")
    if kind in ("IDetect", "IAuxDetect") and fwd is None:  # after fuse(), ia/im are already in the convolutions
        ia = sequence(ctx, mods.get("ia"), mpath + ".ia", "ImplicitA")
        im = sequence(ctx, mods.get("im"), mpath + ".im", "ImplicitM")
        if len(ia) != nl or len(im) != nl:
            raise ctx.err(mpath, f"{len(ia)} ImplicitA and {len(im)} ImplicitM, expected {nl} each")
        for j in range(nl):
            _expect(ctx, ia[j], f"{mpath}.ia.{j}", "ImplicitA")
            _expect(ctx, im[j], f"{mpath}.im.{j}", "ImplicitM")
            a = param(ctx, ia[j], f"{mpath}.ia.{j}", "implicit")
            m = param(ctx, im[j], f"{mpath}.im.{j}", "implicit")
            cin, cout = chs[j], na * no
            if a.shape != (1, cin, 1, 1) or m.shape != (1, cout, 1, 1):
                raise ctx.err(f"{mpath}.ia.{j}", f"implicit tensors of {a.shape} and {m.shape}, expected "
                                                 f"(1, {cin}, 1, 1) and (1, {cout}, 1, 1)")
            convs[j] = _fold_implicit(convs[j], a, m)
    return Detect(tuple(convs), nl, na, nc, [float(s) for s in stride.astype(np.float32)],
                  np.ascontiguousarray(grid.reshape(nl, na, 2), dtype=np.float32))


def _fold_implicit(spec: ConvSpec, a, m) -> ConvSpec:
    """IDetect's m(ia(x)) then im: W' = W * m, b' = (b + W a) * m (a 1x1 convolution without padding)."""
    w = np.asarray(spec.kernel, np.float64)
    b = np.asarray(spec.bias, np.float64)
    a = np.asarray(a, np.float64).reshape(-1)
    m = np.asarray(m, np.float64).reshape(-1)
    bias = (b + w[:, :, 0, 0] @ a) * m
    kernel = w * m[:, None, None, None]
    return ConvSpec(spec.name, kernel.astype(np.float32), bias.astype(np.float32), spec.stride, spec.padding,
                    spec.dilation, spec.groups)


def yaml_anchors(ctx, mpath, cfg):
    anchors = cfg.get("anchors")
    if isinstance(anchors, list) and anchors and all(isinstance(a, (list, tuple)) and a for a in anchors):
        return len(anchors), len(anchors[0]) // 2
    raise ctx.err(mpath, f"yaml anchors {short_repr(anchors)}: expected a list of per-level anchor lists")


def _layer(ctx, rec, mpath, kind, args, cin, cfg, gw, no, chs) -> tuple:
    """(record, output channels) of one yaml row, checked against its module record."""
    name = mpath.replace(".", "_")
    mods = children(rec) if isinstance(rec, Record) else {}
    if kind in ("Conv", "RepConv", "SPPCSPC", "DownC"):
        c2 = _int_arg(ctx, mpath, args, 0, None, "c2")
        cout = c2 if c2 == no else _make_divisible(c2 * gw, 8)
    if kind in ("Conv", "RepConv"):
        k = _int_arg(ctx, mpath, args, 1, 1 if kind == "Conv" else 3, "k")
        s = _int_arg(ctx, mpath, args, 2, 1, "s")
        g = _int_arg(ctx, mpath, args, 4, 1, "g")
        if kind == "Conv":
            return _conv_of(ctx, rec, mpath, cin, cout, k, s, g), cout
        return _repconv(ctx, rec, mpath, cin, cout, k, s, g), cout
    if kind == "SPPCSPC":
        _expect(ctx, rec, mpath, "SPPCSPC")
        e = args[3] if len(args) > 3 else 0.5
        ks = args[4] if len(args) > 4 else (5, 9, 13)
        if not isinstance(e, (int, float)) or not (isinstance(ks, (list, tuple)) and all(isinstance(v, int) for v in ks)):
            raise ctx.err(mpath, f"SPPCSPC arguments {short_repr(args)}")
        c_ = int(2 * cout * e)
        convs = [_conv_of(ctx, mods.get(key), f"{mpath}.{key}", ci, co, k, 1)
                 for key, ci, co, k in (("cv1", cin, c_, 1), ("cv2", cin, c_, 1), ("cv3", c_, c_, 3),
                                        ("cv4", c_, c_, 1), ("cv5", (len(ks) + 1) * c_, c_, 1), ("cv6", c_, c_, 3),
                                        ("cv7", 2 * c_, cout, 1))]
        pools = sequence(ctx, mods.get("m"), mpath + ".m", "MaxPool2d")
        if len(pools) != len(ks):
            raise ctx.err(mpath + ".m", f"{len(pools)} pools, the yaml row gives {len(ks)}")
        pools = tuple(_pool(ctx, r, f"{mpath}.m.{j}", k, 1, k // 2) for j, (r, k) in enumerate(zip(pools, ks)))
        return SPPCSPC(name, *convs, pools), cout
    if kind == "DownC":
        _expect(ctx, rec, mpath, "DownC")
        k = _int_arg(ctx, mpath, args, 1, 2, "k")
        return DownC(name, _conv_of(ctx, mods.get("cv1"), mpath + ".cv1", cin, cin, 1, 1),
                     _conv_of(ctx, mods.get("cv2"), mpath + ".cv2", cin, cout // 2, 3, k),
                     _conv_of(ctx, mods.get("cv3"), mpath + ".cv3", cin, cout // 2, 1, 1),
                     _pool(ctx, mods.get("mp"), mpath + ".mp", k, k, 0)), 2 * (cout // 2)
    if kind in ("MP", "SP"):
        _expect(ctx, rec, mpath, kind)
        k = _int_arg(ctx, mpath, args, 0, 2 if kind == "MP" else 3, "k")
        if kind == "MP":
            return _pool(ctx, mods.get("m"), mpath + ".m", k, k, 0), cin
        s = _int_arg(ctx, mpath, args, 1, 1, "s")
        return _pool(ctx, mods.get("m"), mpath + ".m", k, s, k // 2), cin
    if kind == "ReOrg":
        _expect(ctx, rec, mpath, "ReOrg")
        return ReOrg(name), 4 * cin
    if kind == "Concat":
        _expect(ctx, rec, mpath, "Concat")
        if rec.attr("d") != 1:
            raise ctx.err(mpath, f"Concat along dimension {short_repr(rec.attr('d'))}: only 1 (channels) is supported")
        return Concat(name), sum(chs)
    if kind == "Shortcut":
        _expect(ctx, rec, mpath, "Shortcut")
        if len(chs) != 2 or chs[0] != chs[1]:
            raise ctx.err(mpath, f"Shortcut adds layers of {chs} channels: expected two of the same width")
        return Shortcut(name), chs[0]
    if kind == "Upsample":
        if not is_a(rec, "Upsample", *NN):
            raise ctx.err(mpath, f"expected Upsample, found {short_repr(rec)}")
        if rec.attr("mode") != "nearest" or rec.attr("size") is not None:
            raise ctx.err(mpath, f"Upsample mode {short_repr(rec.attr('mode'))} size {short_repr(rec.attr('size'))}: only nearest by scale_factor")
        sf = rec.attr("scale_factor")
        sf = (sf, sf) if isinstance(sf, (int, float)) else tuple(sf) if isinstance(sf, (tuple, list)) else None
        if sf is None or len(sf) != 2 or any(float(v) != int(v) or v < 1 for v in sf):
            raise ctx.err(mpath, f"Upsample scale_factor {short_repr(rec.attr('scale_factor'))}: only integer factors")
        return Upsample(name, tuple(int(v) for v in sf)), cin
    if kind in HEADS:
        return _head(ctx, rec, mpath, kind, cfg, chs, name), None
    raise ctx.err(mpath, f"module type {short_repr(kind)} is not supported")


def _sources(i, f):
    return [i + j if j < 0 else j for j in ([f] if isinstance(f, int) else f)]


def plan_from_model(model: Record, path: str) -> YoloV7Plan:
    """The plan of a YOLOv7 `models.yolo.Model` record (pickled, or built from a yaml and a state_dict)."""
    ctx = Ctx(path)
    cfg = model.attr("yaml")
    gd, gw, nc = yaml_header(cfg, path)
    rows = cfg["backbone"] + cfg["head"]
    layers = sequence(ctx, children(model).get("model"), "model", "layers")
    if len(layers) != len(rows):
        raise FormatError(f"{path}: the yaml has {len(rows)} rows, the model {len(layers)} layers")
    _, na = yaml_anchors(ctx, "model", cfg)
    no = na * (nc + 5)
    ch = [cfg.get("ch", 3)]
    nodes = []
    for i, (row, rec) in enumerate(zip(rows, layers)):
        mpath = f"model.{i}"
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ctx.err(mpath, f"yaml row {short_repr(row)}: expected [from, number, module, args]")
        f, n, mname, args = row
        kind = YAML_KIND.get(mname)
        if kind is None:
            raise ctx.err(mpath, f"yaml module {short_repr(mname)} is not supported (YOLOv7 modules: {', '.join(sorted(YAML_KIND))})")
        if not (isinstance(f, int) or (isinstance(f, list) and f and all(isinstance(x, int) for x in f))):
            raise ctx.err(mpath, f"yaml 'from' {short_repr(f)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ctx.err(mpath, f"yaml number {short_repr(n)}")
        if (max(round(n * gd), 1) if n > 1 else n) != 1:
            raise ctx.err(mpath, f"yaml number {n}: repeated rows are not used by YOLOv7's yamls and not supported")
        if not isinstance(args, list):
            raise ctx.err(mpath, f"yaml args {short_repr(args)}")
        rf = rec.attr("f") if isinstance(rec, Record) else None
        if rf is not None and rf != f:
            raise ctx.err(mpath, f"module 'from' is {short_repr(rf)}, the yaml says {short_repr(f)}")
        srcs = _sources(i, f)
        if any(not 0 <= j < i for j in srcs) and i > 0:
            raise ctx.err(mpath, f"yaml 'from' {short_repr(f)} refers to a row that does not precede it")
        chs = [ch[j + 1] for j in srcs] if i > 0 else [ch[0]]
        block, c2 = _layer(ctx, rec, mpath, kind, args, chs[0], cfg, gw, no, chs)
        nodes.append(Node(i, kind, f, block))
        ch.append(c2)
    det = nodes[-1]
    if det.kind not in HEADS:
        raise FormatError(f"{path}: the last layer is {det.kind}, expected Detect, IDetect or IAuxDetect")
    head = det.parts
    main = _sources(len(nodes) - 1, det.source)[: head.nl]
    used, stack = {det.index}, list(main)
    while stack:  # the rows the main heads need (row 0 reads the input)
        j = stack.pop()
        if j not in used:
            used.add(j)
            stack.extend(_sources(j, nodes[j].source) if j > 0 else [])
    return YoloV7Plan(path, nodes, used, head.nc, class_names(model, head.nc, path), head.stride, head.anchors, int(max(head.stride)),
                      model.cls.qualname)


def read_plan(path, ckpt=None) -> YoloV7Plan:
    """The plan of a YOLOv7 checkpoint (`ckpt`: the already-unpickled checkpoint, to read the file once)."""
    path = os.fspath(path)
    model = select_model(load_torch_checkpoint(path) if ckpt is None else ckpt, path)
    if not is_a(model, "Model", "models.yolo"):
        raise FormatError(f"{path}: model is {short_repr(model)}; expected YOLOv7's models.yolo.Model")
    return plan_from_model(model, path)


# ---------------------------------------------------------------------------------------------------------
# Arrays in Keras layout


def _bn_scale(bn: BatchNorm):
    g, b, m, v = (np.asarray(a, np.float64) for a in (bn.gamma, bn.beta, bn.mean, bn.var))
    s = g / np.sqrt(v + bn.eps)
    return s, b - m * s


def repconv_folded(rep: RepConv) -> tuple:
    """RepConv's training form as one 3x3 convolution (YOLOv7's fuse_repvgg_block): HWIO kernel and bias."""
    dense, one, ident = rep.dense, rep.one, rep.identity
    s3, b3 = _bn_scale(dense.bn)
    k = np.asarray(dense.kernel, np.float64) * s3[:, None, None, None]
    s1, b1 = _bn_scale(one.bn)
    k[:, :, 1, 1] += np.asarray(one.kernel, np.float64)[:, :, 0, 0] * s1[:, None]
    bias = b3 + b1
    if ident is not None:
        si, bi = _bn_scale(ident)
        cin_g = k.shape[1]
        rows = np.arange(k.shape[0])
        k[rows, rows % cin_g, 1, 1] += si
        bias = bias + bi
    return np.ascontiguousarray(k.transpose(2, 3, 1, 0), dtype=np.float32), bias.astype(np.float32)


def _block_arrays(block, fold_bn: bool, convs: ConvBatch) -> None:
    out = convs.out
    if isinstance(block, ConvSpec):
        convs.add(block, fold_bn)
    elif isinstance(block, RepConv):
        if fold_bn:
            out[f"{block.reparam_name}/kernel"], out[f"{block.reparam_name}/bias"] = repconv_folded(block)
        else:
            convs.add(block.dense, False)
            convs.add(block.one, False)
            if block.identity is not None:
                bn_arrays(block.identity, out)
    elif isinstance(block, (SPPCSPC, DownC, Detect)):
        for spec in block.convs:
            convs.add(spec, fold_bn)


def plan_arrays(plan: YoloV7Plan, fold_bn: bool) -> dict:
    out: dict = {}
    convs = ConvBatch(out)  # every conv in one native call
    for node in plan.nodes:
        if node.index in plan.used:
            _block_arrays(node.parts, fold_bn, convs)
    convs.run()
    return out
