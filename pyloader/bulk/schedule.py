"""Running jobs: in this process, on a process pool, or on any concurrent.futures.Executor; reporting each result."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
from contextlib import contextmanager

from ..boundary import free_bytes
from ..outputs import output_format
from .atomic import Run, clean_stale_temporaries, signals_held, tmp_path
from .jobs import Job, Result, check_detect_options, check_tflite_writer, plan_jobs
from .worker import run_job


class Interrupted(KeyboardInterrupt):
    """convert() stopped by Ctrl-C (or SIGTERM where it raises KeyboardInterrupt): `results` has one Result per
    source: 'converted' with its output for each output that was renamed into place (no other appeared, none
    will), 'interrupted' for the ones not finished, and those decided before (skipped, failed)."""

    def __init__(self, results):
        super().__init__("interrupted")
        self.results = results


def convert(sources, out_dir, *, cfg=None, format="keras", fold_bn=True, decode=False, input_size=None,
            overwrite=False, tflite_fp16=False, jobs=1, executor=None, progress=None, names=None, nms=None,
            int8=False, int8_io=False, calibration=None, verify=False, templates=True, tflite_writer="auto",
            source_hash=True) -> list:
    """Convert checkpoints into `out_dir`; returns one Result per source (sources order, then problems).

    A bad checkpoint never stops the run: its Result has status 'failed' and the reason. `executor`: any
    concurrent.futures.Executor; otherwise `jobs` > 1 uses a ProcessPoolExecutor (spawn) of that many
    processes, and jobs=1 converts in this process. `progress(result, done, total, bytes_done, bytes_total)` is
    called after each source. `names`: a darknet .names file with the class names of every .weights source.

    Raises ModuleNotFoundError (saying what to install) when Keras, its backend or, for savedmodel / tflite,
    TensorFlow is missing; ValueError for an executor that forks after TensorFlow or JAX was loaded, a
    SavedModel / TFLite format under Keras' PyTorch backend, or an output folder that cannot be written (checked
    before anything is created; the folder is made only when there is something to convert).
    KeyboardInterrupt (Ctrl-C) raises `Interrupted`, whose `results` say what finished and where: no task
    starts after it, the pool's worker processes are killed (an executor's running tasks cannot rename their
    outputs into place any more) and their temporary entries removed.
    nms (True or a dict of options, see `load`): outputs boxes, scores, classes, num_detections. int8 (tflite):
    int8 weights and activations calibrated on the images in the folder `calibration`; int8_io: integer input
    and outputs as well. verify: run each written output in its own runtime on one image and compare it with
    the model (Result.verify: max relative difference; a failed check fails the source, nothing is written).
    templates=False runs the format's exporter for every checkpoint (by default, checkpoints of one
    architecture after the first are written from a template output: pyloader.outputs.template).
    tflite_writer (tflite): "auto" (pyloader's direct writer where it covers the model, else TensorFlow's
    converter), "direct" (an error for a model it does not cover) or "converter" (pyloader.outputs.tflite).
    source_hash=False leaves the source's SHA-256 out of every output's metadata (its sha256 says so:
    pyloader.metadata.NOT_HASHED): hashing runs beside the read and the write and bounds a bulk run's speed.
    """
    check_tflite_writer(format, tflite_writer)
    check_framework(format, tflite_converter=format == "tflite" and (tflite_writer == "converter" or int8))
    check_executor(executor)
    out_dir = os.fspath(out_dir)
    check_detect_options(format, nms, int8, int8_io, calibration, tflite_fp16)  # before any folder is made
    check_out_dir(out_dir)
    todo, results = plan_jobs(sources, out_dir, cfg=cfg, format=format, fold_bn=fold_bn, decode=decode,
                              input_size=input_size, overwrite=overwrite, tflite_fp16=tflite_fp16,
                              names=names, nms=nms, int8=int8, int8_io=int8_io, calibration=calibration,
                              verify=verify, tflite_writer=tflite_writer)
    for job in todo:
        job.template, job.source_hash = bool(templates), bool(source_hash)
    total = len(todo) + len(results)
    bytes_total = sum(j.bytes for j in todo) + sum(r.bytes for r in results)
    state = {"done": 0, "bytes": 0}
    got = []

    def report(r):
        state["done"] += 1
        state["bytes"] += r.bytes
        if progress is not None:
            progress(r, state["done"], total, state["bytes"], bytes_total)

    def keep(r):
        got.append(r)
        report(r)

    for r in results:
        report(r)
    if todo:
        # Jobs of one architecture next to each other: a worker that built a model reuses it for the next ones.
        todo.sort(key=_arch_hint)
        run = _open_run(out_dir)
        try:
            _run_jobs(todo, run, executor, jobs, keep)
        except KeyboardInterrupt:
            raise Interrupted(_sorted(got + _unfinished(todo, got, run.close()), todo) + results) from None
        finally:
            run.close()
            clean_stale_temporaries(out_dir)  # those of workers killed meanwhile (SIGKILL, a lost Dask worker)
    return _sorted(got, todo) + results


def _sorted(got, todo) -> list:
    order = {os.fspath(j.source): i for i, j in enumerate(todo)}
    return sorted(got, key=lambda r: order.get(r.source, len(order)))


def _open_run(out_dir: str) -> Run:
    try:
        os.makedirs(out_dir, exist_ok=True)
        clean_stale_temporaries(out_dir)
        return Run(out_dir)
    except OSError as e:
        raise ValueError(f"output folder {out_dir}: cannot write there: {e.strerror or e}") from None


def _run_jobs(todo, run: Run, executor, jobs, keep) -> None:
    """Run the jobs in this process, on a spawned pool of `jobs` processes or on `executor`, passing each Result
    to keep(). On KeyboardInterrupt: close the run, stop the tasks and remove their temporary entries, re-raise."""
    pool = None
    if executor is None and jobs and jobs > 1 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        pool = executor = cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx,
                                                 initializer=_ignore_interrupts)
    futures = {}
    space = _Space(os.path.dirname(run.path))
    try:
        if executor is None:
            for job in todo:
                keep(space.refused(job) or space.learn(run_job(job, run.path)))
            return
        _feed(executor, todo, run, futures, keep, space)
    except KeyboardInterrupt:
        with signals_held(replay=False):  # one Ctrl-C is enough: the clean-up below must finish
            run.close()  # from here on no output of this run appears
            stopped = _stop(pool, futures)
            if executor is None:  # everything ran in this thread, which is here now
                stopped.append(os.getpid())
            clean_stale_temporaries(os.path.dirname(run.path), pids=stopped)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _feed(executor, todo, run: Run, futures: dict, keep, space: _Space) -> None:
    """Submit the jobs to `executor`, a few more than it has workers at a time (the rest wait here, where a
    full output device can still stop them), and keep() each Result as it comes."""
    width = _width(executor) or len(todo)
    waiting = list(reversed(todo))
    pending = []
    while waiting or pending:
        while waiting and len(pending) < width:
            job = waiting.pop()
            refused = space.refused(job)
            if refused is not None:
                keep(refused)
                continue
            with signals_held(), _blocked_in_children():  # a pool's processes start in submit()
                f = executor.submit(run_job, job, run.path)
            futures[f] = job
            pending.append(f)
        if not pending:
            continue
        ours = [f for f in pending if isinstance(f, cf.Future)]
        # executors whose futures are not concurrent.futures.Future: wait in order
        done = cf.wait(ours, return_when=cf.FIRST_COMPLETED).done if ours else pending[:1]
        for f in [f for f in pending if f in done]:
            pending.remove(f)
            keep(space.learn(_result_of(f, futures[f])))


def _width(executor):
    """How many jobs to hand `executor` at once: one more than its workers (none waits for the next), or None
    when it does not say how many it has."""
    client = getattr(executor, "_client", None)  # Dask's Client.get_executor()
    n = sum(client.nthreads().values()) if client is not None else getattr(executor, "_max_workers", None)
    return n + 1 if n else None


class _Space:
    """What a full output device taught the run: after an output did not fit, a source is not started while the
    device's free space is below what it would need (its checkpoint's size times the bytes per checkpoint byte
    of the smallest output that did not fit)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.per_byte = None

    def learn(self, r: Result) -> Result:
        if r.no_space and r.bytes:
            self.per_byte = min(self.per_byte or float("inf"), r.no_space / r.bytes)
        return r

    def refused(self, job: Job):
        """The Result of `job` not started for want of space, or None."""
        if self.per_byte is None:
            return None
        need, free = int(job.bytes * self.per_byte), free_bytes(self.out_dir)
        if need < free:  # the output that did not fit needed more than the space that was free
            return None
        return Result(job.source, None, "failed", f"not started: {job.output}: no space left on device (needs "
                      f"~{need} bytes, {free} free)", 0.0, job.bytes, no_space=need)


