"""`pyloader bench`: conversion throughput, side by side, in one run.

Sections (each measured thing runs in a fresh subprocess; times are medians of --repeat runs after one
untimed warm-up run, whose peak resident memory above the process's post-import baseline is reported):

* weights: the weights stage (file -> arrays in Keras layout, batch norm folded): `pyloader.read` vs a plain
  numpy loader (np.fromfile + transpose + fold) vs OpenCV's `cv2.dnn.readNetFromDarknet` vs a copy of the
  file's bytes into a pre-faulted buffer (the floor). Warm page cache, and cold (the file's pages evicted
  before each run with posix_fadvise(DONTNEED), or /proc/sys/vm/drop_caches) where the machine allows.
* model: a ready keras.Model: `pyloader.load` vs building the same model and Keras' own `load_weights` of a
  `.weights.h5` saved from it.
* pt: a YOLOv5 .pt: `pyloader.load` vs `torch.load` + yolov5's own TensorFlow builder (yolov5/models/tf.py
  TFModel), when torch and yolov5 are installed.
* ultralytics: Ultralytics .pt checkpoints (YOLOv8x, YOLO11x as its trainer + strip_optimizer write them),
  when torch and ultralytics are installed: `pyloader.load` vs the Ultralytics route to a model. Its route to
  TensorFlow, `export(format="saved_model")`, goes through onnx2tf and pip-installs it when missing; where
  onnx2tf is not installed that route cannot run offline, and the comparison is `torch.load` + building its
  model as Ultralytics does for inference (`ema` or `model`, `.float().fuse().eval()`).
* bulk: N checkpoints of one architecture through `pyloader.convert` (.keras outputs) vs N separate
  `pyloader.load` + `model.save`.

With no files it measures an embedded default (pyloader/bench_models.py: a small and a YOLOv4-size synthetic
CSP-Darknet, and a YOLOv5x checkpoint built by the yolov5 package when installed) written to a temporary
folder. Results: results.json, results.md and chart.png (matplotlib, optional) in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GB = 1e9

# ---------------------------------------------------------------------------------------------------------
# Worker side: runs in a fresh `python -c` process; prints one JSON line.


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    hwm = _status_bytes("VmHWM")
    if hwm:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def evict(paths, how: str) -> None:
    """Drop `paths` from the page cache."""
    if how == "drop_caches":
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def numpy_read(weights: str, plan: list, fold_bn: bool = True, eps: float = 1e-5) -> dict:
    """A plain numpy Darknet reader: np.fromfile, slice in file order, OIHW -> HWIO, fold batch norm."""
    import numpy as np

    data = np.fromfile(weights, dtype=np.uint8)
    major, minor = (int(v) for v in data[:8].view("<i4"))
    seen = 8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4
    start = 12 + seen
    floats = data[start:start + (data.size - start) // 4 * 4].view("<f4")
    pos = 0
    out = {}
    for item in plan:
        if item[0] == "floats":
            out[item[1]] = floats[pos:pos + item[2]].copy()
            pos += item[2]
            continue
        _, label, n, cpg, kh, kw, bn = item
        bias = floats[pos:pos + n]
        pos += n
        size = n * cpg * kh * kw
        if bn:
            scale, mean, var = (floats[pos + i * n:pos + (i + 1) * n] for i in range(3))
            pos += 3 * n
        hwio = floats[pos:pos + size].reshape(n, cpg, kh, kw).transpose(2, 3, 1, 0)
        pos += size
        kernel = np.empty(hwio.shape, np.float32)
        if bn and fold_bn:
            f = scale / np.sqrt(var + np.float32(eps))
            np.multiply(hwio, f, out=kernel)
            out[label + "/kernel"] = kernel
            out[label + "/bias"] = bias - mean * f
        else:
            np.copyto(kernel, hwio)
            out[label + "/kernel"] = kernel
            out[label + "/bias"] = bias.copy()
            if bn:
                for k, v in (("gamma", scale), ("moving_mean", mean), ("moving_variance", var)):
                    out[f"{label}/{k}"] = v.copy()
    if pos != floats.size:
        raise ValueError(f"{weights}: {floats.size - pos} floats left over")
    return out


def _clear_keras():
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def _prepare(spec: dict):
    """Imports and set-up (before the baseline); returns (op, cleanup, info)."""
    m = spec["method"]
    w, cfg = spec.get("weights"), spec.get("cfg")
    info = {}
    if m in ("memcpy", "memcpy_fresh"):
        import numpy as np

        buf = np.empty(os.path.getsize(w), np.uint8)
        buf.fill(1)  # pre-faulted

        def op():
            # memcpy: into the pre-faulted buffer (the floor); memcpy_fresh: into a new buffer, page faults included
            view = memoryview(buf if m == "memcpy" else np.empty(buf.size, np.uint8))
            with open(w, "rb", buffering=0) as f:
                got = 0
                while got < len(view):
                    k = f.readinto(view[got:])
                    if not k:
                        raise EOFError(w)
                    got += k
            return buf
        return op, None, info
    if m == "numpy":
        from .darknet.cfg import parse_network
        from .darknet.weights import weight_plan

        plan = weight_plan(parse_network(cfg))
        plan = [(p[0], f"layer{i}") + tuple(p[2:]) for i, p in enumerate(plan)]
        return (lambda: numpy_read(w, plan)), None, info
    if m == "pyloader_read":
        import pyloader

        return (lambda: pyloader.read(w, cfg)), None, info
    if m == "opencv":
        import cv2

        info["opencv"] = cv2.__version__
        return (lambda: cv2.dnn.readNetFromDarknet(cfg, w)), None, info
    if m == "pyloader_load":
        import keras  # noqa: F401

        import pyloader
        import pyloader.darknet.model  # noqa: F401

        return (lambda: pyloader.load(w, cfg)), _clear_keras, info
    if m == "keras_load_weights":
        import keras  # noqa: F401

        from .darknet.cfg import parse_network
        from .darknet.model import build_darknet_model

        def op():
            model = build_darknet_model(parse_network(cfg))
            model.load_weights(spec["h5"])
            return model
        return op, _clear_keras, info
    if m == "pt_pyloader":
        import keras  # noqa: F401

        import pyloader
        import pyloader.yolov5.model  # noqa: F401

        return (lambda: pyloader.load(w)), _clear_keras, info
    if m == "pt_yolov5_tf":
        import warnings

        warnings.filterwarnings("ignore")
        import torch  # before TensorFlow: the other order crashes (SIGSEGV) with torch 2.14 + TF 2.21 here
        from yolov5.models.tf import TFModel

        import keras

        def op():
            ckpt = torch.load(w, map_location="cpu", weights_only=False)
            with torch.no_grad():
                model = (ckpt.get("ema") or ckpt["model"]).float().fuse().eval()
            for p in model.parameters():
                p.requires_grad_(False)
            size = tuple(spec.get("input_size") or (640, 640))
            tf_model = TFModel(cfg=model.yaml, model=model, nc=model.yaml["nc"], imgsz=size)
            inputs = keras.Input(shape=(*size, 3), batch_size=1)
            return keras.Model(inputs=inputs, outputs=tf_model.predict(inputs))
        return op, _clear_keras, info
    if m == "ul_pyloader":
        import keras  # noqa: F401

        import pyloader
        import pyloader.ultralytics.model  # noqa: F401

        return (lambda: pyloader.load(w)), _clear_keras, info
    if m == "ul_torch":
        import warnings

        warnings.filterwarnings("ignore")
        import torch
        import ultralytics.nn.tasks  # noqa: F401

        def op():  # ultralytics' attempt_load_one_weight + AutoBackend's fuse
            ckpt = torch.load(w, map_location="cpu", weights_only=False)
            model = (ckpt.get("ema") or ckpt["model"]).float()
            with torch.no_grad():
                return model.fuse().eval()
        return op, None, info
    raise ValueError(f"unknown method {m!r}")


def _bulk_worker(spec: dict) -> dict:
    import keras  # noqa: F401

    import pyloader
    import pyloader.darknet.model  # noqa: F401

    sources, cfg, out = spec["sources"], spec["cfg"], spec["out"]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    base = _status_bytes("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    per, load_s, save_s = [], [], []
    if spec["method"] == "bulk_convert":
        from pyloader.bulk_convert import convert

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
            _clear_keras()
    total = time.perf_counter() - t0
    peak = _peak_bytes()
    out_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    shutil.rmtree(out, ignore_errors=True)
    return {"total_s": total, "per_checkpoint_s": per, "load_s": load_s, "save_s": save_s,
            "peak_above_baseline_bytes": peak - base, "peak_reset": reset, "output_bytes": out_bytes}


def _tree_bytes(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _bulk_format_worker(spec: dict) -> dict:
    """pyloader.convert of every source to one format (templates on): per-checkpoint seconds, and the floor
    for a checkpoint after the first: pyloader.read of one + writing the output's bytes to a new file."""
    import numpy as np

    import pyloader
    from pyloader.bulk_convert import convert

    sources, cfg, out, fmt = spec["sources"], spec["cfg"], spec["out"], spec["format"]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    base = _status_bytes("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    results = convert(sources, out, cfg=cfg, format=fmt, overwrite=True)
    total = time.perf_counter() - t0
    peak = _peak_bytes()
    bad = [r for r in results if r.status != "converted"]
    if bad:
        raise RuntimeError(f"convert: {bad[0].source}: {bad[0].status}: {bad[0].reason}")
    by_src = {r.source: r for r in results}
    per = [by_src[s].seconds for s in sources]
    notes = sorted({r.note for r in results if r.note})
    nbytes = _tree_bytes(by_src[sources[-1]].output)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    read_s, write_s = [], []
    buf = np.ones(nbytes, np.uint8)  # pre-faulted
    for i in range(spec.get("repeat", 3) + 1):
        a = time.perf_counter()
        arrays = pyloader.read(sources[-1], cfg)
        b = time.perf_counter()
        del arrays
        path = os.path.join(out, f"floor{i}")
        c = time.perf_counter()
        with open(path, "wb") as f:
            f.write(memoryview(buf))
        d = time.perf_counter()
        os.unlink(path)
        if i:
            read_s.append(b - a)
            write_s.append(d - c)
    shutil.rmtree(out, ignore_errors=True)
    return {"total_s": total, "per_checkpoint_s": per, "first_s": per[0],
            "median_after_first_s": statistics.median(per[1:]) if len(per) > 1 else None,
            "read_s": statistics.median(read_s), "write_output_bytes_s": statistics.median(write_s),
            "output_bytes": nbytes, "notes": notes, "peak_above_baseline_bytes": peak - base, "peak_reset": reset}


def _backend_worker(spec: dict) -> dict:
    """pyloader.load on this process' Keras backend (KERAS_BACKEND): first call, median of the repeats, and
    where a load's time goes: reading (file -> arrays), the symbolic build (Keras layers, no variables
    initialised) and creating the variables from the arrays."""
    import gc

    sys.modules.setdefault("triton", None)  # torch after TensorFlow: see tests/conftest.py
    import keras

    import pyloader
    from pyloader.keras_blocks.assign import _matched

    w, cfg = spec["weights"], spec.get("cfg")
    if cfg:
        from pyloader.darknet.cfg import parse_network
        from pyloader.darknet.model import build_darknet_model, reachable_arrays
        from pyloader.darknet.weights import read_darknet

        def read():
            net = parse_network(cfg)
            return net, reachable_arrays(net, read_darknet(w, network=net).arrays)

        def build(net):
            return build_darknet_model(net)
    else:
        from pyloader.yolov5.model import build_yolov5
        from pyloader.yolov5.weights import plan_arrays, read_plan

        def read():
            plan = read_plan(w)
            return plan, plan_arrays(plan, True)

        def build(plan):
            return build_yolov5(plan)
    total, parts = [], {"read": [], "build": [], "variables": []}
    first = None
    for i in range(spec["repeat"] + 1):
        t0 = time.perf_counter()
        model = pyloader.load(w, cfg) if cfg else pyloader.load(w)
        t = time.perf_counter() - t0
        del model
        _clear_keras()
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
        _clear_keras()
        gc.collect()
    return {"backend": keras.backend.backend(), "first_call_s": first, "warm_s": total,
            "warm_median_s": statistics.median(total),
            "breakdown_s": {k: statistics.median(v) for k, v in parts.items()}}


def _breakdown(spec: dict) -> dict:
    """Where pyloader.load's time goes (darknet): parse, read, build, assign; and the build with zero
    initializers instead of Keras' random ones (a prototype of a cheaper build)."""
    import keras

    from .darknet.cfg import parse_network
    from .darknet.model import build_darknet_model
    from .darknet.weights import read_darknet
    from .keras_blocks.assign import assign_weights

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
        _clear_keras()
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
        _clear_keras()
        t.append(time.perf_counter())
        try:
            with keras.StatelessScope():
                model = build_darknet_model(net)
            t.append(time.perf_counter())
            del model
        except Exception as e:  # noqa: BLE001
            out["stateless_error"] = f"{type(e).__name__}: {e}"[:200]
            t.append(float("nan"))
        _clear_keras()
        if i == 0:
            continue  # warm-up
        out["parse"].append(t[1] - t[0])
        out["read"].append(t[2] - t[1])
        out["build"].append(t[3] - t[2])
        out["assign"].append(t[4] - t[3])
        out["build_zeros_init"].append(t[6] - t[5])
        out["build_stateless_scope"].append(t[8] - t[7])
    return {k: (statistics.median(v) if isinstance(v, list) and v else v) for k, v in out.items()}


def worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec["method"] == "backend_load":
        print("@@RESULT " + json.dumps(_backend_worker(spec)), flush=True)
        return
    if spec["method"] == "bulk_format":
        print("@@RESULT " + json.dumps(_bulk_format_worker(spec)), flush=True)
        return
    if spec["method"].startswith("bulk_"):
        print("@@RESULT " + json.dumps(_bulk_worker(spec)), flush=True)
        return
    if spec["method"] == "breakdown":
        print("@@RESULT " + json.dumps(_breakdown(spec)), flush=True)
        return
    import gc

    op, cleanup, info = _prepare(spec)
    files = [p for p in (spec.get("weights"), spec.get("cfg")) if p]
    gc.collect()
    base = _status_bytes("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    obj = op()  # warm-up: its peak is the memory figure, its time the first call's in a fresh process
    first = time.perf_counter() - t0
    peak = _peak_bytes()
    del obj
    if cleanup:
        cleanup()
    warm, cold = [], []
    for _ in range(spec["repeat"]):
        t0 = time.perf_counter()
        obj = op()
        warm.append(time.perf_counter() - t0)
        del obj
        if cleanup:
            cleanup()
    if spec.get("cold"):
        for _ in range(spec["repeat"]):
            evict(files, spec["cold"])
            t0 = time.perf_counter()
            obj = op()
            cold.append(time.perf_counter() - t0)
            del obj
            if cleanup:
                cleanup()
    if spec["method"] == "pyloader_load" and spec.get("h5"):
        op().save_weights(spec["h5"])  # for the keras_load_weights worker (after the measurements)
    print("@@RESULT " + json.dumps({"first_call_s": first, "warm_s": warm, "cold_s": cold, "peak_above_baseline_bytes": peak - base,
                                    "baseline_bytes": base, "peak_reset": reset, **info}), flush=True)


# ---------------------------------------------------------------------------------------------------------
# Driver side


def _run_worker(spec: dict, timeout: float = 3600) -> dict:
    code = "import sys; from pyloader.bench import worker; worker(sys.argv[1])"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", **spec.get("env", {}))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    wall = time.perf_counter() - t0
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            r = json.loads(line[len("@@RESULT "):])
            r["process_wall_s"] = wall
            return r
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"error": f"{spec['method']} failed (rc {p.returncode}): " + " | ".join(tail)[-600:]}


def _summ(r: dict, nbytes: int | None = None) -> dict:
    if "error" in r:
        return r
    out = dict(r)
    for key in ("warm", "cold"):
        ts = r.get(f"{key}_s") or []
        if ts:
            out[f"{key}_median_s"] = statistics.median(ts)
            if nbytes:
                out[f"{key}_gb_per_s"] = nbytes / GB / statistics.median(ts)
    return out


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cold_method() -> tuple:
    """How the page cache can be dropped here: ('fadvise' | 'drop_caches' | None, explanation)."""
    fd, probe = tempfile.mkstemp()
    try:
        os.write(fd, b"x" * 4096)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return "fadvise", ("posix_fadvise(POSIX_FADV_DONTNEED) on the .weights and .cfg before each run "
                           "(per file; the rest of the machine's cache is left alone)")
    except (OSError, AttributeError) as e:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
            return "drop_caches", "echo 1 > /proc/sys/vm/drop_caches before each run"
        except OSError:
            return None, f"cold cache not possible here (fadvise: {e}; drop_caches not writable)"
    finally:
        os.close(fd)
        os.unlink(probe)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as f:
            ram = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    versions = {"python": platform.python_version()}
    from importlib import metadata

    for pkg in ("pyloader", "numpy", "keras", "tensorflow", "tensorflow-cpu", "opencv-python-headless", "torch",
                "yolov5", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram, "platform": platform.platform(),
            "versions": versions}


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _prepare_default(tmp: str, small: bool, with_pt: bool, pt_yaml: str) -> dict:
    from . import bench_models as BM

    models = {}
    for name in (["small"] if small else ["small", "yolov4-size"]):
        cfg = BM.write_cfg(tmp, name)
        w = os.path.join(tmp, f"{name}.weights")
        params = BM.write_weights(w, cfg, seed=0)
        models[name] = {"cfg": cfg, "weights": w, "params_in_file": params, "description": BM.MODELS[name][1]}
    pt = None
    if with_pt:
        path = os.path.join(tmp, os.path.splitext(pt_yaml)[0] + ".pt")
        code = ("import sys, warnings; warnings.filterwarnings('ignore'); from pyloader.bench_models import "
                "write_yolov5_checkpoint as w; print('@@P', w(sys.argv[1], sys.argv[2]))")
        p = subprocess.run([sys.executable, "-c", code, path, pt_yaml], capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if p.returncode == 0:
            pt = {"path": path, "description": f"{pt_yaml} built by the yolov5 package, random weights, fp16 "
                                               "model+ema as train.py saves"}
        else:
            pt = {"error": "could not write the YOLOv5 checkpoint: " + p.stderr.strip()[-300:]}
    return {"darknet": models, "pt": pt}


def _param_bytes(weights: str, cfg: str | None) -> int:
    code = ("import sys, pyloader; a = pyloader.read(sys.argv[1], None if sys.argv[2] == '-' else sys.argv[2]);"
            " print('@@P', sum(v.nbytes for v in a.values()))")
    p = subprocess.run([sys.executable, "-c", code, weights, cfg or "-"], capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    for line in p.stdout.splitlines():
        if line.startswith("@@P "):
            return int(line.split()[1])
    raise RuntimeError(f"pyloader.read({weights}) failed: {p.stderr.strip()[-300:]}")


def _ratio(a, b):
    return a / b if a and b else None


def bench_weights(name, m, repeat, cold, out):
    nbytes = os.path.getsize(m["weights"])
    sec = {"file_bytes": nbytes, "methods": {}}
    methods = ["memcpy", "memcpy_fresh", "pyloader_read", "numpy"] + (["opencv"] if _have("cv2") else [])
    for meth in methods:
        _log(f"weights/{name}/{meth}")
        spec = {"method": meth, "weights": m["weights"], "cfg": m["cfg"], "repeat": repeat, "cold": cold}
        sec["methods"][meth] = _summ(_run_worker(spec), nbytes)
    if "opencv" not in methods:
        sec["methods"]["opencv"] = {"error": "not available: cv2 is not installed"}
    ms = sec["methods"]
    sec["ratios"] = {}
    for key in ("warm", "cold"):
        ref = ms["pyloader_read"].get(f"{key}_median_s")
        sec["ratios"][key] = {f"{other}_over_pyloader": _ratio(ms[other].get(f"{key}_median_s"), ref)
                              for other in ms if other != "pyloader_read"}
        sec["ratios"][key]["pyloader_over_memcpy"] = _ratio(ref, ms["memcpy"].get(f"{key}_median_s"))
    return sec


def bench_model(name, m, repeat, out, breakdown=True):  # noqa: FBT002
    sec = {"methods": {}}
    h5 = os.path.join(out, f"{name}.weights.h5")
    for meth in ("pyloader_load", "keras_load_weights"):
        _log(f"model/{name}/{meth}")
        spec = {"method": meth, "weights": m["weights"], "cfg": m["cfg"], "h5": h5, "repeat": repeat}
        sec["methods"][meth] = _summ(_run_worker(spec))
        if meth == "pyloader_load":
            if not os.path.exists(h5):  # the pyloader_load worker saves it after its measurements
                sec["methods"]["keras_load_weights"] = {"error": "no .weights.h5 (pyloader.load failed)"}
                break
            sec["h5_bytes"] = os.path.getsize(h5)
    if os.path.exists(h5):
        os.unlink(h5)
    a = sec["methods"]["pyloader_load"].get("warm_median_s")
    b = sec["methods"]["keras_load_weights"].get("warm_median_s")
    sec["speedup_pyloader_vs_keras"] = _ratio(b, a)
    if breakdown:
        _log(f"model/{name}/breakdown")
        sec["pyloader_load_breakdown_s"] = _run_worker({"method": "breakdown", "weights": m["weights"],
                                                        "cfg": m["cfg"], "repeat": max(1, min(repeat, 3))})
    return sec


def bench_pt(pt, repeat):
    sec = {"file_bytes": os.path.getsize(pt["path"]), "methods": {}}
    _log("pt/pyloader")
    sec["methods"]["pt_pyloader"] = _summ(_run_worker({"method": "pt_pyloader", "weights": pt["path"],
                                                       "repeat": repeat}))
    if _have("torch") and _have("yolov5"):
        _log("pt/torch.load+yolov5 TFModel")
        sec["methods"]["pt_yolov5_tf"] = _summ(_run_worker({"method": "pt_yolov5_tf", "weights": pt["path"],
                                                            "repeat": repeat}))
    else:
        sec["methods"]["pt_yolov5_tf"] = {"error": "not available: torch and yolov5 are needed"}
    sec["speedup_pyloader_vs_yolov5_tf"] = _ratio(sec["methods"]["pt_yolov5_tf"].get("warm_median_s"),
                                                  sec["methods"]["pt_pyloader"].get("warm_median_s"))
    return sec


def _pickle_inputs(pt_paths, small: bool) -> dict:
    """Pickles for the pickle section: cheap opcodes (a list of small ints and repeated BINGETs) and each .pt's
    data.pkl read as load_torch_checkpoint reads it (from the file's map, its storages made by
    checkpoint.ZipStorages: zero-copy views of the records). Each value: (buffer, start, end, (path, zip index)
    of the checkpoint or None)."""
    import pickle

    n = 250_000 if small else 2_500_000
    cheap = b"\x80\x02]q\x00(" + b"K\x07" * n + b"h\x00" * n + b"e."
    dumped = pickle.dumps(list(range(200)) * (n // 100), protocol=2)
    out = {f"cheap opcodes ({len(cheap) / 1e6:.0f} MB: BININT1, BINGET)": (cheap, 0, len(cheap), None),
           "pickle.dumps(list of small ints)": (dumped, 0, len(dumped), None)}
    for path in pt_paths:
        from . import _core

        buf = _core.map_file(path)
        index = _core.torch_zip_index(buf)
        off, size = index["pickle"]
        out[f"{os.path.basename(path)} data.pkl ({size / 1e6:.2f} MB)"] = (buf, off, off + size, (path, index))
    return out


def bench_pickle(pt_paths, repeat: int, small: bool) -> dict:
    """The pickle stage alone: load_pickle (native opcode machine, with its fast paths) against
    load_pickle_reference (the Python interpreter), in MB/s of pickle. A checkpoint's storages are made as
    load_torch_checkpoint makes them (checkpoint.ZipStorages over the file's map), fresh for every run."""
    from .torch_reader import unpickle as PR
    from .torch_reader.checkpoint import ZipStorages

    sec = {}
    for name, (data, start, end, ckpt) in _pickle_inputs(pt_paths, small).items():
        _log(f"pickle/{name}")
        row = {"bytes": end - start}
        for meth, fn in (("python", PR.load_pickle_reference), ("native", PR.load_pickle)):
            times = []
            for _ in range(repeat + 1):
                storages = None
                if ckpt:
                    path, index = ckpt
                    storages = ZipStorages(path, data, index["prefix"], index["records"])
                t0 = time.perf_counter()
                fn(data, start=start, end=end, persistent_load=storages)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times[1:])
            row[meth] = {"median_s": med, "mb_per_s": row["bytes"] / 1e6 / med}
        row["speedup"] = _ratio(row["python"]["median_s"], row["native"]["median_s"])
        sec[name] = row
    return sec


ULTRALYTICS_YAMLS = ("yolov8x.yaml", "yolo11x.yaml")


def _ultralytics_export_available() -> bool:
    return _have("onnx2tf") and _have("onnx")


def bench_ultralytics(yamls, repeat, tmp) -> dict:
    """pyloader.load of Ultralytics checkpoints vs the Ultralytics route (see the module doc)."""
    if not (_have("torch") and _have("ultralytics")):
        return {"error": "not available: torch and ultralytics are needed"}
    sec = {"route": "torch.load + (ema or model).float().fuse().eval()",
           "export_saved_model": ("available (onnx2tf installed) but not run: it converts through ONNX"
                                  if _ultralytics_export_available() else
                                  "not run: needs onnx2tf (not installed; Ultralytics would pip-install it)"),
           "models": {}}
    for y in yamls:
        path = os.path.join(tmp, os.path.splitext(y)[0] + "-best.pt")
        _log(f"ultralytics/writing {y}")
        code = ("import sys; sys.modules.setdefault('triton', None); from pyloader.bench_models import "
                "write_ultralytics_checkpoint as w; print('@@P', w(sys.argv[1] + '.last', sys.argv[2], "
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
        _log(f"ultralytics/{y} pyloader")
        r["methods"]["ul_pyloader"] = _summ(_run_worker({"method": "ul_pyloader", "weights": path, "repeat": repeat}))
        _log(f"ultralytics/{y} torch.load + ultralytics model")
        r["methods"]["ul_torch"] = _summ(_run_worker({"method": "ul_torch", "weights": path, "repeat": repeat}))
        r["speedup_pyloader_vs_ultralytics"] = _ratio(r["methods"]["ul_torch"].get("warm_median_s"),
                                                      r["methods"]["ul_pyloader"].get("warm_median_s"))
        sec["models"][y] = r
        os.remove(path)
    return sec


BULK_FORMATS = ("keras", "weights.h5", "savedmodel", "tflite")


BACKENDS = ("tensorflow", "jax", "torch")


def bench_backends(targets: dict, repeat: int) -> dict:
    """pyloader.load per Keras backend for each {label: (weights, cfg or None)}."""
    sec = {}
    for label, (w, cfg) in targets.items():
        sec[label] = {}
        for b in BACKENDS:
            if b != "tensorflow" and not _have(b):
                sec[label][b] = {"error": f"{b} is not installed"}
                continue
            _log(f"backends/{label}/{b}")
            sec[label][b] = _run_worker({"method": "backend_load", "weights": w, "cfg": cfg, "repeat": repeat,
                                         "env": {"KERAS_BACKEND": b}})
    return sec


def bench_bulk(name, m, count, tmp, formats=BULK_FORMATS):
    from . import bench_models as BM

    folder = os.path.join(tmp, "bulk")
    os.makedirs(folder, exist_ok=True)
    sources = []
    for i in range(count):
        s = os.path.join(folder, f"{name}_{i:02d}.weights")
        if m.get("generated"):
            BM.write_weights(s, m["cfg"], seed=i + 1)
        else:
            shutil.copyfile(m["weights"], s)
        sources.append(s)
    sec = {"model": name, "checkpoints": count, "methods": {}}
    for meth in ("bulk_convert", "bulk_separate"):
        if meth == "bulk_convert" and not _have("pyloader.bulk_convert"):
            sec["methods"][meth] = {"error": "not available: pyloader.convert is missing"}
            continue
        _log(f"bulk/{name}/{meth} x{count}")
        r = _run_worker({"method": meth, "sources": sources, "cfg": m["cfg"], "out": os.path.join(tmp, "bulk_out")})
        if "error" not in r:
            r["median_per_checkpoint_s"] = statistics.median(r["per_checkpoint_s"])
            r["mean_per_checkpoint_s"] = r["total_s"] / count
            if r["save_s"]:
                r["median_save_s"] = statistics.median(r["save_s"])
        sec["methods"][meth] = r
    sec["formats"] = {}
    if _have("pyloader.templates"):
        for fmt in formats:
            _log(f"bulk/{name}/{fmt} (templates) x{count}")
            r = _run_worker({"method": "bulk_format", "format": fmt, "sources": sources, "cfg": m["cfg"],
                             "out": os.path.join(tmp, "bulk_out"), "repeat": 3})
            if "error" not in r and r.get("median_after_first_s"):
                r["floor_s"] = r["read_s"] + r["write_output_bytes_s"]
                r["after_first_over_floor"] = r["median_after_first_s"] / r["floor_s"]
            sec["formats"][fmt] = r
    shutil.rmtree(folder, ignore_errors=True)
    a = sec["methods"]["bulk_convert"].get("mean_per_checkpoint_s")
    b = sec["methods"]["bulk_separate"].get("mean_per_checkpoint_s")
    sec["speedup_convert_vs_separate"] = _ratio(b, a)
    return sec


def _targets(res: dict) -> list:
    t = []
    big = "yolov4-size" if "yolov4-size" in res["weights"] else next(iter(res["weights"]), None)

    def add(name, measured, goal, met, note=""):
        t.append({"target": name, "measured": measured, "goal": goal, "met": met, "note": note})

    if big:
        w = res["weights"][big]
        ms = w["methods"]
        r = w["ratios"]["warm"]["pyloader_over_memcpy"]
        add(f"weights stage ({big}) within 1.5x of memcpy (warm)", r, 1.5, None if r is None else r <= 1.5)
        o = w["ratios"]["warm"].get("opencv_over_pyloader")
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
        add(f"bulk {fmt} (templates): per checkpoint after the first within 2x of (read + writing its bytes)", r, 2.0,
            None if r is None else r <= 2.0, f.get("error", ""))
    return t


def _fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}{unit}"
    return f"{v}{unit}"


def markdown(res: dict) -> str:
    mc = res["machine"]
    lines = [f"Run {res['started']} on {mc['cpu']}, {mc['cores']} cores, "
             f"{(mc['ram_bytes'] or 0) / 2**30:.1f} GiB RAM; {mc['platform']}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in mc["versions"].items()),
             f"Repetitions: {res['repeat']} (median; one untimed warm-up run first). Cold cache: {res['cold_info']}",
             ""]
    for name, info in res["models"].items():
        lines.append(f"* `{name}`: {info['description']}: {info['file_bytes'] / 1e6:.1f} MB file, "
                     f"{info['param_bytes'] / 1e6:.1f} MB of float32 arrays after folding")
    lines += ["", "### Weights stage (file -> arrays in Keras layout, BN folded)", "",
              "| model | method | warm s | warm GB/s | cold s | cold GB/s | x pyloader (warm) | first call s "
              "| peak MB above baseline |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, w in res["weights"].items():
        ref = w["methods"]["pyloader_read"].get("warm_median_s")
        for meth, r in w["methods"].items():
            if "error" in r:
                lines.append(f"| {name} | {meth} | {r['error']} | | | | | | |")
                continue
            lines.append(f"| {name} | {meth} | {_fmt(r.get('warm_median_s'))} | {_fmt(r.get('warm_gb_per_s'))} | "
                         f"{_fmt(r.get('cold_median_s'))} | {_fmt(r.get('cold_gb_per_s'))} | "
                         f"{_fmt(_ratio(r.get('warm_median_s'), ref))} | {_fmt(r.get('first_call_s'))} | "
                         f"{r['peak_above_baseline_bytes'] / 1e6:.0f} |")
    lines += ["", "### Ready keras.Model", ""]
    if not res["model"]:
        lines.append("not run (not in --sections)")
    else:
        lines += ["| model | method | median s | first call s | peak MB above baseline |", "|---|---|---|---|---|"]
    for name, mdl in res["model"].items():
        if "error" in mdl:
            lines.append(f"| {name} | {mdl['error']} | | | |")
            continue
        for meth, r in mdl["methods"].items():
            if "error" in r:
                lines.append(f"| {name} | {meth} | {r['error']} | | |")
            else:
                lines.append(f"| {name} | {meth} | {_fmt(r.get('warm_median_s'))} | {_fmt(r.get('first_call_s'))} | "
                             f"{r['peak_above_baseline_bytes'] / 1e6:.0f} |")
        lines.append(f"| {name} | speedup (keras / pyloader) | {_fmt(mdl.get('speedup_pyloader_vs_keras'))} | | |")
        bd = mdl.get("pyloader_load_breakdown_s") or {}
        if bd and "error" not in bd:
            lines.append(f"| {name} | pyloader.load breakdown | parse {_fmt(bd.get('parse'))}, read "
                         f"{_fmt(bd.get('read'))}, build {_fmt(bd.get('build'))}, assign {_fmt(bd.get('assign'))}; "
                         f"build with zero initializers {_fmt(bd.get('build_zeros_init'))}, under "
                         f"keras.StatelessScope {_fmt(bd.get('build_stateless_scope'))} | | |")
    lines += ["", "### Pickle stage (load_pickle: native opcode machine vs the Python reference interpreter)", ""]
    if not res.get("pickle"):
        lines.append("not run (not in --sections)")
    else:
        lines += ["| pickle | python MB/s | native MB/s | speedup |", "|---|---|---|---|"]
        for name, row in res["pickle"].items():
            lines.append(f"| {name} | {_fmt(row['python']['mb_per_s'])} | {_fmt(row['native']['mb_per_s'])} | "
                         f"{_fmt(row['speedup'])} |")
    lines += ["", "### YOLOv5 .pt", ""]
    pt = res.get("pt") or {}
    if not pt or "error" in pt:
        lines.append(f"not available: {pt.get('error', 'not run')}")
    else:
        lines += [f"{pt.get('description', '')}, {pt['file_bytes'] / 1e6:.1f} MB file, "
                  f"{pt['param_bytes'] / 1e6:.1f} MB of float32 arrays after folding", "",
                  "| method | median s | first call s | peak MB above baseline |", "|---|---|---|---|"]
        for meth, r in pt["methods"].items():
            if "error" in r:
                lines.append(f"| {meth} | {r['error']} | | |")
            else:
                lines.append(f"| {meth} | {_fmt(r.get('warm_median_s'))} | {_fmt(r.get('first_call_s'))} | "
                             f"{r['peak_above_baseline_bytes'] / 1e6:.0f} |")
        lines.append(f"| speedup (yolov5 TF / pyloader) | {_fmt(pt.get('speedup_pyloader_vs_yolov5_tf'))} | | |")
    lines += ["", "### Ultralytics .pt", ""]
    ul = res.get("ultralytics") or {}
    if not ul or "error" in ul:
        lines.append(f"not available: {ul.get('error', 'not run')}")
    else:
        lines += [f"Ultralytics' route: {ul['route']}; export(format='saved_model'): {ul['export_saved_model']}", "",
                  "| model | method | median s | first call s | peak MB above baseline |", "|---|---|---|---|---|"]
        for name, r in ul["models"].items():
            if "error" in r:
                lines.append(f"| {name} | {r['error']} | | | |")
                continue
            for meth, x in r["methods"].items():
                if "error" in x:
                    lines.append(f"| {name} | {meth} | {x['error']} | | |")
                else:
                    lines.append(f"| {name} | {meth} | {_fmt(x.get('warm_median_s'))} | {_fmt(x.get('first_call_s'))} "
                                 f"| {x['peak_above_baseline_bytes'] / 1e6:.0f} |")
            lines.append(f"| {name} | speedup (ultralytics / pyloader) | {_fmt(r.get('speedup_pyloader_vs_ultralytics'))} | | |")
    lines += ["", "### pyloader.load per Keras backend", ""]
    be = res.get("backends") or {}
    if not be:
        lines.append("not run (not in --sections)")
    else:
        lines += ["| model | backend | median s | first call s | read s | symbolic build s | create variables s |",
                  "|---|---|---|---|---|---|---|"]
        for label, per in be.items():
            for b, r in per.items():
                if "error" in r:
                    lines.append(f"| {label} | {b} | {r['error']} | | | | |")
                    continue
                bd = r.get("breakdown_s") or {}
                lines.append(f"| {label} | {b} | {_fmt(r['warm_median_s'])} | {_fmt(r['first_call_s'])} | "
                             f"{_fmt(bd.get('read'))} | {_fmt(bd.get('build'))} | {_fmt(bd.get('variables'))} |")
    lines += ["", "### Bulk", ""]
    bulk = res.get("bulk") or {}
    if not bulk or "error" in bulk:
        lines.append(f"not available: {bulk.get('error', 'not run')}")
    else:
        lines += [f"{bulk['checkpoints']} checkpoints of `{bulk['model']}` to .keras", "",
                  "| method | total s | per checkpoint s (mean) | median save s | peak MB above baseline |",
                  "|---|---|---|---|---|"]
        for meth, r in bulk["methods"].items():
            if "error" in r:
                lines.append(f"| {meth} | {r['error']} | | | |")
            else:
                lines.append(f"| {meth} | {_fmt(r['total_s'])} | {_fmt(r['mean_per_checkpoint_s'])} | "
                             f"{_fmt(r.get('median_save_s'))} | {r['peak_above_baseline_bytes'] / 1e6:.0f} |")
        lines.append(f"| speedup (separate / convert) | {_fmt(bulk.get('speedup_convert_vs_separate'))} | | | |")
        if bulk.get("formats"):
            lines += ["", f"Per format, `pyloader.convert` of the {bulk['checkpoints']} checkpoints (templates: the "
                      "first runs the exporter on probe weights, the others are written from its bytes); floor = "
                      "`pyloader.read` of one checkpoint + writing the output's bytes to a new file", "",
                      "| format | output MB | first s | median after first s | read s | write s | after first / floor "
                      "| total s | peak MB above baseline | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
            for fmt, r in bulk["formats"].items():
                if "error" in r:
                    lines.append(f"| {fmt} | {r['error']} | | | | | | | | |")
                    continue
                lines.append(f"| {fmt} | {r['output_bytes'] / 1e6:.1f} | {_fmt(r['first_s'])} | "
                             f"{_fmt(r.get('median_after_first_s'))} | {_fmt(r['read_s'])} | "
                             f"{_fmt(r['write_output_bytes_s'])} | {_fmt(r.get('after_first_over_floor'))} | "
                             f"{_fmt(r['total_s'])} | {r['peak_above_baseline_bytes'] / 1e6:.0f} | "
                             f"{'; '.join(r.get('notes') or [])[:200]} |")
    lines += ["", "### Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in res["targets"]:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "missed")
        lines.append(f"| {t['target']} | {_fmt(t['measured'])} | {t['goal']} | {met} {t['note']} |")
    return "\n".join(lines) + "\n"


def chart(res: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'pyloader[bench]'): no chart"
    groups = []
    for name, w in res["weights"].items():
        groups.append((f"weights stage: {name} (warm)",
                       {k: v.get("warm_median_s") for k, v in w["methods"].items() if "error" not in v}))
    for name, mdl in res["model"].items():
        if "methods" in mdl:
            groups.append((f"ready model: {name}",
                           {k: v.get("warm_median_s") for k, v in mdl["methods"].items() if "error" not in v}))
    pt = res.get("pt") or {}
    if pt.get("methods"):
        groups.append(("YOLOv5 .pt", {k: v.get("warm_median_s") for k, v in pt["methods"].items() if "error" not in v}))
    for name, r in ((res.get("ultralytics") or {}).get("models") or {}).items():
        if r.get("methods"):
            groups.append((f"Ultralytics .pt: {name}",
                           {k: v.get("warm_median_s") for k, v in r["methods"].items() if "error" not in v}))
    bulk = res.get("bulk") or {}
    if bulk.get("methods"):
        groups.append((f"bulk: per checkpoint ({bulk['model']})",
                       {k: v.get("mean_per_checkpoint_s") for k, v in bulk["methods"].items() if "error" not in v}))
    groups = [(t, {k: v for k, v in g.items() if v}) for t, g in groups]
    groups = [(t, g) for t, g in groups if g]
    if not groups:
        return "nothing timed in seconds to chart (only MB/s sections ran)"
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.0 + 1.1 * sum(len(g) for _, g in groups) / 2 + len(groups)))
    if len(groups) == 1:
        axes = [axes]
    for ax, (title, g) in zip(axes, groups):
        names = list(g)
        vals = [g[n] for n in names]
        colors = ["tab:green" if n.startswith(("pyloader", "pt_pyloader", "ul_pyloader", "bulk_convert")) else "tab:gray" for n in names]
        ax.barh(names, vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.3g} s", va="center", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xscale("log")
        ax.tick_params(labelsize=8)
        ax.set_xlim(min(vals) / 2, max(vals) * 4)
    mc = res["machine"]
    fig.suptitle(f"pyloader bench: medians of {res['repeat']}; {mc['cpu']}, {mc['cores']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


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
                        help="comma-separated subset of weights,model,pt,ultralytics,pickle,backends,bulk (default: "
                             "all; with --small: weights,model,pickle,bulk)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold page cache runs")
    parser.add_argument("--bulk-count", type=int, default=None, help="checkpoints in the bulk section (default 20)")
    parser.add_argument("--bulk-model", default=None, help="embedded model for the bulk section (default "
                                                           "yolov4-size; small with --small)")
    parser.add_argument("--pt-yaml", default=None, help="yolov5 yaml for the default .pt (default yolov5x.yaml)")
    parser.add_argument("--ultralytics-yaml", action="append", default=None,
                        help="Ultralytics yaml(s) for the ultralytics section (default yolov8x.yaml and yolo11x.yaml; "
                             "yolov8n.yaml with --small)")
    parser.add_argument("--tmp", default=None, help="where to write generated checkpoints (default: a temp dir)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyloader bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # files before and after --cfg
    default = "weights,model,pickle,bulk" if args.small else "weights,model,pt,ultralytics,pickle,backends,bulk"
    sections = {s.strip() for s in (args.sections or default).split(",") if s.strip()}
    repeat = max(1, args.repeat)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="pyloader-bench-", dir=args.tmp)
    cold, cold_info = (None, "skipped (--no-cold)") if args.no_cold else cold_method()
    res = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "repeat": repeat, "cold": cold, "cold_info": cold_info,
           "machine": machine(), "models": {}, "weights": {}, "model": {}, "pt": None, "ultralytics": None,
           "pickle": None, "bulk": None, "backends": {}}
    try:
        pt_yaml = args.pt_yaml or ("yolov5n.yaml" if args.small else "yolov5x.yaml")
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
        else:
            _log(f"writing the embedded models to {tmp}")
            want_pt = ("pt" in sections or "backends" in sections) and _have("torch") and _have("yolov5")
            d = _prepare_default(tmp, args.small, want_pt, pt_yaml)
            darknet, pt = d["darknet"], d["pt"]
            pt_paths = [pt["path"]] if pt and "path" in pt else []
            for m in darknet.values():
                m["generated"] = True
            if pt is None and "pt" in sections:
                pt = {"error": "torch and yolov5 are not installed: no YOLOv5 checkpoint to measure"}
        for name, m in darknet.items():
            res["models"][name] = {"description": m["description"], "file_bytes": os.path.getsize(m["weights"]),
                                   "param_bytes": _param_bytes(m["weights"], m["cfg"])}
        if "weights" in sections:
            for name, m in darknet.items():
                res["weights"][name] = bench_weights(name, m, repeat, cold, tmp)
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
                             "param_bytes": _param_bytes(pt["path"], None), **bench_pt(pt, repeat)}
        if "ultralytics" in sections:
            if args.files:
                res["ultralytics"] = {"error": "skipped (files given)"}
            else:
                yamls = args.ultralytics_yaml or (["yolov8n.yaml"] if args.small else list(ULTRALYTICS_YAMLS))
                res["ultralytics"] = bench_ultralytics(yamls, repeat, tmp)
        else:
            res["ultralytics"] = {"error": "skipped (not in --sections" + (", --small)" if args.small else ")")}
        if "pickle" in sections:
            res["pickle"] = bench_pickle(pt_paths, repeat, args.small)
        if "backends" in sections:
            targets = {}
            if darknet:
                big = "yolov4-size" if "yolov4-size" in darknet else next(iter(darknet))
                targets[big] = (darknet[big]["weights"], darknet[big]["cfg"])
            if pt and "error" not in pt:
                targets[os.path.basename(pt["path"])] = (pt["path"], None)
            res["backends"] = bench_backends(targets, repeat)
        if "bulk" in sections and darknet:
            bname = args.bulk_model or ("small" if args.small or "yolov4-size" not in darknet else "yolov4-size")
            if bname not in darknet:
                bname = next(iter(darknet))
            count = args.bulk_count or (2 if args.small else 20)
            # --small: the cheap formats only (the SavedModel and TFLite exporters take 20 s each even there)
            res["bulk"] = bench_bulk(bname, darknet[bname], count, tmp,
                                     ("keras", "weights.h5") if args.small else BULK_FORMATS)
        if "pt" not in sections:
            res["pt"] = {"error": "skipped (not in --sections" + (", --small)" if args.small else ")")}
        res["targets"] = _targets(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    msg = chart(res, os.path.join(out, "chart.png"))
    if msg:
        _log(msg)
    print(md)
    _log(f"wrote {out}/results.json, results.md" + ("" if msg else ", chart.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
