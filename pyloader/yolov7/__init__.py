"""YOLOv7 `.pt` checkpoints (github.com/WongKinYiu/yolov7; PyPI `yolov7detect`): the module records (blocks.py), the
reader (weights.py, numpy only, on the shared safe torch reader; state_dict.py for plain state_dicts), the Keras
model builder (model.py), and this family's declaration (FAMILY)."""

from __future__ import annotations

from ..family import Family, OutputLayout
from .weights import plan_arrays
from ..metadata import anchor_plan_fields
from ..summary import anchor_plan_summary


def recognise(ckpt) -> bool:
    """models.yolo.Model as YOLOv5 pickles it, told apart by its yaml's modules (MP, SPPCSPC, RepConv, IDetect...);
    a state_dict whose yaml has them."""
    from .weights import is_yolov7_model

    if ckpt.model is None:
        return ckpt.yaml is not None and is_yolov7_model(ckpt.yaml)
    module = ckpt.model.cls.module
    return ((module == "models.yolo" or module.endswith(".models.yolo"))
            and ckpt.model.cls.name in ("Model", "DetectionModel") and is_yolov7_model(ckpt.model))


def read_plan(ckpt, options):
    from .state_dict import plan_from_state_dict
    from .weights import read_plan as read_model_plan

    if ckpt.model is None:
        return plan_from_state_dict(ckpt.content, ckpt.yaml, ckpt.path)
    return read_model_plan(ckpt.path, ckpt.content)


def summary(plan, content) -> tuple:
    used = [n for n in plan.nodes if n.index in plan.used]  # IAuxDetect's auxiliary branches left out
    return anchor_plan_summary(plan, used, "YOLOv7", content)


FAMILY = Family(
    name="yolov7",
    reads="YOLOv7 (models.yolo.Model whose yaml has YOLOv7 modules)",
    recognise=recognise,
    plan=read_plan,
    arrays=plan_arrays,
    metadata=anchor_plan_fields,  # YOLOv7's heads and decoding have YOLOv5's layout
    layout=lambda plan: OutputLayout("xywh_obj_cls"),
    summary=summary,
    keras="pyloader.yolov7.model",
    keras_modules=("pyloader.keras_blocks.torch_layers",),
    letterbox=True,
)
