"""Running jobs: in this process, on a process pool, or on any concurrent.futures.Executor; reporting each result."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys

from .atomic import clean_stale_temporaries
from .jobs import Job, Result, check_detect_options, plan_jobs
from .worker import run_job


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
    architecture after the first are written from a template output: pyloader.outputs.template).
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
            () if job.nms is None else tuple(sorted(job.nms.items())))


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


