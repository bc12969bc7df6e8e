"""Template outputs: run a format's exporter once per architecture, then write each further checkpoint's file by
putting its weights into the template's bytes.

How a template is learned (`learn`): the built model gets distinct random *probe* values in every variable, the
real exporter writes its file, and every place that holds a weight is found by content: HDF5 datasets (`.keras`,
`.weights.h5`), tensor-bundle entries (SavedModel `variables/`), flatbuffer buffers (TFLite). Each must equal one
variable's probe under an exact, known transform (identity or a reshape of it; HWIO -> OHWI, TFLite's kernel
layout; a cast to float16 for `tflite_fp16`), and every variable must be found exactly once; otherwise there is
no template (the reason says which variable) and the caller keeps the exporter. Finally the template writes the
probe checkpoint itself and must reproduce the exporter's bytes, else there is no template either.

How a file is written (`Template.write`): the template's bytes with each weight region replaced by the
checkpoint's array (transformed), and each format's checksums and stamps redone: the zip CRC-32 of the changed
`.keras` members and its save date (`metadata.json` `date_saved`, the member's zip time), the CRC-32C of every
changed bundle entry and the table blocks holding them in `variables.index`, SavedModel's `fingerprint.pb`
(recomputed by TensorFlow). TFLite also checks each checkpoint for values a converter treats specially (an
all-zero array; two equal arrays it may share one buffer for): those checkpoints raise `NoTemplate`, and the
caller exports them.

Per-checkpoint metadata hook (`blobs`): the bytes that differ per checkpoint are the weights plus any metadata
blob the format stores (class names, source name and hash, ...). Export the template with *probe* blobs in the
model and pass them to `learn(..., blobs=[...])`; every occurrence is recorded, and `write(..., blobs=[...])`
puts in the checkpoint's blobs, which must have the same lengths (pad them; `NoTemplate` otherwise) and are
covered by the same checksum fix-ups as the weights.

Only numpy, zlib and pyloader's core at write time, plus TensorFlow for a SavedModel's fingerprint; `learn`
needs the exporter's framework and h5py.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import struct
import time
import zipfile

import numpy as np

__all__ = ["FORMATS", "NoTemplate", "Template", "learn", "probe_arrays"]

FORMATS = ("keras", "weights.h5", "savedmodel", "tflite")
_BUNDLE_DATA = "variables/variables.data-00000-of-00001"
_BUNDLE_INDEX = "variables/variables.index"
_TABLE_MAGIC = 0xDB4775248B80FB57


class NoTemplate(Exception):
    """No template for this architecture/format (or this checkpoint): use the exporter. str() says why."""


def _crc32c(data, crc: int = 0) -> int:
    from . import _core

    return _core.crc32c(data, crc)


# ---------------------------------------------------------------------------------------------------------
# Probes and transforms


def probe_arrays(shapes: dict, seed: int = 12345) -> dict:
    """{path: float32 array}, uniform in [0.5, 1.5): distinct in every element of every variable (no zeros,
    no ones, no repeated arrays, positive variances), so each one's bytes can be found in an exporter's output."""
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(0.5, 1.5, size=tuple(s)).astype(np.float32) for k, s in sorted(shapes.items())}


def _transformed(a: np.ndarray, transform: str, dtype: str) -> np.ndarray:
    if transform == "ohwi":  # Keras HWIO -> TFLite OHWI
        a = np.ascontiguousarray(np.transpose(a, (3, 0, 1, 2)))
    elif transform != "identity":
        raise ValueError(transform)
    a = np.ascontiguousarray(a)
    if a.dtype != np.dtype(dtype):
        a = a.astype(dtype)
    return a


def _candidates(fmt: str, fp16: bool, a: np.ndarray):
    transforms = ["identity"]
    if fmt == "tflite" and a.ndim == 4:
        transforms.append("ohwi")
    dtypes = ["float32", "float16"] if (fmt == "tflite" and fp16) else ["float32"]
    for t in transforms:
        for d in dtypes:
            yield t, d


# ---------------------------------------------------------------------------------------------------------
# The template


@dataclasses.dataclass
class _Slot:
    file: str  # relative path inside the output ('' for a single file)
    offset: int
    nbytes: int
    key: str  # variable path
    transform: str
    dtype: str
    crc_at: int = -1  # savedmodel: offset of the entry's masked CRC-32C in variables.index


@dataclasses.dataclass
class _Member:  # a stored .keras zip member whose bytes may change
    name: str
    data_offset: int
    size: int
    local_header: int
    central_header: int
    stamped: bool  # its zip time is the save time


class Template:
    """An exporter's output for one architecture and the places of its weights; `write` makes another."""

    def __init__(self, fmt: str, root: str, files: dict, slots: list, *, fp16: bool = False,
                 members=(), blocks=(), blob_places=(), date_at=None):
        self.format, self.fp16 = fmt, fp16
        self.root_is_dir = fmt == "savedmodel"
        self.files = files  # relpath -> bytes ('' = the file itself); for folders also '<dir>/' -> None
        self.slots = sorted(slots, key=lambda s: (s.file, s.offset))
        self.members = list(members)
        self.blocks = list(blocks)  # savedmodel: (offset, size) of table blocks holding patched CRCs
        self.blob_places = list(blob_places)  # (blob index, file, offset, length)
        self.date_at = date_at  # keras: offset of date_saved's value inside metadata.json's member data
        self.keys = sorted({s.key for s in self.slots})
        self.input_size = None  # the caller's note of the model's input size (pyloader.bulk.worker)

    # -- writing --

    def check(self, arrays: dict) -> None:
        """NoTemplate if `arrays` cannot be written from this template (names, shapes, values)."""
        for s in self.slots:
            a = arrays.get(s.key)
            if a is None:
                raise NoTemplate(f"the checkpoint has no array {s.key}")
            if a.size * np.dtype(s.dtype).itemsize != s.nbytes:
                raise NoTemplate(f"{s.key}: {a.size} values, the template holds {s.nbytes} bytes")
        if self.format == "tflite":
            _check_plain_values({k: arrays[k] for k in self.keys})

    def write(self, arrays: dict, out: str, blobs=(), now: float | None = None) -> None:
        """Write the output for `arrays` ({variable path: array in Keras layout}) to `out` (a file, or a folder
        for SavedModel, which must not exist). `blobs`: per-checkpoint metadata, as documented above."""
        self.check(arrays)
        blobs = [bytes(b) for b in blobs]
        if len(blobs) != len({i for i, *_ in self.blob_places}):
            raise NoTemplate(f"{len(blobs)} metadata blobs given, the template holds "
                             f"{len({i for i, *_ in self.blob_places})}")
        patches: dict = {}  # file -> [(offset, buffer)]
        for s in self.slots:
            a = _transformed(np.asarray(arrays[s.key]), s.transform, s.dtype)
            patches.setdefault(s.file, []).append((s.offset, memoryview(a).cast("B")))
        for i, f, off, length in self.blob_places:
            if len(blobs[i]) != length:
                raise NoTemplate(f"metadata blob {i} is {len(blobs[i])} bytes, the template holds {length}")
            patches.setdefault(f, []).append((off, blobs[i]))
        if self.format == "keras":
            self._keras_fixups(patches, now)
        elif self.format == "savedmodel":
            self._bundle_fixups(patches)
        if self.root_is_dir:
            os.mkdir(out)
            for rel, data in self.files.items():
                path = os.path.join(out, rel)
                if data is None:
                    os.makedirs(path, exist_ok=True)
                elif rel != "fingerprint.pb":
                    _emit(path, data, patches.get(rel, []))
            if "fingerprint.pb" in self.files:
                from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

                with open(os.path.join(out, "fingerprint.pb"), "wb") as fh:
                    fh.write(fingerprinting.CreateFingerprintDef(out))
        else:
            _emit(out, self.files[""], patches.get("", []))

    def _keras_fixups(self, patches: dict, now) -> None:
        import zlib

        data = self.files[""]
        mv = memoryview(data)
        plist = sorted(patches.get("", []), key=lambda p: p[0])
        stamp = time.localtime(now if now is not None else time.time())
        extra = []
        if self.date_at is not None:
            text = time.strftime("%Y-%m-%d@%H:%M:%S", stamp).encode()
            plist.append((self.date_at, text))
            plist.sort(key=lambda p: p[0])
        dos_time = (stamp.tm_hour << 11) | (stamp.tm_min << 5) | (stamp.tm_sec // 2)
        dos_date = ((stamp.tm_year - 1980) << 9) | (stamp.tm_mon << 5) | stamp.tm_mday
        for m in self.members:
            inside = [p for p in plist if m.data_offset <= p[0] < m.data_offset + m.size]
            if not inside and not m.stamped:
                continue
            crc, pos = 0, m.data_offset
            for off, buf in inside:
                crc = zlib.crc32(mv[pos:off], crc)
                crc = zlib.crc32(buf, crc)
                pos = off + len(buf)
            crc = zlib.crc32(mv[pos:m.data_offset + m.size], crc)
            packed = struct.pack("<I", crc)
            extra += [(m.local_header + 14, packed), (m.central_header + 16, packed)]
            if m.stamped:
                when = struct.pack("<HH", dos_time, dos_date)
                extra += [(m.local_header + 10, when), (m.central_header + 12, when)]
        patches[""] = sorted(plist + extra, key=lambda p: p[0])

    def _bundle_fixups(self, patches: dict) -> None:
        index = bytearray(self.files[_BUNDLE_INDEX])
        at = {off: b for off, b in patches.get(_BUNDLE_DATA, [])}
        for s in self.slots:
            buf = at[s.offset]
            index[s.crc_at:s.crc_at + 4] = struct.pack("<I", _mask(_crc32c(buf)))
        for off, size in self.blocks:  # block contents + type byte, masked CRC-32C after them
            index[off + size + 1:off + size + 5] = struct.pack("<I", _mask(_crc32c(bytes(index[off:off + size + 1]))))
        patches[_BUNDLE_INDEX] = [(0, bytes(index))]


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _emit(path: str, template, patches) -> None:
    """Write `template` with `patches` [(offset, bytes-like)] laid over it (no overlaps)."""
    mv = memoryview(template)
    pos = 0
    with open(path, "wb") as f:
        for off, buf in sorted(patches, key=lambda p: p[0]):
            if off < pos:
                raise ValueError("overlapping template patches")
            f.write(mv[pos:off])
            f.write(buf)
            pos = off + len(buf)
        f.write(mv[pos:])


def _check_plain_values(arrays: dict) -> None:
    """TFLite converters treat some values specially: an all-zero tensor, equal tensors (one shared buffer)."""
    by_size: dict = {}
    for k, a in arrays.items():
        flat = np.asarray(a).reshape(-1)
        if not flat[:64].any() and not flat.any():
            raise NoTemplate(f"{k} is all zeros (the converter may fold it away)")
        by_size.setdefault(flat.nbytes, []).append((k, flat))
    for group in by_size.values():
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                (ka, a), (kb, b) = group[i], group[j]
                if np.array_equal(a[:64], b[:64]) and np.array_equal(a, b):
                    raise NoTemplate(f"{ka} and {kb} are equal (the converter may share one buffer)")


# ---------------------------------------------------------------------------------------------------------
# Learning


def learn(fmt: str, model, export, *, fp16: bool = False, blobs=(), workdir: str) -> Template:
    """The template for `model` in `fmt`, or NoTemplate (with the reason). `export(model, path)` runs the real
    exporter into `path`; `workdir` holds its output while learning (removed after). The model's variables are
    left holding probe values."""
    if fmt not in FORMATS:
        raise NoTemplate(f"no template writer for format {fmt!r}")
    variables = {v.path: v for v in model.weights}
    if len(variables) != len(model.weights):
        raise NoTemplate("the model has two variables of one path")
    probes = probe_arrays({k: tuple(v.shape) for k, v in variables.items()})
    for k, v in variables.items():
        v.assign(probes[k])
    path = os.path.join(workdir, "template" + ("" if fmt == "savedmodel" else "." + fmt))
    check = os.path.join(workdir, "check" + ("" if fmt == "savedmodel" else "." + fmt))
    try:
        export(model, path)
        tpl = _parse(fmt, path, probes, fp16, [bytes(b) for b in blobs])
        tpl.write(probes, check, blobs, now=None)
        _same_output(fmt, path, check)
        return tpl
    finally:
        for p in (path, check):
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.exists(p):
                os.unlink(p)


def _same_output(fmt: str, expected: str, got: str) -> None:
    """The template's own output for the probes must be the exporter's (SavedModel: its variables; .keras:
    all but the save date)."""
    if fmt == "savedmodel":
        pairs = [(os.path.join(expected, f), os.path.join(got, f)) for f in (_BUNDLE_DATA, _BUNDLE_INDEX)]
    else:
        pairs = [(expected, got)]
    for a, b in pairs:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            x, y = fa.read(), fb.read()
        if fmt == "keras":
            x, y = _keras_without_date(x), _keras_without_date(y)
        if x != y:
            raise NoTemplate(f"the template does not reproduce the exporter's {os.path.basename(a)}")


def _keras_without_date(data: bytes):
    z = zipfile.ZipFile(io.BytesIO(data))
    out = []
    for info in z.infolist():
        body = z.read(info)
        if info.filename == "metadata.json":
            import re

            body = re.sub(rb'"date_saved": "[^"]*"', b"", body)
        out.append((info.filename, info.compress_type, body))
    return out


class _Finder:
    """Find each region's variable by content: {(nbytes, crc32c): [(key, transform, dtype, array)]}."""

    def __init__(self, fmt: str, probes: dict, fp16: bool):
        self.table: dict = {}
        for k, a in probes.items():
            for t, d in _candidates(fmt, fp16, a):
                b = _transformed(a, t, d)
                self.table.setdefault((b.nbytes, _crc32c(b)), []).append((k, t, d, b))
        self.found: dict = {}

    def match(self, region, where: str):
        """(key, transform, dtype) whose bytes equal `region`, or None."""
        region = memoryview(region).cast("B")
        hits = self.table.get((region.nbytes, _crc32c(region)), [])
        hits = [h for h in hits if memoryview(h[3]).cast("B") == region]
        keys = {h[0] for h in hits}
        if len(keys) > 1:
            raise NoTemplate(f"{where} matches several variables ({sorted(keys)[:3]})")
        if not hits:
            return None
        k, t, d, _ = hits[0]
        self.found.setdefault(k, where)  # a variable may be stored more than once (a bundle's two names)
        return k, t, d

    def require_all(self, probes: dict, fmt: str) -> None:
        missing = sorted(set(probes) - set(self.found))
        if missing:
            raise NoTemplate(f"{len(missing)} variables are not stored as an exact transform of their values in "
                             f"the {fmt} output (first: {missing[:3]}): the exporter changes them (folds or fuses)")


def _find_blobs(files: dict, blobs: list) -> list:
    places = []
    for i, blob in enumerate(blobs):
        n = 0
        for rel, data in files.items():
            if data is None or not blob:
                continue
            at = data.find(blob)
            while at >= 0:
                places.append((i, rel, at, len(blob)))
                n += 1
                at = data.find(blob, at + 1)
        if n == 0:
            raise NoTemplate(f"metadata blob {i} is not in the exporter's output")
    return places


def _parse(fmt: str, path: str, probes: dict, fp16: bool, blobs: list) -> Template:
    finder = _Finder(fmt, probes, fp16)
    if fmt == "savedmodel":
        return _parse_savedmodel(path, finder, probes, blobs)
    with open(path, "rb") as f:
        data = f.read()
    files = {"": data}
    if fmt == "weights.h5":
        slots = _h5_slots(data, 0, finder, "")
        finder.require_all(probes, fmt)
        return Template(fmt, path, files, slots, blob_places=_find_blobs(files, blobs))
    if fmt == "keras":
        return _parse_keras(data, finder, probes, blobs)
    return _parse_tflite(data, finder, probes, fp16, blobs)


def _h5_slots(data, base: int, finder: _Finder, where: str) -> list:
    import h5py

    slots = []
    with h5py.File(io.BytesIO(bytes(data[base:])), "r") as h5:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset) or obj.size == 0:
                return
            off = obj.id.get_offset()
            if obj.chunks is not None or obj.compression is not None or off is None:
                raise NoTemplate(f"{where}{name}: not a contiguous, uncompressed dataset")
            nbytes = obj.size * obj.dtype.itemsize
            hit = finder.match(data[base + off:base + off + nbytes], where + name)
            if hit is not None:
                slots.append(_Slot("", base + off, nbytes, *hit))
        h5.visititems(visit)
    return slots


