"""The Darknet sections: the weights stage (file -> arrays) and the ready keras.Model."""

from __future__ import annotations

import os

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
