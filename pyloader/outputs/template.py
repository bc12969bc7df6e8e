"""Template outputs: run a format's exporter once per architecture, then write each further checkpoint's file by
putting its weights into the template's bytes.

How a template is learned (`learn`): the built model gets distinct random *probe* values in every variable, the
real exporter writes its file, and every place that holds a weight is found by content (each format's
`parse_template`: HDF5 datasets for `.keras` and `.weights.h5`, tensor-bundle entries for SavedModel's
`variables/`, flatbuffer buffers for TFLite). Each must equal one variable's probe under an exact, known
transform (identity or a reshape of it; HWIO -> OHWI, TFLite's kernel layout; a cast to float16 for
`tflite_fp16`), and every variable must be found exactly once; otherwise there is no template (the reason says
which variable) and the caller keeps the exporter. Finally the template writes the probe checkpoint itself and
must reproduce the exporter's bytes, else there is no template either.

How a file is written (`Template.write`): the template's bytes with each weight region replaced by the
checkpoint's array (transformed), and each format's checksums and stamps redone by its Template subclass: the
zip CRC-32 of the changed `.keras` members and its save date (`metadata.json` `date_saved`, the member's zip
time), the CRC-32C of every changed bundle entry and the table blocks holding them in `variables.index`,
SavedModel's `fingerprint.pb` (recomputed by TensorFlow). TFLite also checks each checkpoint for values a
converter treats specially (an all-zero array; two equal arrays it may share one buffer for): those checkpoints
raise `NoTemplate`, and the caller exports them.

Per-checkpoint metadata hook (`blobs`): the bytes that differ per checkpoint are the weights plus any metadata
blob the format stores (class names, source name and hash, ...; each format's `metadata_blobs`). Export the
template with *probe* blobs in the model and pass them to `learn(..., blobs=[...])`; every occurrence is
recorded, and `write(..., blobs=[...])` puts in the checkpoint's blobs, which must have the same lengths (pad
them; `NoTemplate` otherwise) and are covered by the same checksum fix-ups as the weights.

Only numpy, zlib and pyloader's core at write time, plus TensorFlow for a SavedModel's fingerprint; `learn`
needs the exporter's framework and h5py.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import shutil

import numpy as np

from ..metadata import to_json

__all__ = ["NoTemplate", "Template", "Slot", "Finder", "Later", "Made", "OnDisk", "hwio_to_ohwi", "learn", "probe_values", "find_blobs",
           "json_blobs", "emit", "in_thread", "crc32c"]


class NoTemplate(Exception):
    """No template for this architecture/format (or this checkpoint): use the exporter. str() says why."""


def crc32c(data, crc: int = 0) -> int:
    from .. import _core

    return _core.crc32c(data, crc)


def json_blobs(meta: dict) -> list:
    """The metadata's bytes as a format that stores the `to_json` text stores them (pyloader.metadata)."""
    return [to_json(meta).encode()]


# ---------------------------------------------------------------------------------------------------------
# Probes and transforms


def probe_values(shapes: dict, seed: int = 12345):
    """(path, float32 array) pairs, one at a time, uniform in [0.5, 1.5): distinct in every element of every
    variable (no zeros, no ones, no repeated arrays, positive variances), so each one's bytes can be found in an
    exporter's output."""
    rng = np.random.default_rng(seed)
    for k, s in sorted(shapes.items()):
        yield k, rng.uniform(0.5, 1.5, size=tuple(s)).astype(np.float32)


class _Held(collections.abc.Mapping):
    """The probes as the model's variables hold them, read back one at a time: learning keeps no copy of them
    all beside the model (a template write of them, the check, holds them while it writes)."""

    def __init__(self, variables: dict):
        self._variables = variables

    def __getitem__(self, key):
        import keras

        return keras.ops.convert_to_numpy(self._variables[key])

    def __iter__(self):
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)


def hwio_to_ohwi(kernel: np.ndarray) -> np.ndarray:
    """A Keras HWIO kernel in TFLite's OHWI layout: the (H*W*I, O) matrix transposed by the core (cache-blocked,
    threaded; the output from its pool of freed arenas)."""
    from .. import _core

    h, w, i, o = kernel.shape
    return _core.oihw_to_hwio(np.ascontiguousarray(kernel).reshape(h * w * i, o, 1, 1)).reshape(o, h, w, i)


