"""Bulk conversion of checkpoints into deployable files (`pyloader.convert`, `pyloader convert`).

* Sources: files, folders (their .weights / .pt / .pth files, in subfolders too: training-run folders such as
  runs/train/exp3/weights/best.pt) or glob patterns. A .weights file takes `cfg` or the .cfg of the same stem
  beside it; a .pt file carries its architecture. A folder with no checkpoint is a failed source.
* Outputs, named after the source's stem in `out_dir` (a checkpoint found in a folder's subfolder: after its
  path relative to that folder, `train-exp3-best`, leaving out `weights` folders): `<stem>.keras` (default),
  `<stem>.weights.h5`, `<stem>_saved_model/` (a TF SavedModel folder) or `<stem>.tflite` (float32, or float16
  weights with tflite_fp16=True). Every output carries pyloader's metadata and names its outputs
  (pyloader/metadata.py); SavedModel and TFLite need the TensorFlow or JAX backend.
* Atomic outputs: everything is written under a temporary name in out_dir,
  `.pyloader-tmp-<pid>-<random>-<output name>` (hidden, and never an output name), then renamed into place
  (os.replace for files; for a folder, os.rename, after moving an old one aside when overwriting). An error or
  Ctrl-C removes the temporary entry; SIGKILL cannot be caught, so it may leave one behind: every run starts by
  removing the temporary entries of processes that no longer exist (`clean_stale_temporaries`).
* Model reuse: checkpoints that share an architecture (same cfg text + input size + options for darknet; the
  same .pt family plan structure, anchors and options for .pt) build the Keras model once per process and only
  reassign the weights. The cached model keeps the name of the first checkpoint that built it.
* `executor=`: a concurrent.futures.Executor whose workers can import pyloader: ThreadPoolExecutor, a
  ProcessPoolExecutor with the 'spawn' or 'forkserver' context, Dask's `Client.get_executor()`. Jobs are the
  picklable `Job` and run `run_job` in the workers, each of which keeps its own model cache. A process pool
  that forks is refused once TensorFlow or JAX is loaded in this process (their thread pools do not survive a
  fork: the workers would hang). Ray ships no concurrent.futures.Executor. `jobs=N` without an executor uses a
  ProcessPoolExecutor of N spawned processes.

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
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from .boundary import check_regular, error_text, fs_str, open_regular, shown
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
    import_seconds: float = 0.0  # the one-time framework import in the worker, not part of `seconds`
    verify: float | None = None  # with verify=True: max relative difference of the written output
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
    names: str | None = None  # darknet .names file (class names)
    nms: dict | None = None  # NMS options (keras_blocks.nms_options): decode + NMS outputs
    int8: bool = False  # tflite: int8 weights and activations, calibrated on `calibration`'s images
    int8_io: bool = False  # with int8: integer input and outputs too
    calibration: str | None = None
    verify: bool = False  # run the written output in its own runtime and compare with the model
    template: bool = True  # write from a per-architecture template output where exact (pyloader.templates)
    verified: float | None = None  # set when a template-written output was verified


# ---------------------------------------------------------------------------------------------------------
# Planning (no TensorFlow)


def output_name(source: str, fmt: str, stem: str | None = None) -> str:
    stem = os.path.splitext(os.path.basename(source))[0] if stem is None else stem
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
    found, missing = find_checkpoints(sources)
    return [p for p, _ in found], missing


def find_checkpoints(sources) -> tuple[list, list]:
    """([(checkpoint path, output stem)], failed Results for sources that name nothing), in order, without
    duplicates. Folders are searched with their subfolders (hidden ones aside); a checkpoint found below a
    folder is named after its path relative to it (`train/exp3/weights/best.pt` -> `train-exp3-best`)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found, missing, seen = [], [], set()

    def add(p, stem=None):
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            found.append((p, os.path.splitext(os.path.basename(p))[0] if stem is None else stem))

    def refuse_special(p) -> bool:
        """A FIFO, device or socket is refused with a message (never opened: opening a FIFO blocks)."""
        try:
            check_regular(p)
        except FormatError as e:
            if os.path.exists(p) and not os.path.isdir(p):
                missing.append(Result(p, None, "failed", str(e).removeprefix(shown(p) + ": ")))
                return True
        return False

    for s in sources:
        s = fs_str(s)
        if os.path.isdir(s):
            hits = _walk_checkpoints(s, refuse_special)
            if not hits:
                missing.append(Result(s, None, "failed", "no checkpoint found: looked for "
                                      f"{', '.join('*' + x for x in CHECKPOINT_SUFFIXES)} files in this folder "
                                      "and its subfolders"))
            for p, stem in hits:
                add(p, stem)
        elif os.path.isfile(s):
            add(s)
        elif refuse_special(s):
            pass
        elif glob.has_magic(s):
            hits = sorted(p for p in glob.glob(s) if refuse_special(p) is False and os.path.isfile(p))
            if not hits:
                missing.append(Result(s, None, "failed", "the pattern matches no file"))
            for p in hits:
                add(p)
        else:
            missing.append(Result(s, None, "failed", "no such file or folder"))
    return found, missing


