"""`pyloader bench` / `python bench/run.py` / `python -m pyloader_bench`: the options and one run of the
sections asked for."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import pyloader_bench

from .driver import have, log
from .machine import cold_method, machine
from .models import param_bytes, prepare_default
from .report import write_results
from .sections.backends import bench_backends
from .sections.bulk import BULK_FORMATS, bench_bulk
from .sections.darknet import bench_model, bench_weights, bench_weights_pt
from .sections.load import bench_load
from .sections.pickle_stage import bench_pickle
from .sections.pt import ULTRALYTICS_FAMILIES, ULTRALYTICS_YAMLS, bench_pt, bench_ultralytics
from .sections.tflite_direct import bench_tflite_direct
from .targets import targets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", help="a .weights (with --cfg, or the .cfg beside it) and/or a .pt; "
                                                 "default: the embedded synthetic models")
    parser.add_argument("--cfg", help="the .cfg of the .weights given")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per measurement (median; default 5)")
    parser.add_argument("--small", action="store_true",
                        help="quick mode: the small embedded model only, 2 bulk checkpoints, no breakdown, no .pt "
                             "section unless --sections names it (then YOLOv5n)")
    parser.add_argument("--out", default=os.path.join("bench", "results"),
                        help="folder for results.json, results.md, chart.png (default bench/results)")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset of weights,model,pt,ultralytics,pickle,backends,load,bulk,tflite_direct (default: "
                             "all but tflite_direct; with --small: weights,model,pickle,bulk)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold page cache runs")
    parser.add_argument("--bulk-count", type=int, default=None, help="checkpoints in the bulk section (default 20)")
    parser.add_argument("--bulk-model", default=None, help="embedded model for the bulk section (default "
                                                           "yolov4-size; small with --small)")
    parser.add_argument("--pt-yaml", default=None, help="yolov5 yaml for the default .pt (default yolov5x.yaml)")
    parser.add_argument("--ultralytics-yaml", action="append", default=None,
                        help="Ultralytics yaml(s) for the ultralytics section (default yolov8x.yaml, yolo11x.yaml and one "
                             "model per family and task at its smallest scale; with --small only the latter)")
    parser.add_argument("--litert-python", default=None,
                        help="tflite_direct: the Python that runs Ultralytics' export(format='litert') (default: this "
                             "one; litert-torch may need a venv of its own, its pins differ from TensorFlow's)")
    parser.add_argument("--tmp", default=None, help="where to write generated checkpoints (default: a temp dir)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyloader bench", description=pyloader_bench.__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # files before and after --cfg
    default = "weights,model,pickle,bulk" if args.small else "weights,model,pt,ultralytics,pickle,backends,load,bulk"
    sections = {s.strip() for s in (args.sections or default).split(",") if s.strip()}
    repeat = max(1, args.repeat)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="pyloader-bench-", dir=args.tmp)
    cold, cold_info = (None, "skipped (--no-cold)") if args.no_cold else cold_method()
    res = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "repeat": repeat, "cold": cold, "cold_info": cold_info,
           "machine": machine(), "models": {}, "weights": {}, "model": {}, "pt": None, "ultralytics": None,
           "pickle": None, "bulk": None, "backends": {}, "load": {}}
    try:
        darknet, pt, pt_paths = _inputs(args, sections, tmp)
        for name, m in darknet.items():
            res["models"][name] = {"description": m["description"], "file_bytes": os.path.getsize(m["weights"]),
                                   "param_bytes": param_bytes(m["weights"], m["cfg"])}
        if "weights" in sections:
            for name, m in darknet.items():
                res["weights"][name] = bench_weights(name, m, repeat, cold, tmp)
            if not args.small and not args.files:
                res["weights_pt"] = bench_weights_pt(repeat, tmp)
        if "model" in sections:
            for name, m in darknet.items():
                res["model"][name] = bench_model(name, m, repeat, tmp, breakdown=not args.small)
        if "pt" in sections:
            if pt is None:
                res["pt"] = {"error": "no .pt given"}
            elif "error" in pt:
                res["pt"] = pt
            else:
                res["pt"] = {"description": pt["description"], "path": pt["path"],
                             "param_bytes": param_bytes(pt["path"], None), **bench_pt(pt, repeat)}
        if "ultralytics" in sections:
            if args.files:
                res["ultralytics"] = {"error": "skipped (files given)"}
            else:
                yamls = args.ultralytics_yaml or list(ULTRALYTICS_FAMILIES if args.small else
                                                      ULTRALYTICS_YAMLS + ULTRALYTICS_FAMILIES)
                res["ultralytics"] = bench_ultralytics(yamls, repeat, tmp)
        else:
            res["ultralytics"] = {"error": "skipped (not in --sections" + (", --small)" if args.small else ")")}
        if "pickle" in sections:
            res["pickle"] = bench_pickle(pt_paths, repeat, args.small)
        loads = {}
        if darknet:
            big = "yolov4-size" if "yolov4-size" in darknet else next(iter(darknet))
            loads[big] = (darknet[big]["weights"], darknet[big]["cfg"])
        if pt and "error" not in pt:
            loads[os.path.basename(pt["path"])] = (pt["path"], None)
        if "backends" in sections:
            res["backends"] = bench_backends(loads, repeat)
        if "load" in sections:
            res["load"] = bench_load(loads, repeat, tmp)
        if "tflite_direct" in sections:  # only where named: minutes of fresh processes
            res["tflite_direct"] = bench_tflite_direct(tmp, min(repeat, 3), python=args.litert_python)
        if "bulk" in sections and darknet:
            bname = args.bulk_model or ("small" if args.small or "yolov4-size" not in darknet else "yolov4-size")
            if bname not in darknet:
                bname = next(iter(darknet))
            count = args.bulk_count or (2 if args.small else 20)
            # --small: the cheap formats only (the SavedModel and TFLite exporters take 20 s each even there),
            # each once (not again without the source's hash)
            res["bulk"] = bench_bulk(bname, darknet[bname], count, tmp,
                                     ("keras", "weights.h5") if args.small else BULK_FORMATS, unhashed=not args.small)
        if "pt" not in sections:
            res["pt"] = {"error": "skipped (not in --sections" + (", --small)" if args.small else ")")}
        # --small is a smoke run (the small model, one repeat): the targets are scored on full runs only
        res["smoke"] = bool(args.small)
        res["targets"] = targets(res)
        if args.small:
            for t in res["targets"]:
                t["met"], t["note"] = None, "(not scored: smoke run)"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(res, out)
    return 0


def _inputs(args, sections: set, tmp: str) -> tuple:
    """The files given, or the embedded models written to `tmp`: ({name: Darknet model}, the .pt to measure
    (or None, or {"error": ...}), the .pt paths for the pickle section)."""
    if args.files:
        darknet, pt, pt_paths = {}, None, []
        for f in args.files:
            if f.endswith((".pt", ".pth")):  # the pt section measures the first; pickle measures all
                pt_paths.append(os.path.abspath(f))
                pt = pt or {"path": pt_paths[0], "description": os.path.basename(f)}
            else:
                cfg = args.cfg or os.path.splitext(f)[0] + ".cfg"
                darknet[os.path.splitext(os.path.basename(f))[0]] = {
                    "cfg": os.path.abspath(cfg), "weights": os.path.abspath(f), "description": os.path.basename(f)}
        return darknet, pt, pt_paths
    log(f"writing the embedded models to {tmp}")
    want_pt = bool({"pt", "backends", "load"} & sections) and have("torch") and have("yolov5")
    pt_yaml = args.pt_yaml or ("yolov5n.yaml" if args.small else "yolov5x.yaml")
    d = prepare_default(tmp, args.small, want_pt, pt_yaml)
    darknet, pt = d["darknet"], d["pt"]
    pt_paths = [pt["path"]] if pt and "path" in pt else []
    for m in darknet.values():
        m["generated"] = True
    if pt is None and "pt" in sections:
        pt = {"error": "torch and yolov5 are not installed: no YOLOv5 checkpoint to measure"}
    return darknet, pt, pt_paths

