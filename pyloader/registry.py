"""The families pyloader reads, one line each, and recognition: which family reads a checkpoint, and its plan.

numpy only: no Keras, TensorFlow or torch is imported here or by the families' declarations.
"""

from __future__ import annotations

import importlib
import os

from .boundary import fs_str, open_regular, short_repr, shown
from .errors import FormatError
from .family import Checkpoint, Family, Options

__all__ = ["FAMILIES", "families", "family_named", "container_of", "open_checkpoint"]

# In recognition order: the first family whose `recognise` accepts a checkpoint reads it. A new family is one
# package defining FAMILY (pyloader.family.Family) and one line here.
FAMILIES = (
    "pyloader.ultralytics",
    "pyloader.yolov9",  # before yolov7 and yolov5: YOLOv9 pickles the same `models.yolo.DetectionModel` class
    "pyloader.yolov7",  # before yolov5: YOLOv7 pickles the same `models.yolo.Model` class
    "pyloader.yolov5",
    "pyloader.darknet",
)

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of the int 0x1950A86A20F9469CFC6C


def families() -> list:
    return [importlib.import_module(m).FAMILY for m in FAMILIES]


def family_named(name: str) -> Family:
    for fam in families():
        if fam.name == name:
            return fam
    raise KeyError(name)


# Files users pass by mistake, by what they are: (test on the path and first bytes, what it is, what to pass).
_NOT_CHECKPOINTS = (
    (lambda p, h: h[4:8] == b"TFL3", "a TFLite model (an output, not a checkpoint)",
     "pyloader inspect reads it; convert takes the .weights or .pt it was made from"),
    (lambda p, h: h.startswith(b"\x89HDF\r\n\x1a\n"), "an HDF5 file (a Keras .weights.h5 or .h5 output)",
     "convert takes the .weights or .pt it was made from"),
    (lambda p, h: h.startswith(_ZIP_MAGIC) and p.lower().endswith(".keras"), "a .keras model (an output)",
     "load it with keras.saving.load_model; convert takes the .weights or .pt it was made from"),
    (lambda p, h: p.lower().endswith(".onnx"), "an ONNX model", "pass the .weights or .pt it was exported from"),
    (lambda p, h: p.lower().endswith(".cfg") or h.lstrip().startswith(b"["), "a Darknet .cfg (the architecture)",
     "pass the .weights file, with cfg= this file (or keep it beside the .weights under the same stem)"),
    (lambda p, h: p.lower().endswith((".yaml", ".yml")), "a model yaml (the architecture)",
     "pass the .pt checkpoint; a plain state_dict takes this yaml as cfg="),
    (lambda p, h: p.lower().endswith((".names", ".txt", ".data")), "a text file (class names?)",
     "pass the .weights or .pt checkpoint; class names go to names= (--names)"),
)


def container_of(path: str) -> str:
    """'darknet' or 'torch', by the file's first bytes (the suffix only breaks ties); a FormatError saying what a
    file is when it is plainly not a checkpoint (a cfg, a yaml, a model output)."""
    with open_regular(path) as f:  # a FIFO or device is refused here, before anything could block on it
        head = f.read(16)
    if head.startswith(_LEGACY_TORCH_MAGIC) or (head.startswith(_ZIP_MAGIC) and not path.lower().endswith(".keras")):
        return "torch"
    for test, what, hint in _NOT_CHECKPOINTS:
        if test(path, head):
            raise FormatError(f"{shown(path)}: this is {what}, not a checkpoint; {hint}")
    if path.endswith((".pt", ".pth")):
        raise FormatError(
            f"{shown(path)}: a .pt file must be a PyTorch zip archive (starts with PK\\x03\\x04) or a legacy torch file; "
            f"its first bytes are {head[:8]!r}"
        )
    return "darknet"


def _torch_checkpoint(path: str, cfg, content=None) -> Checkpoint:
    from .torch_reader.checkpoint import load_torch_checkpoint
    from .torch_reader.modules import model_part, model_record
    from .torch_reader.state_dict import is_state_dict, read_yaml

    if cfg is not None and not isinstance(cfg, dict) and not str(cfg).endswith((".yaml", ".yml")):
        raise FormatError(f"{shown(path)}: a PyTorch checkpoint carries its architecture; cfg must be None (or, "
                          f"for a plain state_dict, the model's .yaml)")
    if content is None:  # only the tensors of the model (all of a state_dict) are read: not a trainer's optimizer
        content = load_torch_checkpoint(path, used=model_part)
    if is_state_dict(content):
        if cfg is None:
            raise FormatError(
                f"{shown(path)}: a plain state_dict ({len(content)} tensors, as torch.save(model.state_dict()) "
                f"writes) carries no architecture: pass cfg= the model's yaml (a YOLOv5 or YOLOv7 model yaml, path "
                f"or dict), e.g. pyloader.load({short_repr(os.path.basename(path))}, cfg='yolov5s.yaml')"
            )
        return Checkpoint(path, "torch", cfg, content, None, read_yaml(cfg, path))
    if cfg is not None:
        raise FormatError(f"{shown(path)}: a PyTorch checkpoint carries its architecture; cfg must be None")
    model = model_record(content)
    if model is None:
        what = type(content).__name__
        if isinstance(content, dict):
            what = (f"a dict with keys {', '.join(short_repr(k) for k in list(content)[:8])}" if content
                    else "an empty dict")
        raise FormatError(f"{shown(path)}: checkpoint has no model object ({what}); pyloader reads checkpoints "
                          f"that hold their model (supported families: {_supported()})")
    return Checkpoint(path, "torch", None, content, model)


def _supported() -> str:
    return "; ".join(f"{f.name}: {f.reads}" for f in families())


def open_checkpoint(weights, cfg=None, options: Options = Options(), *, content=None) -> tuple:
    """(family, plan) of a checkpoint, its file read once (`content`: a .pt already unpickled). numpy only."""
    path = fs_str(weights)
    cfg = cfg if cfg is None or isinstance(cfg, dict) else fs_str(cfg)
    if container_of(path) == "torch":
        ckpt = _torch_checkpoint(path, cfg, content)
    else:
        ckpt = Checkpoint(path, "darknet", cfg)
    for fam in families():
        if fam.recognise(ckpt):
            if options.names is not None and not fam.takes_names:
                raise FormatError(f"{shown(path)}: a {fam.name} checkpoint carries its class names; names must be "
                                  "None (names / --names are for .weights sources)")
            return fam, fam.plan(ckpt, options)
    what = (f"model class '{ckpt.model.cls.qualname[:200]}'" if ckpt.model is not None
            else "this state_dict's yaml")
    raise FormatError(f"{shown(path)}: {what} is not supported; supported families: {_supported()}")
