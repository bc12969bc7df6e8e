"""The Segment, Pose and OBB heads of Ultralytics checkpoints (numpy only): Detect's reading (heads.detect)
plus each task's cv4 branch, and Segment's Proto with its ConvTranspose2d; every attribute is checked against the
head's own tensors and the yaml row before use.

* Segment(nc, nm, npr): cv4[i] gives nm mask coefficients per anchor; Proto(ch[0], npr, nm) on the first level's
  input gives the nm prototype masks at twice that level's size (the row's npr scaled by width, as parse_model);
* Pose(nc, kpt_shape): cv4[i] gives kpt_shape[0] * kpt_shape[1] keypoint values (x, y[, visibility]) per anchor;
  kpt_shape is the head's, checked against the yaml's `kpt_shape`;
* OBB(nc, ne): cv4[i] gives ne (1) angle logit per anchor.

YOLO26's forms (Segment26, Pose26, OBB26) are end-to-end heads (.end2end: cv4 has its one2one_cv4 twin, read with
the Detect branch it goes with): Segment26's Proto26 also fuses the deeper levels (feat_refine, feat_fuse) before
the Proto chain; Pose26's cv4 is two Convs, then cv4_kpts' Conv2d (its cv4_sigma and flow_model are training-only,
not read); OBB26's cv4 gives the angle itself. Proto26's semseg branch is training-only, not read.
"""

from __future__ import annotations

import math

from ..boundary import short_repr
from ..torch_reader.modules import children, sequence
from .backbones import read_transpose_conv
from .blocks import OBB, OBB26, Pose, Pose26, Proto, Proto26, Segment, Segment26
from .heads import detect, detect_branch

__all__ = ["TASK_HEADS", "read_task_head"]

TASK_HEADS = ("Segment", "Pose", "OBB", "Segment26", "Pose26", "OBB26")  # the yaml modules (and head classes) read here
_RECORDS = {"Segment": Segment, "Pose": Pose, "OBB": OBB, "Segment26": Segment26, "Pose26": Pose26, "OBB26": OBB26}


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def proto(rd, rec, mpath, cin: int, kind="Proto") -> Proto:
    mods = rd.expect(rec, mpath, kind)
    cv1 = rd.conv(mods.get("cv1"), mpath + ".cv1")
    up = read_transpose_conv(rd, mods.get("upsample"), mpath + ".upsample")
    cv2, cv3 = rd.conv(mods.get("cv2"), mpath + ".cv2"), rd.conv(mods.get("cv3"), mpath + ".cv3")
    chain = ((cv1, cin, cv1.kernel.shape[1] * cv1.groups), (up, cv1.out_channels, up.spec.kernel.shape[0]),
             (cv2, up.out_channels, cv2.kernel.shape[1] * cv2.groups), (cv3, cv2.out_channels, cv3.kernel.shape[1] * cv3.groups))
    for (spec, want, got), part in zip(chain, ("cv1", "upsample", "cv2", "cv3")):
        if int(got) != want:
            raise rd.err(f"{mpath}.{part}", f"expected {want} input channels, the weight has {int(got)}")
    return Proto(mpath.replace(".", "_"), cv1, up, cv2, cv3)


def proto26(rd, rec, mpath, cin: list, npr: int, strides: list) -> Proto26:
    """Proto26: feat_refine[i] (1x1, level i + 1 -> the first level's channels) upsampled by 2 ** (i + 1), added to the
    first level's input; feat_fuse (to npr); the Proto chain."""
    mods = rd.expect(rec, mpath, "Proto26")
    if any(s != strides[0] * 2 ** i for i, s in enumerate(strides)):
        raise rd.err(mpath, f"strides {strides}: Proto26 upsamples level i by 2 ** i, expected each twice the last")
    items = sequence(rd.ctx, mods.get("feat_refine"), mpath + ".feat_refine", "Conv")
    refine = [rd.conv(r, f"{mpath}.feat_refine.{j}") for j, r in enumerate(items)]
    fuse = rd.conv(mods.get("feat_fuse"), mpath + ".feat_fuse")
    if len(refine) != len(cin) - 1:
        raise rd.err(mpath + ".feat_refine", f"{len(refine)} convs, expected one per level after the first ({len(cin) - 1})")
    for j, (spec, c) in enumerate(zip(refine + [fuse], cin[1:] + [cin[0]])):
        p = f"{mpath}.feat_refine.{j}" if j < len(refine) else mpath + ".feat_fuse"
        out = cin[0] if j < len(refine) else npr
        if spec.kernel.shape[:2] != (out, c) or spec.groups != 1 or spec.stride != (1, 1):
            raise rd.err(p, f"weight {spec.kernel.shape} stride {spec.stride}: expected {c} -> {out} channels, stride 1")
    return Proto26(mpath.replace(".", "_"), refine, fuse, proto(rd, rec, mpath, npr, "Proto26"))


