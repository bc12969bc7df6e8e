"""The goals the benchmark checks, each with what was measured and whether it was met."""

from __future__ import annotations

import os


def targets(res: dict) -> list:
    t = []
    big = "yolov4-size" if "yolov4-size" in res["weights"] else next(iter(res["weights"]), None)

    def add(name, measured, goal, met, note=""):
        t.append({"target": name, "measured": measured, "goal": goal, "met": met, "note": note})

    if big:
        w = res["weights"][big]
        ms = w["methods"]
        # side by side in one process (alternating rounds) where measured, else the per-method processes
        side = w.get("side_by_side", {}).get("fold_bn=True", {})
        ratios = side if "pyloader_over_memcpy" in side else w["ratios"]["warm"]
        r = ratios["pyloader_over_memcpy"]
        add(f"weights stage ({big}) within 1.5x of memcpy (warm)", r, 1.5, None if r is None else r <= 1.5)
        o = ratios.get("opencv_over_pyloader")
        add(f"weights stage ({big}) faster than OpenCV (warm)", o, 1.0, None if o is None else o > 1.0,
            "" if o else ms["opencv"].get("error", ""))
        mdl = res["model"].get(big, {})
        s = mdl.get("speedup_pyloader_vs_keras")
        add(f"pyloader.load ({big}) >= 5x faster than Keras build + load_weights(.weights.h5)", s, 5.0,
            None if s is None else s >= 5.0)
        pb = res["models"][big]["param_bytes"]
        peak = (mdl.get("methods", {}).get("pyloader_load") or {}).get("peak_above_baseline_bytes")
        pr = peak / pb if peak else None
        add(f"peak memory of pyloader.load ({big}) <= 1.3x parameter bytes above baseline", pr, 1.3,
            None if pr is None else pr <= 1.3)
        peak = ms["pyloader_read"].get("peak_above_baseline_bytes")
        pr = peak / pb if peak else None
        add(f"peak memory of pyloader.read ({big}) <= 1.3x parameter bytes above baseline", pr, 1.3,
            None if pr is None else pr <= 1.3)
    for label, per in (res.get("load") or {}).items():
        r = per.get("tensorflow") or {}
        s = r.get("speedup_repeated")
        add(f"pyloader.load ({label}) >= 5x faster than keras.saving.load_model of its .keras (TensorFlow, "
            "repeated calls)", s, 5.0, None if s is None else s >= 5.0,
            (r.get("keras_load_model") or r.get("pyloader_load") or {}).get("error", ""))
    pt = res.get("pt") or {}
    s = pt.get("speedup_pyloader_vs_yolov5_tf")
    label = os.path.basename(pt.get("path", "")) or "YOLOv5x"
    add(f".pt ({label}) >= 10x faster than torch.load + yolov5's TF builder", s, 10.0, None if s is None else s >= 10,
        pt.get("error", ""))
    peak = ((pt.get("methods") or {}).get("pt_pyloader") or {}).get("peak_above_baseline_bytes")
    pr = peak / pt["param_bytes"] if peak and pt.get("param_bytes") else None
    add(f"peak memory of pyloader.load ({label}) <= 1.3x parameter bytes above baseline", pr, 1.3,
        None if pr is None else pr <= 1.3, pt.get("error", ""))
    for name, row in (res.get("pickle") or {}).items():
        v = row["native"]["mb_per_s"]
        add(f"pickle stage >= 20 MB/s: {name}", v, 20.0, v >= 20.0)
    ul = res.get("ultralytics") or {}
    sp = [m.get("speedup_pyloader_vs_ultralytics") for m in (ul.get("models") or {}).values()]
    s = min(sp) if sp and all(sp) else None
    add("Ultralytics .pt (" + ", ".join(ul.get("models") or ["yolov8x, yolo11x"]) + ") >= 10x faster than "
        + ul.get("route", "the Ultralytics route"), s, 10.0, None if s is None else s >= 10, ul.get("error", ""))
    for model, r in (res.get("tflite_direct") or {}).items():
        ul = (r.get("ultralytics_litert") or {}).get("wall_median_s")
        for backend in ("jax", "tensorflow"):
            mine = (r.get(f"direct_{backend}") or {}).get("wall_median_s")
            s = ul / mine if ul and mine else None
            add(f"one checkpoint ({model}) to TFLite, fresh process, >= 5x faster than Ultralytics' "
                f"export(format='litert') (Keras' {backend} backend)", s, 5.0, None if s is None else s >= 5.0,
                r.get("error", "") or (r.get("ultralytics_litert") or {}).get("error", ""))
    bulk = res.get("bulk") or {}
    bc = (bulk.get("methods") or {}).get("bulk_convert") or {}
    bs = (bulk.get("methods") or {}).get("bulk_separate") or {}
    bname = bulk.get("model")
    ref = None
    if bname and bs.get("median_save_s") and bname in res["weights"]:
        ref = res["weights"][bname]["methods"]["pyloader_read"].get("warm_median_s", 0) + bs["median_save_s"]
    per = bc.get("mean_per_checkpoint_s")
    r = per / ref if per and ref else None
    add("bulk per-checkpoint time within 2x of (weights stage + writing the output)", r, 2.0,
        None if r is None else r <= 2.0, bc.get("error", ""))
    for fmt, f in (bulk.get("formats") or {}).items():
        r = f.get("after_first_over_floor")
        add(f"bulk {fmt} (templates): per checkpoint after the first within 1.5x of (read + writing its bytes)", r,
            1.5, None if r is None else r <= 1.5, f.get("error", ""))
        r = f.get("peak_over_param_bytes")
        add(f"bulk {fmt}: peak memory above baseline at most 3x one checkpoint's parameter bytes", r, 3.0,
            None if r is None else r <= 3.0, f.get("error", ""))
    return t
