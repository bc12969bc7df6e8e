"""The standard TFLite metadata (tflite-support's `metadata_schema.fbs`, file identifier `M001`): what Android
tooling (TFLite Task Library, ML Kit, Android Studio's model viewer, tflite-support's MetadataDisplayer) reads.

A `.tflite` file carries it beside pyloader's JSON: a flatbuffer `ModelMetadata` in the buffer of the model's
metadata entry named `TFLITE_METADATA`, and its associated files in a zip appended to the flatbuffer, as
tflite-support's MetadataPopulator lays them out. Written here from the schema's field ids with the
`flatbuffers` package:

* ModelMetadata: name (the architecture), description (family, source file, classes), version (the source's
  SHA-256, first 16 hex digits), author (pyloader and its version), min_parser_version;
* one SubGraphMetadata: the input (ImageProperties: RGB, or GRAYSCALE for one channel; NormalizationOptions
  mean 0, std 255: the model takes pixels in [0, 1], a 0..255 image divided by 255; Stats min 0, max 1) and
  one TensorMetadata per output, in the file's output order (its name and layout text);
* the class names as `labels.txt` (one per line), an AssociatedFile of every output whose layout holds class
  scores (TENSOR_AXIS_LABELS); with NMS, of `classes` only (TENSOR_VALUE_LABELS: its values are class ids).

Both the metadata flatbuffer and the zip are padded to a multiple of pyloader.metadata.BUCKET bytes (zeros
after the flatbuffer, the zip's comment), so that a template output (pyloader.outputs.template) patches them
in place like the JSON; the zip's offsets are relative to its own start (zip readers, Python's and minizip's,
find the archive from its end record), so its bytes do not depend on the file before it.
"""

from __future__ import annotations

import io
import zipfile

from ..metadata import BUCKET, is_digest

__all__ = ["NAME", "LABELS", "MIN_PARSER_VERSION", "metadata_buffer", "labels_zip", "blobs"]

NAME = "TFLITE_METADATA"  # the model's metadata entry (MetadataPopulator.METADATA_FIELD_NAME)
LABELS = "labels.txt"
# What tflite-support's GetMinimumMetadataParserVersion gives for the fields written here (checked by
# tests/test_tflite_metadata.py with tflite-support's own function).
MIN_PARSER_VERSION = "1.0.0"
_IDENTIFIER = b"M001"

# metadata_schema.fbs: field count of each table, the field ids used, enum and union values
_MODEL, _SUBGRAPH, _TENSOR, _CONTENT, _IMAGE, _UNIT, _NORM, _STATS, _FILE = 8, 10, 7, 3, 2, 2, 2, 2, 5
_IMAGE_PROPERTIES, _NORMALIZATION_OPTIONS = 2, 1  # ContentProperties, ProcessUnitOptions union types
_RGB, _GRAYSCALE = 1, 2  # ColorSpaceType
_AXIS_LABELS, _VALUE_LABELS = 2, 3  # AssociatedFileType
_NMS_CLASSES = "classes"


def _padded(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % BUCKET)


class _Builder:
    """flatbuffers.Builder with the few shapes the schema needs (children are built before their table)."""

    def __init__(self):
        import flatbuffers

        self.b = flatbuffers.Builder(1024)

    def string(self, text: str) -> int:
        return self.b.CreateString(text)

    def tables(self, offsets: list) -> int:
        self.b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            self.b.PrependUOffsetTRelative(o)
        return self.b.EndVector()

    def floats(self, values: list) -> int:
        self.b.StartVector(4, len(values), 4)
        for v in reversed(values):
            self.b.PrependFloat32(float(v))
        return self.b.EndVector()

    def table(self, fields: int, refs: dict | None = None, bytes_: dict | None = None) -> int:
        """A table of `fields` fields: `refs` {field id: offset}, `bytes_` {field id: enum or union type}."""
        self.b.StartObject(fields)
        for i, o in (refs or {}).items():
            self.b.PrependUOffsetTRelativeSlot(i, o, 0)
        for i, v in (bytes_ or {}).items():
            self.b.PrependUint8Slot(i, v, 0)
        return self.b.EndObject()

    def finish(self, root: int) -> bytes:
        self.b.Finish(root, file_identifier=_IDENTIFIER)
        return bytes(self.b.Output())