def _walk_checkpoints(folder: str, refuse_special) -> list:
    """[(path, stem)] of the checkpoints in `folder` and its subfolders, sorted by relative path;
    `refuse_special(path)` reports (and skips) FIFOs, devices and sockets."""
    hits = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = os.path.join(root, name)
            if (name.lower().endswith(CHECKPOINT_SUFFIXES) and not name.startswith(".") and not refuse_special(p)
                    and os.path.isfile(p)):
                rel = os.path.relpath(p, folder).split(os.sep)
                parts = [d for d in rel[:-1] if d != "weights"] + [os.path.splitext(rel[-1])[0]]
                hits.append((p, "-".join(parts)))
    return hits


def plan_jobs(sources, out_dir, *, cfg=None, format="keras", fold_bn=True, decode=False, input_size=None,
              overwrite=False, tflite_fp16=False, names=None, nms=None, int8=False, int8_io=False,
              calibration=None, verify=False) -> tuple[list, list]:
    """(jobs to run, Results decided without running: missing sources, name clashes, existing outputs)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    nms = check_detect_options(format, nms, int8, int8_io, calibration, tflite_fp16)
    if input_size is not None:
        input_size = tuple(int(v) for v in input_size)
    paths, done = find_checkpoints(sources)
    jobs, taken = [], {}
    for src, stem in paths:
        out = os.path.join(os.fspath(out_dir), output_name(src, format, stem))
        if out in taken:
            done.append(Result(src, None, "failed", f"output name {os.path.basename(out)} is taken by {taken[out]}"))
            continue
        taken[out] = src
        size = os.path.getsize(src)
        if os.path.lexists(out) and not overwrite:
            done.append(Result(src, out, "skipped", "output exists (use overwrite)", 0.0, size))
            continue
        jobs.append(Job(src, out, None if cfg is None else os.fspath(cfg), format, bool(fold_bn), bool(decode),
                        input_size, bool(overwrite), bool(tflite_fp16), size,
                        None if names is None else os.fspath(names), nms, bool(int8), bool(int8_io),
                        None if calibration is None else os.fspath(calibration), bool(verify)))
    return jobs, done


def check_detect_options(format, nms, int8, int8_io, calibration, tflite_fp16):
    """Validate the NMS / int8 options before anything runs (ValueError, or FormatError for the calibration
    folder and its images); returns the normalised NMS options. No TensorFlow import."""
    from .keras_blocks.nms_options import nms_options

    nms = nms_options(nms)
    if nms is not None and format == "weights.h5":
        raise ValueError("nms: a .weights.h5 file holds weights only; use format keras, savedmodel or tflite")
    if int8_io and not int8:
        raise ValueError("int8_io needs int8")
    if int8:
        if format != "tflite":
            raise ValueError(f"int8 needs format tflite (got {format})")
        if tflite_fp16:
            raise ValueError("int8 and tflite_fp16 exclude each other")
        if nms is not None:  # the quantizer turns decode + NMS into int8 too; TFLite's interpreter aborts on it
            raise ValueError("int8 with nms is not supported: the int8 file holds the network (raw heads or "
                             "decode); run NMS on its output, or convert a float tflite with nms")
        if calibration is None:
            raise ValueError("int8 needs calibration images (a folder of image files): random data is not "
                             "calibration")
        from .calibration import check_images, list_images

        check_images(list_images(calibration))
    elif calibration is not None:
        raise ValueError("calibration is only used with int8")
    return nms


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
            overwrite=False, tflite_fp16=False, jobs=1, executor=None, progress=None, names=None, nms=None,
            int8=False, int8_io=False, calibration=None, verify=False, templates=True) -> list:
    """Convert checkpoints into `out_dir`; returns one Result per source (sources order, then problems).

    A bad checkpoint never stops the run: its Result has status 'failed' and the reason. `executor`: any
    concurrent.futures.Executor; otherwise `jobs` > 1 uses a ProcessPoolExecutor (spawn) of that many
    processes, and jobs=1 converts in this process. `progress(result, done, total, bytes_done, bytes_total)` is
    called after each source. `names`: a darknet .names file with the class names of every .weights source.

    Raises ModuleNotFoundError (saying what to install) when Keras, its backend or, for savedmodel / tflite,
    TensorFlow is missing; ValueError for an executor that forks after TensorFlow or JAX was loaded, or a
    SavedModel / TFLite format under Keras' PyTorch backend.
    nms (True or a dict of options, see `load`): outputs boxes, scores, classes, num_detections. int8 (tflite):
    int8 weights and activations calibrated on the images in the folder `calibration`; int8_io: integer input
    and outputs as well. verify: run each written output in its own runtime on one image and compare it with
    the model (Result.verify: max relative difference; a failed check fails the source, nothing is written).
    templates=False runs the format's exporter for every checkpoint (by default, checkpoints of one
    architecture after the first are written from a template output: pyloader.templates).
    """
    check_framework(format)
    check_executor(executor)
    out_dir = os.fspath(out_dir)
    check_detect_options(format, nms, int8, int8_io, calibration, tflite_fp16)  # before any folder is made
    os.makedirs(out_dir, exist_ok=True)
    clean_stale_temporaries(out_dir)
    todo, results = plan_jobs(sources, out_dir, cfg=cfg, format=format, fold_bn=fold_bn, decode=decode,
                              input_size=input_size, overwrite=overwrite, tflite_fp16=tflite_fp16,
                              names=names, nms=nms, int8=int8, int8_io=int8_io, calibration=calibration,
                              verify=verify)
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


_EXTRAS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def keras_backend_name() -> str:
    """The backend Keras uses or will use (without importing Keras): KERAS_BACKEND, else keras.json, else
    tensorflow."""
    if "keras" in sys.modules:
        try:
            return sys.modules["keras"].config.backend()
        except AttributeError:  # keras partly imported
            pass
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        import json

        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend") or "tensorflow"
    except (OSError, ValueError):
        return "tensorflow"


def _missing(module: str, why: str, extra: str) -> ModuleNotFoundError:
    e = ModuleNotFoundError(f"{why} needs the Python package '{module}', which is not installed: "
                            f"pip install 'pyloader[{extra}]'", name=module)
    return e


def check_framework(format: str) -> None:
    """Raise ModuleNotFoundError saying what to pip-install when a conversion to `format` cannot run here;
    ValueError for SavedModel / TFLite under Keras' PyTorch backend (its SavedModel export needs torch_xla)."""
    import importlib.util

    backend = keras_backend_name()
    if importlib.util.find_spec("keras") is None:
        raise _missing("keras", "converting", _EXTRAS.get(backend, "tensorflow"))
    if backend in _EXTRAS and importlib.util.find_spec(backend) is None:
        raise _missing(backend, f"Keras' {backend} backend (KERAS_BACKEND={backend})", _EXTRAS[backend])
    if format in ("savedmodel", "tflite"):
        if backend == "torch":
            raise ValueError(f"format {format!r} needs Keras' TensorFlow or JAX backend (the PyTorch backend "
                             "exports a SavedModel only through torch_xla): run with KERAS_BACKEND=tensorflow")
        if importlib.util.find_spec("tensorflow") is None:
            raise _missing("tensorflow", f"format {format!r}", "tensorflow")


