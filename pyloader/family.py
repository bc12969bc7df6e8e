"""The family interface: what a checkpoint family declares so that shared code can read, build, fill, describe and
export its checkpoints without naming it.

A family is one package (pyloader/darknet, pyloader/yolov5, ...) whose `__init__` defines `FAMILY`, a `Family`
record, and imports numpy only; its Keras side lives in the module named by `Family.keras`, imported only when a
model is built. pyloader.registry lists the families (one line each). The path from a checkpoint to an output is
the same for every family (pyloader.registry.open_checkpoint, pyloader.assemble): recognise the checkpoint, read
its plan (numpy), its arrays, build an empty model once per architecture, fill it (many times), describe it.
docs/FORMATS.md describes each family's input and output layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["Family", "Options", "OutputLayout", "Checkpoint", "plan_fingerprint"]


@dataclass(frozen=True)
class Options:
    """What the caller asked for: the same for `pyloader.load` and each `pyloader convert` job."""

    fold_bn: bool = True
    decode: bool = False
    input_size: Optional[tuple] = None  # (height, width), None: the checkpoint's own
    names: object = None  # class names given by the user (a list or a .names file), for families that take them
    nms: Optional[dict] = None  # NMS options (keras_blocks.nms_options); implies decoded outputs

    @property
    def decoded(self) -> bool:
        return self.decode or self.nms is not None

    def key(self) -> tuple:
        """The options that change the built model (architecture cache keys)."""
        return (self.fold_bn, self.decoded, None if self.input_size is None else tuple(int(v) for v in self.input_size),
                () if self.nms is None else tuple(sorted(self.nms.items())))


@dataclass(frozen=True)
class OutputLayout:
    """What the decoded output looks like, for NMS and the metadata of NMS outputs."""

    boxes: str  # "xywh_obj_cls": [B, N, 5 + nc] with objectness; "xywh_cls": [B, N, 4 + nc] without
    channels_first: bool = False  # [B, 4 + nc, N] (Ultralytics)
    box_scale: Optional[tuple] = None  # (width, height) when boxes are normalised to the input, else None (pixels)
    score: str = "objectness x class probability"  # what an NMS `scores` row holds
    # columns after the class probabilities, gathered with each kept box into their own NMS outputs:
    # ((output name, columns, what they hold), ...), e.g. Segment's mask coefficients
    extras: tuple = ()
    rotated: bool = False  # x, y, w, h of rotated boxes, the angle the last extra column: probiou Fast-NMS
    passthrough: tuple = ()  # names of the decoded outputs after the first, kept as they are (Segment's prototypes)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as recognition sees it: its path, its container and, for a .pt, what it holds."""

    path: str
    container: str  # "darknet" (.weights + .cfg) or "torch" (.pt / .pth)
    cfg: object = None  # the cfg given by the caller (a path, a yaml dict, or None)
    content: object = None  # torch: the unpickled checkpoint (pyloader.torch_reader records)
    model: object = None  # torch: the model record (`ema` when present, else `model`), None for a state_dict
    yaml: Optional[dict] = None  # torch state_dict: the model yaml given as cfg


@dataclass(frozen=True)
class Family:
    """One family's declaration. Every callable is numpy-only except those of the `keras` module.

    recognise(checkpoint) -> bool        does this family read it (the registry asks in order)
    plan(checkpoint, options) -> plan   the architecture and where each tensor is; validates before data is used
    arrays(plan, fold_bn) -> dict       {'<layer>/<variable>': array} in Keras layout (pyloader.read)
    metadata(plan, input_size, options) -> dict   the family's fields of pyloader's metadata (pyloader.metadata); its
                                                 outputs as options.decoded builds them (NMS replaces them)
    layout(plan) -> OutputLayout | None  what decode=True gives, for NMS (None: no boxes, NMS is refused)
    summary(plan, content) -> (format label, header fields, architecture dict)   for `pyloader inspect`
    keras: module with build(plan, options) -> an empty DetectionModel (raw heads named head_i, or one decoded
           output when options.decoded); NMS, metadata and the weights are added by shared code (pyloader.assemble)
    array_chunks(plan, fold_bn) (optional): the arrays one layer at a time, an iterable of dicts whose `done(chunk)`
           may hand back file pages; `pyloader.load` then never holds every array at once
    """

    name: str
    reads: str  # what it reads, for messages
    recognise: Callable[[Checkpoint], bool]
    plan: Callable
    arrays: Callable
    metadata: Callable
    layout: Callable
    keras: str
    summary: Callable = None
    keras_modules: tuple = ()  # modules that register Keras classes (loaded with Keras, see keras_registration)
    array_chunks: Optional[Callable] = None
    model_arrays: Optional[Callable] = None  # (plan, arrays) -> the arrays the model uses (default: all)
    fingerprint: Callable = None  # (plan) -> str: same string, same architecture (default: plan_fingerprint)
    takes_names: bool = False  # class names come from the user (Darknet), not from the checkpoint
    letterbox: bool = False  # calibration / verify images are letterboxed (YOLOv5-style) instead of resized

    def keras_module(self):
        import importlib

        return importlib.import_module(self.keras)

    def architecture(self, plan) -> str:
        return (self.fingerprint or plan_fingerprint)(plan)


_WEIGHT_FIELDS = {"kernel", "bias", "gamma", "beta", "mean", "var"}


def plan_fingerprint(plan) -> str:
    """A digest of a plan's structure (layers, options, anchors, strides); weight tensors by shape only, the file's
    path and class names left out: two checkpoints of one architecture give the same digest."""
    import numpy as np

    h = hashlib.sha256()

    def walk(obj, name=""):
        if isinstance(obj, np.ndarray):
            h.update(f"{name}:{obj.dtype}{obj.shape}".encode())
            if name not in _WEIGHT_FIELDS:
                h.update(np.ascontiguousarray(obj).tobytes())
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            h.update(type(obj).__name__.encode())
            for f in dataclasses.fields(obj):
                if f.name not in ("path", "names"):
                    walk(getattr(obj, f.name), f.name)
        elif isinstance(obj, dict):
            h.update(b"{")
            for k in sorted(obj, key=str):
                h.update(repr(k).encode())
                walk(obj[k], str(k))
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                walk(v, name)
            h.update(b"]")
        else:
            h.update(f"{name}={obj!r};".encode())

    walk(plan)
    return h.hexdigest()