def _pose26_branch(rd, mods, mpath, prefix, nl, nk) -> list:
    """Pose26's cv4 (two Convs per level) and cv4_kpts (the output Conv2d, nk) of a branch: per level, one list."""
    seqs = sequence(rd.ctx, mods.get(prefix + "cv4"), f"{mpath}.{prefix}cv4", "Sequential")
    outs = sequence(rd.ctx, mods.get(prefix + "cv4_kpts"), f"{mpath}.{prefix}cv4_kpts", "Conv2d")
    if len(seqs) != nl or len(outs) != nl:
        raise rd.err(f"{mpath}.{prefix}cv4", f"{len(seqs)} levels and {len(outs)} cv4_kpts, expected nl={nl}")
    levels = []
    for i, (seq, o) in enumerate(zip(seqs, outs)):
        p = f"{mpath}.{prefix}cv4.{i}"
        stages = [rd.conv(r, f"{p}.{j}") for j, r in enumerate(sequence(rd.ctx, seq, p, "Conv"))]
        out = rd.plain_conv(o, f"{mpath}.{prefix}cv4_kpts.{i}")
        if not stages or out.kernel.shape[:2] != (nk, stages[-1].out_channels) or out.kernel.shape[2:] != (1, 1) \
                or out.bias is None:
            raise rd.err(f"{mpath}.{prefix}cv4_kpts.{i}", f"weight {out.kernel.shape}: expected a 1x1 Conv2d with bias, "
                                                        f"{stages[-1].out_channels if stages else '?'} -> {nk} channels")
        levels.append(stages + [out])
    return levels


def read_task_head(rd, rec, mpath, kind, args, cin, width, max_ch, kpt_yaml):
    """The `kind` head (one of TASK_HEADS) of a yaml row (`args` as the yaml writes them, `cin` the channels of its
    inputs, the first feeding the Proto): Detect's fields plus the task's."""
    task = kind.removesuffix("26")
    ks = rec.attr("kpt_shape")
    if task == "Segment":
        nm, npr = rec.attr("nm"), rec.attr("npr")
        if not (_int(nm) and _int(npr)):
            raise rd.err(mpath, f"Segment nm={short_repr(nm)} npr={short_repr(npr)}: expected positive ints")
        n = nm
    elif task == "Pose":
        if not (isinstance(ks, (list, tuple)) and len(ks) == 2 and _int(ks[0]) and ks[1] in (2, 3)):
            raise rd.err(mpath, f"kpt_shape {short_repr(ks)}: expected [keypoints, 2 or 3]")
        if kpt_yaml is not None and list(kpt_yaml) != list(ks):
            raise rd.err(mpath, f"kpt_shape: the yaml gives {short_repr(kpt_yaml)}, the head has {list(ks)}")
        n = ks[0] * ks[1]
    else:
        ne = n = rec.attr("ne")
        if ne != 1 or isinstance(ne, bool):  # Ultralytics' dist2rbox rotates by one angle per anchor
            raise rd.err(mpath, f"OBB ne={short_repr(ne)}: expected 1 (one angle per anchor)")
    nl = rec.attr("nl")
    if kind == "Pose26":
        cv4_of = lambda mods, prefix: _pose26_branch(rd, mods, mpath, prefix, nl, n)  # noqa: E731
    else:  # per level; its input channels are checked with cv2's and cv3's (weights._row)
        cv4_of = lambda mods, prefix: detect_branch(rd, mods, mpath, prefix + "cv4", nl, n)  # noqa: E731
    D, cv4 = detect(rd, rec, mpath, kind, task=cv4_of)
    base = dict(name=D.name, levels=D.levels, nc=D.nc, reg_max=D.reg_max, strides=D.strides, dfl=D.dfl, cv4=cv4)
    record = _RECORDS[kind]

    def row_arg(i, what, got):
        want = args[i] if len(args) > i else None
        if _int(want) and want != got:
            raise rd.err(mpath, f"{what}: the yaml row gives {want}, the checkpoint has {got}")

    if task == "Segment":
        row_arg(1, "mask coefficients (nm)", nm)
        if len(args) > 2 and _int(args[2]):  # npr, scaled by width as parse_model does
            want = int(math.ceil(min(args[2], max_ch) * width / 8) * 8)
            if want != npr:
                raise rd.err(mpath, f"prototype channels (npr): the yaml row gives {want}, the checkpoint has {npr}")
        prec, ppath = children(rec).get("proto"), mpath + ".proto"
        P = proto26(rd, prec, ppath, cin, npr, D.strides) if kind == "Segment26" else proto(rd, prec, ppath, cin[0])
        chain = P.proto if kind == "Segment26" else P
        if chain.cv1.out_channels != npr or chain.cv3.out_channels != nm:
            raise rd.err(mpath + ".proto", f"{chain.cv1.out_channels} hidden and {chain.cv3.out_channels} output "
                                           f"channels, expected npr={npr} and nm={nm}")
        return record(**base, nm=nm, proto=P)
    if task == "Pose":
        return record(**base, kpt_shape=(int(ks[0]), int(ks[1])))
    row_arg(1, "angle channels (ne)", ne)
    return record(**base, ne=ne)