def check_executor(executor) -> None:
    """Refuse a process pool that forks once TensorFlow or JAX is loaded here (the forked workers hang)."""
    if not isinstance(executor, cf.ProcessPoolExecutor):
        return
    ctx = getattr(executor, "_mp_context", None)
    method = ctx.get_start_method() if ctx is not None else multiprocessing.get_start_method()
    loaded = [m for m in ("tensorflow", "jax") if m in sys.modules]
    if method == "fork" and loaded:
        raise ValueError(
            f"executor: a ProcessPoolExecutor that forks cannot run conversions once {loaded[0]} is loaded in "
            "this process (its thread pool does not survive fork: the workers would hang). Use "
            "ProcessPoolExecutor(mp_context=multiprocessing.get_context('spawn')), jobs=N, a ThreadPoolExecutor "
            "or Dask's client.get_executor()")


def _arch_hint(job: Job):
    return (job.cfg or "", os.path.splitext(job.source)[1], job.input_size or (), job.fold_bn, job.decode,
            _nms_key(job))


def _nms_metadata(meta: dict, job: Job) -> dict:
    if job.nms is None:
        return meta
    from .keras_blocks.nms import nms_metadata

    return nms_metadata(meta, job.nms)


def _nms_key(job: Job) -> tuple:
    return () if job.nms is None else tuple(sorted(job.nms.items()))


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
    if os.path.lexists(job.output) and not job.overwrite:
        return Result(job.source, job.output, "skipped", "output exists (use overwrite)", 0.0, job.bytes)
    imported = 0.0
    t0 = time.perf_counter()
    try:
        imported = import_framework(job.format)
        t0 = time.perf_counter()
        model = _model_for(job)
        diff, note = None, _write_from_template(model, job)
        if note is not None:
            diff = _write_atomically(model, job)
        elif job.verify:
            diff = job.verified
    except Exception as e:  # noqa: BLE001 - one bad checkpoint must not stop the run
        reason = str(e) if isinstance(e, FormatError) else error_text(e)
        if reason.startswith(job.source + ": "):  # the summary already names the source
            reason = reason[len(job.source) + 2:]
        return Result(job.source, None, "failed", reason.strip() or type(e).__name__,
                      time.perf_counter() - t0, job.bytes, imported)
    return Result(job.source, job.output, "converted", "", time.perf_counter() - t0, job.bytes, imported,
                  verify=diff, note=note or "")


