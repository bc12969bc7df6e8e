"""SavedModel (`<stem>_saved_model/`, TensorFlow): the serving signature's outputs are keyed by the model's output
names; the metadata is in `assets.extra/pyloader_metadata.json` (the SavedModel convention for files beside
the graph) and in the `metadata` signature (no inputs; returns `{"pyloader_metadata": <JSON string>}`).

Template: the variables are one tensor bundle (a LevelDB-style table in `variables/variables.index`, raw
tensors in one data shard); a written folder gets the CRC-32C of every changed bundle entry and of the table
blocks holding them redone, and its `fingerprint.pb` recomputed by TensorFlow. --verify: `tf.saved_model.load`,
the `serve` endpoint.
"""

from __future__ import annotations

import json
import os
import struct

from ..metadata import KEY, to_json
from .runtime import as_dict
from .template import Finder, NoTemplate, OnDisk, Slot, Template, crc32c, emit, find_blobs, in_thread
from .template import json_blobs as metadata_blobs

__all__ = ["NAME", "FRAMEWORKS", "output_name", "is_output", "write", "metadata_blobs", "parse_template", "run",
           "read_metadata", "export"]

NAME = "savedmodel"
FRAMEWORKS = ("keras", "tensorflow")  # imported once per worker before its first conversion
METADATA_FILE = os.path.join("assets.extra", KEY + ".json")
_BUNDLE_DATA = "variables/variables.data-00000-of-00001"
_BUNDLE_INDEX = "variables/variables.index"
_TABLE_MAGIC = 0xDB4775248B80FB57


def output_name(stem: str) -> str:
    return stem + "_saved_model"


def is_output(path: str, head: bytes) -> bool:
    """Whether `path` (its first 8 bytes `head`; b"" for a folder) is a folder of this format."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))


def write(model, path: str, meta: dict, job, letterbox: bool) -> None:
    """The model with a dynamic height and width where its graph allows (keras_blocks.model.dynamic_model)."""
    from ..keras_blocks.model import dynamic_model

    export(dynamic_model(model), path, meta)


def export(model, path: str, meta: dict) -> None:
    """A SavedModel whose serving signature's outputs are keyed by the model's output names, with a `metadata`
    signature and assets.extra/pyloader_metadata.json; its input's batch is dynamic (its height and width are
    the model's: TFLite converts this export)."""
    import keras
    import tensorflow as tf

    named = keras.Model(model.inputs, dict(zip(model.output_names, model.outputs)), name=model.name)
    archive = keras.export.ExportArchive()
    spec = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name) for t in model.inputs]
    archive.add_endpoint("serve", named.__call__, spec)
    text = tf.constant(to_json(meta))
    archive._tf_trackable.metadata = tf.function(lambda: {KEY: text}, input_signature=[])
    archive._tf_trackable.metadata.get_concrete_function()
    _write_archive(archive, path, {"metadata": archive._tf_trackable.metadata})
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, METADATA_FILE), "w", encoding="utf-8") as f:
        f.write(to_json(meta))


def _write_archive(archive, path, extra_signatures) -> None:
    """ExportArchive.write_out, plus signatures that are plain tf.functions (the metadata), storing each variable
    once: `track` would list the Keras variables, which are trackables of their own beside the tf.Variables the
    endpoints capture (`_all_variables`), so the bundle would hold every weight twice. The `variables`,
    `trainable_variables` and `non_trainable_variables` lists of the loaded object name the captured ones."""
    import tensorflow as tf

    archive._filter_and_track_resources()
    t = archive._tf_trackable
    t.variables = list(t._all_variables)
    t.trainable_variables = [v for v in t.variables if v.trainable]
    t.non_trainable_variables = [v for v in t.variables if not v.trainable]
    signatures = {name: archive._get_concrete_fn(name) for name in archive._endpoint_names}
    signatures["serving_default"] = signatures["serve"]
    signatures.update(extra_signatures)
    tf.saved_model.save(archive._tf_trackable, path, signatures=signatures)


