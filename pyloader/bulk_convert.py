"""Bulk conversion of checkpoints into deployable files (`pyloader.convert`, `pyloader convert`).

* Sources: files, folders (their .weights / .pt / .pth files, not recursive) or glob patterns. A .weights file
  takes `cfg` or the .cfg of the same stem beside it; a .pt file carries its architecture.
* Outputs, named after the source's stem in `out_dir`: `<stem>.keras` (default), `<stem>.weights.h5`,
  `<stem>_saved_model/` (a TF SavedModel folder, `model.export`) or `<stem>.tflite` (float32, or float16
  weights with tflite_fp16=True).
* Atomic outputs: everything is written under a temporary name in out_dir,
  `.pyloader-tmp-<pid>-<random>-<output name>` (hidden, and never an output name), then renamed into place
  (os.replace for files; for a folder, os.rename, after moving an old one aside when overwriting). An error or
  Ctrl-C removes the temporary entry; SIGKILL cannot be caught, so it may leave one behind: every run starts by
  removing the temporary entries of processes that no longer exist (`clean_stale_temporaries`).
* Model reuse: checkpoints that share an architecture (same cfg text + input size + options for darknet; the
  same YOLOv5 layer structure, anchors and options for .pt) build the Keras model once per process and only
  reassign the weights. The cached model keeps the name of the first checkpoint that built it.
* `executor=`: any concurrent.futures.Executor (process pools, Dask's or Ray's executors); jobs are the
  picklable `Job` and run `run_job` in the workers, each of which keeps its own model cache. `jobs=N` without an
  executor uses a ProcessPoolExecutor of N spawned processes.

This module does not import TensorFlow, Keras or torch until a conversion runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import glob
import hashlib
import multiprocessing
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from .errors import FormatError

__all__ = ["Result", "Job", "convert", "plan_jobs", "run_job", "output_name", "clean_stale_temporaries",
           "FORMATS", "TMP_PREFIX"]

FORMATS = ("keras", "weights.h5", "savedmodel", "tflite")
TMP_PREFIX = ".pyloader-tmp-"
CHECKPOINT_SUFFIXES = (".weights", ".pt", ".pth")
_MODEL_CACHE_SIZE = 4  # built models kept per process (least recently used goes first)


@dataclass
class Result:
    """What happened to one source. `bytes` is the checkpoint's size, `seconds` the time spent on it."""

    source: str
    output: str | None
    status: str  # 'converted', 'skipped' or 'failed'
    reason: str = ""
    seconds: float = 0.0
    bytes: int = 0
    note: str = ""  # how it was written when that is worth saying (`pyloader convert -v`): template fallbacks


@dataclass
class Job:
    """One conversion, as sent to a worker."""

    source: str
    output: str
    cfg: str | None = None
    format: str = "keras"
    fold_bn: bool = True
    decode: bool = False
    input_size: tuple | None = None
    overwrite: bool = False
    tflite_fp16: bool = False
    bytes: int = 0
    template: bool = True  # write from a per-architecture template output where exact (pyloader.templates)


# ---------------------------------------------------------------------------------------------------------
# Planning (no TensorFlow)


def output_name(source: str, fmt: str) -> str:
    stem = os.path.splitext(os.path.basename(source))[0]
    if fmt == "keras":
        return stem + ".keras"
    if fmt == "weights.h5":
        return stem + ".weights.h5"
    if fmt == "savedmodel":
        return stem + "_saved_model"
    if fmt == "tflite":
        return stem + ".tflite"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def expand_sources(sources) -> tuple[list, list]:
    """(checkpoint paths, failed Results for sources that name nothing), in order, without duplicates."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found, missing, seen = [], [], set()

    def add(p):
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            found.append(p)

    for s in sources:
        s = os.fspath(s)
        if os.path.isdir(s):
            for name in sorted(os.listdir(s)):
                p = os.path.join(s, name)
                if name.lower().endswith(CHECKPOINT_SUFFIXES) and os.path.isfile(p):
                    add(p)
        elif os.path.isfile(s):
            add(s)
        elif glob.has_magic(s):
            hits = sorted(p for p in glob.glob(s) if os.path.isfile(p))
            if not hits:
                missing.append(Result(s, None, "failed", "the pattern matches no file"))
            for p in hits:
                add(p)
        else:
            missing.append(Result(s, None, "failed", "no such file or folder"))
    return found, missing


def plan_jobs(sources, out_dir, *, cfg=None, format="keras", fold_bn=True, decode=False, input_size=None,
              overwrite=False, tflite_fp16=False) -> tuple[list, list]:
    """(jobs to run, Results decided without running: missing sources, name clashes, existing outputs)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if input_size is not None:
        input_size = tuple(int(v) for v in input_size)
    paths, done = expand_sources(sources)
    jobs, taken = [], {}
    for src in paths:
        out = os.path.join(os.fspath(out_dir), output_name(src, format))
        if out in taken:
            done.append(Result(src, None, "failed", f"output name {os.path.basename(out)} is taken by {taken[out]}"))
            continue
        taken[out] = src
        size = os.path.getsize(src)
        if os.path.lexists(out) and not overwrite:
            done.append(Result(src, out, "skipped", "output exists (use overwrite)", 0.0, size))
            continue
        jobs.append(Job(src, out, None if cfg is None else os.fspath(cfg), format, bool(fold_bn), bool(decode),
                        input_size, bool(overwrite), bool(tflite_fp16), size))
    return jobs, done


