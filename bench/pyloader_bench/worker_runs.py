"""Workers that time their own runs: bulk conversion, one format per run, one Keras backend per run, and
where pyloader.load's time goes."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time

from .probes import clear_keras, peak_bytes, reset_peak, status_bytes, tree_bytes


def bulk(spec: dict) -> dict:
    import keras  # noqa: F401

    import pyloader
    import pyloader.darknet.model  # noqa: F401

    sources, cfg, out = spec["sources"], spec["cfg"], spec["out"]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    base = status_bytes("VmRSS")
    reset = reset_peak()
    t0 = time.perf_counter()
    per, load_s, save_s = [], [], []
    if spec["method"] == "bulk_convert":
        from pyloader.bulk import convert

        results = convert(sources, out, cfg=cfg, format="keras", overwrite=True)
        bad = [r for r in results if r.status != "converted"]
        if bad:
            raise RuntimeError(f"convert: {bad[0].source}: {bad[0].status}: {bad[0].reason}")
        per = [r.seconds for r in results]
    else:
        for s in sources:
            a = time.perf_counter()
            model = pyloader.load(s, cfg)
            b = time.perf_counter()
            model.save(os.path.join(out, os.path.splitext(os.path.basename(s))[0] + ".keras"))
            c = time.perf_counter()
            load_s.append(b - a)
            save_s.append(c - b)
            per.append(c - a)
            del model
            clear_keras()
    total = time.perf_counter() - t0
    peak = peak_bytes()
    out_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    shutil.rmtree(out, ignore_errors=True)
    return {"total_s": total, "per_checkpoint_s": per, "load_s": load_s, "save_s": save_s,
            "peak_above_baseline_bytes": peak - base, "peak_reset": reset, "output_bytes": out_bytes}


def bulk_format(spec: dict) -> dict:
    """pyloader.convert of every source to one format (templates on): per-checkpoint seconds, and the floor
    for a checkpoint after the first: the same run without the conversion (pyloader.read of each source + writing
    its output's bytes to a new file, kept)."""
    import numpy as np

    import pyloader
    from pyloader.bulk import convert
    from pyloader.bulk.worker import import_framework
    from pyloader.metadata import file_sha256

    sources, cfg, out, fmt = spec["sources"], spec["cfg"], spec["out"], spec["format"]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    import_framework(fmt)  # Keras / TensorFlow's own memory is not the conversion's
    base = status_bytes("VmRSS")
    reset = reset_peak()
    rss_after, rss = {}, {}

    def progress(r, done, total, *_):  # resident memory after 10 and 100 checkpoints (and the last)
        if done in (10, 100, total):
            rss[done] = status_bytes("VmRSS")
            rss_after[str(done)] = rss[done] - base

    t0 = time.perf_counter()
    results = convert(sources, out, cfg=cfg, format=fmt, overwrite=True, progress=progress,
                      source_hash=spec.get("source_hash", True))
    total = time.perf_counter() - t0
    peak = peak_bytes()
    bad = [r for r in results if r.status != "converted"]
    if bad:
        raise RuntimeError(f"convert: {bad[0].source}: {bad[0].status}: {bad[0].reason}")
    by_src = {r.source: r for r in results}
    per = [by_src[s].seconds for s in sources]
    notes = sorted({r.note for r in results if r.note})
    nbytes = tree_bytes(by_src[sources[-1]].output)
    buf = np.ones(nbytes, np.uint8)  # pre-faulted
    # The floor: the same run without the conversion. Its outputs removed (the state it started in), each source
    # after the first is read (pyloader.read) and its output's bytes written to a new file, kept as the run keeps
    # its outputs: writing into the page cache costs what it costs the run (a file deleted at once, whose pages
    # the next write gets back, is cheaper: measured below as well).
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    null_read, null_write = [], []
    for i, src in enumerate(sources[1:]):
        a = time.perf_counter()
        arrays = pyloader.read(src, cfg)
        b = time.perf_counter()
        del arrays
        with open(os.path.join(out, f"floor{i}"), "wb") as f:
            f.write(memoryview(buf))
        null_read.append(b - a)
        null_write.append(time.perf_counter() - b)
    null = [r + w for r, w in zip(null_read, null_write)]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    write_s, hash_s = [], []
    for i in range(spec.get("repeat", 3) + 1):
        h = time.perf_counter()
        file_sha256(sources[-1])  # every output's metadata names the source's SHA-256 (hashed beside read + write)
        hash_s.append(time.perf_counter() - h)
        path = os.path.join(out, f"floor{i}")
        c = time.perf_counter()
        with open(path, "wb") as f:
            f.write(memoryview(buf))
        d = time.perf_counter()
        os.unlink(path)
        if i:
            write_s.append(d - c)
    shutil.rmtree(out, ignore_errors=True)
    return {"total_s": total, "per_checkpoint_s": per, "first_s": per[0],
            "median_after_first_s": statistics.median(per[1:]) if len(per) > 1 else None,
            "floor_s": statistics.median(null) if null else None,
            "read_s": statistics.median(null_read) if null else None,
            "write_output_bytes_s": statistics.median(null_write) if null else None,
            "write_deleted_at_once_s": statistics.median(write_s),
            "sha256_s": statistics.median(hash_s[1:]), "output_bytes": nbytes, "notes": notes,
            "peak_above_baseline_bytes": peak - base, "peak_reset": reset, "rss_above_baseline_after": rss_after,
            # flat: the growth of the whole resident memory from 10 to 100 checkpoints, in % of it after 10
            "rss_growth_10_to_100_pct": (rss[100] - rss[10]) / rss[10] * 100 if 10 in rss and 100 in rss else None}


def backend_load(spec: dict) -> dict:
    """pyloader.load on this process' Keras backend (KERAS_BACKEND): first call, median of the repeats, and
    where a load's time goes: reading (file -> arrays), the symbolic build (Keras layers, no variables
    initialised) and creating the variables from the arrays."""
    import gc

    sys.modules.setdefault("triton", None)  # torch after TensorFlow: see tests/conftest.py
    import keras

    import pyloader
    from pyloader.keras_blocks.assign import _matched

    w, cfg = spec["weights"], spec.get("cfg")
    from pyloader.assemble import build_model, model_arrays
    from pyloader.family import Options
    from pyloader.registry import open_checkpoint

    def read():  # the same path as pyloader.load: the family's plan and the arrays its model takes
        family, plan = open_checkpoint(w, cfg, Options())
        return (family, plan), model_arrays(family, plan, True)

    def build(arch):
        return build_model(*arch, Options())

    total, parts = [], {"read": [], "build": [], "variables": []}
    first = None
    for i in range(spec["repeat"] + 1):
        t0 = time.perf_counter()
        model = pyloader.load(w, cfg) if cfg else pyloader.load(w)
        t = time.perf_counter() - t0
        del model
        clear_keras()
        if i == 0:
            first = t
            continue
        total.append(t)
        a = time.perf_counter()
        arch, arrays = read()
        b = time.perf_counter()
        with keras.StatelessScope(initialize_variables=False):
            model = build(arch)
        c = time.perf_counter()
        for v, arr in _matched(model, arrays, w).values():
            v._initialize(arr)
        d = time.perf_counter()
        parts["read"].append(b - a)
        parts["build"].append(c - b)
        parts["variables"].append(d - c)
        del model, arrays
        clear_keras()
        gc.collect()
    return {"backend": keras.backend.backend(), "first_call_s": first, "warm_s": total,
            "warm_median_s": statistics.median(total),
            "breakdown_s": {k: statistics.median(v) for k, v in parts.items()}}


def breakdown(spec: dict) -> dict:
    """Where pyloader.load's time goes (darknet): parse, read, build, assign; and the build with zero
    initializers instead of Keras' random ones (a prototype of a cheaper build)."""
    import keras

    from pyloader.darknet.cfg import parse_network
    from pyloader.darknet.model import build_darknet_model
    from pyloader.darknet.weights import read_darknet
    from pyloader.keras_blocks.assign import assign_weights

    w, cfg = spec["weights"], spec["cfg"]
    out = {k: [] for k in ("parse", "read", "build", "assign", "build_zeros_init", "build_stateless_scope")}
    for i in range(spec["repeat"] + 1):
        t = [time.perf_counter()]
        net = parse_network(cfg)
        t.append(time.perf_counter())
        data = read_darknet(w, network=net)
        t.append(time.perf_counter())
        model = build_darknet_model(net)
        t.append(time.perf_counter())
        built = {layer.name for layer in model.layers}
        assign_weights(model, {k: v for k, v in data.arrays.items() if k.split("/", 1)[0] in built}, w)
        t.append(time.perf_counter())
        del model, data
        clear_keras()
        # Prototype: every initializer returns zeros (what a loader that overwrites all variables needs).
        from keras.src.initializers import random_initializers as RI

        saved = RI.VarianceScaling.__call__
        RI.VarianceScaling.__call__ = lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype=dtype)
        try:
            t.append(time.perf_counter())
            model = build_darknet_model(net)
            t.append(time.perf_counter())
        finally:
            RI.VarianceScaling.__call__ = saved
        del model
        clear_keras()
        t.append(time.perf_counter())
        try:
            with keras.StatelessScope():
                model = build_darknet_model(net)
            t.append(time.perf_counter())
            del model
        except Exception as e:  # noqa: BLE001
            out["stateless_error"] = f"{type(e).__name__}: {e}"[:200]
            t.append(float("nan"))
        clear_keras()
        if i == 0:
            continue  # warm-up
        out["parse"].append(t[1] - t[0])
        out["read"].append(t[2] - t[1])
        out["build"].append(t[3] - t[2])
        out["assign"].append(t[4] - t[3])
        out["build_zeros_init"].append(t[6] - t[5])
        out["build_stateless_scope"].append(t[8] - t[7])
    return {k: (statistics.median(v) if isinstance(v, list) and v else v) for k, v in out.items()}