def _labels_type(meta: dict, output: dict) -> int | None:
    """The AssociatedFileType of labels.txt on `output`, or None when its values are not per class."""
    if meta.get("nms"):
        return _VALUE_LABELS if output["name"] == _NMS_CLASSES else None
    return _AXIS_LABELS if "class" in output.get("layout", "").lower() else None


def metadata_buffer(meta: dict) -> bytes:
    """The ModelMetadata flatbuffer (padded) for a model described by pyloader's `meta`, its outputs in the
    order of meta["outputs"]."""
    inp = meta["input"]
    channels = int(inp["shape"][-1])
    if "[0, 1]" not in inp["layout"] or channels not in (1, 3):
        raise ValueError(f"the TFLite metadata describes an RGB or gray input in [0, 1]; this model's input is "
                         f"{inp['layout']!r} with {channels} channels")
    names = meta.get("class_names") or []
    src = meta.get("source") or {}
    fb = _Builder()

    def tensor(name: str, description: str, refs: dict | None = None) -> int:
        return fb.table(_TENSOR, {0: fb.string(name), 1: fb.string(description), **(refs or {})})

    norm = fb.table(_NORM, {0: fb.floats([0.0]), 1: fb.floats([255.0])})
    unit = fb.table(_UNIT, {1: norm}, {0: _NORMALIZATION_OPTIONS})
    image = fb.table(_IMAGE, bytes_={0: _RGB if channels == 3 else _GRAYSCALE})
    content = fb.table(_CONTENT, {1: image}, {0: _IMAGE_PROPERTIES})
    stats = fb.table(_STATS, {0: fb.floats([1.0]), 1: fb.floats([0.0])})
    image_text = f"{'RGB' if channels == 3 else 'gray'} image, {inp['layout']}: pixel values / 255"
    inputs = [tensor(inp["name"], image_text, {3: content, 4: fb.tables([unit]), 5: stats})]
    outputs = []
    for o in meta["outputs"]:
        kind = _labels_type(meta, o)
        refs = {}
        if kind is not None and names:
            label = fb.table(_FILE, {0: fb.string(LABELS), 1: fb.string(f"the {len(names)} class names")},
                             {2: kind})
            refs[6] = fb.tables([label])
        shape = f" {o['shape']}" if "shape" in o else ""
        outputs.append(tensor(o["name"], f"{o['name']}{shape}: {o.get('layout', '')}", refs))
    subgraph = fb.table(_SUBGRAPH, {2: fb.tables(inputs), 3: fb.tables(outputs)})
    text = (f"{meta.get('family', '')} {meta.get('architecture', '')} from {src.get('name', 'unknown')}, "
            f"{len(names)} classes, converted by pyloader")
    model = fb.table(_MODEL, {
        0: fb.string(str(meta.get("architecture", "model"))), 1: fb.string(text),
        2: fb.string(f"sha256:{src['sha256'][:16]}" if is_digest(src.get("sha256")) else "unknown"),
        3: fb.tables([subgraph]), 4: fb.string(f"pyloader {meta.get('pyloader_version', '')}".strip()),
        7: fb.string(MIN_PARSER_VERSION)})
    return _padded(fb.finish(model))


def labels_zip(meta: dict) -> bytes:
    """The zip of labels.txt (stored, dated 1980-01-01: the same bytes for the same names), padded with its
    comment; b"" when the model has no class names."""
    names = meta.get("class_names") or []
    if not names:
        return b""

    def archive(comment: bytes) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            info = zipfile.ZipInfo(LABELS, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            z.writestr(info, "".join(f"{n}\n" for n in names).encode())
            z.comment = comment
        return out.getvalue()

    tag = b"pyloader labels"
    return archive(tag + b" " * (-len(archive(tag)) % BUCKET))


def blobs(meta: dict) -> list:
    """The per-checkpoint bytes of the standard metadata (pyloader.outputs.template): the flatbuffer, the zip."""
    return [b for b in (metadata_buffer(meta), labels_zip(meta)) if b]
