"""The tflite_direct section (issue 21 item 5): one checkpoint to a float32 .tflite in a fresh process, wall time
with the imports: `pyloader convert --format tflite` with the direct writer (Keras on JAX, which imports no
TensorFlow, and on TensorFlow) and with TensorFlow's converter (--tflite-writer converter), beside Ultralytics'
own `YOLO(pt).export(format="litert")` (litert-torch; reported as an error where it is not installed)."""

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


def _timed(cmd: list, env: dict, repeat: int, clean: str) -> dict:
    times = []
    for _ in range(repeat):
        shutil.rmtree(clean, ignore_errors=True)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=1800)
        if p.returncode != 0:
            return {"error": (p.stderr or p.stdout).strip().splitlines()[-1][:300] if (p.stderr or p.stdout) else
                    f"exit {p.returncode}"}
        times.append(time.perf_counter() - t0)
    return {"wall_median_s": statistics.median(times), "wall_s": times}


def bench_tflite_direct(tmp: str, repeat: int = 3, yamls=YAMLS) -> dict:
    from ..synthetic_pt import write_ultralytics_checkpoint

    sec = {}
    for y in yamls:
        pt = os.path.join(tmp, f"{y}.pt")
        write_ultralytics_checkpoint(os.path.join(tmp, f"{y}-last.pt"), f"{y}.yaml", stripped=pt)
        out = os.path.join(tmp, f"tflite-{y}")
        convert = [sys.executable, "-m", "pyloader.cli", "convert", pt, "-o", out, "--format", "tflite", "-q"]
        row = {}
        for label, writer, backend in (("direct_jax", "direct", "jax"), ("direct_tensorflow", "direct", "tensorflow"),
                                       ("converter", "converter", "tensorflow")):
            log(f"tflite_direct/{y}/{label}")
            row[label] = _timed(convert + ["--tflite-writer", writer], {"KERAS_BACKEND": backend}, repeat, out)
        log(f"tflite_direct/{y}/ultralytics_litert")
        try:
            import litert_torch  # noqa: F401
        except ImportError as e:
            row["ultralytics_litert"] = {"error": f"litert-torch is not installed ({e})"}
        else:
            row["ultralytics_litert"] = _timed([sys.executable, "-c", _EXPORT, pt], {}, repeat,
                                               os.path.join(tmp, f"{y}_saved_model"))
        best = row["direct_jax"].get("wall_median_s")
        row["speedup_vs_converter"] = ratio(row["converter"].get("wall_median_s"), best)
        row["speedup_vs_ultralytics"] = ratio(row["ultralytics_litert"].get("wall_median_s"), best)
        sec[y] = row
    return sec