def _ignore_interrupts() -> None:
    """The pool's initializer: its workers leave SIGINT and SIGTERM to the parent, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def _blocked_in_children():
    """Processes started in the block inherit SIGINT and SIGTERM blocked (the signal mask survives exec): a
    Ctrl-C while a worker starts, before its initializer ran, does not reach it."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop(pool, futures) -> list:
    """Cancel the tasks not started and kill the pool's processes (an executor's running tasks go on, but cannot
    rename their outputs into place any more); returns the pids killed."""
    for f in futures:
        cancel = getattr(f, "cancel", None)
        if cancel is not None:
            cancel()
    if pool is None:
        return []
    procs = list((pool._processes or {}).values())  # ProcessPoolExecutor.kill_workers() only from Python 3.14
    for p in procs:
        p.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(10)
    return [p.pid for p in procs]


def _unfinished(todo, got, renamed) -> list:
    """Results of the jobs without one when the run was interrupted: 'converted' where the output was renamed
    into place (its Result was on its way), else 'interrupted'."""
    done, renamed = {r.source for r in got}, set(renamed)
    return [Result(j.source, j.output, "converted", "", 0.0, j.bytes, note="renamed into place as the run stopped")
            if j.output in renamed else
            Result(j.source, None, "interrupted", "not finished: the run was interrupted", 0.0, j.bytes)
            for j in todo if j.source not in done]


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


