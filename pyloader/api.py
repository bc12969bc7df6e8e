"""The public entry points: `read` (numpy arrays, no TensorFlow) and `load` (a ready keras.Model)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable

from .boundary import fs_str, open_regular, reads_file, short_repr, shown
from .errors import FormatError

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of the int 0x1950A86A20F9469CFC6C


def _family(weights: str | os.PathLike) -> str:
    """'darknet' or 'torch', by the file's first bytes (the suffix only breaks ties)."""
    path = fs_str(weights)
    with open_regular(path) as f:  # a FIFO or device is refused here, before anything could block on it
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if path.endswith((".pt", ".pth")):
        raise FormatError(
            f"{shown(path)}: a .pt file must be a PyTorch zip archive (starts with PK\\x03\\x04) or a legacy torch file; "
            f"its first bytes are {head[:8]!r}"
        )
    return "darknet"


# ---------------------------------------------------------------------------------------------------------
# .pt families: which one reads a checkpoint is decided by its model record's class.


@dataclass(frozen=True)
class TorchFamily:
    """A .pt family: the model classes it reads and where its reader and builder live.

    `package` (under pyloader) has `weights.read_plan(path, ckpt)`, `weights.plan_arrays(plan, fold_bn)`
    (numpy only) and, for families that read plain state_dicts, `weights.plan_from_state_dict(state, yaml, path)`;
    `model.<builder>(plan, fold_bn=, decode=, input_size=)` (an empty model), `model.model_from_plan(plan, ...)`
    (built and filled) and `model.plan_metadata(plan, input_size, source, ...)` (pyloader.metadata).
    """

    name: str
    classes: str  # what it reads, for messages
    matches: Callable[[object], bool]  # the model record (pyloader.torch_reader.pickle_reader.Record)
    package: str
    builder: str

    def weights(self):
        return importlib.import_module(f".{self.package}.weights", __package__)

    def model(self):
        return importlib.import_module(f".{self.package}.model", __package__)


def _in(module: str, suffix: str) -> bool:
    return module == suffix or module.endswith("." + suffix)


def _models_yolo(model) -> bool:
    return _in(model.cls.module, "models.yolo") and model.cls.name in ("Model", "DetectionModel")


def _is_yolov7(model_or_yaml) -> bool:
    from .yolov7.weights import is_yolov7_model  # numpy only

    return is_yolov7_model(model_or_yaml)


# In order; the first family whose `matches` accepts the model record reads the checkpoint. YOLOv7 pickles
# `models.yolo.Model` as YOLOv5 v6 does: its yaml's modules (MP, SPPCSPC, RepConv, IDetect, ...) tell them apart.
TORCH_FAMILIES = (
    TorchFamily("ultralytics", "Ultralytics YOLOv8/YOLO11/YOLOv5u detection (ultralytics.nn.tasks.DetectionModel)",
                lambda model: model.cls.module.startswith("ultralytics.nn.tasks"), "ultralytics", "build_ultralytics"),
    TorchFamily("yolov7", "YOLOv7 (models.yolo.Model whose yaml has YOLOv7 modules)",
                lambda model: _models_yolo(model) and _is_yolov7(model), "yolov7", "build_yolov7"),
    TorchFamily("yolov5", "YOLOv5 (models.yolo.Model, models.yolo.DetectionModel)", _models_yolo, "yolov5",
                "build_yolov5"),
)
_BY_NAME = {f.name: f for f in TORCH_FAMILIES}


def _model_record(ckpt):
    """The checkpoint's model record: `ema` when present and not None, else `model` (or the checkpoint itself)."""
    from .torch_reader.records import Record

    if isinstance(ckpt, Record):
        return ckpt
    if isinstance(ckpt, dict):
        model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
        if isinstance(model, Record):
            return model
    return None


def torch_family(path, ckpt) -> TorchFamily:
    """The family whose model class the loaded checkpoint holds; else a FormatError naming the class."""
    path = shown(fs_str(path))
    supported = "; ".join(f"{f.name}: {f.classes}" for f in TORCH_FAMILIES)
    model = _model_record(ckpt)
    if model is None:
        what = type(ckpt).__name__
        if isinstance(ckpt, dict):
            what = f"a dict with keys {', '.join(short_repr(k) for k in list(ckpt)[:8])}" if ckpt else "an empty dict"
        raise FormatError(f"{path}: checkpoint has no model object ({what}); pyloader reads checkpoints that "
                          f"hold their model (supported families: {supported})")
    for fam in TORCH_FAMILIES:
        if fam.matches(model):
            return fam
    raise FormatError(f"{path}: model class '{model.cls.qualname[:200]}' is not supported; supported families: "
                      f"{supported}")


