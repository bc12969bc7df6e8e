"""What every output says about itself: classes, strides, anchors, input size, outputs, source, pyloader version.

`model_metadata(family, plan, input size, options)` builds the dict from what a family declares (no Keras, no
TensorFlow);
`with_source(meta, path)` refreshes the per-checkpoint fields (`source`: file name, size and SHA-256) -- a
writer that patches weights into a previously exported file rewrites only those (`pyloader.load` leaves the
SHA-256 to the first save, `complete`); pyloader.outputs.read_metadata(path) reads it back from any output
(without importing TensorFlow or Keras).

In memory it is `model.metadata` (dict) and `model.class_names` (pyloader.keras_blocks.model.DetectionModel).
Every output stores the same JSON text (ASCII, key `pyloader_metadata`), padded with trailing spaces to a
multiple of BUCKET bytes (`to_json`; `config_text` for the string inside a .keras config), so that a template
output can patch it in place; where each format keeps it: its module in pyloader/outputs/ (docs/FORMATS.md
section 11.2).
"""

from __future__ import annotations

import hashlib
import json
import os

__all__ = ["KEY", "BUCKET", "model_metadata", "nms_metadata", "anchor_outputs", "plan_fields", "anchor_plan_fields",
           "class_names", "with_source", "source_fields", "read_names_file", "to_json", "config_text", "parse",
           "NOT_HASHED", "is_digest"]

KEY = "pyloader_metadata"


def _version() -> str:
    from .version import __version__

    return __version__


# the metadata's source sha256 of a conversion asked not to hash its sources (`convert(..., source_hash=False)`,
# `pyloader convert --no-source-hash`): hashing bounds a bulk run's speed (~0.14 s per 258 MB checkpoint)
NOT_HASHED = "not computed (source_hash off)"


