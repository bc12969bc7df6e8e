"""YOLOv5 `.pt` checkpoints (github.com/ultralytics/yolov5, v6.x and v7.0): the reader (weights.py, numpy only, on
the shared safe torch reader; its plan is made of the typed records of blocks.py), the Keras model builder
(model.py), and this family's declaration (FAMILY)."""

from __future__ import annotations

from ..family import Family, OutputLayout
from .weights import plan_arrays
from ..metadata import anchor_plan_fields
from ..summary import anchor_plan_summary


def _models_yolo(model) -> bool:
    module = model.cls.module
    return (module == "models.yolo" or module.endswith(".models.yolo")) and model.cls.name in ("Model",
                                                                                              "DetectionModel")


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
    return anchor_plan_summary(plan, plan.nodes, "YOLOv5", content)


FAMILY = Family(
    name="yolov5",
    reads="YOLOv5 (models.yolo.Model, models.yolo.DetectionModel)",
    recognise=recognise,
    plan=read_plan,
    arrays=plan_arrays,
    metadata=anchor_plan_fields,
    layout=lambda plan: OutputLayout("xywh_obj_cls"),
    summary=summary,
    keras="pyloader.yolov5.model",
    keras_modules=("pyloader.keras_blocks.torch_layers", "pyloader.yolov5.model"),
    array_chunks=array_chunks,
    letterbox=True,
)
