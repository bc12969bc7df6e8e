"""NMS options (no Keras import: the command line checks them before any framework loads)."""

from __future__ import annotations

__all__ = ["nms_options", "NMS_OUTPUTS", "DEFAULTS"]

NMS_OUTPUTS = ("boxes", "scores", "classes", "num_detections")
DEFAULTS = {"iou": 0.45, "score": 0.25, "max_det": 300, "agnostic": False, "candidates": 3000}


def nms_options(nms) -> dict | None:
    """Normalise `nms` (None/False, True, or a dict of options) into a full options dict, or None."""
    if nms is None or nms is False:
        return None
    if nms is True:
        return dict(DEFAULTS)
    if not isinstance(nms, dict):
        raise TypeError(f"nms must be True, False, None or a dict of options; got {type(nms).__name__}")
    unknown = sorted(set(nms) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown nms option(s) {unknown}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **{k: v for k, v in nms.items() if v is not None}}
    opts["iou"], opts["score"] = float(opts["iou"]), float(opts["score"])
    opts["max_det"], opts["candidates"] = int(opts["max_det"]), int(opts["candidates"])
    opts["agnostic"] = bool(opts["agnostic"])
    if not 0.0 <= opts["iou"] <= 1.0:
        raise ValueError(f"nms iou threshold must be in [0, 1]; got {opts['iou']}")
    if not 0.0 <= opts["score"] < 1.0:
        raise ValueError(f"nms score threshold must be in [0, 1); got {opts['score']}")
    if opts["max_det"] < 1:
        raise ValueError(f"nms max_det must be at least 1; got {opts['max_det']}")
    if opts["candidates"] < opts["max_det"]:
        raise ValueError(f"nms candidates ({opts['candidates']}) must be at least max_det ({opts['max_det']})")
    return opts
