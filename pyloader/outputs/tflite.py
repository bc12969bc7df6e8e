"""TFLite (`.tflite`, TensorFlow's converter on the SavedModel export): float32, float16 weights
(`tflite_fp16`), or int8 calibrated on images (`int8`: the network int8; the stem (the first operators, up to 10%
of the weights), the heads' last convolutions, the decode and NMS float, see quantize.py; `int8_io`: every operator int8, integer input and outputs too). The metadata
is an entry named `pyloader_metadata` of the flatbuffer's `metadata` list whose buffer holds the JSON (TFLite's
own mechanism, readable with `flatbuffer_utils` or the reader here, without TensorFlow); output tensors are
renamed to the output names and listed in the Keras model's order.

Template: every weight is one flatbuffer buffer, as it is or (4-D kernels) in TFLite's OHWI layout, float16
with `tflite_fp16`; a checkpoint with an all-zero array or two equal arrays is exported instead (the converter
may fold or share them). --verify: LiteRT (`ai-edge-litert`; TensorFlow's deprecated tf.lite.Interpreter
where it is not installed; pyloader.outputs.runtime names the one), full-integer inputs quantized and outputs
dequantized with the file's own parameters.

The input's batch is dynamic (shape_signature -1: `resize_tensor_input(i, [n, H, W, C])` then
`allocate_tensors`): the converter takes the SavedModel signature, whose batch is None. The standard TFLite
metadata (pyloader.outputs.tflite_metadata) goes in beside the JSON.
"""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np

from ..metadata import KEY, to_json
from . import savedmodel, tflite_metadata
from .runtime import tflite_interpreter, tflite_runtime
from .template import Finder, NoTemplate, Slot, Template, find_blobs, json_blobs

__all__ = ["NAME", "FRAMEWORKS", "output_name", "is_output", "write", "metadata_blobs", "parse_template", "run",
           "runtime", "read_metadata", "with_metadata"]

NAME = "tflite"
FRAMEWORKS = ("keras", "tensorflow")  # imported once per worker before its first conversion


def output_name(stem: str) -> str:
    return stem + ".tflite"


def is_output(path: str, head: bytes) -> bool:
    """Whether `path` (its first 8 bytes `head`; b"" for a folder) is a file of this format."""
    return head[4:8] == b"TFL3"


def write(model, path: str, meta: dict, job, letterbox: bool) -> None:
    """`job`'s precision (tflite_fp16, int8 on the images of job.calibration, prepared as the family expects:
    `letterbox`)."""
    from ..calibration import model_images

    rows = [o for o in meta.get("outputs", ()) if job.int8 and "rows" in o]
    if rows:  # refused before the calibration images are read
        raise ValueError(f"int8 cannot hold the output {rows[0]['name']!r} (rows {rows[0]['rows']}: detection rows the "
                         "model selects itself, a class index among their columns; quantization does not keep them): "
                         "convert int8 without --decode (the raw heads), or this output as float TFLite")
    int8 = (model_images(model, job.calibration, letterbox), job.int8_io) if job.int8 else None
    with open(path, "wb") as f:
        f.write(with_metadata(_converted(model, path, job.tflite_fp16, int8), meta, model.output_names))


def _converted(model, tmp: str, fp16: bool, int8=None) -> bytes:
    """TFLite flatbuffer: float32, float16 weights (fp16), or int8 = (calibration images, integer I/O)."""
    import tensorflow as tf

    saved = tmp + ".savedmodel"
    try:
        savedmodel.export(model, saved, getattr(model, "metadata", None) or {})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
        if fp16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if int8 is not None:
            images, int_io = int8
            from .quantize import calibrate, int8_flatbuffer

            if not int_io:  # the network int8, the decode / NMS tail float (quantize.py)
                return int8_flatbuffer(converter, images)
            calibrate(converter, images)
            # full integer: every op int8, int8 input and outputs
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()
    finally:
        shutil.rmtree(saved, ignore_errors=True)  # the intermediate SavedModel folder


def metadata_blobs(meta: dict) -> list:
    """The per-checkpoint bytes (pyloader.outputs.template): the JSON, the standard metadata and its zip."""
    return json_blobs(meta) + tflite_metadata.blobs(meta)


