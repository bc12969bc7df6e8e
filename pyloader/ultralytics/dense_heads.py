"""YOLO26's dense-prediction heads (numpy only): SemanticSegment (SemanticSegmentationModel, task 'semantic') and
Depth (DepthModel, task 'depth'), read with the family's reader (`weights._Reader`: conv, plain_conv, expect, err)
into blocks.SemanticHead / blocks.DepthHead; every module's channels are checked against what feeds it and the
yaml row before use. Training-only parts (SemanticSegment's aux_head) are not read."""

from __future__ import annotations

import numpy as np

from ..boundary import short_repr
from ..torch_reader.modules import param, sequence
from .backbones import read_transpose_conv
from .blocks import DepthHead, SemanticHead

__all__ = ["DENSE_HEADS", "read_dense_head"]

DENSE_HEADS = ("SemanticSegment", "Depth")  # the yaml modules read here


def _chain(rd, mpath, specs, cin):
    """Each conv's input channels are the previous one's outputs (the first's: cin)."""
    for j, spec in enumerate(specs):
        got = spec.in_channels
        if got != cin:
            raise rd.err(f"{mpath}.{j}", f"expected {cin} input channels, the weight has {got}")
        cin = spec.out_channels


def _output_conv(rd, rec, mpath, cin, cout=None):
    out = rd.plain_conv(rec, mpath)
    if out.kernel.shape[2:] != (1, 1) or out.bias is None or out.in_channels != cin or (cout is not None and out.out_channels != cout):
        raise rd.err(mpath, f"weight {out.kernel.shape}: expected a 1x1 Conv2d with bias from {cin} channels"
                            + ("" if cout is None else f" to {cout}"))
    return out


def semantic(rd, rec, mpath, args, cin) -> SemanticHead:
    mods = rd.expect(rec, mpath, "SemanticSegment")
    items = sequence(rd.ctx, mods.get("classifier"), mpath + ".classifier", "Conv")
    if len(items) != 2:
        raise rd.err(mpath + ".classifier", f"{len(items)} modules, expected 2 (a Conv and the output Conv2d)")
    conv = rd.conv(items[0], mpath + ".classifier.0")
    _chain(rd, mpath + ".classifier", [conv], cin[0])
    nc = rec.attr("nc")
    out = _output_conv(rd, items[1], mpath + ".classifier.1", conv.out_channels, nc)
    if args and isinstance(args[0], int) and args[0] != out.out_channels:
        raise rd.err(mpath, f"classes (nc): the yaml row gives {args[0]}, the checkpoint has {out.out_channels}")
    return SemanticHead(mpath.replace(".", "_"), [conv, out])


def depth(rd, rec, mpath, args, cin) -> DepthHead:
    mods = rd.expect(rec, mpath, "Depth")
    nl = len(cin)
    proj = [rd.conv(r, f"{mpath}.proj.{i}") for i, r in enumerate(sequence(rd.ctx, mods.get("proj"), mpath + ".proj", "Conv"))]
    refine = [[rd.conv(r, f"{mpath}.refine.{i}.{j}") for j, r in enumerate(sequence(rd.ctx, s, f"{mpath}.refine.{i}", "Conv"))]
              for i, s in enumerate(sequence(rd.ctx, mods.get("refine"), mpath + ".refine", "Sequential"))]
    if len(proj) != nl or len(refine) != nl - 1:
        raise rd.err(mpath, f"{len(proj)} proj and {len(refine)} refine blocks, expected {nl} and {nl - 1} (levels)")
    mid = proj[0].out_channels
    if args and isinstance(args[0], int) and args[0] != mid:
        raise rd.err(mpath, f"c_mid: the yaml row gives {args[0]}, the checkpoint has {mid}")
    for i, (p, c) in enumerate(zip(proj, cin)):
        if p.in_channels != c or p.out_channels != mid or p.kernel.shape[2:] != (1, 1):
            raise rd.err(f"{mpath}.proj.{i}", f"weight {p.kernel.shape}: expected a 1x1 Conv {c} -> {mid} channels")
    for i, r in enumerate(refine):
        _chain(rd, f"{mpath}.refine.{i}", r, mid)
        if not r or r[-1].out_channels != mid:
            raise rd.err(f"{mpath}.refine.{i}", f"expected Convs keeping {mid} channels")
    items = sequence(rd.ctx, mods.get("head"), mpath + ".head", "modules")
    if len(items) != 4:
        raise rd.err(mpath + ".head", f"{len(items)} modules, expected 4 (Conv, ConvTranspose2d, Conv, Conv2d)")
    c1 = rd.conv(items[0], mpath + ".head.0")
    up = read_transpose_conv(rd, items[1], mpath + ".head.1")
    c3 = rd.conv(items[2], mpath + ".head.2")
    for what, want, got in (("head.0", mid, c1.in_channels), ("head.1", c1.out_channels, int(up.spec.kernel.shape[0])),
                            ("head.2", up.out_channels, c3.in_channels)):
        if want != got:
            raise rd.err(f"{mpath}.{what}", f"expected {want} input channels, the weight has {got}")
    out = _output_conv(rd, items[3], mpath + ".head.3", c3.out_channels, 1)
    cal = []
    for k in ("cal_a", "cal_b"):
        v = param(rd.ctx, rec, mpath, k)
        if v.shape != (1,) or not np.isfinite(v.astype(np.float64)).all():
            raise rd.err(mpath, f"{k} {short_repr(v)}: expected one finite value")
        cal.append(float(v.astype(np.float32)[0]))
    return DepthHead(mpath.replace(".", "_"), proj, refine, [c1, up, c3, out], *cal)


def read_dense_head(rd, rec, mpath, kind, args, cin):
    """A SemanticSegment or Depth row: its record, checked against the row's args and its inputs."""
    return (semantic if kind == "SemanticSegment" else depth)(rd, rec, mpath, args, cin)
