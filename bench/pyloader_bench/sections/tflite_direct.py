"""The tflite_direct section (issue 21 item 5): one checkpoint to a float32 .tflite in a fresh process, wall time
with the imports (median of `repeat` processes): `pyloader convert --format tflite --decode` with the direct
writer (Keras on JAX, which imports no TensorFlow, on PyTorch and on TensorFlow) and with TensorFlow's converter
(--tflite-writer converter), beside Ultralytics' own `YOLO(pt).export(format="litert")` (litert-torch, run by
`python`: a venv of its own where its pins clash with TensorFlow's; an error where it is not installed)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from ..driver import log, ratio

YAMLS = ("yolov8n", "yolo11n", "yolov8s")
_EXPORT = "import sys\nfrom ultralytics import YOLO\nYOLO(sys.argv[1]).export(format='litert', imgsz=640)\n"


def _round_robin(commands: dict, repeat: int, name: str) -> dict:
    """{label: wall times} of each (command, env, folder cleaned first) in `commands`, run `repeat` rounds, one of
    each per round (a change in the machine's load hits every method alike); {label: {"error": ...}} for a
    command that fails."""
    rows = {label: {"wall_s": []} for label in commands}
    for _ in range(repeat):
        for label, (cmd, env, clean) in commands.items():
            if "error" in rows[label]:
                continue
            log(f"tflite_direct/{name}/{label}")
            if os.path.isdir(clean):
                shutil.rmtree(clean)
            elif os.path.exists(clean):
                os.remove(clean)
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=1800)
            if p.returncode != 0:
                text = (p.stderr or p.stdout).strip()
                rows[label] = {"error": text.splitlines()[-1][:300] if text else f"exit {p.returncode}"}
                continue
            rows[label]["wall_s"].append(time.perf_counter() - t0)
    for row in rows.values():
        if "error" not in row:
            row["wall_median_s"] = statistics.median(row["wall_s"])
    return rows


def bench_tflite_direct(tmp: str, repeat: int = 3, yamls=YAMLS, python: str | None = None) -> dict:
    from ..synthetic_pt import write_ultralytics_checkpoint

    python = python or sys.executable
    litert = subprocess.run([python, "-c", "import litert_torch"], capture_output=True, text=True).returncode == 0
    direct = ("direct_jax", "direct_torch", "direct_tensorflow")
    sec = {}
    for y in yamls:
        pt = os.path.join(tmp, f"{y}.pt")
        write_ultralytics_checkpoint(os.path.join(tmp, f"{y}-last.pt"), f"{y}.yaml", stripped=pt)
        out = os.path.join(tmp, f"tflite-{y}")
        convert = [sys.executable, "-m", "pyloader.cli", "convert", pt, "-o", out, "--format", "tflite", "--decode",
                   "-q"]  # decoded, as Ultralytics' export
        commands = {label: (convert + ["--tflite-writer", writer], {"KERAS_BACKEND": backend}, out)
                    for label, writer, backend in zip((*direct, "converter"), ("direct",) * 3 + ("converter",),
                                                      ("jax", "torch", "tensorflow", "tensorflow"))}
        if litert:
            commands["ultralytics_litert"] = ([python, "-c", _EXPORT, pt], {}, os.path.join(tmp, f"{y}.tflite"))
        row = _round_robin(commands, repeat, y)
        if not litert:
            row["ultralytics_litert"] = {"error": f"litert-torch is not installed for {python}"}
        times = {k: row[k]["wall_median_s"] for k in direct if "wall_median_s" in row[k]}
        best = min(times, key=times.get) if times else None
        row["fastest_direct"] = best
        for other in ("converter", "ultralytics_litert"):
            row[f"speedup_vs_{other}"] = ratio(row[other].get("wall_median_s"), times.get(best))
        sec[y] = row
    return sec