def with_metadata(data: bytes, meta: dict, names: list) -> bytes:
    """The TFLite flatbuffer with `meta` in its metadata list, its outputs named `names` and in that order, and
    the standard TFLite metadata (`_add_standard_metadata`).

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
    buf.data = np.frombuffer(to_json(meta).encode(), np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = KEY.encode()
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _s(m.name) != KEY] + [entry]
    zipped = _add_standard_metadata(model, meta, names)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) + zipped


def _add_standard_metadata(model, meta: dict, names: list) -> bytes:
    """Put the TFLite Metadata schema's ModelMetadata (pyloader.outputs.tflite_metadata) into `model` (a
    flatbuffer_utils object) as the buffer of its `TFLITE_METADATA` entry; return the zip of its associated
    files, which goes after the flatbuffer (tflite-support's MetadataPopulator layout)."""
    from tensorflow.lite.python import schema_py_generated as schema

    described = [o["name"] for o in meta["outputs"]]
    if described != list(names):
        raise ValueError(f"the metadata describes the outputs {described}, the TFLite file has {list(names)}")
    buf = schema.BufferT()
    buf.data = np.frombuffer(tflite_metadata.metadata_buffer(meta), np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = tflite_metadata.NAME.encode()
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in model.metadata if _s(m.name) != tflite_metadata.NAME] + [entry]
    return tflite_metadata.labels_zip(meta)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_metadata(path: str) -> dict | None:
    """Model.metadata (field 6) -> entry named KEY -> Model.buffers (field 4)[entry.buffer].data (no
    TensorFlow)."""
    with open(path, "rb") as f:
        data = f.read()

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


def runtime() -> str:
    """What `run` runs the file in, in words (for --verify's report)."""
    return tflite_runtime()


def run(path: str, image, names: list, job) -> dict:
    """The TFLite signature runner (LiteRT where installed: pyloader.outputs.runtime.tflite_runtime); integer
    inputs quantized, integer outputs dequantized."""
    it = tflite_interpreter(path)
    runner = it.get_signature_runner()
    (in_name, in_detail), = runner.get_input_details().items()
    x = image
    if in_detail["dtype"] != np.float32:
        scale, zero = in_detail["quantization"]
        info = np.iinfo(in_detail["dtype"])
        x = np.clip(np.round(image / scale + zero), info.min, info.max).astype(in_detail["dtype"])
    out = runner(**{in_name: x})
    details = runner.get_output_details()
    res = {}
    for k, v in out.items():
        scale, zero = details[k]["quantization"]
        if v.dtype in (np.int8, np.uint8, np.int16) and scale:
            v = (v.astype(np.float32) - zero) * scale
        res[k] = v
    if set(res) == set(names):
        return res
    # unnamed signature outputs (output_0, output_1, ...) follow the model's output order
    keys = sorted(res, key=lambda k: int(k.rsplit("_", 1)[1]) if k.rsplit("_", 1)[-1].isdigit() else -1)
    return dict(zip(names, (res[k] for k in keys)))


# ---------------------------------------------------------------------------------------------------------
# Template


class TfliteTemplate(Template):
    def check(self, arrays: dict) -> None:
        """Also: no value a converter treats specially (an all-zero tensor; equal tensors share one buffer)."""
        super().check(arrays)
        by_size: dict = {}
        for k in self.keys:
            flat = np.asarray(arrays[k]).reshape(-1)
            if not flat[:64].any() and not flat.any():
                raise NoTemplate(f"{k} is all zeros (the converter may fold it away)")
            by_size.setdefault(flat.nbytes, []).append((k, flat))
        for group in by_size.values():
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    (ka, a), (kb, b) = group[i], group[j]
                    if np.array_equal(a[:64], b[:64]) and np.array_equal(a, b):
                        raise NoTemplate(f"{ka} and {kb} are equal (the converter may share one buffer)")


def parse_template(path: str, probes: dict, fp16: bool, blobs: list) -> Template:
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError as e:  # pragma: no cover
        raise NoTemplate(f"TFLite schema not importable: {e}") from None
    with open(path, "rb") as f:
        data = f.read()
    dtypes = ["float32", "float16"] if fp16 else ["float32"]
    finder = Finder(probes, lambda a: [(t, d) for t in ("identity", "ohwi")[:2 if a.ndim == 4 else 1]
                                       for d in dtypes])
    model = schema.Model.GetRootAsModel(data, 0)
    slots = []
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.Offset() or buf.Size():  # data outside the flatbuffer (models over 2 GB)
            raise NoTemplate("the TFLite file keeps buffers outside its flatbuffer")
        o = buf._tab.Offset(4)
        if not o:
            continue
        start, n = buf._tab.Vector(o), buf._tab.VectorLen(o)
        hit = finder.match(data[start:start + n], f"buffer {i}")
        if hit is not None:
            slots.append(Slot("", start, n, *hit))
    finder.require_all(probes, NAME)
    return TfliteTemplate({"": data}, slots, find_blobs({"": data}, blobs))
