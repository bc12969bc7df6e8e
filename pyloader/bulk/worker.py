"""One job in a worker: the model of its checkpoint (built once per architecture and process, filled per
checkpoint, pyloader.assemble), written from a template output where exact, else by the format's exporter."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

from ..boundary import error_text, free_bytes
from ..errors import FormatError
from ..family import Family, Options
from ..outputs import NoTemplate, learn, output_format
from ..outputs.template import Later, in_thread
from .atomic import OutputAppeared, in_run, no_space, remove, run_open, tmp_path, write_atomically
from .jobs import Job, Result

_MODEL_CACHE_SIZE = 4  # built models kept per process (least recently used goes first)


def run_job(job: Job, run: str | None = None) -> Result:
    """Convert one checkpoint (in whichever process runs it); never raises for a bad checkpoint. `run`: the log of
    the conversion run the job belongs to (pyloader.bulk.atomic.Run): once that run is interrupted, the job does
    not start, and its output is not renamed into place."""
    with in_run(run):
        if not run_open():
            return Result(job.source, None, "failed", "not started: the run was interrupted", 0.0, job.bytes)
        return _run_job(job)


def _run_job(job: Job) -> Result:
    if os.path.lexists(job.output) and not job.overwrite:
        return Result(job.source, job.output, "skipped", "output exists (use overwrite)", 0.0, job.bytes)
    imported = 0.0
    prepared = None
    free = free_bytes(os.path.dirname(job.output) or ".")
    t0 = time.perf_counter()
    try:
        imported = import_framework(job.format)
        t0 = time.perf_counter()
        prepared = _prepare(job)
        note, diff = _write_from_template(prepared, job)
        if note is not None:
            diff = _write_with_exporter(prepared, job)
    except OutputAppeared:  # another run into the same folder wrote it meanwhile: as if run one after the other
        return Result(job.source, job.output, "skipped", "output written meanwhile by another run",
                      time.perf_counter() - t0, job.bytes, imported)
    except Exception as e:  # noqa: BLE001 - one bad checkpoint must not stop the run
        if no_space(e):
            return _no_space(job, prepared, free, time.perf_counter() - t0, imported)
        reason = str(e) if isinstance(e, FormatError) else error_text(e)
        if reason.startswith(job.source + ": "):  # the summary already names the source
            reason = reason[len(job.source) + 2:]
        return Result(job.source, None, "failed", reason.strip() or type(e).__name__,
                      time.perf_counter() - t0, job.bytes, imported)
    return Result(job.source, job.output, "converted", "", time.perf_counter() - t0, job.bytes, imported,
                  verify=diff, note=note or "")


def _no_space(job: Job, p, free_before: int, seconds: float, imported: float) -> Result:
    """The Result of a job whose output did not fit on its device (its temporary entries are gone already):
    `no_space` holds the bytes it needs (a template's size: exact; else the most of its weights' size and the
    space that was free when it started, which it filled when it ran alone), which the run uses to stop starting
    sources that cannot fit."""
    exact = None if p is None else template_bytes(p, job)
    needed = exact or max(free_before, job.bytes if p is None else weights_bytes(p, job))
    free = free_bytes(os.path.dirname(job.output) or ".")
    return Result(job.source, None, "failed", f"{job.output}: no space left on device (needs ~{needed} bytes, "
                  f"{free} free)", seconds, job.bytes, imported, no_space=needed)


def template_bytes(p: Prepared, job: Job):
    """The size of job's output when written from its architecture's template, or None (no template yet)."""
    with _CACHE_LOCK:
        tpl = _TEMPLATES.get(_template_key(p, job))
    return None if tpl is None or isinstance(tpl, str) else sum(len(b) for b in tpl.files.values() if b)


def weights_bytes(p: Prepared, job: Job) -> int:
    """The bytes of p's weights as job's format stores them: what its output takes at the least."""
    if p._arrays is None:  # not read yet: the source's size
        return job.bytes
    return sum(int(a.size) for a in p._arrays.values()) * (1 if job.int8 else 2 if job.tflite_fp16 else 4)


def import_framework(format: str) -> float:
    """Import Keras (and TensorFlow for SavedModel / TFLite) once per process; the seconds it took (0 when
    already imported). Kept out of each checkpoint's time."""
    wanted = output_format(format).FRAMEWORKS
    if all(m in sys.modules for m in wanted):
        return 0.0
    t0 = time.perf_counter()
    import importlib

    for m in wanted:
        importlib.import_module(m)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------
