"""Ultralytics checkpoints: detection (YOLOv8, YOLO11, YOLOv5u, YOLO12, YOLOv9, YOLOv6, YOLOv3u, the Ghost variants,
YOLO26 and YOLOv10 with their end-to-end heads: end2end.py; P2, P5 and P6), classification (the -cls models), the
Segment, Pose and OBB tasks of YOLOv8, YOLO11, YOLO12, YOLOv9 and YOLO26 (Segment26, Pose26, OBB26, end-to-end),
YOLO26's semantic segmentation and depth, RT-DETR (rtdetr.py reads it, rtdetr_model.py builds it), and YOLO-World /
YOLOE with the class embeddings the checkpoint stores (world.py reads them, world_model.py builds the World neck). The reader
(weights.py, numpy only; backbones.py for the YOLOv3u / Ghost / YOLOv6 / YOLO12 / YOLOv9 backbone and neck rows,
yolov10.py for YOLOv10's blocks, heads.py for the Detect heads, task_heads.py for the task heads, dense_heads.py for
the semantic and depth heads; dense_model.py builds them), the plan's typed records it builds (blocks.py, numpy
only), the Keras builder (model.py; backbone_model.py for those rows; keras_layers.py; topk.py for the end-to-end
top-k), and this family's declaration (FAMILY)."""

from __future__ import annotations

from ..family import Family, OutputLayout
from .weights import plan_arrays
from ..metadata import plan_fields
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
    return _detect_heads(plan, h, w, branch)


_TASK_LAYOUTS = {  # what follows x, y, w, h and the class probabilities in a decoded task model's detections
    "segment": ("mask coefficients (as cv4 gives them; a mask is sigmoid(coefficients . prototypes))",
                "raw mask coefficients"),
    "pose": ("keypoints: x, y in input pixels (and visibility, sigmoid, when kpt_shape[1] is 3) per keypoint",
             "per keypoint (channel k * kpt_shape[1] + d): x, y offsets (x in pixels is (2 * value + the cell's "
             "column) * stride, y likewise with its row), then the visibility logit when kpt_shape[1] is 3"),
    "obb": ("the angle in radians, (sigmoid - 0.25) * pi in [-pi/4, 3pi/4); x, y is the rotated box's centre, w, h "
            "its sides (Ultralytics dist2rbox)", "the angle logit (the angle is (sigmoid - 0.25) * pi)"),
}


_TASK26_LAYOUTS = {  # where YOLO26's heads (Pose26, OBB26) differ
    "pose": ("keypoints: x, y in input pixels (and visibility, sigmoid, when kpt_shape[1] is 3) per keypoint",
             "per keypoint (channel k * kpt_shape[1] + d): x, y offsets (x in pixels is (value + the cell's column "
             "+ 0.5) * stride, y likewise with its row), then the visibility logit when kpt_shape[1] is 3"),
    "obb": ("the angle in radians (OBB26: cv4's value itself); x, y is the rotated box's centre, w, h its sides "
            "(Ultralytics dist2rbox)", "the angle in radians (OBB26: no sigmoid)"),
}