def _parse_keras(data: bytes, finder: _Finder, probes: dict, blobs: list) -> Template:
    z = zipfile.ZipFile(io.BytesIO(data))
    members, slots, date_at = [], [], None
    central = _central_headers(data, z)
    for info in z.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            raise NoTemplate(f".keras member {info.filename} is compressed")
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        start = info.header_offset + 30 + name_len + extra_len
        members.append(_Member(info.filename, start, info.file_size, info.header_offset, central[info.filename],
                               info.date_time != (1980, 1, 1, 0, 0, 0)))
        if info.filename.endswith(".h5"):
            slots += _h5_slots(data[:start + info.file_size], start, finder, info.filename + ":")
        if info.filename == "metadata.json":
            body = data[start:start + info.file_size]
            key = b'"date_saved": "'
            at = body.find(key)
            if at >= 0 and len(body) >= at + len(key) + 19 and body[at + len(key) + 19:at + len(key) + 20] == b'"':
                date_at = start + at + len(key)
    finder.require_all(probes, "keras")
    return Template("keras", "", {"": data}, slots, members=members, date_at=date_at,
                    blob_places=_find_blobs({"": data}, blobs))


def _central_headers(data: bytes, z: zipfile.ZipFile) -> dict:
    out, pos = {}, z.start_dir
    for _ in z.infolist():
        if data[pos:pos + 4] != b"PK\x01\x02":
            raise NoTemplate(".keras: unexpected central directory layout")
        n, e, c = struct.unpack_from("<HHH", data, pos + 28)
        out[data[pos + 46:pos + 46 + n].decode("utf-8")] = pos
        pos += 46 + n + e + c
    return out