def import_framework(format: str) -> float:
    """Import Keras (and TensorFlow for SavedModel / TFLite) once per process; the seconds it took (0 when
    already imported). Kept out of each checkpoint's time."""
    wanted = ["keras"] + (["tensorflow"] if format in ("savedmodel", "tflite") else [])
    if all(m in sys.modules for m in wanted):
        return 0.0
    t0 = time.perf_counter()
    import importlib

    for m in wanted:
        importlib.import_module(m)
    return time.perf_counter() - t0


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

    def __init__(self, held, fill, key=None, arrays=None, meta=None):
        self.held, self.fill = held, fill
        self.key, self.arrays = key, arrays  # the architecture key and the checkpoint's {variable path: array}
        self.meta = meta  # meta(input size (h, w)) -> this checkpoint's metadata, as `fill` attaches it

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
        return _torch_model(job)
    return _darknet_model(job)


def _darknet_model(job: Job):
    from .darknet.cfg import build_network, read_cfg
    from .darknet.weights import default_cfg, read_darknet
    from .metadata import darknet_metadata

    cfg = job.cfg if job.cfg is not None else default_cfg(job.source)
    if not os.path.exists(cfg):
        raise FormatError(f"{job.source}: no cfg given and none beside it (looked for {cfg})")
    with open_regular(cfg) as f:
        text = f.read()
    network = build_network(read_cfg(cfg), job.input_size)
    data = read_darknet(job.source, network=network, fold_bn=job.fold_bn)  # validates before any model work
    key = ("darknet", hashlib.sha256(text).hexdigest(), network.height, network.width, job.fold_bn, job.decode,
           _nms_key(job))

    def build():
        from .darknet.model import _model_name, build_darknet_model

        stem = os.path.splitext(os.path.basename(cfg))[0]
        return build_darknet_model(network, fold_bn=job.fold_bn, decode=job.decode, name=_model_name(stem),
                                   nms=job.nms)

    meta = darknet_metadata(network, job.source, names=job.names, decode=job.decode, fold_bn=job.fold_bn)

    def fill(model):
        from .darknet.model import reachable_arrays
        from .keras_blocks.assign import assign_weights
        from .keras_blocks.model import attach_metadata

        assign_weights(model, reachable_arrays(network, data.arrays), job.source)
        attach_metadata(model, _nms_metadata(meta, job))

    from .darknet.model import reachable_arrays

    return _Loaded(_Held(key, build), fill, key, reachable_arrays(network, data.arrays), lambda size: meta)