def torch_plan(weights, cfg=None, *, ckpt=None):
    """(family, plan) of a PyTorch file, read once (`ckpt`: the file already loaded, if it was).

    A checkpoint carries its architecture (its model's yaml and modules) and takes no cfg. A plain state_dict
    (`torch.save(model.state_dict())`) carries none: `cfg` (the model's YOLOv5 or YOLOv7 yaml, a path or a
    dict) gives it.
    """
    from .torch_reader.checkpoint import load_torch_checkpoint
    from .torch_reader.state_dict import is_state_dict, read_yaml

    path = fs_str(weights)
    if cfg is not None and not isinstance(cfg, dict) and not str(cfg).endswith((".yaml", ".yml")):
        raise FormatError(f"{shown(path)}: a PyTorch checkpoint carries its architecture; cfg must be None (or, "
                          f"for a plain state_dict, the model's .yaml)")
    if ckpt is None:
        ckpt = load_torch_checkpoint(path)
    if is_state_dict(ckpt):
        if cfg is None:
            raise FormatError(
                f"{shown(path)}: a plain state_dict ({len(ckpt)} tensors, as torch.save(model.state_dict()) writes) "
                f"carries no architecture: pass cfg= the model's yaml (a YOLOv5 or YOLOv7 model yaml, path or dict), "
                f"e.g. pyloader.load({short_repr(os.path.basename(path))}, cfg='yolov5s.yaml')"
            )
        yaml_cfg = read_yaml(cfg, path)
        fam = _BY_NAME["yolov7" if _is_yolov7(yaml_cfg) else "yolov5"]
        return fam, fam.weights().plan_from_state_dict(ckpt, yaml_cfg, path)
    if cfg is not None:
        raise FormatError(f"{shown(path)}: a PyTorch checkpoint carries its architecture; cfg must be None")
    fam = torch_family(path, ckpt)
    return fam, fam.weights().read_plan(path, ckpt)


# ---------------------------------------------------------------------------------------------------------


@reads_file("weights")
def read(weights, cfg=None, *, fold_bn: bool = True) -> dict:
    """Read a checkpoint into numpy arrays in Keras layout, keyed '<layer name>/<variable>'.

    Darknet: `weights` is the .weights file and `cfg` its .cfg (default: the .cfg of the same stem beside it).
    PyTorch (YOLOv5, YOLOv7, Ultralytics): `weights` is the .pt checkpoint, its family chosen by its model
    class, and `cfg` None; for a plain state_dict, `cfg` is the model's yaml (path or dict). TensorFlow is not
    imported.
    With fold_bn, batch norm is folded into each convolution's kernel and bias.
    """
    weights, cfg = fs_str(weights), cfg if cfg is None or isinstance(cfg, dict) else fs_str(cfg)
    if _family(weights) == "torch":
        fam, plan = torch_plan(weights, cfg)
        return fam.weights().plan_arrays(plan, fold_bn)
    from .darknet.weights import read_darknet

    return read_darknet(weights, cfg, fold_bn=fold_bn).arrays


@reads_file("weights")
def load(weights, cfg=None, *, fold_bn: bool = True, decode: bool = False, input_size=None, names=None,
         nms=None):
    """Build a keras.Model for the checkpoint and fill it with its weights.

    Outputs: the raw tensors of each detection head (NHWC), named head_0, head_1, ..., or with decode=True one
    tensor `detections` [batch, boxes, 5 + classes]. input_size=(height, width) overrides the size the
    checkpoint was made for. `model.metadata` / `model.class_names` describe it (pyloader.metadata); `names`
    (Darknet only: a list or a darknet .names file) gives the class names, else class0, class1, ...
    nms=True (or a dict with any of iou, score, max_det, agnostic, candidates): decode and non-maximum
    suppression; the outputs are then boxes, scores, classes, num_detections (keras_blocks/nms.py).
    """
    from .keras_blocks.nms_options import nms_options

    nms = nms_options(nms)
    weights, cfg = fs_str(weights), cfg if cfg is None or isinstance(cfg, dict) else fs_str(cfg)
    if _family(weights) == "torch":
        if names is not None:
            raise FormatError(f"{shown(weights)}: a PyTorch checkpoint carries its class names; names must be None")
        fam, plan = torch_plan(weights, cfg)
        model = fam.model().model_from_plan(plan, fold_bn=fold_bn, decode=decode or nms is not None,
                                            input_size=input_size)
        if nms is not None:
            from .keras_blocks.nms import family_nms

            model = family_nms(fam.name, model, nms, shown(weights))
        return model
    from .darknet.model import load_darknet

    return load_darknet(weights, cfg, fold_bn=fold_bn, decode=decode, input_size=input_size, names=names,
                        nms=nms)
