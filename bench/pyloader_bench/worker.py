"""The fresh process of every measurement: `python -c "from pyloader_bench.worker import main; main(SPEC)"`
runs one spec (JSON) and prints one `@@RESULT {json}` line (driver.run_worker starts it and reads that line)."""

from __future__ import annotations

import json
import time

from . import worker_runs
from .probes import evict, peak_bytes, reset_peak, status_bytes
from .sections.darknet import side_by_side
from .worker_ops import prepare


def timed(spec: dict) -> dict:
    """One operation (worker_ops.prepare): an untimed warm-up, whose peak resident memory above the post-import
    baseline is the memory figure, then `repeat` warm runs and, with `cold`, `repeat` runs after evicting the
    files from the page cache."""
    import gc

    op, cleanup, info = prepare(spec)
    files = [p for p in (spec.get("weights"), spec.get("cfg")) if p]
    gc.collect()
    base = status_bytes("VmRSS")
    reset = reset_peak()
    t0 = time.perf_counter()
    obj = op()  # warm-up: its peak is the memory figure, its time the first call's in a fresh process
    first = time.perf_counter() - t0
    peak = peak_bytes()
    del obj
    if cleanup:
        cleanup()
    warm = _times(op, cleanup, spec["repeat"])
    cold = _times(op, cleanup, spec["repeat"], lambda: evict(files, spec["cold"])) if spec.get("cold") else []
    if spec["method"] == "pyloader_load" and spec.get("h5"):
        op().save_weights(spec["h5"])  # for the keras_load_weights worker (after the measurements)
    return {"first_call_s": first, "warm_s": warm, "cold_s": cold, "peak_above_baseline_bytes": peak - base,
            "baseline_bytes": base, "peak_reset": reset, **info}


def _times(op, cleanup, repeat: int, before=None) -> list:
    times = []
    for _ in range(repeat):
        if before:
            before()
        t0 = time.perf_counter()
        obj = op()
        times.append(time.perf_counter() - t0)
        del obj
        if cleanup:
            cleanup()
    return times


# the workers that time their own runs, by method; every other method is one operation for `timed`
RUNS = {"backend_load": worker_runs.backend_load, "bulk_format": worker_runs.bulk_format,
        "bulk_convert": worker_runs.bulk, "bulk_separate": worker_runs.bulk, "breakdown": worker_runs.breakdown,
        "load_repeated": worker_runs.load_repeated, "side_by_side": side_by_side}


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    print("@@RESULT " + json.dumps(RUNS.get(spec["method"], timed)(spec)), flush=True)
