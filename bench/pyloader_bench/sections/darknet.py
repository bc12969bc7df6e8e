"""The Darknet sections: the weights stage (file -> arrays) and the ready keras.Model; and the weights stage side
by side in one process (Darknet and an Ultralytics .pt, against memcpy of the file and OpenCV's importer)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

from ..driver import have, log, ratio, run_worker, summarize


def bench_weights(name, m, repeat, cold, out):
    nbytes = os.path.getsize(m["weights"])
    sec = {"file_bytes": nbytes, "methods": {}}
    methods = ["memcpy", "memcpy_fresh", "pyloader_read", "numpy"] + (["opencv"] if have("cv2") else [])
    for meth in methods:
        log(f"weights/{name}/{meth}")
        spec = {"method": meth, "weights": m["weights"], "cfg": m["cfg"], "repeat": repeat, "cold": cold}
        sec["methods"][meth] = summarize(run_worker(spec), nbytes)
    if "opencv" not in methods:
        sec["methods"]["opencv"] = {"error": "not available: cv2 is not installed"}
    log(f"weights/{name}/side by side")
    sec["side_by_side"] = {f"fold_bn={fold}": side_by_side_group(m["weights"], m["cfg"], fold, repeat)
                           for fold in (True, False)}
    ms = sec["methods"]
    sec["ratios"] = {}
    for key in ("warm", "cold"):
        ref = ms["pyloader_read"].get(f"{key}_median_s")
        sec["ratios"][key] = {f"{other}_over_pyloader": ratio(ms[other].get(f"{key}_median_s"), ref)
                              for other in ms if other != "pyloader_read"}
        sec["ratios"][key]["pyloader_over_memcpy"] = ratio(ref, ms["memcpy"].get(f"{key}_median_s"))
    return sec


def bench_model(name, m, repeat, out, breakdown=True):  # noqa: FBT002
    sec = {"methods": {}}
    h5 = os.path.join(out, f"{name}.weights.h5")
    for meth in ("pyloader_load", "keras_load_weights"):
        log(f"model/{name}/{meth}")
        spec = {"method": meth, "weights": m["weights"], "cfg": m["cfg"], "h5": h5, "repeat": repeat}
        sec["methods"][meth] = summarize(run_worker(spec))
        if meth == "pyloader_load":
            if not os.path.exists(h5):  # the pyloader_load worker saves it after its measurements
                sec["methods"]["keras_load_weights"] = {"error": "no .weights.h5 (pyloader.load failed)"}
                break
            sec["h5_bytes"] = os.path.getsize(h5)
    if os.path.exists(h5):
        os.unlink(h5)
    a = sec["methods"]["pyloader_load"].get("warm_median_s")
    b = sec["methods"]["keras_load_weights"].get("warm_median_s")
    sec["speedup_pyloader_vs_keras"] = ratio(b, a)
    if breakdown:
        log(f"model/{name}/breakdown")
        sec["pyloader_load_breakdown_s"] = run_worker({"method": "breakdown", "weights": m["weights"],
                                                       "cfg": m["cfg"], "repeat": max(1, min(repeat, 3))})
    return sec


def side_by_side_group(weights, cfg, fold_bn, repeat, opencv=True) -> dict:
    """One fresh process timing memcpy of the file into a warm buffer, memcpy of the output's bytes (as many as
    pyloader.read's arrays hold) between two warm buffers, pyloader.read and (Darknet, cv2 installed) OpenCV's
    readNetFromDarknet in turn, round after round (at least 21 rounds): medians and ratios from the same rounds,
    the load average around them, minor page faults per call."""
    methods = ["memcpy", "memcpy_output", "pyloader_read"] + (["opencv"] if opencv and cfg and have("cv2") else [])
    spec = {"method": "side_by_side", "weights": weights, "cfg": cfg, "fold_bn": fold_bn, "methods": methods,
            "repeat": max(21, repeat)}
    r = run_worker(spec)
    if "error" in r:
        return r
    med = {m: v["median_s"] for m, v in r["methods"].items()}
    r["pyloader_over_memcpy"] = ratio(med["pyloader_read"], med["memcpy"])
    r["pyloader_over_memcpy_output"] = ratio(med["pyloader_read"], med["memcpy_output"])
    if "opencv" in med:
        r["opencv_over_pyloader"] = ratio(med["opencv"], med["pyloader_read"])
    return r


def side_by_side(spec: dict) -> dict:
    """The worker of side_by_side_group (run by pyloader_bench.worker in a fresh process)."""
    import gc
    import resource
    import time

    from .. import worker_ops

    import pyloader

    import numpy as np

    def read():
        return pyloader.read(spec["weights"], spec["cfg"], fold_bn=spec["fold_bn"])

    output_bytes = sum(a.nbytes for a in read().values())
    ops = {}
    for m in spec["methods"]:
        if m == "pyloader_read":
            ops[m] = read
        elif m == "memcpy_output":
            src, dst = np.ones(output_bytes, np.uint8), np.ones(output_bytes, np.uint8)  # pre-faulted
            ops[m] = lambda src=src, dst=dst: np.copyto(dst, src)
        else:
            ops[m] = worker_ops.prepare({"method": m, "weights": spec["weights"], "cfg": spec["cfg"]})[0]
    for op in ops.values():  # first calls, untimed
        op()
    gc.collect()
    times = {m: [] for m in ops}
    faults = {m: [] for m in ops}
    load_before = os.getloadavg()
    for _ in range(spec["repeat"]):
        for m, op in ops.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            obj = op()
            times[m].append(time.perf_counter() - t0)
            faults[m].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            del obj
    return {"rounds": spec["repeat"], "file_bytes": os.path.getsize(spec["weights"]), "output_bytes": output_bytes,
            "load_average_before": load_before[0], "load_average_after": os.getloadavg()[0],
            "methods": {m: {"median_s": statistics.median(ts), "min_s": min(ts),
                            "minor_faults_median": statistics.median(faults[m]), "times_s": ts}
                        for m, ts in times.items()}}


def bench_weights_pt(repeat, tmp, yaml="yolov8s.yaml") -> dict:
    """The weights stage of an Ultralytics .pt: `best.pt` (strip_optimizer'd, fp16 model) and `last.pt` (the
    trainer's checkpoint with its optimizer state) written by synthetic_pt for `yaml`, each side by side with
    memcpy of the file in one process."""
    if not (have("torch") and have("ultralytics")):
        return {"error": "not available: torch and ultralytics are needed"}
    stem = os.path.join(tmp, os.path.splitext(yaml)[0])
    log(f"weights/{yaml} writing best.pt and last.pt")
    code = ("import sys; sys.modules.setdefault('triton', None); from pyloader_bench.synthetic_pt "
            "import write_ultralytics_checkpoint as w; w(sys.argv[1], sys.argv[2], stripped=sys.argv[3])")
    p = subprocess.run([sys.executable, "-c", code, stem + "-last.pt", yaml, stem + "-best.pt"],
                       capture_output=True, text=True, timeout=1800, env=dict(os.environ, YOLO_OFFLINE="1"))
    if p.returncode != 0:
        return {"error": "could not write the checkpoints: " + p.stderr.strip()[-300:]}
    out = {}
    for kind in ("best", "last"):
        path = f"{stem}-{kind}.pt"
        log(f"weights/{yaml} {kind}.pt side by side")
        out[f"{kind}.pt"] = side_by_side_group(path, None, True, repeat, opencv=False)
        os.remove(path)
    return out
