"""What every output says about itself: classes, strides, anchors, input size, outputs, source, pyloader version.

`model_metadata(family, plan, input size, options)` builds the dict from what a family declares (no Keras, no
TensorFlow);
`with_source(meta, path)` refreshes the per-checkpoint fields (`source`: file name, size and SHA-256) -- a
writer that patches weights into a previously exported file rewrites only those (`pyloader.load` leaves the
SHA-256 to the first save, `complete`); `read_metadata(path)` reads it back from
any output (without importing TensorFlow or Keras).

Where it lives, per format (the JSON text is the same everywhere, key `pyloader_metadata`; it is padded with
trailing spaces to a multiple of BUCKET bytes, see `to_json`, so that a template output can patch it in place):

* in memory: `model.metadata` (dict) and `model.class_names` (pyloader.keras_blocks.model.DetectionModel);
* `.keras`: `config.json` -> `config` -> `pyloader_metadata` (the JSON text as a string); restored on `keras.saving.load_model` wherever
  pyloader is imported (the registered `pyloader>DetectionModel`), ignored by plain Keras;
* `.weights.h5`: the HDF5 root attribute `pyloader_metadata` (a JSON string);
* SavedModel: `assets.extra/pyloader_metadata.json` (the SavedModel convention for files beside the graph)
  and the `metadata` signature (no inputs; returns `{"pyloader_metadata": <JSON string>}`); the serving
  signature's output keys are the model's output names;
* TFLite: the flatbuffer's `metadata` list, an entry named `pyloader_metadata` whose buffer holds the JSON
  (TFLite's own mechanism, e.g. `tf.lite.Interpreter(...)._get_full_signature_list()` aside, readable with
  `flatbuffer_utils` or pyloader's reader here); output tensors are renamed to the output names and listed in
  the Keras model's order.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

__all__ = ["KEY", "model_metadata", "nms_metadata", "anchor_outputs", "anchor_plan_fields", "class_names", "with_source",
           "source_fields", "read_names_file", "to_json", "read_metadata", "write_h5", "write_savedmodel_files", "tflite_with_metadata"]

KEY = "pyloader_metadata"
SAVEDMODEL_FILE = os.path.join("assets.extra", KEY + ".json")


def _version() -> str:
    from .version import __version__

    return __version__


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


def anchor_plan_fields(plan, input_size, options, decoded: str) -> dict:
    """A family's metadata fields for a plan of an anchor-based .pt model (model_class, names, nc, strides, anchors
    in pixels; RGB input in [0, 1] named `images`); `decoded`: the layout text of its decode=True output."""
    h, w = input_size
    return {
        "architecture": plan.model_class,
        "input": {"name": "images", "shape": [None, h, w, 3], "layout": "NHWC float32 RGB in [0, 1]", "size": [h, w]},
        "class_names": class_names(list(plan.names), plan.nc, plan.path),
        "strides": [[int(s), int(s)] for s in plan.strides],
        "anchors": [[[float(v) for v in a] for a in lvl] for lvl in plan.anchors],
        "outputs": anchor_outputs(plan.strides, plan.anchors, plan.nc, input_size, decoded if options.decode else None),
    }


def model_metadata(family, plan, input_size, options, source=None, *, digest=True) -> dict:
    """The metadata of the model `family` builds from `plan` with `options` (pyloader.family), for outputs of
    `input_size` (h, w): the family's fields (architecture, input, class names, strides, anchors, outputs), the
    NMS outputs when options.nms, and the source checkpoint (`source`; digest=False leaves its SHA-256 to the
    first save). Every route (load, convert, templates) takes its metadata from here."""
    fields = family.metadata(plan, tuple(int(v) for v in input_size), options)
    meta = {"format": "pyloader", "pyloader_version": _version(), "family": family.name, **fields,
            "decode": bool(options.decode), "fold_bn": bool(options.fold_bn)}
    if options.nms is not None:
        meta = nms_metadata(meta, options.nms, family.layout(plan).score)
    return with_source(meta, source, digest) if source is not None else meta


def nms_metadata(meta: dict, options: dict, score: str) -> dict:
    """`meta` for a model whose outputs are the NMS outputs (keras_blocks.nms); `score`: what a score is."""
    meta = dict(meta)
    meta["decode"] = True
    meta["nms"] = dict(options)
    meta["outputs"] = [
        {"name": "boxes", "shape": [None, options["max_det"], 4],
         "layout": "x1, y1, x2, y2 in input pixels; rows past num_detections are 0"},
        {"name": "scores", "shape": [None, options["max_det"]], "layout": score},
        {"name": "classes", "shape": [None, options["max_det"]], "layout": "int32 class id, -1 past num_detections"},
        {"name": "num_detections", "shape": [None], "layout": "int32 detections kept per image"},
    ]
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


def stored_blobs(meta: dict, fmt: str) -> list:
    """The metadata's bytes exactly as a `fmt` output stores them (pyloader.templates' per-checkpoint blobs)."""
    if fmt == "keras":
        return [json.dumps(config_text(meta)).encode()]
    return [to_json(meta).encode()]


def parse(value):
    """A stored metadata value (a dict, or JSON text as written by to_json / config_text) as a dict."""
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value) if isinstance(value, str) else value


# ---------------------------------------------------------------------------------------------------------
# Writing (called with the framework already imported)


def write_h5(path, meta: dict) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs[KEY] = to_json(meta)


def write_savedmodel_files(folder, meta: dict) -> None:
    os.makedirs(os.path.join(folder, "assets.extra"), exist_ok=True)
    with open(os.path.join(folder, SAVEDMODEL_FILE), "w", encoding="utf-8") as f:
        f.write(to_json(meta))


def tflite_with_metadata(data: bytes, meta: dict, names: list) -> bytes:
    """The TFLite flatbuffer with `meta` in its metadata list, its outputs named `names` and in that order.

    The converter keys a SavedModel signature's outputs by name (sorted); here each output tensor is renamed
    to its key and the subgraph's and signature's output lists follow `names` (the Keras model's order).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    sub = model.subgraphs[0]
    sig = model.signatureDefs[0] if model.signatureDefs else None
    if sig is not None:
        by_name = {_s(t.name): t for t in sig.outputs}
        if set(by_name) != set(names):
            raise ValueError(f"TFLite signature outputs {sorted(by_name)} are not the model's {names}")
        sig.outputs = [by_name[n] for n in names]
        for n in names:
            sub.tensors[by_name[n].tensorIndex].name = n.encode()
        sub.outputs = [by_name[n].tensorIndex for n in names]
    buf = schema.BufferT()
    import numpy as np

    buf.data = np.frombuffer(to_json(meta).encode(), np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = KEY.encode()
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _s(m.name) != KEY] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------------------------------------
# Reading (no TensorFlow, no Keras)


def read_metadata(path) -> dict | None:
    """The metadata of a pyloader output (.keras, .weights.h5, SavedModel folder, .tflite), or None."""
    path = os.fspath(path)
    if os.path.isdir(path):
        p = os.path.join(path, SAVEDMODEL_FILE)
        if not os.path.exists(p):
            return None
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
        return parse((config.get("config") or {}).get(KEY))
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        import h5py

        with h5py.File(path, "r") as f:
            v = f.attrs.get(KEY)
        return None if v is None else parse(v)
    if head[4:8] == b"TFL3":
        with open(path, "rb") as f:
            return _tflite_metadata(f.read())
    return None


def output_kind(path) -> str | None:
    """'keras', 'weights.h5', 'savedmodel', 'tflite' for a file pyloader writes, else None."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "savedmodel" if os.path.exists(os.path.join(path, "saved_model.pb")) else None
    if not os.path.isfile(path):  # never open a FIFO or device (it could block)
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") and path.endswith(".keras"):
        return "keras"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "weights.h5"
    if head[4:8] == b"TFL3":
        return "tflite"
    return None


def _tflite_metadata(data: bytes) -> dict | None:
    """Model.metadata (field 6) -> entry named KEY -> Model.buffers (field 4)[entry.buffer].data."""
    def u32(o):
        return struct.unpack_from("<I", data, o)[0]

    def field(table, i):  # absolute offset of field i of the table at `table`, or None
        vt = table - struct.unpack_from("<i", data, table)[0]
        vt_len = struct.unpack_from("<H", data, vt)[0]
        if 4 + 2 * i >= vt_len:
            return None
        off = struct.unpack_from("<H", data, vt + 4 + 2 * i)[0]
        return table + off if off else None

    def ref(o):  # follow a uoffset
        return o + u32(o)

    def vector(o):
        v = ref(o)
        return v + 4, u32(v)

    root = ref(0)
    meta_f, bufs_f = field(root, 6), field(root, 4)
    if meta_f is None or bufs_f is None:
        return None
    start, n = vector(meta_f)
    for k in range(n):
        entry = ref(start + 4 * k)
        name_f, buf_f = field(entry, 0), field(entry, 1)
        if name_f is None:
            continue
        s, ln = vector(name_f)
        if data[s:s + ln].decode() != KEY or buf_f is None:
            continue
        index = u32(buf_f)
        bstart, bn = vector(bufs_f)
        if index >= bn:
            return None
        buf = ref(bstart + 4 * index)
        data_f = field(buf, 0)
        if data_f is None:
            return None
        ds, dn = vector(data_f)
        return json.loads(data[ds:ds + dn].decode())
    return None