# Models, built once per architecture and process, filled per checkpoint


@dataclass
class Prepared:
    """A job's checkpoint opened: its family, plan, options, architecture key, the source's SHA-256 (a Later:
    hashed in a helper thread from the job's start, beside the read and the write) and the arrays its model
    takes (`arrays`: read when the job starts, but for the first checkpoint of an architecture written from a
    template, read once the template is learned: learning then holds no checkpoint beside the model)."""

    family: Family
    plan: object
    options: Options
    key: tuple
    digest: Later
    _arrays: dict | None = None

    @property
    def arrays(self) -> dict:
        if self._arrays is None:
            from ..assemble import model_arrays

            self._arrays = model_arrays(self.family, self.plan, self.options.fold_bn)
        return self._arrays

    def metadata(self, input_size) -> dict:
        from ..metadata import model_metadata

        meta = model_metadata(self.family, self.plan, input_size, self.options, self.plan.path, digest=False)
        return {**meta, "source": {**meta["source"], "sha256": self.digest.value()}}


def _prepare(job: Job) -> Prepared:
    from ..metadata import NOT_HASHED, file_sha256
    from ..registry import container_of, open_checkpoint

    digest = in_thread(file_sha256, job.source) if job.source_hash else Later(lambda: NOT_HASHED, 0)
    cfg = job.cfg
    if cfg is not None and not str(cfg).endswith((".yaml", ".yml")) and container_of(job.source) == "torch":
        cfg = None  # --cfg names the .cfg of the .weights sources; a .pt carries its architecture
    options = Options(job.fold_bn, job.decode, job.input_size, job.names, job.nms)
    family, plan = open_checkpoint(job.source, cfg, options)
    p = Prepared(family, plan, options, (family.name, family.architecture(plan), options.key()), digest)
    if not _learning(p, job):
        p.arrays  # noqa: B018 - validates before any model work
    return p


_CACHE: OrderedDict = OrderedDict()  # key -> [model or None, lock]
_CACHE_LOCK = threading.Lock()


@contextmanager
def _built(p: Prepared):
    """The cached model of p's architecture (built on first use holding p's arrays, without running Keras'
    initializers: keras_blocks.assign.build_filled), locked while one job fills and writes it."""
    from ..assemble import build_model
    from ..keras_blocks.assign import build_filled

    with _CACHE_LOCK:
        entry = _CACHE.get(p.key)
        if entry is None:
            entry = _CACHE[p.key] = [None, threading.Lock()]
        _CACHE.move_to_end(p.key)
        while len(_CACHE) > _MODEL_CACHE_SIZE:
            _CACHE.popitem(last=False)
    with entry[1]:
        if entry[0] is None:
            entry[0] = build_filled(lambda: build_model(p.family, p.plan, p.options), p.arrays, p.plan.path)
        yield entry[0]


def _drop_arrays(p: Prepared) -> None:
    """Let go of p's arrays (read again on next use) and of the memory the reader keeps for its next read."""
    from .. import _core

    p._arrays = None
    _core.arena_pool_clear()


@contextmanager
def _filled(p: Prepared):
    """The model of p's architecture holding p's weights and metadata."""
    from ..assemble import fill_model

    with _built(p) as model:
        yield fill_model(model, p.family, p.plan, p.options, p.arrays)


def write_output(model, tmp: str, job: Job, letterbox: bool) -> None:
    """Write `model` in job's format to `tmp` (pyloader.outputs), its metadata completed with the source's
    SHA-256; `letterbox`: how the family prepares calibration images."""
    from ..metadata import complete

    meta = complete(getattr(model, "metadata", None) or {}, getattr(model, "_pyloader_source_path", None))
    output_format(job.format).write(model, tmp, meta, job, letterbox)


