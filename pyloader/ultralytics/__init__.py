"""Ultralytics checkpoints, detection (YOLOv8, YOLO11, YOLOv5u, YOLO26 and YOLOv10 with their end-to-end heads:
end2end.py; P5 and P6) and classification (the -cls models): the reader (weights.py, numpy only; YOLOv10's blocks
in yolov10.py), the plan's typed records it builds (blocks.py, numpy only), the Keras builder (model.py), and this family's declaration
(FAMILY)."""

from __future__ import annotations

from ..family import Family, OutputLayout
from .weights import plan_arrays
from ..metadata import class_names
from ..summary import plan_summary


def read_plan(ckpt, options):
    from .weights import read_plan as read_model_plan

    return read_model_plan(ckpt.path, ckpt.content, nms=options.nms is not None)


def _classify_outputs(plan, decode: bool) -> list:
    logits = {"name": "logits", "shape": [None, plan.nc], "layout": "class logits (Classify's Linear output)"}
    if not decode:
        return [logits]
    return [{"name": "probabilities", "shape": [None, plan.nc],
             "layout": "softmax of the logits (Ultralytics Classify, eval mode: (probabilities, logits))"}, logits]


def _detect_outputs(plan, input_size, decode: bool) -> list:
    """Detect's outputs: raw heads of the branch the model computes, or its decoded eval output (.end2end)."""
    h, w = input_size
    e2e = plan.end2end
    branch = "" if e2e is None else ("; the one-to-one branch (one2one_cv2, one2one_cv3)" if e2e.selected else
                                     "; the one-to-many branch (cv2, cv3)")
    if decode and e2e is not None and e2e.selected:
        k = min(e2e.max_det, sum((h // int(s)) * (w // int(s)) for s in plan.strides))
        return [{"name": "detections", "shape": [None, k, 6], "rows": "xyxy_score_class",
                 "layout": f"[batch, {k}, 6] rows x1, y1, x2, y2 (input pixels), score, class index (a float), best "
                           f"first: Ultralytics' end-to-end Detect in eval mode, top-k of the one-to-one branch "
                           f"(max_det {e2e.max_det}{', class-agnostic' if e2e.agnostic else ''}), no NMS"}]
    if decode:
        return [{"name": "detections", "layout": "[batch, 4 + classes, anchors]: x, y, w, h in input pixels, "
                 f"class probabilities (Ultralytics Detect, eval mode{branch})"}]
    box = (f"DFL distance bins (l, t, r, b; {plan.reg_max} each)" if plan.reg_max > 1 else
           "distances l, t, r, b from the cell centre in strides (reg_max 1, no DFL)")
    return [{"name": f"head_{i}", "shape": [None, h // int(s), w // int(s), 4 * plan.reg_max + plan.nc],
             "layout": f"NHWC; channels 0..{4 * plan.reg_max - 1}: {box}, then class logits{branch}",
             "stride": [int(s), int(s)]} for i, s in enumerate(plan.strides)]


def metadata(plan, input_size, options) -> dict:
    h, w = input_size
    if plan.task == "classify":
        outputs = _classify_outputs(plan, options.decode)
    else:
        outputs = _detect_outputs(plan, input_size, options.decode)
    e2e = {} if plan.end2end is None else {"end2end": {
        "branch": "one2one" if plan.end2end.selected else "one2many", "max_det": plan.end2end.max_det,
        "agnostic": plan.end2end.agnostic}}
    return {
        "task": plan.task,
        "architecture": plan.model_class,
        "input": {"name": "images", "shape": [None, h, w, 3], "layout": "NHWC float32 RGB in [0, 1]", "size": [h, w]},
        "class_names": class_names(list(plan.names), plan.nc, plan.path),
        "strides": [[int(s), int(s)] for s in plan.strides],
        "anchors": [],
        "outputs": outputs,
        **e2e,
    }


def layout(plan):
    """Detect's decoded output feeds NMS (an end-to-end head's one-to-many branch, as Ultralytics' nms=True export:
    .end2end); a classification model has no boxes (None: NMS is refused)."""
    if plan.task == "classify":
        return None
    return OutputLayout("xywh_cls", channels_first=True, score="class probability")


def summary(plan, content) -> tuple:
    e2e = plan.end2end
    kind = "Detect (anchor-free, " + ("DFL" if plan.reg_max > 1 else "no DFL") + (
        "" if e2e is None else f"; end-to-end, {'one-to-one branch + top-k' if e2e.selected else 'one-to-many branch'}") + ")"
    heads = [{"layer": f"level {i}", "type": kind, "stride": int(st), "classes": plan.nc,
              "reg_max": plan.reg_max} for i, st in enumerate(plan.strides)]
    if plan.task == "classify":
        heads = [{"layer": plan.nodes[-1].name, "type": "Classify (pool + linear, softmax)", "classes": plan.nc}]
    extra = {"version": content["version"][:200]} if isinstance(content, dict) and isinstance(
        content.get("version"), str) else {}
    # the checkpoint's training size is the model's default input
    return "Ultralytics PyTorch checkpoint", extra, plan_summary(plan, plan.nodes, heads, (plan.imgsz, plan.imgsz))


FAMILY = Family(
    name="ultralytics",
    reads="Ultralytics YOLOv8/YOLO11/YOLOv5u/YOLO26/YOLOv10 detection and classification "
          "(ultralytics.nn.tasks.DetectionModel, ClassificationModel)",
    recognise=lambda ckpt: ckpt.model is not None and ckpt.model.cls.module.startswith("ultralytics.nn.tasks"),
    plan=read_plan,
    arrays=plan_arrays,
    metadata=metadata,
    layout=layout,
    summary=summary,
    keras="pyloader.ultralytics.model",
    keras_modules=("pyloader.keras_blocks.torch_layers", "pyloader.ultralytics.model", "pyloader.ultralytics.topk"),
    letterbox=True,
)
