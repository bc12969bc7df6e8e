"""`.keras`: the whole model (Keras `save`), the metadata in `config.json` -> `config` -> `pyloader_metadata`
(the JSON text of pyloader.metadata.config_text, as a string). It is restored on `keras.saving.load_model`
wherever pyloader is imported (the registered `pyloader>DetectionModel`, pyloader.keras_blocks.model) and
ignored by plain Keras.

Template: the zip's members are stored (not compressed); the weights are HDF5 datasets of its `.h5` member; a
written file gets the CRC-32 of its changed members and the save date (`metadata.json` `date_saved` and the
stamped members' zip time) redone. --verify: a fresh process that imports pyloader and keras (nothing else)
calls `keras.saving.load_model`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
import time
import zipfile
import zlib

from ..metadata import KEY, config_text, parse
from .runtime import run_fresh
from .template import CHUNK, Finder, Later, NoTemplate, OnDisk, Template, find_blobs, in_thread, view
from .weights_h5 import h5_slots

__all__ = ["NAME", "FRAMEWORKS", "output_name", "is_output", "write", "metadata_blobs", "parse_template", "run",
           "read_metadata"]

NAME = "keras"
FRAMEWORKS = ("keras",)  # imported once per worker before its first conversion
ZIP_MAGIC = b"PK\x03\x04"


def output_name(stem: str) -> str:
    return stem + ".keras"


def is_output(path: str, head: bytes) -> bool:
    """Whether `path` (its first 8 bytes `head`; b"" for a folder) is a file of this format."""
    return head.startswith(ZIP_MAGIC) and path.endswith(".keras")


def write(model, path: str, meta: dict, job, letterbox: bool) -> None:
    """The model with a dynamic batch, and height and width where its graph allows (dynamic_model); the metadata
    goes into config.json (DetectionModel.get_config)."""
    from ..keras_blocks.model import dynamic_model

    dynamic_model(model).save(path)


def metadata_blobs(meta: dict) -> list:
    """The metadata's bytes as config.json holds them (the config_text string, quoted)."""
    return [json.dumps(config_text(meta)).encode()]


def read_metadata(path: str) -> dict | None:
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
    return parse((config.get("config") or {}).get(KEY))


def run(path: str, image, names: list, job) -> dict:
    """`keras.saving.load_model` in a fresh process."""
    return run_fresh(path, image, "model = keras.saving.load_model(path)\n")


# ---------------------------------------------------------------------------------------------------------
# Template


@dataclasses.dataclass
class _Member:  # a stored .keras zip member whose bytes may change
    name: str
    data_offset: int
    size: int
    local_header: int
    central_header: int
    stamped: bool  # its zip time is the save time


class KerasTemplate(Template):
    def __init__(self, data: bytes, slots: list, members: list, date_at, blob_places):
        super().__init__({"": data}, slots, blob_places)
        self.members = members
        self.date_at = date_at  # offset of date_saved's value inside metadata.json's member data

    def _emit(self, out: str, patches: dict, now) -> None:
        """The zip CRC-32 of every changed member (computed in a helper thread while the file is written; a
        member holding metadata once that is known), and the save date, redone."""
        mv = view(self.files[""])
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
            args = (mv, m.data_offset, m.data_offset + m.size, inside)
            crc = Later(lambda a=args: _crc32(*a), 0)
            if not any(isinstance(b, Later) for _, b in inside):
                crc = in_thread(_crc32, *args)
            packed = Later(lambda c=crc: struct.pack("<I", c.value()), 4)
            extra += [(m.local_header + 14, packed), (m.central_header + 16, packed)]
            if m.stamped:
                when = struct.pack("<HH", dos_time, dos_date)
                extra += [(m.local_header + 10, when), (m.central_header + 12, when)]
        super()._emit(out, {"": plist + extra}, now)

    @staticmethod
    def _comparable(path: str):
        """The members (read through zipfile, which checks each one's CRC-32), metadata.json without its save
        date."""
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                yield info.filename, info.compress_type
                with z.open(info) as f:
                    if info.filename == "metadata.json":
                        yield re.sub(rb'"date_saved": "[^"]*"', b"", f.read())
                    else:
                        yield from iter(lambda: f.read(CHUNK), b"")


def _crc32(mv, start: int, end: int, inside: list) -> int:
    """The CRC-32 of mv[start:end] with the patches `inside` laid over it."""
    crc, pos = 0, start
    for off, buf in inside:
        crc = zlib.crc32(mv[pos:off], crc)
        crc = zlib.crc32(buf.value() if isinstance(buf, Later) else buf, crc)
        pos = off + len(buf)
    return zlib.crc32(mv[pos:end], crc)


def parse_template(path: str, probes, fp16: bool, blobs: list) -> Template:
    with OnDisk(path) as data, zipfile.ZipFile(path) as z:
        finder = Finder(probes)
        members, slots, date_at = [], [], None
        central = _central_headers(data, z)
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise NoTemplate(f".keras member {info.filename} is compressed")
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            members.append(_Member(info.filename, start, info.file_size, info.header_offset,
                                   central[info.filename], info.date_time != (1980, 1, 1, 0, 0, 0)))
            if info.filename.endswith(".h5"):
                slots += h5_slots(data, start, info.file_size, finder, info.filename + ":")
            if info.filename == "metadata.json":
                body = data[start:start + info.file_size]
                key = b'"date_saved": "'
                at = body.find(key)
                if at >= 0 and len(body) >= at + len(key) + 19 and body[at + len(key) + 19:at + len(key) + 20] == b'"':
                    date_at = start + at + len(key)
        finder.require_all(probes, NAME)
        tpl = KerasTemplate(data, slots, members, date_at, ())
    tpl.blob_places = find_blobs(tpl.files, blobs)
    return tpl


def _central_headers(data: OnDisk, z: zipfile.ZipFile) -> dict:
    out, pos = {}, z.start_dir
    for _ in z.infolist():
        head = data[pos:pos + 46]
        if head[:4] != b"PK\x01\x02":
            raise NoTemplate(".keras: unexpected central directory layout")
        n, e, c = struct.unpack_from("<HHH", head, 28)
        out[data[pos + 46:pos + 46 + n].decode("utf-8")] = pos
        pos += 46 + n + e + c
    return out