def _transformed(a: np.ndarray, transform: str, dtype: str) -> np.ndarray:
    if transform == "ohwi":  # Keras HWIO -> TFLite OHWI
        a = hwio_to_ohwi(a)
    elif transform != "identity":
        raise ValueError(transform)
    a = np.ascontiguousarray(a)
    if a.dtype != np.dtype(dtype):
        a = a.astype(dtype)
    return a


def _let_go(b: np.ndarray, a: np.ndarray) -> None:
    """Give the memory pages of `b`, a transformed copy of `a` no longer needed, back to the system (not to the
    reader's pool of warm memory, where a template's learning would leave the size of the model)."""
    from .. import _core

    if b.flags.writeable and not np.may_share_memory(a, b):
        _core.discard_memory(b)


def _as_stored(a: np.ndarray):
    """The (transform, dtype) pairs a format that stores variables as they are may hold `a` under."""
    return [("identity", "float32")]


# ---------------------------------------------------------------------------------------------------------
# The template


@dataclasses.dataclass
class Slot:
    file: str  # relative path inside the output ('' for a single file)
    offset: int
    nbytes: int
    key: str  # variable path
    transform: str
    dtype: str
    crc_at: int = -1  # savedmodel: offset of the entry's masked CRC-32C in variables.index


class Template:
    """An exporter's output (one file) for one architecture and the places of its weights; `write` makes another.
    A format whose files need more (checksums, stamps, a folder, checks of the values) subclasses it."""

    made_patches = False  # transformed weights handed to _emit as Made patches (emit writes them one at a time)

    def __init__(self, files: dict, slots: list, blob_places=()):
        self.slots = sorted(slots, key=lambda s: (s.file, s.offset))
        holes: dict = {}
        for s in self.slots:
            holes.setdefault(s.file, []).append((s.offset, s.nbytes))
        # relpath -> bytes, or Hollow where weights are ('' = the file itself); for folders also '<dir>/' -> None
        self.files = {rel: Hollow(data, holes.get(rel, [])) if rel in holes or isinstance(data, OnDisk) else data
                      for rel, data in files.items()}
        self.blob_places = list(blob_places)  # (blob index, file, offset, length)
        self.keys = sorted({s.key for s in self.slots})
        self.input_size = None  # the caller's note of the model's input size (pyloader.bulk.worker)

    def check(self, arrays) -> None:
        """NoTemplate if `arrays` cannot be written from this template (names, shapes, values)."""
        for s in self.slots:
            a = arrays.get(s.key)
            if a is None:
                raise NoTemplate(f"the checkpoint has no array {s.key}")
            if a.size * np.dtype(s.dtype).itemsize != s.nbytes:
                raise NoTemplate(f"{s.key}: {a.size} values, the template holds {s.nbytes} bytes")

    def write(self, arrays: dict, out: str, blobs=(), now: float | None = None) -> None:
        """Write the output for `arrays` ({variable path: array in Keras layout}) to `out` (a file, or a folder
        for SavedModel, which must not exist). `blobs`: per-checkpoint metadata, as documented above, or a
        callable returning them: it is called once the weights are being written (so that what the metadata
        waits for, the source's SHA-256, overlaps the writing), and the blobs are put in place last."""
        self.check(arrays)
        given = Later(lambda: [bytes(b) for b in (blobs() if callable(blobs) else blobs)], 0)
        count = len({i for i, *_ in self.blob_places})

        def blob(i, length: int):
            got = given.value()
            if len(got) != count:
                raise NoTemplate(f"{len(got)} metadata blobs given, the template holds {count}")
            if i is None:
                return b""
            if len(got[i]) != length:
                raise NoTemplate(f"metadata blob {i} is {len(got[i])} bytes, the template holds {length}")
            return got[i]

        patches: dict = {}  # file -> [(offset, buffer, Later or Made)]
        for s in self.slots:
            a = np.asarray(arrays[s.key])
            if self.made_patches and (s.transform != "identity" or a.dtype != np.dtype(s.dtype)):
                # a transformed copy, made when its place is written: one at a time in memory, not all of them
                # (the array is looked up again then: learning's probes are read back from the model on demand)
                del a
                patch = Made(lambda s=s: _transformed(np.asarray(arrays[s.key]), s.transform, s.dtype), s.nbytes)
            else:
                patch = memoryview(_transformed(a, s.transform, s.dtype)).cast("B")
            patches.setdefault(s.file, []).append((s.offset, patch))
        for i, f, off, length in self.blob_places:
            patches.setdefault(f, []).append((off, Later(lambda i=i, n=length: blob(i, n), length)))
        if not self.blob_places:
            blob(None, 0)
        self._emit(out, patches, now)

    def _emit(self, out: str, patches: dict, now) -> None:
        """Write the patched template to `out`; subclasses redo their checksums and stamps first."""
        emit(out, self.files[""], patches.get("", []))

    def reproduces(self, expected: str, got: str) -> None:
        """NoTemplate unless the template's own output `got` for the probes is the exporter's `expected`
        (compared piece by piece: no whole copy of either in memory)."""
        import itertools

        for a, b in self._compared(expected, got):
            if any(x != y for x, y in itertools.zip_longest(self._comparable(a), self._comparable(b))):
                raise NoTemplate(f"the template does not reproduce the exporter's {os.path.basename(a)}")

    def _compared(self, expected: str, got: str) -> list:
        """The (expected, got) file pairs `reproduces` compares."""
        return [(expected, got)]

    @staticmethod
    def _comparable(path: str):
        """What of a file's bytes must be equal, in pieces (all of them, but for a format's stamps)."""
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(CHUNK), b"")