def _write_with_exporter(p: Prepared, job: Job):
    """The format's exporter on the filled model; returns the verify difference (None without verify)."""
    from ..verify import verify_written

    def produce(tmp):
        with _filled(p) as model:
            write_output(model, tmp, job, p.family.letterbox)
            return verify_written(model, tmp, job, p.family.letterbox) if job.verify else None

    return write_atomically(job.output, job.overwrite, produce)


# ---------------------------------------------------------------------------------------------------------
# Template outputs (pyloader.outputs.template): the exporter runs once per architecture and format, on probe weights;
# each checkpoint's file is then the template's bytes with its weights (and metadata blobs) put in.


_TEMPLATES: OrderedDict = OrderedDict()  # (architecture key, format, fp16) -> Template or the reason for none


def _metadata_blobs(job: Job, meta: dict) -> list:
    """The per-output metadata (class names, source name, size and SHA-256, ...) exactly as job's format stores
    it: the byte strings that differ per checkpoint besides the weights. pyloader.metadata pads them to a
    fixed length bucket, so checkpoints of one architecture give equally long blobs (one that does not is
    written by the exporter: Template.write raises NoTemplate)."""
    from ..metadata import complete

    return output_format(job.format).metadata_blobs(complete(meta, job.source))


def _template_key(p: Prepared, job: Job) -> tuple:
    return p.key, job.format, (job.tflite_fp16, job.tflite_writer) if job.format == "tflite" else False


def _learning(p: Prepared, job: Job) -> bool:
    """Whether job's output is to be written from a template that is not learned yet."""
    if not job.template or job.int8:
        return False
    with _CACHE_LOCK:
        return _template_key(p, job) not in _TEMPLATES


def _template_for(p: Prepared, job: Job):
    """The template of p's architecture in job's format (learned on first use), or the reason there is none."""
    from .. import _core
    from ..assemble import input_size_of
    from ..keras_blocks.model import attach_metadata

    tkey = _template_key(p, job)
    with _CACHE_LOCK:
        tpl = _TEMPLATES.get(tkey)
    if tpl is not None:
        return tpl
    work = tmp_path(os.path.join(os.path.dirname(job.output), "template"))
    os.makedirs(work)
    try:
        with _built(p) as model:
            _drop_arrays(p)  # learning holds the model alone; the checkpoint is read again to be written
            size = input_size_of(model)
            meta = p.metadata(size)  # the template export carries this checkpoint's metadata: its blobs
            attach_metadata(model, meta)
            tpl = learn(job.format, model, lambda m, path: write_output(m, path, job, p.family.letterbox),
                        fp16=job.tflite_fp16, blobs=_metadata_blobs(job, meta), workdir=work)
            tpl.input_size = size
    except NoTemplate as e:
        tpl = f"no template: {e}"
    finally:
        remove(work)
        _core.arena_pool_clear()  # what the exporter and the check freed: not memory the next read reuses
    with _CACHE_LOCK:
        _TEMPLATES[tkey] = tpl
        while len(_TEMPLATES) > _MODEL_CACHE_SIZE:
            _TEMPLATES.popitem(last=False)
    return tpl


def _write_from_template(p: Prepared, job: Job) -> tuple:
    """Write job's output from its architecture's template: (None, verify difference) when done, else (why the
    exporter must run, None)."""
    from ..verify import verify_written

    if not job.template or job.int8:
        return ("exporter (templates off)" if not job.template else f"exporter ({job.format})"), None
    tpl = _template_for(p, job)
    if isinstance(tpl, str):
        return "exporter, " + tpl, None

    def produce(tmp):
        tpl.write(p.arrays, tmp, lambda: _metadata_blobs(job, p.metadata(tpl.input_size)))
        if job.verify:
            with _filled(p) as model:
                return verify_written(model, tmp, job, p.family.letterbox)
        return None

    try:
        tpl.check(p.arrays)
        return None, write_atomically(job.output, job.overwrite, produce)
    except NoTemplate as e:
        return f"exporter, this checkpoint: {e}", None