def read_metadata(path: str) -> dict | None:
    p = os.path.join(path, METADATA_FILE)
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def run(path: str, image, names: list, job) -> dict:
    """The `serve` endpoint of `tf.saved_model.load`."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    out = loaded.serve(tf.constant(image))
    return as_dict({k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else
                   [v.numpy() for v in (out if isinstance(out, (list, tuple)) else [out])], names)


# ---------------------------------------------------------------------------------------------------------
# Template: the tensor bundle (LevelDB-style table in variables.index, raw tensors in the data shard)


class SavedModelTemplate(Template):
    def __init__(self, files: dict, slots: list, blocks: list, blob_places):
        super().__init__(files, slots, blob_places)
        self.blocks = blocks  # (offset, size) of the table blocks holding patched CRCs

    def _emit(self, out: str, patches: dict, now) -> None:
        """The folder: the data shard first, its entries' CRC-32C computed meanwhile in a helper thread, then
        the index with them and the table blocks' checksums redone, the other files and the fingerprint."""
        at = {off: b for off, b in patches.get(_BUNDLE_DATA, [])}
        crcs = in_thread(lambda: [_mask(crc32c(at[s.offset])) for s in self.slots])
        os.mkdir(out)
        order = [_BUNDLE_DATA] + [rel for rel in self.files if rel not in (_BUNDLE_DATA, "fingerprint.pb")]
        for rel in order:
            path = os.path.join(out, rel)
            data = self.files[rel]
            if data is None:
                os.makedirs(path, exist_ok=True)
                continue
            if rel == _BUNDLE_INDEX:
                data = bytearray(data)
                for s, crc in zip(self.slots, crcs.value()):
                    data[s.crc_at:s.crc_at + 4] = struct.pack("<I", crc)
                for off, size in self.blocks:  # block contents + type byte, masked CRC-32C after them
                    data[off + size + 1:off + size + 5] = struct.pack("<I", _mask(crc32c(data[off:off + size + 1])))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            emit(path, data, patches.get(rel, []))
        if "fingerprint.pb" in self.files:
            from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

            with open(os.path.join(out, "fingerprint.pb"), "wb") as fh:
                fh.write(fingerprinting.CreateFingerprintDef(out))

    def _compared(self, expected: str, got: str) -> list:
        """The variables (the rest is the exporter's, byte for byte)."""
        return [(os.path.join(expected, f), os.path.join(got, f)) for f in (_BUNDLE_DATA, _BUNDLE_INDEX)]


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


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


def _read_folder(root: str) -> dict:
    """{relative path: bytes} of every file below `root` (the variables' data shard: OnDisk, read where
    sliced), and {relative path: None} of every folder."""
    files: dict = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for d in dirnames:
            files[os.path.normpath(os.path.join(rel_dir, d))] = None
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel == _BUNDLE_DATA:
                files[rel] = OnDisk(os.path.join(dirpath, name))
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                files[rel] = f.read()
    return files


def parse_template(root: str, probes, fp16: bool, blobs: list) -> Template:
    files = _read_folder(root)
    try:
        tpl = _parse(files, Finder(probes))
    finally:
        for data in files.values():
            if isinstance(data, OnDisk):
                data.close()
    places = find_blobs({k: v for k, v in tpl.files.items() if k != "fingerprint.pb"}, blobs)
    if any(f.startswith("variables/") for _, f, _, _ in places):
        raise NoTemplate("a metadata blob inside the variables is not supported")
    tpl.blob_places = places
    return tpl


def _parse(files: dict, finder: Finder) -> Template:
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
            region = shard[off:off + size]
            hit = finder.match(region, key.decode("utf-8", "replace"))
            if hit is None:
                continue
            if any(s.offset == off for s in slots):
                raise NoTemplate(f"variables.index: two entries share the data at {off}")
            if struct.unpack_from("<I", index, f[6])[0] != _mask(crc32c(region)):
                raise NoTemplate(f"variables.index: {key!r}: unexpected checksum layout")
            slots.append(Slot(_BUNDLE_DATA, off, size, *hit, crc_at=f[6]))
            touched = True
        if touched:
            blocks.append((boff, bsize))
    finder.require_all(finder.probes, NAME)
    return SavedModelTemplate(files, slots, blocks, ())