CHUNK = 1 << 22


class Later:
    """A patch whose bytes are known only later (metadata that waits for the source's hash; a checksum computed
    in a thread while the file is written): `nbytes` long, `fn()` gives them, once."""

    def __init__(self, fn, nbytes: int):
        self.fn, self.nbytes, self._value = fn, nbytes, None

    def __len__(self) -> int:
        return self.nbytes

    def value(self):
        if self._value is None:
            self._value = self.fn()
            if self.nbytes and len(self._value) != self.nbytes:
                raise ValueError(f"a late patch of {len(self._value)} bytes for {self.nbytes}")
        return self._value


class Made:
    """A patch made when `emit` writes it and let go after: `fn()` gives an array of `nbytes` bytes (its memory,
    from the core's pool of freed arenas, is the next one's: one transformed weight in memory at a time)."""

    def __init__(self, fn, nbytes: int):
        self.fn, self.nbytes = fn, nbytes

    def __len__(self) -> int:
        return self.nbytes

    def write_to(self, f) -> None:
        a = self.fn()
        if a.nbytes != self.nbytes:
            raise ValueError(f"a made patch of {a.nbytes} bytes for {self.nbytes}")
        f.write(memoryview(a).cast("B"))


def in_thread(fn, *args) -> Later:
    """`fn(*args)` run in a helper thread now (numpy, zlib and pyloader's core release the GIL on large
    buffers); its result a Later."""
    import concurrent.futures

    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="pyloader-template")
    fut = _POOL.submit(fn, *args)
    return Later(fut.result, 0)


_POOL = None


class Hollow:
    """A file's bytes without its weight regions (each write replaces them whole): what a template keeps, so
    that it holds little more than the file's structure. Sliced like bytes, never across a region left out."""

    def __init__(self, data, holes):
        import bisect

        self._bisect = bisect.bisect_right
        self.size, self.starts, self.parts, pos = len(data), [], [], 0
        for off, n in sorted(holes) + [(len(data), 0)]:
            if off > pos:
                self.starts.append(pos)
                self.parts.append(bytes(data[pos:off]))
            pos = max(pos, off + n)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, sl: slice):
        a, b = sl.start or 0, self.size if sl.stop is None else sl.stop
        if a >= b:
            return b""
        i = self._bisect(self.starts, a) - 1
        start = self.starts[i] if i >= 0 else 0
        if i < 0 or b > start + len(self.parts[i]):
            raise ValueError(f"bytes {a}:{b} of a template are a weight's place (not kept)")
        return memoryview(self.parts[i])[a - start:b - start]

    def find(self, sub: bytes, start: int = 0) -> int:
        """The first offset >= start of `sub` inside the kept bytes (never across a weight's place), or -1."""
        for s, part in zip(self.starts, self.parts):
            if s + len(part) > start:
                at = part.find(sub, max(0, start - s))
                if at >= 0:
                    return s + at
        return -1