def clean_stale_temporaries(out_dir) -> list:
    """Remove temporary entries in out_dir left by processes that no longer run; returns their paths."""
    removed = []
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        pid = name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        path = os.path.join(out_dir, name)
        _remove(path)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------------------
# Running


def convert(sources, out_dir, *, cfg=None, format="keras", fold_bn=True, decode=False, input_size=None,
            overwrite=False, tflite_fp16=False, jobs=1, executor=None, progress=None, templates=True) -> list:
    """Convert checkpoints into `out_dir`; returns one Result per source (sources order, then problems).

    A bad checkpoint never stops the run: its Result has status 'failed' and the reason. `executor`: any
    concurrent.futures.Executor; otherwise `jobs` > 1 uses a ProcessPoolExecutor (spawn) of that many
    processes, and jobs=1 converts in this process. `progress(result, done, total, bytes_done, bytes_total)` is
    called after each source. templates=False runs the format's exporter for every checkpoint (by default,
    checkpoints of one architecture after the first are written from a template output: pyloader.templates).
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    clean_stale_temporaries(out_dir)
    todo, results = plan_jobs(sources, out_dir, cfg=cfg, format=format, fold_bn=fold_bn, decode=decode,
                              input_size=input_size, overwrite=overwrite, tflite_fp16=tflite_fp16)
    for job in todo:
        job.template = bool(templates)
    total = len(todo) + len(results)
    bytes_total = sum(j.bytes for j in todo) + sum(r.bytes for r in results)
    state = {"done": 0, "bytes": 0}

    def report(r):
        state["done"] += 1
        state["bytes"] += r.bytes
        if progress is not None:
            progress(r, state["done"], total, state["bytes"], bytes_total)

    for r in results:
        report(r)
    # Jobs of one architecture next to each other: a worker that built a model reuses it for the next ones.
    todo.sort(key=_arch_hint)
    if executor is None and jobs and jobs > 1 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
            got = _run_on(pool, todo, report)
    elif executor is not None:
        got = _run_on(executor, todo, report)
    else:
        got = []
        for job in todo:
            r = run_job(job)
            got.append(r)
            report(r)
    order = {os.fspath(j.source): i for i, j in enumerate(todo)}
    got.sort(key=lambda r: order.get(r.source, len(order)))
    return got + results


def _arch_hint(job: Job):
    return (job.cfg or "", os.path.splitext(job.source)[1], job.input_size or (), job.fold_bn, job.decode)


def _run_on(executor, todo, report) -> list:
    futures = {}
    for job in todo:
        futures[executor.submit(run_job, job)] = job
    got = []
    pending = [f for f in futures if isinstance(f, cf.Future)]
    others = [f for f in futures if not isinstance(f, cf.Future)]
    for f in cf.as_completed(pending):
        got.append(_result_of(f, futures[f]))
        report(got[-1])
    for f in others:  # executors whose futures are not concurrent.futures.Future: wait in order
        got.append(_result_of(f, futures[f]))
        report(got[-1])
    return got


def _result_of(future, job: Job) -> Result:
    try:
        return future.result()
    except BaseException as e:  # a worker that died (BrokenProcessPool), a cancelled task
        if isinstance(e, KeyboardInterrupt):
            raise
        return Result(job.source, None, "failed", f"worker failed: {type(e).__name__}: {e}", 0.0, job.bytes)


def run_job(job: Job) -> Result:
    """Convert one checkpoint (in whichever process runs it); never raises for a bad checkpoint."""
    t0 = time.perf_counter()
    try:
        if os.path.lexists(job.output) and not job.overwrite:
            return Result(job.source, job.output, "skipped", "output exists (use overwrite)", 0.0, job.bytes)
        model = _model_for(job)
        note = _write_from_template(model, job)
        if note is not None:
            _write_atomically(model, job)
    except Exception as e:  # noqa: BLE001 - one bad checkpoint must not stop the run
        reason = str(e) if isinstance(e, FormatError) else f"{type(e).__name__}: {e}"
        if reason.startswith(job.source + ": "):  # the summary already names the source
            reason = reason[len(job.source) + 2:]
        return Result(job.source, None, "failed", reason.strip() or type(e).__name__,
                      time.perf_counter() - t0, job.bytes)
    return Result(job.source, job.output, "converted", "", time.perf_counter() - t0, job.bytes, note or "")


# ---------------------------------------------------------------------------------------------------------
# Models, built once per architecture and process


_CACHE: OrderedDict = OrderedDict()  # key -> (model, lock)
_CACHE_LOCK = threading.Lock()


class _Held:
    """The cached model for a key, locked while one job assigns and writes it (thread executors)."""

    def __init__(self, key, build):
        with _CACHE_LOCK:
            entry = _CACHE.get(key)
            if entry is None:
                entry = _CACHE[key] = [None, threading.Lock()]
            _CACHE.move_to_end(key)
            while len(_CACHE) > _MODEL_CACHE_SIZE:
                _CACHE.popitem(last=False)
        self.entry, self.build = entry, build

    def __enter__(self):
        self.entry[1].acquire()
        if self.entry[0] is None:
            self.entry[0] = self.build()
        return self.entry[0]

    def __exit__(self, *exc):
        self.entry[1].release()


class _Loaded:
    """A model filled with one checkpoint's weights, held (locked) until written."""

    def __init__(self, held, fill, key=None, arrays=None):
        self.held, self.fill = held, fill
        self.key, self.arrays = key, arrays  # the architecture key and the checkpoint's {variable path: array}

    def __enter__(self):
        model = self.held.__enter__()
        try:
            self.fill(model)
        except BaseException:
            self.held.__exit__(None, None, None)
            raise
        return model

    def __exit__(self, *exc):
        self.held.__exit__(*exc)


