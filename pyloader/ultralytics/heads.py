"""The Detect heads of Ultralytics checkpoints (numpy only): Detect, YOLOv10's v10Detect and the Detect part of the
task heads (task_heads reads the rest), read with the family's reader (`weights._Reader`: its conv, plain_conv,
expect and err) into blocks.Detect. Every attribute is checked against the head's tensors before use: nl, nc,
reg_max, no, the strides, the DFL (nn.Identity when reg_max is 1: YOLO26), each level's cv2 (box) and cv3 (class)
branch; a head with a one-to-one branch reads the branch the model computes (.end2end)."""

from __future__ import annotations

import numpy as np

from ..boundary import short_repr
from ..torch_reader.modules import NN, children, conv2d, is_class, sequence
from ..torch_reader.records import Record
from .blocks import Detect, DetectLevel
from .end2end import head_levels

__all__ = ["ul", "detect", "detect_branch", "strides_dfl"]


def ul(rec, name: str) -> bool:
    """An Ultralytics module class (`ultralytics.nn.modules.*`, any submodule)."""
    return isinstance(rec, Record) and rec.cls.name == name and ".nn.modules" in f".{rec.cls.module}"


def detect(rd, rec, mpath, kind="Detect", task=None):
    """Detect or v10Detect: the branch the model computes (.end2end; its selection kept in rd.end2end); or the
    Detect part of a task head (`kind`: Segment, Pose, OBB and their YOLO26 forms; task_heads reads the rest):
    `task(mods, prefix)` reads the task's own branch (cv4...) with each Detect branch, and (Detect, the computed
    branch's) is returned."""
    mods = rd.expect(rec, mpath, kind)
    nl, nc, reg_max, no = (rec.attr(k) for k in ("nl", "nc", "reg_max", "no"))
    if not all(isinstance(v, int) and v > 0 for v in (nl, nc, reg_max, no)) or no != nc + 4 * reg_max:
        raise rd.err(mpath, f"Detect nl={nl} nc={nc} reg_max={reg_max} no={no}: inconsistent")
    if rec.attr("xyxy", False) is not False:
        raise rd.err(mpath, f"xyxy {short_repr(rec.attr('xyxy'))}: only xywh decoding (False) is supported")
    strides, bins = strides_dfl(rd, rec, mods, mpath, nl, reg_max)

    def branch(prefix):  # the DetectLevels of cv2 / cv3 (prefix "") or one2one_cv2 / one2one_cv3 (prefix "one2one_")
        box = detect_branch(rd, mods, mpath, prefix + "cv2", nl, 4 * reg_max)
        levels = [DetectLevel(b, c) for b, c in zip(box, detect_branch(rd, mods, mpath, prefix + "cv3", nl, nc))]
        return levels if task is None else (levels, task(mods, prefix))

    got, rd.end2end = head_levels(rd, rec, mods, mpath, branch)
    levels, extra = (got, None) if task is None else got
    D = Detect(mpath.replace(".", "_"), levels, nc, reg_max, strides, bins)
    return D if task is None else (D, extra)


def strides_dfl(rd, rec, mods, mpath, nl, reg_max) -> tuple:
    """(strides, the DFL's integral weights) of a Detect-like head: its `stride` tensor of nl positive integers and
    its DFL conv (nn.Identity when reg_max is 1: YOLO26)."""
    stride = rec.attr("stride")
    if not isinstance(stride, np.ndarray) or stride.shape != (nl,):
        raise rd.err(mpath, f"stride {short_repr(stride)}: expected a tensor of {nl} strides")
    strides = [float(s) for s in stride.astype(np.float32)]
    if any(s <= 0 or s != int(s) for s in strides):
        raise rd.err(mpath, f"strides {strides}: expected positive integers")
    dfl = mods.get("dfl")
    if reg_max == 1:  # YOLO26: the distances themselves, nn.Identity in place of the DFL
        if not is_class(dfl, "Identity", *NN):
            raise rd.err(mpath + ".dfl", f"expected an Identity (reg_max 1), found {short_repr(dfl)}")
        bins = []
    else:
        if not ul(dfl, "DFL"):
            raise rd.err(mpath + ".dfl", f"expected a DFL module (reg_max {reg_max}), found {short_repr(dfl)}")
        dconv = conv2d(rd.ctx, children(dfl).get("conv"), mpath + ".dfl.conv", "")
        if dconv.kernel.shape != (1, reg_max, 1, 1) or dconv.bias is not None:
            raise rd.err(mpath + ".dfl.conv", f"weight of shape {dconv.kernel.shape}, expected (1, {reg_max}, 1, 1), no bias")
        bins = [float(v) for v in dconv.kernel.astype(np.float32).reshape(-1)]
    return strides, bins


def detect_branch(rd, mods, mpath, branch, nl, width) -> list:
    """Detect's cv2 (box) or cv3 (class) branch (or a task head's cv4): per level, its ConvSpecs (the last the
    output Conv2d)."""
    seqs = sequence(rd.ctx, mods.get(branch), f"{mpath}.{branch}", "Sequential")
    if len(seqs) != nl:
        raise rd.err(f"{mpath}.{branch}", f"{len(seqs)} levels, expected nl={nl}")
    levels = []
    for i, s in enumerate(seqs):
        p = f"{mpath}.{branch}.{i}"
        items = sequence(rd.ctx, s, p, "Conv")
        if len(items) != 3:
            raise rd.err(p, f"{len(items)} modules, expected 3 (two conv stages and the output Conv2d)")
        stages = []
        for j, r in enumerate(items[:2]):
            if is_class(r, "Sequential", *NN):  # YOLO11's class branch: Sequential(DWConv, Conv)
                stages.extend(rd.conv(q, f"{p}.{j}.{k}") for k, q in enumerate(sequence(rd.ctx, r, f"{p}.{j}", "Conv")))
            else:
                stages.append(rd.conv(r, f"{p}.{j}"))
        out = rd.plain_conv(items[2], f"{p}.2")
        if out.out_channels != width or out.kernel.shape[2:] != (1, 1) or out.bias is None:
            raise rd.err(f"{p}.2", f"expected a 1x1 Conv2d with bias and {width} outputs, got weight {out.kernel.shape}")
        levels.append(stages + [out])
    return levels