def check_framework(format: str, tflite_converter: bool = False) -> None:
    """Raise ModuleNotFoundError saying what to pip-install when a conversion to `format` cannot run here;
    ValueError for SavedModel, or TFLite by TensorFlow's converter (`tflite_converter`: a forced converter or
    int8), under Keras' PyTorch backend (its SavedModel export needs torch_xla). A TFLite file the direct writer
    covers needs neither; an uncovered model under torch fails before any export (pyloader.outputs.tflite)."""
    import importlib.util

    backend = keras_backend_name()
    if importlib.util.find_spec("keras") is None:
        raise _missing("keras", "converting", _EXTRAS.get(backend, "tensorflow"))
    if backend in _EXTRAS and importlib.util.find_spec(backend) is None:
        raise _missing(backend, f"Keras' {backend} backend (KERAS_BACKEND={backend})", _EXTRAS[backend])
    if "tensorflow" in output_format(format).FRAMEWORKS or tflite_converter:  # SavedModel, converted TFLite
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


def check_out_dir(out_dir) -> None:
    """ValueError naming the output folder and why nothing can be written there: a file, a folder where no entry
    can be made (permissions, a read-only file system, /proc), or one that cannot be created (tried in its
    nearest existing parent). Leaves nothing behind: the try is a temporary folder, removed at once."""
    path = os.path.abspath(out_dir)
    if os.path.lexists(path) and not os.path.exists(path):
        problem = "a broken symbolic link"
    elif os.path.exists(path):
        problem = "not a folder" if not os.path.isdir(path) else _cannot_write(path, "not writable")
    else:
        parent = os.path.dirname(path)
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        problem = (f"cannot be created: {parent} is not a folder" if not os.path.isdir(parent) else
                   _cannot_write(parent, f"cannot be created in {parent}"))
    if problem is not None:
        raise ValueError(f"output folder {os.fspath(out_dir)}: {problem}")


def _cannot_write(folder: str, what: str):
    """None when an entry can be made in `folder`, else `what` and the system's reason."""
    probe = tmp_path(os.path.join(folder, "probe"))
    try:
        os.mkdir(probe)
    except OSError as e:
        return f"{what}: {(e.strerror or str(e)).lower()}"
    os.rmdir(probe)
    return None


def _arch_hint(job: Job):
    return (job.cfg or "", os.path.splitext(job.source)[1], job.input_size or (), job.fold_bn, job.decode,
            () if job.nms is None else tuple(sorted(job.nms.items())))


def _result_of(future, job: Job) -> Result:
    try:
        return future.result()
    except BaseException as e:  # a worker that died (BrokenProcessPool), a cancelled task
        if isinstance(e, KeyboardInterrupt):
            raise
        return Result(job.source, None, "failed", f"worker failed: {type(e).__name__}: {e}", 0.0, job.bytes)


