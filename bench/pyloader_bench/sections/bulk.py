"""The bulk section: N checkpoints of one architecture through pyloader.convert vs N separate load + save,
and per output format with templates against a floor."""

from __future__ import annotations

import os
import shutil
import statistics

from pyloader.darknet.synthetic import write_weights

from ..driver import have, log, ratio, run_worker
from ..models import param_bytes

BULK_FORMATS = ("keras", "weights.h5", "savedmodel", "tflite")


def bench_bulk(name, m, count, tmp, formats=BULK_FORMATS, unhashed: bool = True):
    folder = os.path.join(tmp, "bulk")
    os.makedirs(folder, exist_ok=True)
    sources = []
    for i in range(count):
        s = os.path.join(folder, f"{name}_{i:02d}.weights")
        if m.get("generated"):
            write_weights(s, m["cfg"], seed=i + 1)
        else:
            shutil.copyfile(m["weights"], s)
        sources.append(s)
    sec = {"model": name, "checkpoints": count, "methods": {}, "param_bytes": param_bytes(sources[0], m["cfg"])}
    for meth in ("bulk_convert", "bulk_separate"):
        if meth == "bulk_convert" and not have("pyloader.bulk"):
            sec["methods"][meth] = {"error": "not available: pyloader.convert is missing"}
            continue
        log(f"bulk/{name}/{meth} x{count}")
        r = run_worker({"method": meth, "sources": sources, "cfg": m["cfg"], "out": os.path.join(tmp, "bulk_out")})
        if "error" not in r:
            r["median_per_checkpoint_s"] = statistics.median(r["per_checkpoint_s"])
            r["mean_per_checkpoint_s"] = r["total_s"] / count
            if r["save_s"]:
                r["median_save_s"] = statistics.median(r["save_s"])
        sec["methods"][meth] = r
    sec["formats"] = {}
    if have("pyloader.outputs"):
        # each format as convert runs it (the source's SHA-256 in every output's metadata), then without the hash
        # (`--no-source-hash`): the hash runs beside the read and the write and bounds the run on a big model
        for fmt, hashed in [(f, True) for f in formats] + [(f, False) for f in formats if unhashed]:
            label = fmt if hashed else f"{fmt} --no-source-hash"
            log(f"bulk/{name}/{label} (templates) x{count}")
            r = run_worker({"method": "bulk_format", "format": fmt, "sources": sources, "cfg": m["cfg"],
                            "out": os.path.join(tmp, "bulk_out"), "repeat": 3, "source_hash": hashed})
            if "error" not in r and r.get("median_after_first_s") and r.get("floor_s"):
                r["after_first_over_floor"] = r["median_after_first_s"] / r["floor_s"]
                if hashed:  # the hash runs beside read + write: the floor with it
                    r["after_first_over_floor_with_hash"] = r["median_after_first_s"] / max(r["floor_s"],
                                                                                            r["sha256_s"])
            if "error" not in r:
                r["peak_over_param_bytes"] = r["peak_above_baseline_bytes"] / sec["param_bytes"]
            sec["formats"][label] = r
    shutil.rmtree(folder, ignore_errors=True)
    a = sec["methods"]["bulk_convert"].get("mean_per_checkpoint_s")
    b = sec["methods"]["bulk_separate"].get("mean_per_checkpoint_s")
    sec["speedup_convert_vs_separate"] = ratio(b, a)
    return sec