def _torch_model(job: Job):
    """A .pt checkpoint (its architecture inside); a plain state_dict takes the model's .yaml as `cfg`."""
    from .api import torch_plan

    if job.names is not None:
        raise FormatError(f"{job.source}: a PyTorch checkpoint carries its class names; names (--names) are "
                          "for .weights sources")
    cfg = job.cfg if job.cfg is not None and str(job.cfg).endswith((".yaml", ".yml")) else None
    fam, plan = torch_plan(job.source, cfg)
    arrays = fam.weights().plan_arrays(plan, job.fold_bn)
    key = (fam.name, _fingerprint(plan), job.input_size, job.fold_bn, job.decode, _nms_key(job))

    def build():
        build_family = getattr(fam.model(), fam.builder)
        model = build_family(plan, fold_bn=job.fold_bn, decode=job.decode or job.nms is not None,
                             input_size=job.input_size)
        if job.nms is not None:
            from .keras_blocks.nms import family_nms

            model = family_nms(fam.name, model, job.nms, job.source)
        return model

    def meta(size):
        return fam.model().plan_metadata(plan, size, job.source, decode=job.decode, fold_bn=job.fold_bn)

    def fill(model):
        from .keras_blocks.assign import assign_weights
        from .keras_blocks.model import attach_metadata

        assign_weights(model, arrays, job.source)
        attach_metadata(model, meta(_input_size(model)))

    return _Loaded(_Held(key, build), fill, key, arrays, meta)


def _input_size(model) -> tuple:
    return tuple(int(v) for v in model.inputs[0].shape[1:3])


_WEIGHT_FIELDS = {"kernel", "bias", "gamma", "beta", "mean", "var"}


def _fingerprint(plan) -> str:
    """A digest of a .pt family plan's structure: layers, options, anchors and strides; weights by shape only."""
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


def _write_atomically(loaded, job: Job, write=None):
    """Write (with the model, or by `write(tmp)`: a template), verify (with job.verify; returns the difference,
    else None) and rename into place."""
    tmp = _tmp_path(job.output)
    diff = None
    try:
        if write is not None:
            write(tmp)
            if job.verify:
                with loaded as model:
                    diff = _verify(model, tmp, job)
        else:
            with loaded as model:
                _write(model, tmp, job)
                if job.verify:
                    diff = _verify(model, tmp, job)
        if job.format == "savedmodel":
            _rename_folder(tmp, job.output, job.overwrite)
        else:
            if not job.overwrite and os.path.lexists(job.output):
                raise FileExistsError(f"{job.output} appeared while converting")
            os.replace(tmp, job.output)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
    return diff


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
    from . import metadata as M

    meta = M.complete(getattr(model, "metadata", None) or {}, getattr(model, "_pyloader_source_path", None))
    if job.format == "keras":
        model.save(tmp)  # the metadata goes into config.json (DetectionModel.get_config)
    elif job.format == "weights.h5":
        model.save_weights(tmp)
        M.write_h5(tmp, meta)
    elif job.format == "savedmodel":
        export_savedmodel(model, tmp, meta)
    elif job.format == "tflite":
        int8 = (_calibration_images(model, job), job.int8_io) if job.int8 else None
        with open(tmp, "wb") as f:
            f.write(M.tflite_with_metadata(_tflite_bytes(model, tmp, job.tflite_fp16, int8), meta,
                                           model.output_names))
    else:
        raise ValueError(f"unknown format {job.format!r}")


def _calibration_images(model, job: Job):
    """The job's calibration images, prepared as the model's family expects (see pyloader.calibration)."""
    from .api import _family
    from .calibration import list_images, load_images

    size = tuple(int(v) for v in model.inputs[0].shape[1:3])
    return load_images(list_images(job.calibration), size, letterbox=_family(job.source) == "torch")


def _verify_image(model, job: Job):
    """One image for --verify: the first calibration image, else a fixed random one."""
    import numpy as np

    if job.calibration is not None:
        from .api import _family
        from .calibration import list_images, load_images

        size = tuple(int(v) for v in model.inputs[0].shape[1:3])
        return load_images(list_images(job.calibration)[:1], size, letterbox=_family(job.source) == "torch")
    shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32)


def _verify(model, tmp: str, job: Job) -> float:
    from .verify import verify_output

    return verify_output(model, tmp, job, _verify_image(model, job))


