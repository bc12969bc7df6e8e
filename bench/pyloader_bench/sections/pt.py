"""The .pt sections: YOLOv5 (pyloader.load vs torch.load + yolov5's TensorFlow builder) and Ultralytics
(pyloader.load vs the Ultralytics route to a model)."""

from __future__ import annotations

import os
import subprocess
import sys

from ..driver import have, log, ratio, run_worker, summarize

ULTRALYTICS_YAMLS = ("yolov8x.yaml", "yolo11x.yaml")


def bench_pt(pt, repeat):
    sec = {"file_bytes": os.path.getsize(pt["path"]), "methods": {}}
    log("pt/pyloader")
    sec["methods"]["pt_pyloader"] = summarize(run_worker({"method": "pt_pyloader", "weights": pt["path"],
                                                           "repeat": repeat}))
    if have("torch") and have("yolov5"):
        log("pt/torch.load+yolov5 TFModel")
        sec["methods"]["pt_yolov5_tf"] = summarize(run_worker({"method": "pt_yolov5_tf", "weights": pt["path"],
                                                                "repeat": repeat}))
    else:
        sec["methods"]["pt_yolov5_tf"] = {"error": "not available: torch and yolov5 are needed"}
    sec["speedup_pyloader_vs_yolov5_tf"] = ratio(sec["methods"]["pt_yolov5_tf"].get("warm_median_s"),
                                                 sec["methods"]["pt_pyloader"].get("warm_median_s"))
    return sec


def _ultralytics_export_available() -> bool:
    return have("onnx2tf") and have("onnx")


def bench_ultralytics(yamls, repeat, tmp) -> dict:
    """pyloader.load of Ultralytics checkpoints vs the Ultralytics route (see pyloader_bench's doc)."""
    if not (have("torch") and have("ultralytics")):
        return {"error": "not available: torch and ultralytics are needed"}
    sec = {"route": "torch.load + (ema or model).float().fuse().eval()",
           "export_saved_model": ("available (onnx2tf installed) but not run: it converts through ONNX"
                                  if _ultralytics_export_available() else
                                  "not run: needs onnx2tf (not installed; Ultralytics would pip-install it)"),
           "models": {}}
    for y in yamls:
        path = os.path.join(tmp, os.path.splitext(y)[0] + "-best.pt")
        log(f"ultralytics/writing {y}")
        code = ("import sys; sys.modules.setdefault('triton', None); from pyloader_bench.synthetic_pt "
                "import write_ultralytics_checkpoint as w; print('@@P', w(sys.argv[1] + '.last', sys.argv[2], "
                "stripped=sys.argv[1]))")
        p = subprocess.run([sys.executable, "-c", code, path, y], capture_output=True, text=True, timeout=1800,
                           env=dict(os.environ, YOLO_OFFLINE="1"))
        if os.path.exists(path + ".last"):
            os.remove(path + ".last")
        if p.returncode != 0 or not os.path.exists(path):
            sec["models"][y] = {"error": "could not write the checkpoint: " + p.stderr.strip()[-300:]}
            continue
        r = {"description": f"{y} built by the ultralytics package, random weights, written by its trainer's "
                            f"save_model + strip_optimizer (fp16 model)", "file_bytes": os.path.getsize(path),
             "methods": {}}
        log(f"ultralytics/{y} pyloader")
        r["methods"]["ul_pyloader"] = summarize(run_worker({"method": "ul_pyloader", "weights": path, "repeat": repeat}))
        log(f"ultralytics/{y} torch.load + ultralytics model")
        r["methods"]["ul_torch"] = summarize(run_worker({"method": "ul_torch", "weights": path, "repeat": repeat}))
        r["speedup_pyloader_vs_ultralytics"] = ratio(r["methods"]["ul_torch"].get("warm_median_s"),
                                                     r["methods"]["ul_pyloader"].get("warm_median_s"))
        sec["models"][y] = r
        os.remove(path)
    return sec
