"""The backends section: pyloader.load on each Keras backend, with where its time goes."""

from __future__ import annotations

from ..driver import have, log, run_worker

BACKENDS = ("tensorflow", "jax", "torch")


def bench_backends(targets: dict, repeat: int) -> dict:
    """pyloader.load per Keras backend for each {label: (weights, cfg or None)}."""
    sec = {}
    for label, (w, cfg) in targets.items():
        sec[label] = {}
        for b in BACKENDS:
            if b != "tensorflow" and not have(b):
                sec[label][b] = {"error": f"{b} is not installed"}
                continue
            log(f"backends/{label}/{b}")
            sec[label][b] = run_worker({"method": "backend_load", "weights": w, "cfg": cfg, "repeat": repeat,
                                        "env": {"KERAS_BACKEND": b}})
    return sec