def export_savedmodel(model, path: str, meta: dict) -> None:
    """A SavedModel whose serving signature's outputs are keyed by the model's output names, with a `metadata`
    signature and assets.extra/pyloader_metadata.json (pyloader/metadata.py)."""
    import keras
    import tensorflow as tf

    from . import metadata as M

    named = keras.Model(model.inputs, dict(zip(model.output_names, model.outputs)), name=model.name)
    archive = keras.export.ExportArchive()
    spec = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name) for t in model.inputs]
    archive.track_and_add_endpoint("serve", named, spec)
    text = tf.constant(M.to_json(meta))
    archive._tf_trackable.metadata = tf.function(lambda: {M.KEY: text}, input_signature=[])
    archive._tf_trackable.metadata.get_concrete_function()
    _write_archive(archive, path, {"metadata": archive._tf_trackable.metadata})
    M.write_savedmodel_files(path, meta)


def _write_archive(archive, path, extra_signatures) -> None:
    """ExportArchive.write_out, plus signatures that are plain tf.functions (the metadata)."""
    import tensorflow as tf

    archive._filter_and_track_resources()
    signatures = {name: archive._get_concrete_fn(name) for name in archive._endpoint_names}
    signatures["serving_default"] = signatures["serve"]
    signatures.update(extra_signatures)
    tf.saved_model.save(archive._tf_trackable, path, signatures=signatures)


def _tflite_bytes(model, tmp: str, fp16: bool, int8=None) -> bytes:
    """TFLite flatbuffer: float32, float16 weights (fp16), or int8 = (calibration images, integer I/O)."""
    import tensorflow as tf

    saved = tmp + ".savedmodel"
    try:
        export_savedmodel(model, saved, getattr(model, "metadata", None) or {})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
        if fp16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if int8 is not None:
            images, int_io = int8

            def representative():
                for i in range(len(images)):
                    yield [images[i:i + 1]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            if int_io:  # full integer: every op int8, int8 input and outputs
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
            else:  # float input/output; ops without an int8 kernel (NMS) stay float
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                       tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()
    finally:
        _remove(saved)


# ---------------------------------------------------------------------------------------------------------
# Template outputs (pyloader.templates): the exporter runs once per architecture and format, on probe weights;
# each checkpoint's file is then the template's bytes with its weights (and metadata blobs) put in.


_TEMPLATES: OrderedDict = OrderedDict()  # (architecture key, format, fp16) -> Template or the reason for none


def _metadata_blobs(job: Job, meta: dict) -> list:
    """The per-output metadata (class names, source name, size and SHA-256, ...) exactly as job's format stores
    it: the byte strings that differ per checkpoint besides the weights. pyloader.metadata pads them to a
    fixed length bucket, so checkpoints of one architecture give equally long blobs (one that does not is
    written by the exporter: Template.write raises NoTemplate)."""
    from . import metadata as M

    return M.stored_blobs(M.complete(meta, job.source), job.format)


def _write_from_template(loaded, job: Job):
    """Write job's output from its architecture's template; None when done, else why the exporter must run."""
    from . import templates

    if not job.template or job.format not in templates.FORMATS or job.int8:
        return "exporter (templates off)" if not job.template else f"exporter ({job.format})"
    if loaded.key is None or loaded.arrays is None or loaded.meta is None:
        return "exporter (no architecture key)"
    tkey = (loaded.key, job.format, job.tflite_fp16 if job.format == "tflite" else False)
    with _CACHE_LOCK:
        tpl = _TEMPLATES.get(tkey)
    if tpl is None:
        work = _tmp_path(os.path.join(os.path.dirname(job.output), "template"))
        os.makedirs(work)
        try:
            with loaded.held as model:
                from .keras_blocks.model import attach_metadata

                size = _input_size(model)
                meta = loaded.meta(size)  # the template export carries this checkpoint's metadata: its blobs
                attach_metadata(model, meta)
                tpl = templates.learn(job.format, model, lambda m, p: _write(m, p, job), fp16=job.tflite_fp16,
                                      blobs=_metadata_blobs(job, meta), workdir=work)
                tpl.input_size = size
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
        blobs = _metadata_blobs(job, loaded.meta(tpl.input_size))
        job.verified = _write_atomically(loaded, job, lambda tmp: tpl.write(loaded.arrays, tmp, blobs))
    except templates.NoTemplate as e:
        return f"exporter, this checkpoint: {e}"
    return None