def load_repeated(spec: dict) -> dict:
    """pyloader.load of a checkpoint, or with `keras`: keras.saving.load_model of a .keras, on this process' Keras
    backend: the first call (fresh process, imports done) and `repeat` later calls written as users write them
    (`model = load(...)`: the previous model is held while the next loads). pyloader's also says how many models
    it built (the rest were reused, pyloader.model_pool) and the median of reading the arrays alone; with `save`,
    it writes its model there as .keras after the measurements."""
    sys.modules.setdefault("triton", None)  # torch after TensorFlow: see tests/conftest.py
    import keras

    if spec.get("keras"):
        import pyloader  # noqa: F401 - registers pyloader's Keras classes, which its .keras files name

        def op():
            return keras.saving.load_model(spec["keras"])
    else:
        import pyloader
        from pyloader.assemble import model_arrays
        from pyloader.family import Options
        from pyloader.registry import open_checkpoint

        w, cfg = spec["weights"], spec.get("cfg")

        def op():
            return pyloader.load(w, cfg) if cfg else pyloader.load(w)
    times = []
    model = None
    for _ in range(spec["repeat"] + 1):
        t0 = time.perf_counter()
        model = op()
        times.append(time.perf_counter() - t0)
    out = {"backend": keras.backend.backend(), "first_call_s": times[0], "warm_s": times[1:],
           "warm_median_s": statistics.median(times[1:])}
    if not spec.get("keras"):
        from pyloader import model_pool

        reads = []
        for _ in range(spec["repeat"]):
            t0 = time.perf_counter()
            family, plan = open_checkpoint(w, cfg, Options())
            model_arrays(family, plan, True)  # dropped at once, as a load drops each array once assigned
            reads.append(time.perf_counter() - t0)
        out.update(models_built=model_pool.COUNTS["built"], models_reused=model_pool.COUNTS["reused"],
                   read_median_s=statistics.median(reads))
        if spec.get("save"):
            model.save(spec["save"])
    return out
