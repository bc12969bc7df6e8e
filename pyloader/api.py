"""The public entry points: `read` (numpy arrays, no TensorFlow) and `load` (a ready keras.Model).

Both take one path, whatever the family (pyloader.registry recognises it, pyloader.family says what each declares):
checkpoint -> family plan -> arrays (read) or build + fill (load, pyloader.assemble).
"""

from __future__ import annotations

from .boundary import fs_str, reads_file
from .family import Options
from .registry import container_of, open_checkpoint


@reads_file("weights")
def read(weights, cfg=None, *, fold_bn: bool = True) -> dict:
    """Read a checkpoint into numpy arrays in Keras layout, keyed '<layer name>/<variable>'.

    Darknet: `weights` is the .weights file and `cfg` its .cfg (default: the .cfg of the same stem beside it).
    PyTorch (YOLOv5, YOLOv7, Ultralytics): `weights` is the .pt checkpoint, its family chosen by its model
    class, and `cfg` None; for a plain state_dict, `cfg` is the model's yaml (path or dict). TensorFlow is not
    imported.
    With fold_bn, batch norm is folded into each convolution's kernel and bias.
    """
    options = Options(fold_bn=fold_bn)
    family, plan = _opened(weights, cfg, options)
    return family.arrays(plan, fold_bn)


@reads_file("weights")
def load(weights, cfg=None, *, fold_bn: bool = True, decode: bool = False, input_size=None, names=None,
         nms=None):
    """Build a keras.Model for the checkpoint and fill it with its weights.

    Outputs: the raw tensors of each detection head (NHWC), named head_0, head_1, ..., or with decode=True one
    tensor `detections` (its layout per family: docs/FORMATS.md). input_size=(height, width) overrides the size the
    checkpoint was made for. `model.metadata` / `model.class_names` describe it (pyloader.metadata); `names`
    (Darknet only: a list or a darknet .names file) gives the class names, else class0, class1, ...
    nms=True (or a dict with any of iou, score, max_det, agnostic, candidates): decode and non-maximum
    suppression; the outputs are then boxes, scores, classes, num_detections (keras_blocks/nms.py).
    """
    from .keras_blocks.nms_options import nms_options

    options = Options(fold_bn=fold_bn, decode=decode, input_size=input_size, names=names, nms=nms_options(nms))
    family, plan = _opened(weights, cfg, options)
    from .assemble import load_model

    return load_model(family, plan, options)


def _opened(weights, cfg, options: Options) -> tuple:
    """open_checkpoint; a .pt's (family, plan) kept for the next call with the same options while the file is
    unchanged (torch_reader.checkpoint.cached: its identity and every byte the plan was made from compared)."""
    path = fs_str(weights)
    try:
        hash(options)
    except TypeError:  # options holding a list or dict (names, nms): made each time
        return open_checkpoint(weights, cfg, options)
    if cfg is not None or container_of(path) != "torch":
        return open_checkpoint(weights, cfg, options)
    from .torch_reader.checkpoint import cached
    from .torch_reader.modules import model_part

    return cached(path, model_part, options, lambda content: open_checkpoint(path, None, options, content=content))
