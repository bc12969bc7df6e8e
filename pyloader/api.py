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

    `package` (under pyloader) has `weights.read_plan(path, ckpt)`, `weights.plan_arrays(plan, fold_bn)` and
    `weights.<reader>(path, fold_bn=, ckpt=)`; `model.<builder>(plan, fold_bn=, decode=, input_size=)` and
    `model.<loader>(path, fold_bn=, decode=, input_size=, ckpt=)`.
    """

    name: str
    classes: str  # what it reads, for messages
    matches: Callable[[str, str], bool]  # (class module, class name) of the model record
    package: str
    reader: str
    loader: str
    builder: str

    def weights(self):
        return importlib.import_module(f".{self.package}.weights", __package__)

    def model(self):
        return importlib.import_module(f".{self.package}.model", __package__)


def _in(module: str, suffix: str) -> bool:
    return module == suffix or module.endswith("." + suffix)


# In order; the first family whose `matches` accepts the model record's class reads the checkpoint.
TORCH_FAMILIES = (
    TorchFamily("ultralytics", "Ultralytics YOLOv8/YOLO11/YOLOv5u detection (ultralytics.nn.tasks.DetectionModel)",
                lambda module, name: module.startswith("ultralytics.nn.tasks"),
                "ultralytics", "read_ultralytics", "load_ultralytics", "build_ultralytics"),
    TorchFamily("yolov5", "YOLOv5 (models.yolo.Model, models.yolo.DetectionModel)",
                lambda module, name: _in(module, "models.yolo") and name in ("Model", "DetectionModel"),
                "yolov5", "read_yolov5", "load_yolov5", "build_yolov5"),
)


def _model_record(ckpt):
    """The checkpoint's model record: `ema` when present and not None, else `model` (or the checkpoint itself)."""
    from .torch_reader.pickle_reader import Record

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
        if fam.matches(model.cls.module, model.cls.name):
            return fam
    raise FormatError(f"{path}: model class '{model.cls.qualname[:200]}' is not supported; supported families: "
                      f"{supported}")


def load_torch(path):
    """Read a .pt file once: (its family, the loaded checkpoint)."""
    from .torch_reader.checkpoint import load_torch_checkpoint

    ckpt = load_torch_checkpoint(path)
    return torch_family(path, ckpt), ckpt


# ---------------------------------------------------------------------------------------------------------


@reads_file("weights")
def read(weights, cfg=None, *, fold_bn: bool = True) -> dict:
    """Read a checkpoint into numpy arrays in Keras layout, keyed '<layer name>/<variable>'.

    Darknet: `weights` is the .weights file and `cfg` its .cfg (default: the .cfg of the same stem beside it).
    PyTorch (YOLOv5, Ultralytics): `weights` is the .pt checkpoint, its family chosen by its model class; `cfg`
    must be None. TensorFlow is not imported.
    With fold_bn, batch norm is folded into each convolution's kernel and bias.
    """
    weights, cfg = fs_str(weights), None if cfg is None else fs_str(cfg)
    if _family(weights) == "torch":
        _no_cfg(weights, cfg)
        fam, ckpt = load_torch(weights)
        return getattr(fam.weights(), fam.reader)(weights, fold_bn=fold_bn, ckpt=ckpt)
    from .darknet.weights import read_darknet

    return read_darknet(weights, cfg, fold_bn=fold_bn).arrays


@reads_file("weights")
def load(weights, cfg=None, *, fold_bn: bool = True, decode: bool = False, input_size=None, names=None):
    """Build a keras.Model for the checkpoint and fill it with its weights.

    Outputs: the raw tensors of each detection head (NHWC), named head_0, head_1, ..., or with decode=True one
    tensor `detections` [batch, boxes, 5 + classes]. input_size=(height, width) overrides the size the
    checkpoint was made for. `model.metadata` / `model.class_names` describe it (pyloader.metadata); `names`
    (Darknet only: a list or a darknet .names file) gives the class names, else class0, class1, ...
    """
    weights, cfg = fs_str(weights), None if cfg is None else fs_str(cfg)
    if _family(weights) == "torch":
        _no_cfg(weights, cfg)
        if names is not None:
            raise FormatError(f"{os.fspath(weights)}: a PyTorch checkpoint carries its class names; names must be None")
        fam, ckpt = load_torch(weights)
        return getattr(fam.model(), fam.loader)(weights, fold_bn=fold_bn, decode=decode, input_size=input_size,
                                                 ckpt=ckpt)
    from .darknet.model import load_darknet

    return load_darknet(weights, cfg, fold_bn=fold_bn, decode=decode, input_size=input_size, names=names)


def _no_cfg(weights, cfg) -> None:
    if cfg is not None:
        raise FormatError(f"{os.fspath(weights)}: a PyTorch checkpoint carries its architecture; cfg must be None")
