"""The public entry points: `read` (numpy arrays, no TensorFlow) and `load` (a ready keras.Model)."""

from __future__ import annotations

import os

from .errors import FormatError

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of the int 0x1950A86A20F9469CFC6C


def _family(weights: str | os.PathLike) -> str:
    """'darknet' or 'torch', by the file's first bytes (the suffix only breaks ties)."""
    path = os.fspath(weights)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise FormatError(f"{path}: cannot open: {e.strerror or e}") from None
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if path.endswith((".pt", ".pth")):
        raise FormatError(
            f"{path}: a .pt file must be a PyTorch zip archive (starts with PK\\x03\\x04) or a legacy torch file; "
            f"its first bytes are {head[:8]!r}"
        )
    return "darknet"


def torch_plan(weights, cfg=None):
    """(family, plan) of a PyTorch file, read once: 'yolov5' or 'yolov7'.

    A checkpoint carries its architecture (its model's yaml and modules) and takes no cfg. A plain state_dict
    (`torch.save(model.state_dict())`) carries none: `cfg` (the model's YOLOv5 or YOLOv7 yaml, a path or a
    dict) gives it.
    """
    from .torch_reader.checkpoint import load_torch_checkpoint
    from .torch_reader.modules import select_model
    from .torch_reader.state_dict import is_state_dict, read_yaml
    from .yolov7.weights import is_yolov7_model

    path = os.fspath(weights)
    ckpt = load_torch_checkpoint(path)
    if is_state_dict(ckpt):
        if cfg is None:
            raise FormatError(
                f"{path}: a plain state_dict ({len(ckpt)} tensors, as torch.save(model.state_dict()) writes) carries "
                f"no architecture: pass cfg= the model's yaml (a YOLOv5 or YOLOv7 model yaml, path or dict), "
                f"e.g. pyloader.load({os.path.basename(path)!r}, cfg='yolov5s.yaml')"
            )
        yaml_cfg = read_yaml(cfg, path)
        if is_yolov7_model(yaml_cfg):
            from .yolov7.weights import plan_from_state_dict

            return "yolov7", plan_from_state_dict(ckpt, yaml_cfg, path)
        from .yolov5.weights import plan_from_state_dict

        return "yolov5", plan_from_state_dict(ckpt, yaml_cfg, path)
    if cfg is not None:
        raise FormatError(f"{path}: a PyTorch checkpoint carries its architecture; cfg must be None")
    if is_yolov7_model(select_model(ckpt, path)):
        from .yolov7.weights import read_plan

        return "yolov7", read_plan(path, ckpt)
    from .yolov5.weights import read_plan

    return "yolov5", read_plan(path, ckpt)


def read(weights, cfg=None, *, fold_bn: bool = True) -> dict:
    """Read a checkpoint into numpy arrays in Keras layout, keyed '<layer name>/<variable>'.

    Darknet: `weights` is the .weights file and `cfg` its .cfg (default: the .cfg of the same stem beside it).
    YOLOv5 / YOLOv7: `weights` is the .pt checkpoint and `cfg` None; for a plain state_dict, `cfg` is the
    model's yaml (path or dict). TensorFlow is not imported.
    With fold_bn, batch norm is folded into each convolution's kernel and bias.
    """
    if _family(weights) == "torch":
        family, plan = torch_plan(weights, cfg)
        if family == "yolov7":
            from .yolov7.weights import plan_arrays
        else:
            from .yolov5.weights import plan_arrays
        return plan_arrays(plan, fold_bn)
    from .darknet.weights import read_darknet

    return read_darknet(weights, cfg, fold_bn=fold_bn).arrays


def load(weights, cfg=None, *, fold_bn: bool = True, decode: bool = False, input_size=None):
    """Build a keras.Model for the checkpoint and fill it with its weights.

    Outputs: the raw tensors of each detection head (NHWC), or with decode=True one tensor
    [batch, boxes, 5 + classes]. input_size=(height, width) overrides the size the checkpoint was made for.
    """
    if _family(weights) == "torch":
        family, plan = torch_plan(weights, cfg)
        if family == "yolov7":
            from .yolov7.model import model_from_plan
        else:
            from .yolov5.model import model_from_plan
        return model_from_plan(plan, fold_bn=fold_bn, decode=decode, input_size=input_size)
    from .darknet.model import load_darknet

    return load_darknet(weights, cfg, fold_bn=fold_bn, decode=decode, input_size=input_size)