def _model_for(job: Job):
    """A context manager giving the model for `job`, with the job's weights assigned."""
    from .api import _family

    if _family(job.source) == "torch":
        return _yolov5_model(job)
    return _darknet_model(job)


def _darknet_model(job: Job):
    from .darknet.cfg import build_network, read_cfg
    from .darknet.weights import default_cfg, read_darknet

    cfg = job.cfg if job.cfg is not None else default_cfg(job.source)
    if not os.path.exists(cfg):
        raise FormatError(f"{job.source}: no cfg given and none beside it (looked for {cfg})")
    with open(cfg, "rb") as f:
        text = f.read()
    network = build_network(read_cfg(cfg), job.input_size)
    data = read_darknet(job.source, network=network, fold_bn=job.fold_bn)  # validates before any model work
    key = ("darknet", hashlib.sha256(text).hexdigest(), network.height, network.width, job.fold_bn, job.decode)

    def build():
        from .darknet.model import _model_name, build_darknet_model

        stem = os.path.splitext(os.path.basename(cfg))[0]
        return build_darknet_model(network, fold_bn=job.fold_bn, decode=job.decode, name=_model_name(stem))

    def fill(model):
        from .darknet.model import reachable_arrays
        from .keras_blocks.assign import assign_weights

        assign_weights(model, reachable_arrays(network, data.arrays), job.source)

    from .darknet.model import reachable_arrays

    return _Loaded(_Held(key, build), fill, key, reachable_arrays(network, data.arrays))


def _yolov5_model(job: Job):  # `cfg` is for .weights sources; a .pt carries its architecture
    from .yolov5.weights import plan_arrays, read_plan

    plan = read_plan(job.source)
    arrays = plan_arrays(plan, job.fold_bn)
    key = ("yolov5", _fingerprint(plan), job.input_size, job.fold_bn, job.decode)

    def build():
        from .yolov5.model import build_yolov5

        return build_yolov5(plan, fold_bn=job.fold_bn, decode=job.decode, input_size=job.input_size)

    def fill(model):
        from .keras_blocks.assign import assign_weights

        assign_weights(model, arrays, job.source)
        model.class_names = list(plan.names)

    return _Loaded(_Held(key, build), fill, key, arrays)


_WEIGHT_FIELDS = {"kernel", "bias", "gamma", "beta", "mean", "var"}