def _task_outputs(plan, h, w, decode: bool) -> list:
    """Segment / Pose / OBB outputs (model.py's _task_model); an end-to-end head's selection (.end2end) as top-k rows."""
    head, task, e2e = plan.nodes[-1].parts, plan.task, plan.end2end
    ch, kind = head.channels, type(head).__name__
    text = (_TASK26_LAYOUTS if kind in ("Pose26", "OBB26") else _TASK_LAYOUTS).get(task, _TASK_LAYOUTS[task])
    anchors = sum((h // int(s)) * (w // int(s)) for s in plan.strides)
    if decode and e2e is not None and e2e.selected:
        k, box = min(e2e.max_det, anchors), ("x, y, w, h, the rotated box" if task == "obb" else "x1, y1, x2, y2")
        outputs = [{"name": "detections", "shape": [None, k, 6 + ch], "rows": "xyxy_score_class" if task != "obb" else
                    "xywh_score_class", "layout": f"[batch, {k}, 6 + {ch}] rows {box} (input pixels), score, class "
                    f"index (a float), then {text[0]}, best first: Ultralytics' end-to-end {kind} in eval mode, top-k "
                    f"of the one-to-one branch (max_det {e2e.max_det}{', class-agnostic' if e2e.agnostic else ''}), "
                    f"no NMS"}]
    elif decode:
        outputs = [{"name": "detections", "shape": [None, 4 + plan.nc + ch, anchors],
                    "layout": f"[batch, 4 + classes + {ch}, anchors]: x, y, w, h in input pixels, class probabilities, "
                              f"then {text[0]} (Ultralytics {kind}, eval mode)"}]
    else:
        branch = "" if e2e is None else ("; the one-to-one branch" if e2e.selected else "; the one-to-many branch")
        outputs = _detect_heads(plan, h, w, branch) + [
            {"name": f"{head.output}_{i}", "shape": [None, h // int(s), w // int(s), ch],
             "layout": f"NHWC; {text[1]} (cv4[{i}]{branch})", "stride": [int(s), int(s)]}
            for i, s in enumerate(plan.strides)]
    if task == "segment":
        s = int(plan.strides[0]) // 2
        outputs.append({"name": "prototypes", "shape": [None, h // s, w // s, head.nm],
                        "layout": f"NHWC mask prototypes at 1/{s} of the input size (twice the first level's; "
                                  "Ultralytics' proto, NCHW there)"})
    return outputs


def _dense_outputs(plan, h, w, decode: bool) -> list:
    """SemanticSegment's logits; Depth's log depth or depth (dense_model.py)."""
    if plan.task == "semantic":
        return [{"name": "logits", "shape": [None, h // 8, w // 8, plan.nc], "stride": [8, 8],
                 "layout": "NHWC per-pixel class logits at 1/8 of the input size (Ultralytics SemanticSegment, eval "
                           "mode, NCHW there; its predictor resizes them to the image, then the argmax)"}]
    shape = [None, h // 4, w // 4, 1]
    if not decode:
        return [{"name": "log_depth", "shape": shape, "stride": [4, 4], "layout": "NHWC log depth at 1/4 of the input "
                 "size (Depth's last Conv2d; depth is exp(cal_a * clamp(value, -4, 5) + cal_b))"}]
    return [{"name": "depth", "shape": shape, "stride": [4, 4], "layout": "NHWC positive depth at 1/4 of the input "
             "size (Ultralytics Depth, eval mode, calibration applied; its predictor resizes it to the image)"}]


def _detect_heads(plan, h, w, branch="") -> list:
    box = (f"DFL distance bins (l, t, r, b; {plan.reg_max} each)" if plan.reg_max > 1 else
           "distances l, t, r, b from the cell centre in strides (reg_max 1, no DFL)")
    return [{"name": f"head_{i}", "shape": [None, h // int(s), w // int(s), 4 * plan.reg_max + plan.nc],
             "layout": f"NHWC; channels 0..{4 * plan.reg_max - 1}: {box}, then class logits{branch}",
             "stride": [int(s), int(s)]} for i, s in enumerate(plan.strides)]


def _rtdetr_outputs(plan, h, w, decode: bool) -> list:
    """RTDETRDecoder's eval output (rtdetr_model.py): the queries, or its postprocess's top-k rows."""
    H = plan.nodes[-1].parts
    q = min(H.num_queries, sum((h // int(s)) * (w // int(s)) for s in plan.strides))
    if decode:
        k = min(H.num_queries, q * plan.nc)
        return [{"name": "detections", "shape": [None, k, 6], "rows": "cxcywh_normalized_score_class",
                 "layout": f"[batch, {k}, 6] rows cx, cy, w, h (fractions of the input's width and height), score, "
                           f"class index (a float), best first: Ultralytics' RTDETRDecoder in eval mode, the top {k} "
                           f"(query, class) sigmoid scores of its {q} queries; no NMS"}]
    return [{"name": "predictions", "shape": [None, q, 4 + plan.nc],
             "layout": f"[batch, {q}, 4 + classes] per query (the encoder's top {q} anchors, in that order): cx, cy, "
                       f"w, h (fractions of the input), then class logits (the sigmoid gives the scores): the eval "
                       f"decoder layer's boxes and score head (RTDETRDecoder's dec_bboxes, dec_scores)"}]


def metadata(plan, input_size, options) -> dict:
    h, w = input_size
    extra = {}
    if plan.nodes[-1].kind == "RTDETRDecoder":
        outputs = _rtdetr_outputs(plan, h, w, options.decoded)
    elif plan.task == "classify":
        outputs = _classify_outputs(plan, options.decoded)
    elif plan.task in ("semantic", "depth"):
        outputs = _dense_outputs(plan, h, w, options.decoded)
    elif plan.task in _TASK_LAYOUTS:
        outputs = _task_outputs(plan, h, w, options.decoded)
        if plan.task == "pose":
            extra = {"kpt_shape": list(plan.nodes[-1].parts.kpt_shape)}
    else:
        outputs = _detect_outputs(plan, input_size, options.decoded)
    if plan.end2end is not None:
        extra = {**extra, "end2end": {"branch": "one2one" if plan.end2end.selected else "one2many",
                             "max_det": plan.end2end.max_det, "agnostic": plan.end2end.agnostic}}
    return {"task": plan.task, **plan_fields(plan, input_size, outputs), **extra}


_NMS_EXTRAS = {"segment": "mask_coefficients", "pose": "keypoints", "obb": "angles"}  # per kept box, after classes


def layout(plan):
    """Detect's decoded output feeds NMS (an end-to-end head's one-to-many branch, as Ultralytics' nms=True export:
    .end2end); Segment, Pose and OBB add their columns per kept box (Ultralytics' nms=True rows: mask coefficients
    with the prototypes passed through, decoded keypoints, the angle of rotated x, y, w, h boxes, suppressed with
    probiou). A classification model has no boxes, RT-DETR selects its own top-k: None, NMS is refused."""
    if plan.task not in ("detect", *_NMS_EXTRAS) or plan.nodes[-1].kind == "RTDETRDecoder":
        return None
    extras = () if plan.task == "detect" else (
        (_NMS_EXTRAS[plan.task], plan.nodes[-1].parts.channels, _TASK_LAYOUTS[plan.task][0]),)
    return OutputLayout("xywh_cls", channels_first=True, score="class probability", extras=extras,
                        rotated=plan.task == "obb", passthrough=("prototypes",) if plan.task == "segment" else ())


def summary(plan, content) -> tuple:
    e2e, kind, task = plan.end2end, "Detect", {}
    if plan.task in _TASK_LAYOUTS:  # per anchor: nm mask coefficients, the keypoints (count x dims), the angle
        H = plan.nodes[-1].parts
        kind = f"{plan.nodes[-1].kind}: Detect + {H.output}"
        task = {H.output: "x".join(map(str, H.kpt_shape)) if plan.task == "pose" else H.channels}
    kind += " (anchor-free, " + ("DFL" if plan.reg_max > 1 else "no DFL") + (
        "" if e2e is None else f"; end-to-end, {'one-to-one branch + top-k' if e2e.selected else 'one-to-many branch'}") + ")"
    heads = [{"layer": f"level {i}", "type": kind, "stride": int(st), "classes": plan.nc,
              "reg_max": plan.reg_max, **task} for i, st in enumerate(plan.strides)]
    if plan.task == "classify":
        heads = [{"layer": plan.nodes[-1].name, "type": "Classify (pool + linear, softmax)", "classes": plan.nc}]
    elif plan.nodes[-1].kind == "RTDETRDecoder":
        H = plan.nodes[-1].parts
        heads = [{"layer": plan.nodes[-1].name, "type": f"RTDETRDecoder ({len(H.layers)} deformable decoder layers "
                  f"run, {H.num_queries} queries, top-k, no NMS)", "strides": [int(s) for s in plan.strides],
                  "classes": plan.nc}]
    elif plan.task == "semantic":
        heads = [{"layer": plan.nodes[-1].name, "type": "SemanticSegment (per-pixel class logits, stride 8)",
                  "classes": plan.nc}]
    elif plan.task == "depth":
        heads = [{"layer": plan.nodes[-1].name, "type": "Depth (top-down fusion, log depth at stride 4)", "channels": 1}]
    extra = {"version": content["version"][:200]} if isinstance(content, dict) and isinstance(
        content.get("version"), str) else {}
    # the checkpoint's training size is the model's default input
    return "Ultralytics PyTorch checkpoint", extra, plan_summary(plan, plan.nodes, heads, (plan.imgsz, plan.imgsz))


FAMILY = Family(
    name="ultralytics",
    reads="Ultralytics YOLOv8/YOLO11/YOLOv5u/YOLO12/YOLOv9/YOLOv6/YOLOv3u/Ghost/YOLO26/YOLOv10 detection, "
          "classification, segmentation, pose and OBB (ultralytics.nn.tasks.DetectionModel, ClassificationModel, "
          "SegmentationModel, PoseModel, OBBModel; YOLO26 semantic segmentation and depth: SemanticSegmentationModel, "
          "DepthModel; RT-DETR: RTDETRDetectionModel; YOLO-World and YOLOE with stored class embeddings: WorldModel, "
          "YOLOEModel, YOLOESegModel)",
    recognise=lambda ckpt: ckpt.model is not None and ckpt.model.cls.module.startswith("ultralytics.nn.tasks"),
    plan=read_plan,
    arrays=plan_arrays,
    metadata=metadata,
    layout=layout,
    summary=summary,
    keras="pyloader.ultralytics.model",
    keras_modules=("pyloader.keras_blocks.torch_layers", "pyloader.ultralytics.keras_layers",
                   "pyloader.ultralytics.model", "pyloader.ultralytics.topk",
                   "pyloader.ultralytics.dense_model", "pyloader.ultralytics.rtdetr_model",
                   "pyloader.ultralytics.world_model"),
    letterbox=True,
)