def is_digest(value) -> bool:
    """Whether a metadata sha256 value is a SHA-256 (64 hex digits), not a note of why there is none."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def file_sha256(path) -> str:
    from .boundary import open_regular

    h = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def source_fields(path, digest: bool = True) -> dict:
    """{"name", "bytes", "sha256"} of a checkpoint; digest=False leaves sha256 None (see `complete`)."""
    path = os.fspath(path)
    return {"name": os.path.basename(path), "bytes": os.path.getsize(path),
            "sha256": file_sha256(path) if digest else None}


def with_source(meta: dict, path, digest: bool = True) -> dict:
    """A copy of `meta` naming `path` (file name, size and SHA-256) as its source checkpoint."""
    return {**meta, "source": source_fields(path, digest)}


def complete(meta: dict, path) -> dict:
    """`meta` with the source's SHA-256 filled in where it was left out (pyloader.load leaves it for the first
    save: hashing a 250 MB file costs about a second)."""
    src = meta.get("source") or {}
    if src.get("sha256") is not None or path is None:
        return meta
    if not os.path.isfile(path) or os.path.getsize(path) != src.get("bytes"):
        return {**meta, "source": {**src, "sha256": "unknown (the source changed after loading)"}}
    return {**meta, "source": {**src, "sha256": file_sha256(path)}}


def read_names_file(path) -> list:
    """darknet's .names: one class name per line (blank lines at the end ignored)."""
    from .errors import FormatError

    from .boundary import open_regular

    path = os.fspath(path)
    try:
        with open_regular(path) as f:
            lines = [line.strip() for line in f.read().decode("utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read class names: {e}") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines or any(not n for n in lines):
        raise FormatError(f"{path}: a .names file lists one class name per line (found an empty line or none)")
    return lines


def class_names(names, nc: int, where: str) -> list:
    """The class names: `names` (a list or a .names file), checked against `nc`; class0, class1, ... when None."""
    from .errors import FormatError

    if names is None:
        return [f"class{i}" for i in range(nc)]
    if isinstance(names, (str, os.PathLike)):
        names = read_names_file(names)
    names = [str(n) for n in names]
    if nc and len(names) != nc:
        raise FormatError(f"{where}: the model has {nc} classes, the names list {len(names)}")
    return names


def output_names(count: int, decode: bool) -> list:
    return ["detections"] if decode else [f"head_{i}" for i in range(count)]


def anchor_outputs(strides, anchors, nc: int, input_size, decoded: str | None) -> list:
    """The outputs entries of an anchor-based YOLO head (objectness + classes per anchor): one raw head per stride
    ([None, h / s, w / s, na * (5 + nc)], anchors in pixels), or `decoded`'s one entry (its layout text) when given."""
    if decoded is not None:
        return [{"name": "detections", "layout": decoded}]
    h, w = (int(v) for v in input_size)
    na = len(anchors[0]) if len(anchors) else 0
    return [{"name": f"head_{i}", "shape": [None, h // int(s), w // int(s), na * (5 + nc)],
             "layout": "NHWC; channel a * (5 + classes) + k: tx, ty, tw, th, objectness, classes (before the sigmoid)",
             "stride": [int(s), int(s)], "anchors": [[float(v) for v in a] for a in anchors[i]],
             "anchor_units": "pixels"} for i, s in enumerate(strides)]


ANCHOR_DECODED = ("[batch, boxes, 5 + classes]: x, y, w, h in input pixels, objectness, class probabilities "
                  "(YOLOv5 Detect, eval mode)")


def plan_fields(plan, input_size, outputs: list, anchors=()) -> dict:
    """The metadata fields of a .pt family's plan (model_class, names, nc, strides; RGB input in [0, 1] named
    `images`) with its `outputs` entries and `anchors` (per level, in pixels; none for anchor-free heads)."""
    h, w = input_size
    return {
        "architecture": plan.model_class,
        "input": {"name": "images", "shape": [None, h, w, 3], "layout": "NHWC float32 RGB in [0, 1]", "size": [h, w]},
        "class_names": class_names(list(plan.names), plan.nc, plan.path),
        "strides": [[int(s), int(s)] for s in plan.strides],
        "anchors": [[[float(v) for v in a] for a in lvl] for lvl in anchors],
        "outputs": outputs,
    }


def anchor_plan_fields(plan, input_size, options, decoded: str = ANCHOR_DECODED) -> dict:
    """A family's `metadata` for a plan of an anchor-based .pt model (YOLOv5-style Detect: plan_fields with its
    anchors); `decoded`: the layout text of its decode=True output."""
    outputs = anchor_outputs(plan.strides, plan.anchors, plan.nc, input_size, decoded if options.decoded else None)
    return plan_fields(plan, input_size, outputs, plan.anchors)


def model_metadata(family, plan, input_size, options, source=None, *, digest=True) -> dict:
    """The metadata of the model `family` builds from `plan` with `options` (pyloader.family), for outputs of
    `input_size` (h, w): the family's fields (architecture, input, class names, strides, anchors, outputs), the
    NMS outputs when options.nms, and the source checkpoint (`source`; digest=False leaves its SHA-256 to the
    first save). Every route (load, convert, templates) takes its metadata from here."""
    fields = family.metadata(plan, tuple(int(v) for v in input_size), options)
    meta = {"format": "pyloader", "pyloader_version": _version(), "family": family.name, **fields,
            "decode": bool(options.decode), "fold_bn": bool(options.fold_bn)}
    if options.nms is not None:
        layout = family.layout(plan)  # the family described its decoded outputs (options.decoded): keep some
        meta = nms_metadata(meta, options.nms, layout, [o for o in fields["outputs"] if o["name"] in layout.passthrough])
    return with_source(meta, source, digest) if source is not None else meta


def nms_metadata(meta: dict, options: dict, layout, passthrough=()) -> dict:
    """`meta` for a model whose outputs are the NMS outputs (keras_blocks.nms) of a decoded output laid out as
    `layout` (pyloader.family.OutputLayout), then `passthrough` (the entries of the outputs kept as they are)."""
    meta = dict(meta)
    meta["decode"] = True
    meta["nms"] = dict(options)
    m, extras = options["max_det"], [name for name, _, _ in layout.extras]
    box = (f"x, y, w, h: the rotated box's centre and sides in input pixels, its angle in {extras[-1]} (Ultralytics "
           "xywhr)" if layout.rotated else "x1, y1, x2, y2 in input pixels")
    meta["outputs"] = [
        {"name": "boxes", "shape": [None, m, 4], "layout": f"{box}; rows past num_detections are 0"},
        {"name": "scores", "shape": [None, m], "layout": layout.score},
        {"name": "classes", "shape": [None, m], "layout": "int32 class id, -1 past num_detections"},
        {"name": "num_detections", "shape": [None], "layout": "int32 detections kept per image"},
        *({"name": name, "shape": [None, m, c], "layout": f"{what}, per kept box; rows past num_detections are 0"}
          for name, c, what in layout.extras),
        *passthrough,
    ]
    if extras:
        meta["nms_rows"] = (f"boxes, scores, classes (as float), {', '.join(extras)} concatenated on the last axis: "
                            "Ultralytics' nms=True export rows (whose padding has class 0 where classes has -1)")
    return meta


BUCKET = 4096  # stored metadata is padded with trailing spaces to a multiple of this many bytes


def _padded(text: str, escaped_len: int) -> str:
    return text + " " * (-escaped_len % BUCKET)


def to_json(meta: dict) -> str:
    """The stored JSON text (ASCII): compact, padded with trailing spaces to a multiple of BUCKET bytes, so that
    checkpoints of one architecture store equally long metadata (template outputs patch it in place)."""
    text = json.dumps(meta, sort_keys=False, separators=(",", ":"), ensure_ascii=True)
    return _padded(text, len(text))


def config_text(meta: dict) -> str:
    """The JSON text kept in a .keras config (a string value): padded so that its escaped form in config.json
    (json.dumps of the string, quotes included, as Keras writes it) is a multiple of BUCKET bytes."""
    text = json.dumps(meta, sort_keys=False, separators=(",", ":"), ensure_ascii=True)
    return _padded(text, len(json.dumps(text)))


def parse(value):
    """A stored metadata value (a dict, or JSON text as written by to_json / config_text) as a dict."""
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value) if isinstance(value, str) else value
