"""Ultralytics checkpoints, detection (YOLOv8, YOLO11, YOLOv5u, YOLO12, YOLOv9, YOLOv6, YOLOv3u, the Ghost variants;
P2, P5 and P6) and classification (the -cls models): the reader (weights.py, numpy only; backbones.py for the
YOLOv3u / Ghost / YOLOv6 / YOLO12 / YOLOv9 backbone and neck rows), the plan's typed records it builds (blocks.py,
numpy only), the Keras builder (model.py; backbone_model.py for those rows; keras_layers.py), and this family's
declaration (FAMILY)."""

from __future__ import annotations

from ..family import Family, OutputLayout
from .weights import plan_arrays
from ..metadata import class_names
from ..summary import plan_summary


def read_plan(ckpt, options):
    from .weights import read_plan as read_model_plan

    return read_model_plan(ckpt.path, ckpt.content)


def _classify_outputs(plan, decode: bool) -> list:
    logits = {"name": "logits", "shape": [None, plan.nc], "layout": "class logits (Classify's Linear output)"}
    if not decode:
        return [logits]
    return [{"name": "probabilities", "shape": [None, plan.nc],
             "layout": "softmax of the logits (Ultralytics Classify, eval mode: (probabilities, logits))"}, logits]


def metadata(plan, input_size, options) -> dict:
    h, w = input_size
    if plan.task == "classify":
        outputs = _classify_outputs(plan, options.decode)
    elif options.decode:
        outputs = [{"name": "detections", "layout": "[batch, 4 + classes, anchors]: x, y, w, h in input pixels, "
                    "class probabilities (Ultralytics Detect, eval mode)"}]
    else:
        outputs = [{"name": f"head_{i}", "shape": [None, h // int(s), w // int(s), 4 * plan.reg_max + plan.nc],
                    "layout": f"NHWC; channels 0..{4 * plan.reg_max - 1}: DFL distance bins (l, t, r, b; "
                              f"{plan.reg_max} each), then class logits",
                    "stride": [int(s), int(s)]} for i, s in enumerate(plan.strides)]
    return {
        "task": plan.task,
        "architecture": plan.model_class,
        "input": {"name": "images", "shape": [None, h, w, 3], "layout": "NHWC float32 RGB in [0, 1]", "size": [h, w]},
        "class_names": class_names(list(plan.names), plan.nc, plan.path),
        "strides": [[int(s), int(s)] for s in plan.strides],
        "anchors": [],
        "outputs": outputs,
    }


def layout(plan):
    """Detect's decoded output feeds NMS; a classification model has no boxes (None: NMS is refused)."""
    if plan.task == "classify":
        return None
    return OutputLayout("xywh_cls", channels_first=True, score="class probability")


def summary(plan, content) -> tuple:
    heads = [{"layer": f"level {i}", "type": "Detect (anchor-free, DFL)", "stride": int(st), "classes": plan.nc,
              "reg_max": plan.reg_max} for i, st in enumerate(plan.strides)]
    if plan.task == "classify":
        heads = [{"layer": plan.nodes[-1].name, "type": "Classify (pool + linear, softmax)", "classes": plan.nc}]
    extra = {"version": content["version"][:200]} if isinstance(content, dict) and isinstance(
        content.get("version"), str) else {}
    # the checkpoint's training size is the model's default input
    return "Ultralytics PyTorch checkpoint", extra, plan_summary(plan, plan.nodes, heads, (plan.imgsz, plan.imgsz))


FAMILY = Family(
    name="ultralytics",
    reads="Ultralytics YOLOv8/YOLO11/YOLOv5u/YOLO12/YOLOv9/YOLOv6/YOLOv3u/Ghost detection and classification "
          "(ultralytics.nn.tasks.DetectionModel, ClassificationModel)",
    recognise=lambda ckpt: ckpt.model is not None and ckpt.model.cls.module.startswith("ultralytics.nn.tasks"),
    plan=read_plan,
    arrays=plan_arrays,
    metadata=metadata,
    layout=layout,
    summary=summary,
    keras="pyloader.ultralytics.model",
    keras_modules=("pyloader.keras_blocks.torch_layers", "pyloader.ultralytics.keras_layers",
                   "pyloader.ultralytics.model"),
    letterbox=True,
)
