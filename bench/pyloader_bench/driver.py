"""The driver's side of a measurement: a spec run in a fresh worker process, its times summarised; the log."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

GB = 1e9


def run_worker(spec: dict, timeout: float = 3600) -> dict:
    """Run `spec` in a fresh `python -c` process (worker.main); its result, or {"error": ...}."""
    code = "import sys; from pyloader_bench.worker import main; main(sys.argv[1])"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", **spec.get("env", {}))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    wall = time.perf_counter() - t0
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            r = json.loads(line[len("@@RESULT "):])
            r["process_wall_s"] = wall
            return r
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"error": f"{spec['method']} failed (rc {p.returncode}): " + " | ".join(tail)[-600:]}


def summarize(r: dict, nbytes: int | None = None) -> dict:
    if "error" in r:
        return r
    out = dict(r)
    for key in ("warm", "cold"):
        ts = r.get(f"{key}_s") or []
        if ts:
            out[f"{key}_median_s"] = statistics.median(ts)
            if nbytes:
                out[f"{key}_gb_per_s"] = nbytes / GB / statistics.median(ts)
    return out


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def ratio(a, b):
    return a / b if a and b else None