class OnDisk:
    """A file's bytes read where sliced (pread): what learning reads an exporter's output through, so that no
    whole copy of it is held (each slice is a copy of that range; a Template keeps the bytes between weights)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.fstat(self.fd).st_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, sl: slice) -> bytes:
        a, b, _ = sl.indices(self.size)
        out = bytearray()
        while len(out) < b - a:
            got = os.pread(self.fd, b - a - len(out), a + len(out))
            if not got:
                raise NoTemplate(f"{self.path}: shorter than when opened")
            out += got
        return bytes(out)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def view(template):
    """`template` (bytes or Hollow) sliceable without copies."""
    return template if isinstance(template, Hollow) else memoryview(template)


def emit(path: str, template, patches) -> None:
    """Write `template` with `patches` [(offset, bytes-like, Made or Later)] laid over it (no overlaps): a Made
    is made when its place is written, the Laters' places first get the template's bytes, and their own bytes
    once everything else is written."""
    mv = view(template)
    pos = 0
    late = []
    with open(path, "wb") as f:
        for off, buf in sorted(patches, key=lambda p: p[0]):
            if off < pos:
                raise ValueError("overlapping template patches")
            f.write(mv[pos:off])
            pos = off
            if isinstance(buf, Later):  # the template's bytes for now
                late.append((off, buf))
                continue
            if isinstance(buf, Made):
                buf.write_to(f)
                pos = off + len(buf)
                continue
            f.write(buf)
            pos = off + len(buf)
        f.write(mv[pos:])
        for off, buf in late:
            f.seek(off)
            f.write(buf.value())


# ---------------------------------------------------------------------------------------------------------
# Learning


def learn(fmt, model, export, *, fp16: bool = False, blobs=(), workdir: str) -> Template:
    """The template for `model` in the output format `fmt` (a pyloader.outputs module), or NoTemplate (with the
    reason). `export(model, path)` runs the real exporter into `path`; `workdir` holds its output while
    learning (removed after). The model's variables are left holding probe values."""
    variables = {v.path: v for v in model.weights}
    if len(variables) != len(model.weights):
        raise NoTemplate("the model has two variables of one path")
    for k, a in probe_values({k: tuple(v.shape) for k, v in variables.items()}):
        variables[k].assign(a)
    probes = _Held(variables)
    path = os.path.join(workdir, fmt.output_name("template"))
    check = os.path.join(workdir, fmt.output_name("check"))
    try:
        export(model, path)
        tpl = fmt.parse_template(path, probes, fp16, [bytes(b) for b in blobs])
        tpl.write(probes, check, blobs, now=None)
        tpl.reproduces(path, check)
        return tpl
    finally:
        for p in (path, check):
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.exists(p):
                os.unlink(p)


class Finder:
    """Find each region's variable by content: {(nbytes, crc32c): [(key, transform, dtype)]}, the bytes of a
    candidate made again (from `probes`, a mapping) to compare it whole; `candidates(array)`: the (transform,
    dtype) pairs the format may store an array under."""

    def __init__(self, probes, candidates=_as_stored):
        self.probes, self.table = probes, {}
        for k, a in probes.items():
            for t, d in candidates(a):
                b = _transformed(a, t, d)
                self.table.setdefault((b.nbytes, crc32c(b)), []).append((k, t, d))
                _let_go(b, a)
        self.found: dict = {}

    def match(self, region, where: str):
        """(key, transform, dtype) whose bytes equal `region`, or None."""
        region = memoryview(region).cast("B")
        mine = np.frombuffer(region, np.uint8)
        hits = [(k, t, d) for k, t, d in self.table.get((region.nbytes, crc32c(region)), [])
                if self._equal(k, t, d, mine)]
        keys = {h[0] for h in hits}
        if len(keys) > 1:
            raise NoTemplate(f"{where} matches several variables ({sorted(keys)[:3]})")
        if not hits:
            return None
        k, t, d = hits[0]
        self.found.setdefault(k, where)  # a variable may be stored more than once (a bundle's two names)
        return k, t, d

    def _equal(self, k: str, t: str, d: str, mine: np.ndarray) -> bool:
        a = self.probes[k]
        b = _transformed(a, t, d)
        try:
            return np.array_equal(b.reshape(-1).view(np.uint8), mine)
        finally:
            _let_go(b, a)

    def require_all(self, probes: dict, fmt: str) -> None:
        missing = sorted(set(probes) - set(self.found))
        if missing:
            raise NoTemplate(f"{len(missing)} variables are not stored as an exact transform of their values in "
                             f"the {fmt} output (first: {missing[:3]}): the exporter changes them (folds or fuses)")


def find_blobs(files: dict, blobs: list) -> list:
    """(blob index, file, offset, length) of every occurrence of each metadata blob in `files` ({name: bytes or
    Hollow}); NoTemplate for one not found."""
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
