"""End-to-end (NMS-free) Ultralytics heads, numpy only: which branch of a Detect / v10Detect the model computes.

YOLO26's Detect (`end2end: True` in its yaml) and YOLOv10's v10Detect hold two branches: the one-to-many cv2 / cv3
(trained with NMS in mind) and the one-to-one one2one_cv2 / one2one_cv3 (NMS-free). In ultralytics 8.4.190 the head's
`end2end` property is `one2one_cv2 is not None and (_end2end or cv2 is None)`: `_end2end` is what the trainer, the
validator or the predictor last set (`model.end2end = nms is False`; False unless asked), and Detect.fuse() drops the
branch not selected. In eval mode an end2end head returns the one-to-one branch's decoded boxes (x1, y1, x2, y2)
and scores through Detect.postprocess's top-k (`max_det`, `agnostic_nms`: instance attributes when the trainer set
them, else the class's 300 and False); otherwise the one-to-many branch decoded as a plain Detect. An `end2end`
instance attribute that earlier releases pickled is shadowed by 8.4.190's property, and not read here either.

pyloader follows the checkpoint: decode=True is that eval output, raw heads are the branch it decodes. nms=True
takes the one-to-many branch, as Ultralytics' exporter does for `nms=True` (it sets `end2end = nms is False`); a
head whose one-to-many branch was fused away has only the top-k output, so nms=True is refused. The branch the
model does not compute is read and checked but its arrays are not the model's (`read` returns the model's).
"""

from __future__ import annotations

from ..boundary import short_repr
from ..errors import FormatError
from .blocks import EndToEnd

__all__ = ["head_levels"]

_MAX_DET, _AGNOSTIC = 300, False  # Detect's class attributes


def _state(rd, rec, mpath):
    flag, max_det, agnostic = rec.attr("_end2end", False), rec.attr("max_det", _MAX_DET), rec.attr("agnostic_nms", _AGNOSTIC)
    if not isinstance(flag, bool) or not isinstance(agnostic, bool):
        raise rd.err(mpath, f"_end2end {short_repr(flag)}, agnostic_nms {short_repr(agnostic)}: expected bools")
    if not isinstance(max_det, int) or isinstance(max_det, bool) or max_det < 1:
        raise rd.err(mpath, f"max_det {short_repr(max_det)}: expected a positive int")
    return flag, max_det, agnostic


def head_levels(rd, rec, mods, mpath, branch) -> tuple:
    """(levels, EndToEnd or None) of a Detect / v10Detect module: the DetectLevels of the branch the model computes
    (its ConvSpecs left in rd.convs, the other branch's taken out) and, for a head with a one-to-one branch, the
    selection (None: a plain Detect). `branch(prefix)` reads the DetectLevels of prefix + cv2 / cv3 (heads.detect);
    rd.nms: the model ends in NMS."""
    if mods.get("one2one_cv2") is None and mods.get("one2one_cv3") is None:
        return branch(""), None
    flag, max_det, agnostic = _state(rd, rec, mpath)
    many = mods.get("cv2") is not None or mods.get("cv3") is not None
    if rd.nms and not many:
        raise FormatError(f"{rd.ctx.path}: module '{mpath}': nms needs the one-to-many branch (cv2, cv3) and this "
                          f"end-to-end head holds only its one-to-one branch (fused): its decode=True output is "
                          f"already Ultralytics' top-k selection [batch, min(max_det, anchors), 6] (max_det {max_det})")
    start = len(rd.convs)
    one2many = branch("") if many else None
    mid = len(rd.convs)
    one2one = branch("one2one_")
    selected = not many or (flag and not rd.nms)
    del rd.convs[slice(start, mid) if selected else slice(mid, None)]
    return (one2one if selected else one2many), EndToEnd(max_det, agnostic, selected)
