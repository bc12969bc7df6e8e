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

Writers (`writer`, the job's `tflite_writer`, `pyloader convert --tflite-writer`): `auto` (the default) writes
float32 and float16 models whose every layer the direct writer covers (pyloader.outputs.tflite_direct) with it,
without TensorFlow (its file is a template like the converter's: further checkpoints of the architecture are
written from it: 0.15 s for yolov4's 258 MB, the writer itself 0.2 s), and int8 and any other model with
TensorFlow's converter; `direct` is an error where the direct writer does not cover the model, `converter` always
runs the converter. Under Keras' PyTorch backend only the direct writer runs (the converter needs a SavedModel
export): an uncovered model fails before any export, saying so. The file says which wrote it: the metadata entry
`tflite_writer` (`direct`, or `converter` and why), which `read_metadata` returns as the key "tflite_writer".

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

__all__ = ["NAME", "FRAMEWORKS", "WRITERS", "output_name", "is_output", "write", "writer",
           "metadata_blobs", "parse_template", "run", "runtime", "read_metadata", "with_metadata"]

NAME = "tflite"
# imported once per worker before its first conversion; TensorFlow only where the converter runs (imported there)
FRAMEWORKS = ("keras",)
WRITERS = ("auto", "direct", "converter")
_WRITER_ENTRY = "tflite_writer"  # the metadata entry (and read_metadata's key) naming the writer


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
    which = writer(model, job)
    if which == "direct":
        from .tflite_direct import Uncovered, write_model

        entries, zipped = _metadata_entries(meta, model.output_names, which)
        try:
            data = [write_model(model, entries, job.tflite_fp16), zipped]
        except Uncovered as e:  # a layer's own emitter refused its configuration
            if job.tflite_writer == "direct":
                raise ValueError(f"the direct TFLite writer does not write this model: {e}") from None
            which = _converter_for(f"converter: {e}")
    if which != "direct":
        data = [with_metadata(_converted(model, path, job.tflite_fp16, int8), meta, model.output_names, which)]
    with open(path, "wb") as f:
        for part in data:
            f.write(part)


def writer(model, job) -> str:
    """"direct", or "converter: <why>", for `model` and job.tflite_writer (auto, direct or converter); ValueError
    where `direct` is chosen and the direct writer does not cover `model`, or where the converter would run under
    Keras' PyTorch backend."""
    from .tflite_direct import uncovered

    if job.tflite_writer == "converter":
        return _converter_for("converter: forced")
    why = "int8" if job.int8 else uncovered(model)
    if why is not None and job.tflite_writer == "direct":
        raise ValueError(f"the direct TFLite writer does not write this model: {why}")
    return "direct" if why is None else _converter_for(f"converter: {why}")


def _converter_for(which: str) -> str:
    """`which`, or ValueError under Keras' PyTorch backend (no SavedModel export, so no converter)."""
    import keras

    if keras.config.backend() == "torch":
        raise ValueError(f"format 'tflite' needs Keras' TensorFlow or JAX backend for this model (the direct writer "
                         f"does not write it: {which.removeprefix('converter: ')}; the PyTorch backend exports a "
                         "SavedModel only through torch_xla): run with KERAS_BACKEND=tensorflow")
    return which


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


def _metadata_entries(meta: dict, names: list, which: str) -> tuple:
    """([(entry name, bytes)] of the model's metadata list: pyloader's JSON, the standard TFLite metadata
    (pyloader.outputs.tflite_metadata), the writer), and the zip of the standard metadata's associated files, which
    goes after the flatbuffer (tflite-support's MetadataPopulator layout). The one place both writers take them."""
    described = [o["name"] for o in meta["outputs"]]
    if described != list(names):
        raise ValueError(f"the metadata describes the outputs {described}, the TFLite file has {list(names)}")
    entries = [(KEY, to_json(meta).encode()), (tflite_metadata.NAME, tflite_metadata.metadata_buffer(meta)),
               (_WRITER_ENTRY, which.encode())]
    return entries, tflite_metadata.labels_zip(meta)


def with_metadata(data: bytes, meta: dict, names: list, which: str = "converter") -> bytes:
    """The converter's TFLite flatbuffer with `meta` in its metadata list (`_metadata_entries`; `which`: why the
    converter wrote it), its outputs named `names` and in that order.

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
    entries, zipped = _metadata_entries(meta, names, which)
    kept = [m for m in (model.metadata or []) if _s(m.name) not in {n for n, _ in entries}]
    for name, blob in entries:
        buf = schema.BufferT()
        buf.data = np.frombuffer(blob, np.uint8)
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = name.encode()
        entry.buffer = len(model.buffers) - 1
        kept.append(entry)
    model.metadata = kept
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) + zipped


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _buffers(data: bytes) -> tuple:
    """Read the flatbuffer's Model.buffers (field 4) and Model.metadata (field 6) without TensorFlow:
    ([(data start, length, offset, size) per buffer], {metadata entry name: buffer index})."""

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

    def vector(o):  # (start, length) of the vector at field offset o, or (0, 0)
        if o is None:
            return 0, 0
        v = ref(o)
        return v + 4, u32(v)

    root = ref(0)
    buffers = []
    start, n = vector(field(root, 4))
    for k in range(n):
        buf = ref(start + 4 * k)
        ext = [field(buf, i) for i in (1, 2)]
        buffers.append((*vector(field(buf, 0)), *(0 if o is None else struct.unpack_from("<Q", data, o)[0]
                                                  for o in ext)))
    entries = {}
    start, n = vector(field(root, 6))
    for k in range(n):
        entry = ref(start + 4 * k)
        s, ln = vector(field(entry, 0))
        buf_f = field(entry, 1)
        entries[data[s:s + ln].decode()] = 0 if buf_f is None else u32(buf_f)
    return buffers, entries


def read_metadata(path: str) -> dict | None:
    """The JSON of the metadata entry named KEY, with "tflite_writer" from its entry where the file has one (no
    TensorFlow)."""
    with open(path, "rb") as f:
        data = f.read()
    buffers, entries = _buffers(data)

    def blob(name):
        i = entries.get(name)
        if i is None or i >= len(buffers):
            return None
        s, n = buffers[i][:2]
        return data[s:s + n].decode()

    text = blob(KEY)
    if text is None:
        return None
    meta = json.loads(text)
    which = blob(_WRITER_ENTRY)
    return meta if which is None else {**meta, _WRITER_ENTRY: which}


def runtime() -> str:
    """What `run` runs the file in, in words (for --verify's report)."""
    return tflite_runtime()


def run(path: str, images, names: list, job) -> dict:
    """The TFLite signature runner (LiteRT where installed: pyloader.outputs.runtime.tflite_runtime) on each of
    `images` [N, H, W, 3], one interpreter for all; integer inputs quantized, integer outputs dequantized."""
    runner = tflite_interpreter(path).get_signature_runner()
    (in_name, in_detail), = runner.get_input_details().items()
    details = runner.get_output_details()
    per_image = []
    for x in np.split(np.asarray(images), len(images)):
        if in_detail["dtype"] != np.float32:
            scale, zero = in_detail["quantization"]
            info = np.iinfo(in_detail["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(in_detail["dtype"])
        out = {}
        for k, v in runner(**{in_name: x}).items():
            scale, zero = details[k]["quantization"]
            out[k] = (v.astype(np.float32) - zero) * scale if v.dtype in (np.int8, np.uint8, np.int16) and scale \
                else np.array(v)
        per_image.append(out)
    res = {k: np.concatenate([o[k] for o in per_image]) for k in per_image[0]}
    if set(res) == set(names):
        return res
    # unnamed signature outputs (output_0, output_1, ...) follow the model's output order
    keys = sorted(res, key=lambda k: int(k.rsplit("_", 1)[1]) if k.rsplit("_", 1)[-1].isdigit() else -1)
    return dict(zip(names, (res[k] for k in keys)))


# ---------------------------------------------------------------------------------------------------------
# Template


class TfliteTemplate(Template):
    made_patches = True  # kernels OHWI (float16 with fp16): each made as it is written

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
    with open(path, "rb") as f:
        data = f.read()
    dtypes = ["float32", "float16"] if fp16 else ["float32"]
    finder = Finder(probes, lambda a: [(t, d) for t in ("identity", "ohwi")[:2 if a.ndim == 4 else 1]
                                       for d in dtypes])
    slots = []
    for i, (start, n, offset, size) in enumerate(_buffers(data)[0]):
        if offset or size:  # data outside the flatbuffer (models over 2 GB)
            raise NoTemplate("the TFLite file keeps buffers outside its flatbuffer")
        if not n:
            continue
        hit = finder.match(data[start:start + n], f"buffer {i}")
        if hit is not None:
            slots.append(Slot("", start, n, *hit))
    finder.require_all(probes, NAME)
    return TfliteTemplate({"": data}, slots, find_blobs({"": data}, blobs))