def _parse_tflite(data: bytes, finder: _Finder, probes: dict, fp16: bool, blobs: list) -> Template:
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError as e:  # pragma: no cover
        raise NoTemplate(f"TFLite schema not importable: {e}") from None
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
            slots.append(_Slot("", start, n, *hit))
    finder.require_all(probes, "tflite")
    return Template("tflite", "", {"": data}, slots, fp16=fp16, blob_places=_find_blobs({"": data}, blobs))


# -- SavedModel: the tensor bundle (LevelDB-style table in variables.index, raw tensors in the data shard) --


def _varint(b, pos: int):
    shift = result = 0
    while True:
        byte = b[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _block_entries(index: bytes, off: int, size: int):
    """(key, value start, value end) of each entry of the table block at [off, off + size)."""
    end = off + size
    nrestarts = struct.unpack_from("<I", index, end - 4)[0]
    limit = end - 4 - 4 * nrestarts
    pos, key = off, b""
    while pos < limit:
        shared, pos = _varint(index, pos)
        unshared, pos = _varint(index, pos)
        vlen, pos = _varint(index, pos)
        key = key[:shared] + index[pos:pos + unshared]
        pos += unshared
        yield key, pos, pos + vlen
        pos += vlen


def _entry_fields(index: bytes, start: int, end: int) -> dict:
    """BundleEntryProto's shard_id (3), offset (4), size (5) and the position of crc32c (6, fixed32)."""
    fields, pos = {}, start
    while pos < end:
        tag, pos = _varint(index, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[field], pos = _varint(index, pos)
        elif wire == 5:
            fields[field] = pos
            pos += 4
        elif wire == 1:
            pos += 8
        elif wire == 2:
            n, pos = _varint(index, pos)
            pos += n
        else:
            raise NoTemplate("variables.index: unknown protobuf wire type")
    return fields


def _parse_savedmodel(root: str, finder: _Finder, probes: dict, blobs: list) -> Template:
    files: dict = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for d in dirnames:
            files[os.path.normpath(os.path.join(rel_dir, d))] = None
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            with open(os.path.join(dirpath, name), "rb") as f:
                files[rel] = f.read()
    if set(k for k in files if k.startswith("variables/") and files[k] is not None) != {_BUNDLE_DATA, _BUNDLE_INDEX}:
        raise NoTemplate("the SavedModel's variables are not one data shard and one index")
    index, shard = files[_BUNDLE_INDEX], files[_BUNDLE_DATA]
    if len(index) < 48 or struct.unpack_from("<Q", index, len(index) - 8)[0] != _TABLE_MAGIC:
        raise NoTemplate("variables.index: not a table file")
    pos = len(index) - 48
    _, pos = _varint(index, pos)
    _, pos = _varint(index, pos)  # metaindex handle
    ioff, pos = _varint(index, pos)
    isize, pos = _varint(index, pos)
    slots, blocks = [], []
    for _key, vs, ve in _block_entries(index, ioff, isize):
        boff, p = _varint(index, vs)
        bsize, _ = _varint(index, p)
        if index[boff + bsize] != 0:
            raise NoTemplate("variables.index: a compressed block")
        touched = False
        for key, s, e in _block_entries(index, boff, bsize):
            if not key:
                continue  # the bundle header
            f = _entry_fields(index, s, e)
            if f.get(3, 0) != 0 or 6 not in f:
                continue
            off, size = f.get(4, 0), f.get(5, 0)
            hit = finder.match(shard[off:off + size], key.decode("utf-8", "replace"))
            if hit is None:
                continue
            if any(s.offset == off for s in slots):
                raise NoTemplate(f"variables.index: two entries share the data at {off}")
            if struct.unpack_from("<I", index, f[6])[0] != _mask(_crc32c(shard[off:off + size])):
                raise NoTemplate(f"variables.index: {key!r}: unexpected checksum layout")
            slots.append(_Slot(_BUNDLE_DATA, off, size, *hit, crc_at=f[6]))
            touched = True
        if touched:
            blocks.append((boff, bsize))
    finder.require_all(probes, "savedmodel")
    places = _find_blobs({k: v for k, v in files.items() if k != "fingerprint.pb"}, blobs)
    if any(f.startswith("variables/") for _, f, _, _ in places):
        raise NoTemplate("a metadata blob inside the variables is not supported")
    return Template("savedmodel", root, files, slots, blocks=blocks, blob_places=places)
