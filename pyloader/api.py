"""The public entry points: `read` (numpy arrays, no TensorFlow) and `load` (a ready keras.Model)."""

from __future__ import annotations

import os

from .boundary import fs_str, open_regular, reads_file, shown
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


@reads_file("weights")
def read(weights, cfg=None, *, fold_bn: bool = True) -> dict:
    """Read a checkpoint into numpy arrays in Keras layout, keyed '<layer name>/<variable>'.

    Darknet: `weights` is the .weights file and `cfg` its .cfg (default: the .cfg of the same stem beside it).
    YOLOv5: `weights` is the .pt checkpoint; `cfg` must be None. TensorFlow is not imported.
    With fold_bn, batch norm is folded into each convolution's kernel and bias.
    """
    weights, cfg = fs_str(weights), None if cfg is None else fs_str(cfg)
    if _family(weights) == "torch":
        _no_cfg(weights, cfg)
        from .yolov5.weights import read_yolov5

        return read_yolov5(weights, fold_bn=fold_bn)
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
    weights, cfg = fs_str(weights), None if cfg is None else fs_str(cfg)
    if _family(weights) == "torch":
        _no_cfg(weights, cfg)
        if names is not None:
            raise FormatError(f"{os.fspath(weights)}: a PyTorch checkpoint carries its class names; names must be None")
        from .yolov5.model import load_yolov5

        return load_yolov5(weights, fold_bn=fold_bn, decode=decode, input_size=input_size, nms=nms)
    from .darknet.model import load_darknet

    return load_darknet(weights, cfg, fold_bn=fold_bn, decode=decode, input_size=input_size, names=names,
                        nms=nms)


def _no_cfg(weights, cfg) -> None:
    if cfg is not None:
        raise FormatError(f"{os.fspath(weights)}: a PyTorch checkpoint carries its architecture; cfg must be None")
