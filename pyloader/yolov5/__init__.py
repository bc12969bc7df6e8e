"""YOLOv5 `.pt` checkpoints (github.com/ultralytics/yolov5, v6.x and v7.0; detection, segmentation and
classification models): the reader (weights.py, numpy only, on
the shared safe torch reader; its plan is made of the typed records of blocks.py), the Keras model builder
(model.py), and this family's declaration (FAMILY)."""

from __future__ import annotations

from ..family import Family, OutputLayout
from .weights import plan_arrays
from ..metadata import anchor_plan_fields
from ..summary import anchor_plan_summary, plan_summary


def _models_yolo(model) -> bool:
    module = model.cls.module
    return (module == "models.yolo" or module.endswith(".models.yolo")) and model.cls.name in (
        "Model", "DetectionModel", "SegmentationModel", "ClassificationModel")


def recognise(ckpt) -> bool:
    """A pickled models.yolo.Model / DetectionModel (YOLOv7 is asked first), or a state_dict with a yaml."""
    return ckpt.model is not None and _models_yolo(ckpt.model) or ckpt.model is None and ckpt.yaml is not None


def read_plan(ckpt, options):
    from .weights import plan_from_model, plan_from_state_dict

    if ckpt.model is None:
        return plan_from_state_dict(ckpt.content, ckpt.yaml, ckpt.path)
    return plan_from_model(ckpt.model, ckpt.path)


def array_chunks(plan, fold_bn: bool):
    from .weights import ArrayChunks

    return ArrayChunks(plan, fold_bn)


def summary(plan, content) -> tuple:
    if plan.task == "classify":
        head = [{"layer": plan.nodes[-1].name, "type": "Classify (pool + linear, softmax)", "classes": plan.nc}]
        return "YOLOv5 PyTorch checkpoint", {}, plan_summary(plan, plan.nodes, head, (224, 224))
    return anchor_plan_summary(plan, plan.nodes, "YOLOv5", content)


_MASKS = "then the nm mask coefficients as they are (a mask is sigmoid(coefficients . prototypes))"


def metadata(plan, input_size, options) -> dict:
    """anchor_plan_fields with the task; a Segment head's outputs carry nm mask coefficients per anchor and the
    prototypes follow; a classifier's are its logits (and probabilities, decoded)."""
    fields = {"task": plan.task, **anchor_plan_fields(plan, input_size, options)}
    nc, head = plan.nc, plan.nodes[-1].block
    if plan.task == "classify":
        logits = {"name": "logits", "shape": [None, nc], "layout": "class logits (Classify's Linear output)"}
        fields["outputs"] = [logits] if not options.decoded else [
            {"name": "probabilities", "shape": [None, nc], "layout": "softmax of the logits (as YOLOv5's classify "
                                                                     "predict.py and val.py)"}, logits]
    elif plan.task == "segment":
        h, w = input_size
        nm, s = head.nm, int(plan.strides[0]) // 2
        if options.decoded:
            fields["outputs"][0]["layout"] = (f"[batch, boxes, 5 + classes + {nm}]: x, y, w, h in input pixels, "
                                              f"objectness, class probabilities, {_MASKS} (YOLOv5 Segment, eval mode)")
        else:
            for o in fields["outputs"]:
                o["shape"][-1] = head.na * (5 + nc + nm)
                o["layout"] = (f"NHWC; channel a * (5 + classes + {nm}) + k: tx, ty, tw, th, objectness, classes "
                               f"(before the sigmoid), {_MASKS}")
        fields["outputs"].append({"name": "prototypes", "shape": [None, h // s, w // s, nm],
                                  "layout": f"NHWC mask prototypes at 1/{s} of the input size (Proto's output, NCHW "
                                            "there)"})
    return fields


FAMILY = Family(
    name="yolov5",
    reads="YOLOv5 detection, segmentation and classification (models.yolo.Model, DetectionModel, SegmentationModel, "
          "ClassificationModel)",
    recognise=recognise,
    plan=read_plan,
    arrays=plan_arrays,
    metadata=metadata,
    # NMS of Segment's rows (with mask coefficients) is not done yet; a classifier has no boxes: None, refused
    layout=lambda plan: OutputLayout("xywh_obj_cls") if plan.task == "detect" else None,
    summary=summary,
    keras="pyloader.yolov5.model",
    keras_modules=("pyloader.keras_blocks.torch_layers", "pyloader.yolov5.model"),
    array_chunks=array_chunks,
    letterbox=True,
)
