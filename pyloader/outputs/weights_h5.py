"""`.weights.h5`: the model's weights (Keras `save_weights`), the metadata in the HDF5 root attribute
`pyloader_metadata` (the JSON text of pyloader.metadata.to_json).

Template: every weight is a contiguous, uncompressed HDF5 dataset. --verify: a fresh process builds the model
from the source checkpoint with pyloader and loads the file's weights into it.
"""

from __future__ import annotations

import errno
import io
import json
import os

from ..boundary import free_bytes
from ..metadata import KEY, parse, to_json
from .runtime import run_fresh
from .template import Finder, NoTemplate, OnDisk, Slot, Template, find_blobs
from .template import json_blobs as metadata_blobs

__all__ = ["NAME", "FRAMEWORKS", "output_name", "is_output", "write", "metadata_blobs", "parse_template", "run",
           "read_metadata", "h5_slots"]

NAME = "weights.h5"
FRAMEWORKS = ("keras",)  # imported once per worker before its first conversion
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def output_name(stem: str) -> str:
    return stem + ".weights.h5"


def is_output(path: str, head: bytes) -> bool:
    """Whether `path` (its first 8 bytes `head`; b"" for a folder) is a file of this format."""
    return head.startswith(HDF5_MAGIC)


def write(model, path: str, meta: dict, job, letterbox: bool) -> None:
    import h5py

    _check_room(model, path)
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        f.attrs[KEY] = to_json(meta)


def _check_room(model, path: str) -> None:
    """Raise ENOSPC before writing when the weights cannot fit on `path`'s device: h5py takes the process down
    (SIGSEGV) when the device fills inside `save_weights`, so a full disk must be found before it writes. (Another
    writer filling the device meanwhile can still do that; the bulk run removes what such a process leaves.)"""
    import numpy as np

    need = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize + 4096 for v in model.weights) + (64 << 10)
    free = free_bytes(os.path.dirname(os.path.abspath(path)))
    if free < need:
        raise OSError(errno.ENOSPC, f"{path}: {os.strerror(errno.ENOSPC)} (needs ~{need} bytes, {free} free)")


def read_metadata(path: str) -> dict | None:
    import h5py

    with h5py.File(path, "r") as f:
        v = f.attrs.get(KEY)
    return None if v is None else parse(v)


def parse_template(path: str, probes, fp16: bool, blobs: list) -> Template:
    with OnDisk(path) as data:
        finder = Finder(probes)
        slots = h5_slots(data, 0, len(data), finder, "")
        finder.require_all(probes, NAME)
        tpl = Template({"": data}, slots)
    tpl.blob_places = find_blobs(tpl.files, blobs)
    return tpl


class _Part(io.RawIOBase):
    """Bytes [base, base + size) of an OnDisk file as a read-only file object (h5py reads through it)."""

    def __init__(self, data: OnDisk, base: int, size: int):
        super().__init__()
        self.data, self.base, self.size, self.pos = data, base, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        got = self.data[self.base + self.pos:self.base + min(self.pos + len(b), self.size)]
        b[:len(got)] = got
        self.pos += len(got)
        return len(got)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = (offset, self.pos + offset, self.size + offset)[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos


def h5_slots(data: OnDisk, base: int, size: int, finder: Finder, where: str) -> list:
    """The Slots of the variables stored in the HDF5 file of `size` bytes at `base` in `data` (`where`: how to
    name it); each dataset's bytes are read on their own."""
    import h5py

    slots = []
    with h5py.File(_Part(data, base, size), "r") as h5:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset) or obj.size == 0:
                return
            off = obj.id.get_offset()
            if obj.chunks is not None or obj.compression is not None or off is None:
                raise NoTemplate(f"{where}{name}: not a contiguous, uncompressed dataset")
            nbytes = obj.size * obj.dtype.itemsize
            hit = finder.match(data[base + off:base + off + nbytes], where + name)
            if hit is not None:
                slots.append(Slot("", base + off, nbytes, *hit))
        h5.visititems(visit)
    return slots


_LOAD = """
    import json
    opts = json.loads(sys.argv[4])
    model = pyloader.load(opts["source"], opts["cfg"], fold_bn=opts["fold_bn"], decode=opts["decode"],
                          input_size=opts["input_size"], nms=opts["nms"])
    model.load_weights(path)
"""


def run(path: str, image, names: list, job) -> dict:
    """The file's weights in the model pyloader builds from job's source, run in a fresh process."""
    return run_fresh(path, image, _LOAD, json.dumps({"source": job.source, "cfg": job.cfg, "fold_bn": job.fold_bn,
                                                     "decode": job.decode, "input_size": job.input_size,
                                                     "nms": job.nms}))
