"""WongKinYiu's YOLOv9 `.pt` checkpoints (github.com/WongKinYiu/yolov9; PyPI `yolo9`): the module records (blocks.py),
the reader (weights.py, numpy only, on the shared safe torch reader), the Keras model builder (model.py), and this
family's declaration (FAMILY)."""

from __future__ import annotations

from ..errors import FormatError
from ..family import Family, OutputLayout
from ..metadata import plan_fields
from ..summary import plan_summary
from .weights import is_yolov9_model, plan_arrays, plan_from_model

_DECODED = ("[batch, 4 + classes, anchors]: x, y, w, h in input pixels, class probabilities (YOLOv9 {kind}, eval "
            "mode{branch})")


def _models_yolo(model) -> bool:
    module = model.cls.module
    return (module == "models.yolo" or module.endswith(".models.yolo")) and model.cls.name in (
        "Model", "DetectionModel", "SegmentationModel")  # segmentation: refused by the reader, naming its head


def recognise(ckpt) -> bool:
    """models.yolo.DetectionModel as YOLOv5 / YOLOv7 pickle it, told apart by its yaml (weights.is_yolov9_model); a
    state_dict with a YOLOv9 yaml (refused by read_plan)."""
    if ckpt.model is None:
        return ckpt.yaml is not None and is_yolov9_model(ckpt.yaml)
    return _models_yolo(ckpt.model) and is_yolov9_model(ckpt.model)


def read_plan(ckpt, options):
    if ckpt.model is None:
        raise FormatError(f"{ckpt.path}: a plain state_dict of a YOLOv9 model is not read (its module records carry "
                          "what the yaml leaves open); pass the checkpoint train.py saved (model / ema)")
    return plan_from_model(ckpt.model, ckpt.path, nms=options.nms is not None)


def metadata(plan, input_size, options) -> dict:
    h, w = input_size
    head, outputs = plan.head, []
    anchors = sum((h // int(s)) * (w // int(s)) for s in plan.strides)
    for prefix, b in zip(head.prefixes[-len(plan.returned):], plan.returned):
        branch = f"; branch {b + 1} of {len(head.branches)}" if len(head.branches) > 1 else ""
        if options.decoded:
            outputs.append({"name": prefix + "detections", "shape": [None, 4 + plan.nc, anchors],
                            "layout": _DECODED.format(kind=head.kind, branch=branch)})
            continue
        outputs += [{"name": f"{prefix}head_{i}", "shape": [None, h // int(s), w // int(s), 4 * plan.reg_max + plan.nc],
                     "layout": f"NHWC; channels 0..{4 * plan.reg_max - 1}: DFL distance bins (l, t, r, b; "
                               f"{plan.reg_max} each), then class logits{branch}", "stride": [int(s), int(s)]}
                    for i, s in enumerate(plan.strides)]
    return {"task": plan.task, **plan_fields(plan, input_size, outputs)}


def summary(plan, content) -> tuple:
    head = plan.head
    kind = f"{head.kind} (anchor-free, DFL; returns branch {', '.join(str(b + 1) for b in head.outputs)} of {len(head.branches)})"
    heads = [{"layer": f"level {i}", "type": kind, "stride": int(s), "classes": plan.nc, "reg_max": plan.reg_max}
             for i, s in enumerate(plan.strides)]
    used = [n for n in plan.nodes if n.index in plan.used]
    return "YOLOv9 PyTorch checkpoint", {}, plan_summary(plan, used, heads, (640, 640))


FAMILY = Family(
    name="yolov9",
    reads="YOLOv9 (WongKinYiu's models.yolo.DetectionModel whose yaml has YOLOv9 modules: GELAN, DDetect, DualDDetect)",
    recognise=recognise,
    plan=read_plan,
    arrays=plan_arrays,
    metadata=metadata,
    # NMS on the last (main) branch, detect_dual.py's pred[0][1]: the plan (nms) holds that branch alone
    layout=lambda plan: OutputLayout("xywh_cls", channels_first=True, score="class probability"),
    summary=summary,
    keras="pyloader.yolov9.model",
    keras_modules=("pyloader.keras_blocks.torch_layers", "pyloader.keras_blocks.layers", "pyloader.yolov9.model"),
    letterbox=True,
)
