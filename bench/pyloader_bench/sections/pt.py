"""The .pt sections: YOLOv5 (pyloader.load vs torch.load + yolov5's TensorFlow builder) and Ultralytics
(pyloader.load vs the Ultralytics route to a model)."""

from __future__ import annotations

import os
import subprocess
import sys

from ..driver import have, log, ratio, run_worker, summarize

ULTRALYTICS_YAMLS = ("yolov8x.yaml", "yolo11x.yaml")
# one model per family and task of issue 20 (its smallest scale), the section's --small set
ULTRALYTICS_FAMILIES = ("yolo26n.yaml", "yolov10n.yaml", "yolo12n.yaml", "yolov9t.yaml", "yolov6n.yaml", "yolov3-tiny.yaml",
                        "yolov8n-ghost.yaml", "rtdetr-l.yaml", "yolo11n-seg.yaml", "yolo11n-pose.yaml", "yolo11n-obb.yaml",
                        "yolo11n-cls.yaml", "yolo26n-seg.yaml", "yolo26n-pose.yaml", "yolo26n-obb.yaml")
_TASK_MODELS = {"-seg": "SegmentationModel", "-pose": "PoseModel", "-obb": "OBBModel", "-cls": "ClassificationModel",
                "-sem": "SemanticSegmentationModel", "-depth": "DepthModel", "rtdetr-": "RTDETRDetectionModel"}


def task_model(yaml_name: str) -> str:
    """The ultralytics.nn.tasks class that builds `yaml_name` (as Ultralytics picks it from the yaml's name)."""
    return next((m for k, m in _TASK_MODELS.items() if k in yaml_name), "DetectionModel")


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
                "stripped=sys.argv[1], task_model=sys.argv[3]))")
        p = subprocess.run([sys.executable, "-c", code, path, y, task_model(y)], capture_output=True, text=True,
                           timeout=1800, env=dict(os.environ, YOLO_OFFLINE="1"))
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
        log(f"ultralytics/{y} bulk templates")
        r["bulk_template"] = _bulk_template(path, tmp)
        sec["models"][y] = r
        os.remove(path)
    return sec


def _bulk_template(path: str, tmp: str) -> dict:
    """`pyloader convert` of the checkpoint and a copy (one architecture) to .keras at 128x128: both converted, the
    second from the first's template (no exporter note under -v), and the run's seconds."""
    import shutil
    import time

    src = os.path.join(tmp, "bulk-src")
    os.makedirs(src)
    try:
        for name in ("a.pt", "b.pt"):
            shutil.copy(path, os.path.join(src, name))
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pyloader", "convert", src, "-o", os.path.join(src, "out"),
                            "--input-size", "128", "-v", "-q"], capture_output=True, text=True, timeout=1800,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        seconds = time.perf_counter() - t0
        written = sorted(os.listdir(os.path.join(src, "out"))) if os.path.isdir(os.path.join(src, "out")) else []
    finally:
        shutil.rmtree(src, ignore_errors=True)
    notes = [line.split(": ", 2)[-1] for line in p.stderr.splitlines()
             if line.startswith("pyloader convert:") and ": exporter" in line]
    ok = p.returncode == 0 and written == ["a.keras", "b.keras"] and not notes
    return {"ok": ok, "seconds": round(seconds, 2), "notes": notes,
            **({} if ok else {"error": (p.stdout + p.stderr).strip()[-300:]})}
