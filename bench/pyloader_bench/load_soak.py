"""`python -m pyloader_bench.load_soak [--count 1000] [--warm 100] [--files 2]`: a soak of `pyloader.load`.

`count` loads in one process of a tiny Darknet model (pyloader.darknet.synthetic.tiny_cfg; `files` checkpoints of it,
synthetic weights, one seed each, loaded in turn), written as users write it (`model = pyloader.load(f)`: the
previous model is held while the next one loads), each model run once on an image. Prints JSON: the resident
memory after `warm` loads and at the end, its growth, Keras' global state (its name counters), the models built
(the rest were reused, pyloader.model_pool) and the seconds per load; exits 1 when the resident memory grew by
more than 5% after the warm-up."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from .soak import print_report

RSS_GROWTH = 0.05


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _keras_state() -> int:
    """Entries in Keras' global state (name counters and the like): what would grow with every new layer."""
    from keras.src.backend.common import global_state

    return sum(len(v) if hasattr(v, "__len__") else 1 for v in global_state.GLOBAL_STATE_TRACKER.__dict__.values())


def load_soak(count: int, warm: int, files: int, work: str) -> dict:
    sys.modules.setdefault("triton", None)  # see tests/conftest.py
    import numpy as np

    import pyloader
    from pyloader import model_pool

    from .soak import write_sources

    sources = write_sources(work, files)
    cfg = os.path.join(work, "tiny.cfg")
    image = np.zeros((1, 32, 32, 3), np.float32)
    built = model_pool.COUNTS["built"]
    seconds, marks = [], {}
    model = None
    for i in range(count):
        t0 = time.perf_counter()
        model = pyloader.load(sources[i % files], cfg)
        seconds.append(time.perf_counter() - t0)
        model(image)
        if i + 1 == warm:
            marks["after_warm"] = (_rss(), _keras_state())
    marks["end"] = (_rss(), _keras_state())
    del model
    growth = marks["end"][0] / marks["after_warm"][0] - 1
    return {"loads": count, "warm_up": warm, "files": files, "models_built": model_pool.COUNTS["built"] - built,
            "rss_mb": {k: round(v[0] / 2**20, 1) for k, v in marks.items()}, "rss_growth": round(growth, 4),
            "keras_global_state_entries": {k: v[1] for k, v in marks.items()},
            "first_load_s": round(seconds[0], 4), "median_load_s": round(statistics.median(seconds[1:] or seconds), 4),
            "problems": [f"resident memory grew {growth:.1%} after {warm} loads"] if growth > RSS_GROWTH else []}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyloader_bench.load_soak", description=__doc__.split("\n\n")[1])
    ap.add_argument("--count", type=int, default=1000, help="loads (default 1000)")
    ap.add_argument("--warm", type=int, default=100, help="loads before the first memory reading (default 100)")
    ap.add_argument("--files", type=int, default=2, help="checkpoints loaded in turn (default 2)")
    args = ap.parse_args(argv)
    if not 0 < args.warm < args.count:
        ap.error("--warm must be between 0 and --count")
    with tempfile.TemporaryDirectory(prefix="pyloader-load-soak-") as work:
        return print_report(load_soak(args.count, args.warm, max(1, args.files), work), "load_soak")


if __name__ == "__main__":
    sys.exit(main())
