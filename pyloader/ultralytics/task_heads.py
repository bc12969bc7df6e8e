"""The Segment, Pose and OBB heads of Ultralytics checkpoints (numpy only): Detect's reading (heads.detect)
plus each task's cv4 branch, and Segment's Proto with its ConvTranspose2d; every attribute is checked against the
head's own tensors and the yaml row before use.

* Segment(nc, nm, npr): cv4[i] gives nm mask coefficients per anchor; Proto(ch[0], npr, nm) on the first level's
  input gives the nm prototype masks at twice that level's size (the row's npr scaled by width, as parse_model);
* Pose(nc, kpt_shape): cv4[i] gives kpt_shape[0] * kpt_shape[1] keypoint values (x, y[, visibility]) per anchor;
  kpt_shape is the head's, checked against the yaml's `kpt_shape`;
* OBB(nc, ne): cv4[i] gives ne (1) angle logit per anchor.
"""

from __future__ import annotations

import math

from ..boundary import short_repr
from ..torch_reader.modules import children
from .backbones import read_transpose_conv
from .blocks import OBB, Pose, Proto, Segment
from .heads import detect, detect_branch

__all__ = ["TASK_HEADS", "read_task_head"]

TASK_HEADS = ("Segment", "Pose", "OBB")  # the yaml modules (and head classes) read here


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def proto(rd, rec, mpath, cin: int) -> Proto:
    mods = rd.expect(rec, mpath, "Proto")
    cv1 = rd.conv(mods.get("cv1"), mpath + ".cv1")
    up = read_transpose_conv(rd, mods.get("upsample"), mpath + ".upsample")
    cv2, cv3 = rd.conv(mods.get("cv2"), mpath + ".cv2"), rd.conv(mods.get("cv3"), mpath + ".cv3")
    chain = ((cv1, cin, cv1.kernel.shape[1] * cv1.groups), (up, cv1.out_channels, up.spec.kernel.shape[0]),
             (cv2, up.out_channels, cv2.kernel.shape[1] * cv2.groups), (cv3, cv2.out_channels, cv3.kernel.shape[1] * cv3.groups))
    for (spec, want, got), part in zip(chain, ("cv1", "upsample", "cv2", "cv3")):
        if int(got) != want:
            raise rd.err(f"{mpath}.{part}", f"expected {want} input channels, the weight has {int(got)}")
    return Proto(mpath.replace(".", "_"), cv1, up, cv2, cv3)


def read_task_head(rd, rec, mpath, kind, args, cin, width, max_ch, kpt_yaml):
    """The `kind` head (one of TASK_HEADS) of a yaml row (`args` as the yaml writes them, `cin` the channels of its
    inputs, the first feeding the Proto): Detect's fields plus the task's."""
    D = detect(rd, rec, mpath, kind)
    if rd.end2end is not None:
        raise rd.err(mpath, f"end-to-end (one-to-one, NMS-free) {kind} heads are not supported")
    base = dict(name=D.name, levels=D.levels, nc=D.nc, reg_max=D.reg_max, strides=D.strides, dfl=D.dfl)

    def row_arg(i, what, got):
        want = args[i] if len(args) > i else None
        if _int(want) and want != got:
            raise rd.err(mpath, f"{what}: the yaml row gives {want}, the checkpoint has {got}")

    def cv4(n):  # per level; its input channels are checked with cv2's and cv3's (weights._row)
        return detect_branch(rd, children(rec), mpath, "cv4", D.nl, n)

    if kind == "Segment":
        nm, npr = rec.attr("nm"), rec.attr("npr")
        if not (_int(nm) and _int(npr)):
            raise rd.err(mpath, f"Segment nm={short_repr(nm)} npr={short_repr(npr)}: expected positive ints")
        row_arg(1, "mask coefficients (nm)", nm)
        if len(args) > 2 and _int(args[2]):  # npr, scaled by width as parse_model does
            want = int(math.ceil(min(args[2], max_ch) * width / 8) * 8)
            if want != npr:
                raise rd.err(mpath, f"prototype channels (npr): the yaml row gives {want}, the checkpoint has {npr}")
        P = proto(rd, children(rec).get("proto"), mpath + ".proto", cin[0])
        if P.cv1.out_channels != npr or P.cv3.out_channels != nm:
            raise rd.err(mpath + ".proto", f"{P.cv1.out_channels} hidden and {P.cv3.out_channels} output channels, "
                                           f"expected npr={npr} and nm={nm}")
        return Segment(**base, cv4=cv4(nm), nm=nm, proto=P)
    if kind == "Pose":
        ks = rec.attr("kpt_shape")
        if not (isinstance(ks, (list, tuple)) and len(ks) == 2 and _int(ks[0]) and ks[1] in (2, 3)):
            raise rd.err(mpath, f"kpt_shape {short_repr(ks)}: expected [keypoints, 2 or 3]")
        if kpt_yaml is not None and list(kpt_yaml) != list(ks):
            raise rd.err(mpath, f"kpt_shape: the yaml gives {short_repr(kpt_yaml)}, the head has {list(ks)}")
        return Pose(**base, cv4=cv4(ks[0] * ks[1]), kpt_shape=(int(ks[0]), int(ks[1])))
    ne = rec.attr("ne")
    if ne != 1 or isinstance(ne, bool):  # Ultralytics' dist2rbox rotates by one angle per anchor
        raise rd.err(mpath, f"OBB ne={short_repr(ne)}: expected 1 (one angle per anchor)")
    row_arg(1, "angle channels (ne)", ne)
    return OBB(**base, cv4=cv4(ne), ne=ne)