def _fingerprint(plan) -> str:
    """A digest of a YOLOv5 plan's structure: layers, options, anchors and strides; weights by shape only."""
    h = hashlib.sha256()

    def walk(obj, name=""):
        import numpy as np

        if isinstance(obj, np.ndarray):
            h.update(f"{name}:{obj.dtype}{obj.shape}".encode())
            if name not in _WEIGHT_FIELDS:
                h.update(np.ascontiguousarray(obj).tobytes())
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            h.update(type(obj).__name__.encode())
            for f in dataclasses.fields(obj):
                if f.name not in ("path", "names"):
                    walk(getattr(obj, f.name), f.name)
        elif isinstance(obj, dict):
            h.update(b"{")
            for k in sorted(obj, key=str):
                h.update(repr(k).encode())
                walk(obj[k], str(k))
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                walk(v, name)
            h.update(b"]")
        else:
            h.update(f"{name}={obj!r};".encode())

    walk(plan)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Writing


def _tmp_path(final: str) -> str:
    d, name = os.path.split(final)
    return os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")


def _write_atomically(loaded, job: Job, write=None) -> None:
    tmp = _tmp_path(job.output)
    try:
        if write is not None:
            write(tmp)
        else:
            with loaded as model:
                _write(model, tmp, job)
        if job.format == "savedmodel":
            _rename_folder(tmp, job.output, job.overwrite)
        else:
            if not job.overwrite and os.path.lexists(job.output):
                raise FileExistsError(f"{job.output} appeared while converting")
            os.replace(tmp, job.output)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def _rename_folder(tmp: str, final: str, overwrite: bool) -> None:
    old = None
    if os.path.lexists(final):
        if not overwrite:
            raise FileExistsError(f"{final} appeared while converting")
        old = _tmp_path(final)
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        _remove(old)


def _write(model, tmp: str, job: Job) -> None:
    if job.format == "keras":
        model.save(tmp)
    elif job.format == "weights.h5":
        model.save_weights(tmp)
    elif job.format == "savedmodel":
        model.export(tmp, format="tf_saved_model", verbose=False)
    elif job.format == "tflite":
        with open(tmp, "wb") as f:
            f.write(_tflite_bytes(model, tmp, job.tflite_fp16))
    else:
        raise ValueError(f"unknown format {job.format!r}")


def _tflite_bytes(model, tmp: str, fp16: bool) -> bytes:
    import tensorflow as tf

    saved = tmp + ".savedmodel"
    try:
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if fp16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    finally:
        _remove(saved)


# ---------------------------------------------------------------------------------------------------------
# Template outputs (pyloader.templates): the exporter runs once per architecture and format, on probe weights;
# each checkpoint's file is then the template's bytes with its weights (and metadata blobs) put in.


_TEMPLATES: OrderedDict = OrderedDict()  # (architecture key, format, fp16) -> Template or the reason for none


def _metadata_blobs(job: Job, loaded, probe: bool) -> tuple:
    """Hook for per-output metadata that a format stores (class names, source name and hash, ...): the byte
    strings that differ per checkpoint besides the weights, each of a fixed length per architecture. With
    probe=True, the blobs that the template export (on probe weights) wrote. None so far."""
    return ()


def _write_from_template(loaded, job: Job):
    """Write job's output from its architecture's template; None when done, else why the exporter must run."""
    from . import templates

    if not job.template or job.format not in templates.FORMATS or getattr(job, "tflite_int8", False):
        return "exporter (templates off)" if not job.template else f"exporter ({job.format})"
    if loaded.key is None or loaded.arrays is None:
        return "exporter (no architecture key)"
    tkey = (loaded.key, job.format, job.tflite_fp16 if job.format == "tflite" else False)
    with _CACHE_LOCK:
        tpl = _TEMPLATES.get(tkey)
    if tpl is None:
        work = _tmp_path(os.path.join(os.path.dirname(job.output), "template"))
        os.makedirs(work)
        try:
            with loaded.held as model:
                tpl = templates.learn(job.format, model, lambda m, p: _write(m, p, job), fp16=job.tflite_fp16,
                                      blobs=_metadata_blobs(job, loaded, True), workdir=work)
        except templates.NoTemplate as e:
            tpl = f"no template: {e}"
        finally:
            _remove(work)
        with _CACHE_LOCK:
            _TEMPLATES[tkey] = tpl
            while len(_TEMPLATES) > _MODEL_CACHE_SIZE:
                _TEMPLATES.popitem(last=False)
    if isinstance(tpl, str):
        return "exporter, " + tpl
    try:
        tpl.check(loaded.arrays)
        _write_atomically(loaded, job, lambda tmp: tpl.write(loaded.arrays, tmp, _metadata_blobs(job, loaded, False)))
    except templates.NoTemplate as e:
        return f"exporter, this checkpoint: {e}"
    return None
