"""The load section: pyloader.load against keras.saving.load_model of the same model's .keras, side by side per
Keras backend, each in a fresh process: the first call and the median of repeated calls."""

from __future__ import annotations

import os

from ..driver import have, log, ratio, run_worker
from .backends import BACKENDS


def bench_load(targets: dict, repeat: int, tmp: str) -> dict:
    """For each {label: (weights, cfg or None)}: per backend, pyloader.load and load_model of the .keras that
    pyloader's model (TensorFlow backend) saved."""
    sec = {}
    for label, (w, cfg) in targets.items():
        sec[label] = {}
        path = os.path.join(tmp, f"load-{label}.keras")
        for b in BACKENDS:
            if b != "tensorflow" and not have(b):
                sec[label][b] = {"error": f"{b} is not installed"}
                continue
            env = {"KERAS_BACKEND": b}
            log(f"load/{label}/{b}/pyloader")
            ours = run_worker({"method": "load_repeated", "weights": w, "cfg": cfg, "repeat": repeat, "env": env,
                               "save": None if os.path.exists(path) else path})
            if not os.path.exists(path):
                sec[label][b] = {"pyloader_load": ours, "keras_load_model": {"error": "no .keras written"}}
                continue
            log(f"load/{label}/{b}/keras")
            theirs = run_worker({"method": "load_repeated", "keras": path, "repeat": repeat, "env": env})
            sec[label][b] = {"pyloader_load": ours, "keras_load_model": theirs,
                             "speedup_repeated": ratio(theirs.get("warm_median_s"), ours.get("warm_median_s")),
                             "speedup_first_call": ratio(theirs.get("first_call_s"), ours.get("first_call_s"))}
        if os.path.exists(path):
            os.unlink(path)
    return sec
