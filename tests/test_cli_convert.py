"""`pyloader convert` / `pyloader.convert` / `pyloader inspect`, end to end.

The CLI runs in a subprocess (`python -m pyloader`) on a folder that mixes good checkpoints (two of one cfg, one
of another, a YOLOv5 .pt when torch and yolov5 are installed) with bad ones (a truncated .weights, a .weights
with no cfg). Outputs are checked by reloading them and comparing with `pyloader.load` on the same input:
max |out - ref| <= 1e-5 * max |ref| (the same graph and weights; only the serialised form differs), TFLite
float32 likewise but 1e-4 (TFLite's own kernels), TFLite float16 1e-2 (weights rounded to 11 bits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pyloader
from pyloader.bulk import TMP_PREFIX, Result

from pyloader.darknet.synthetic import write_weights

SMALL = (96, 128)  # fully convolutional: a small input keeps inference cheap


def run_cli(*args, timeout=600, **kw):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "pyloader", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def make_pt(path, seed=0, names=None):
    """A YOLOv5n checkpoint saved as YOLOv5's train.py does (class names c0.. unless `names` maps k to one), or
    None without torch/yolov5."""
    try:
        import torch
        import yolov5.models.yolo as Y5Y
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            raise
        return None
    import copy

    yaml = os.path.join(os.path.dirname(Y5Y.__file__), "yolov5n.yaml")
    model = Y5Y.DetectionModel(yaml)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    model.names = [names(k) if names else f"c{k}" for k in range(model.yaml["nc"])]
    torch.save({"epoch": 3, "model": copy.deepcopy(model).half(), "ema": copy.deepcopy(model).half()}, path)
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, cfg_dir):
    d = tmp_path_factory.mktemp("src")
    for stem, cfg, seed in (("a", "yolov3-tiny", 1), ("b", "yolov3-tiny", 2), ("c", "yolov4-tiny", 3)):
        write_weights(d / f"{stem}.weights", cfg_dir / f"{cfg}.cfg", seed=seed)
        shutil.copy(cfg_dir / f"{cfg}.cfg", d / f"{stem}.cfg")
    write_weights(d / "nocfg.weights", cfg_dir / "yolov4-tiny.cfg", seed=4)  # no nocfg.cfg beside it
    whole = (d / "a.weights").read_bytes()
    (d / "trunc.weights").write_bytes(whole[: len(whole) // 2])
    shutil.copy(cfg_dir / "yolov3-tiny.cfg", d / "trunc.cfg")
    pt = make_pt(d / "y5n.pt")
    yield d, pt is not None
    shutil.rmtree(d, ignore_errors=True)  # checkpoints: gone even when a test fails (pytest keeps failed dirs)


def close(out, ref, rtol):
    out = [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
    ref = [np.asarray(r) for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
    assert [o.shape for o in out] == [r.shape for r in ref]
    for o, r in zip(out, ref):
        scale = float(np.abs(r).max())
        assert scale > 0
        err = float(np.abs(o - r).max())
        assert err <= rtol * scale, f"max error {err} vs scale {scale}"


def image(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (1, *shape)).astype(np.float32)


def no_temporaries(out_dir):
    return [n for n in os.listdir(out_dir) if n.startswith(TMP_PREFIX)]


def test_cli_mixed_folder(mixed, tmp_path):
    import keras

    src, has_pt = mixed
    out = tmp_path / "out"
    p = run_cli("convert", src, "-o", out)
    assert p.returncode == 1, p.stderr
    good = ["a", "b", "c"] + (["y5n"] if has_pt else [])
    assert sorted(os.listdir(out)) == sorted(f"{s}.keras" for s in good)
    lines = {line.split()[1]: line for line in p.stdout.splitlines() if line.startswith(("converted", "failed"))}
    for s in good:
        assert lines[str(next(src.glob(s + ".*[!g]")))].startswith("converted")
    assert lines[str(src / "trunc.weights")].startswith("failed") and "bytes" in lines[str(src / "trunc.weights")]
    assert lines[str(src / "nocfg.weights")].startswith("failed") and "no cfg" in lines[str(src / "nocfg.weights")]
    assert f"{len(good)} converted, 0 skipped, 2 failed" in p.stdout
    assert "failed: " in p.stderr and "trunc.weights" in p.stderr
    # Reused models carry each checkpoint's own weights (a and b share one built model).
    for s in good:
        ckpt = next(src.glob(s + ".*[!g]"))
        ref_model = pyloader.load(ckpt)
        got_model = keras.saving.load_model(out / f"{s}.keras")
        x = image(ref_model.input.shape[1:], seed=len(s))
        close(got_model(x), ref_model(x), 1e-5)
    a, b = (keras.saving.load_model(out / f"{s}.keras") for s in "ab")
    x = image(pyloader.load(src / "a.weights").input.shape[1:])  # the .keras files take any size
    assert float(np.abs(np.asarray(a(x)[0]) - np.asarray(b(x)[0])).max()) > 1e-2
    # A second run skips what exists and still reports the failures.
    mtime = os.path.getmtime(out / "a.keras")
    p2 = run_cli("convert", src / "a.weights", src / "trunc.weights", "-o", out)
    assert p2.returncode == 1
    assert "1 skipped, 1 failed" in p2.stdout and os.path.getmtime(out / "a.keras") == mtime
    assert no_temporaries(out) == []


def test_cli_all_good_overwrite_and_glob(mixed, tmp_path):
    src, _ = mixed
    out = tmp_path / "out"
    p = run_cli("convert", src / "[ab].weights", "-o", out, "--format", "weights.h5", "--input-size", "96x128")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["a.weights.h5", "b.weights.h5"]
    assert "pyloader: [2/2]" in p.stderr  # plain log lines when stderr is not a terminal
    p = run_cli("convert", src / "a.weights", "-o", out, "--format", "weights.h5", "--input-size", "96x128",
                "--overwrite")
    assert p.returncode == 0 and "1 converted, 0 skipped, 0 failed" in p.stdout


@pytest.mark.parametrize("fmt,options,rtol", [
    ("keras", {"decode": True}, 1e-5),
    ("weights.h5", {}, 1e-5),
    ("savedmodel", {}, 1e-5),
    ("tflite", {}, 1e-4),
    ("tflite", {"tflite_fp16": True}, 1e-2),
])
def test_formats_reload(mixed, tmp_path, fmt, options, rtol):
    import keras

    src, _ = mixed
    ckpt = src / "c.weights"  # yolov4-tiny: route groups (ChannelSlice), maxpool, upsample
    results = pyloader.convert([ckpt], tmp_path, format=fmt, input_size=SMALL, **options)
    assert [r.status for r in results] == ["converted"], results
    r = results[0]
    assert isinstance(r, Result) and r.bytes == os.path.getsize(ckpt) and r.seconds > 0
    ref_model = pyloader.load(ckpt, input_size=SMALL, decode=options.get("decode", False))
    x = image((*SMALL, 3))
    ref = ref_model(x)
    if fmt == "keras":
        got = keras.saving.load_model(r.output)(x)
    elif fmt == "weights.h5":
        from pyloader.darknet.cfg import parse_network
        from pyloader.darknet.model import build_darknet_model

        fresh = build_darknet_model(parse_network(src / "c.cfg", SMALL))
        fresh.load_weights(r.output)
        got = fresh(x)
    elif fmt == "savedmodel":
        import tensorflow as tf

        assert os.path.isdir(r.output)
        serve = tf.saved_model.load(r.output).signatures["serving_default"]
        outs = serve(tf.constant(x))
        got = [outs[k] for k in sorted(outs, key=lambda k: int(k.rsplit("_", 1)[-1]) if k[-1].isdigit() else 0)]
        ref = sorted((np.asarray(t) for t in ref), key=lambda t: t.shape[1])
        got = sorted((np.asarray(t) for t in got), key=lambda t: t.shape[1])
    else:
        import tensorflow as tf

        interp = tf.lite.Interpreter(model_path=r.output)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        got = sorted((interp.get_tensor(d["index"]) for d in interp.get_output_details()), key=lambda t: t.shape[1])
        ref = sorted((np.asarray(t) for t in ref), key=lambda t: t.shape[1])
    close(got, ref, rtol)
    assert no_temporaries(tmp_path) == []


def test_api_executor_and_failures(mixed, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    src, _ = mixed
    seen = []
    with ThreadPoolExecutor(2) as ex:
        results = pyloader.convert([src / "a.weights", src / "b.weights", src / "trunc.weights",
                                    src / "missing.weights"], tmp_path, executor=ex, input_size=SMALL,
                                   progress=lambda r, done, total, bd, bt: seen.append((done, total)))
    status = {os.path.basename(r.source): r.status for r in results}
    assert status == {"a.weights": "converted", "b.weights": "converted", "trunc.weights": "failed",
                      "missing.weights": "failed"}
    assert sorted(seen) == [(1, 4), (2, 4), (3, 4), (4, 4)]
    import keras

    for s in "ab":
        x = image((*SMALL, 3))
        close(keras.saving.load_model(tmp_path / f"{s}.keras")(x),
              pyloader.load(src / f"{s}.weights", input_size=SMALL)(x), 1e-5)


def test_cli_interrupted_leaves_no_partial_output(mixed, tmp_path):
    """SIGKILL mid-run: only complete outputs are visible; the next run removes the dead run's temporaries.

    Deterministic under load: nothing waits for a time. The run is stopped (SIGSTOP) as soon as a finished
    output and a temporary both exist; if the temporary is still there while it is stopped, that is the state
    killed. (A finished output is one not under TMP_PREFIX: the hidden temporary also ends in .keras.)
    """
    import keras

    import pyloader.keras_blocks.layers  # noqa: F401 - registers pyloader's layers for load_model (run alone too)

    src, _ = mixed
    many = tmp_path / "many"
    many.mkdir()
    shutil.copy(src / "a.cfg", many / "net.cfg")
    for i in range(4):
        shutil.copy(src / ("a.weights" if i % 2 else "b.weights"), many / f"k{i}.weights")
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "pyloader", "convert", many, "-o", out, "--cfg", many / "net.cfg"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)

    def listing():
        names = os.listdir(out) if out.is_dir() else []
        return [n for n in names if not n.startswith(TMP_PREFIX)], [n for n in names if n.startswith(TMP_PREFIX)]

    caught = False
    try:
        while proc.poll() is None:
            finished, temporary = listing()
            if finished and temporary:
                os.killpg(proc.pid, signal.SIGSTOP)
                finished, temporary = listing()
                if temporary:
                    caught = True
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished, temporary = listing()
    assert finished, "no output was finished"
    assert caught == bool(temporary) and (not caught or len(finished) < 4)
    for n in finished:  # every visible output is complete
        assert n.endswith(".keras")
        keras.saving.load_model(out / n)
    # The next run starts by removing the dead run's temporaries, and finishes the rest.
    p = run_cli("convert", many, "-o", out, "--cfg", many / "net.cfg")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == [f"k{i}.keras" for i in range(4)]
    assert f"{len(finished)} skipped" in p.stdout


def test_cli_jobs_processes(mixed, tmp_path):
    src, _ = mixed
    p = run_cli("convert", src / "a.weights", src / "c.weights", src / "nocfg.weights", "-o", tmp_path,
                "--jobs", "2", "--input-size", "96x128", "--format", "weights.h5", "--no-fold-bn")
    assert p.returncode == 1, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.weights.h5", "c.weights.h5"]
    from pyloader.darknet.cfg import parse_network
    from pyloader.darknet.model import build_darknet_model

    fresh = build_darknet_model(parse_network(src / "a.cfg", SMALL), fold_bn=False)
    fresh.load_weights(tmp_path / "a.weights.h5")
    x = image((*SMALL, 3))
    close(fresh(x), pyloader.load(src / "a.weights", input_size=SMALL, fold_bn=False)(x), 1e-5)


INSPECT = """
import sys
from pyloader.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("tensorflow", "torch", "keras") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
sys.exit(rc)
"""


def test_inspect_without_tensorflow_or_torch(mixed):
    src, has_pt = mixed
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cases = [src / "c.weights"] + ([src / "y5n.pt"] if has_pt else [])
    for path in cases:
        p = subprocess.run([sys.executable, "-c", INSPECT, "inspect", path, "--json"], capture_output=True,
                           text=True, env=env, timeout=900)
        assert p.returncode == 0, p.stderr
        assert "HEAVY []" in p.stderr
        info = json.loads(p.stdout)
        arrays = pyloader.read(path, fold_bn=False)
        assert [t[0] for t in info["tensors"]] == list(arrays)
        assert [tuple(t[1]) for t in info["tensors"]] == [a.shape for a in arrays.values()]
        assert sum(t[3] for t in info["tensors"]) == sum(a.nbytes for a in arrays.values())
    c = json.loads(subprocess.run([sys.executable, "-m", "pyloader", "inspect", src / "c.weights", "--json"],
                                  capture_output=True, text=True, env=env).stdout)
    assert c["architecture"]["input"] == [416, 416, 3]
    assert [h["layer"] for h in c["architecture"]["heads"]] == ["yolo_30", "yolo_37"]
    assert c["architecture"]["by_type"]["conv"] == 21
    assert c["header"]["version"] == "0.2.5"
    text = run_cli("inspect", src / "c.weights").stdout
    assert "yolo_30 (yolo)" in text and "conv_0/kernel" in text and "3x3x3x32" in text
    bad = run_cli("inspect", src / "trunc.weights")
    assert bad.returncode == 1 and "trunc.weights" in bad.stderr and bad.stdout == ""


def test_help_usage_errors_and_entry_point(tmp_path):
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="pyloader")] == ["pyloader.cli:main"]
    h = run_cli("--help")
    assert h.returncode == 0 and all(c in h.stdout for c in ("convert", "inspect", "bench"))
    h = run_cli("convert", "--help")
    assert h.returncode == 0 and "--tflite-fp16" in h.stdout and "--jobs" in h.stdout
    e = run_cli("convert", "x.weights")  # no -o
    assert e.returncode == 2 and "-o" in e.stderr and e.stdout == ""
    e = run_cli("convert", "x.weights", "-o", tmp_path, "--input-size", "abc")
    assert e.returncode == 2 and "HxW" in e.stderr
    e = run_cli("convert", "x.weights", "-o", tmp_path, "--tflite-fp16")
    assert e.returncode == 2 and "--format tflite" in e.stderr
    e = run_cli("convert", tmp_path / "nothing-*.weights", "-o", tmp_path / "o")
    assert e.returncode == 1 and "matches no file" in e.stdout


def test_bench_is_registered_lazily():
    import importlib.util

    p = run_cli("bench", "--help", timeout=300)
    if importlib.util.find_spec("pyloader_bench") is None:
        assert p.returncode == 2 and "pyloader_bench" in p.stderr
    else:
        assert p.returncode == 0, p.stderr


def test_progress_bar_terminal_and_plain():
    import io

    from pyloader.cli import ProgressBar

    r = Result("src/a.weights", "out/a.keras", "converted", "", 0.5, 2_000_000)
    tty = io.StringIO()
    bar = ProgressBar(tty, tty=True, width=10)
    bar(r, 1, 2, 2_000_000, 4_000_000)
    bar(Result("src/b.weights", None, "failed", "bad", 0.1, 2_000_000), 2, 2, 4_000_000, 4_000_000)
    text = tty.getvalue()
    assert text.startswith("\r\x1b[K1/2 ") and "MB/s" in text and "left [#####-----]" in text
    assert "\r\x1b[K2/2 " in text and "[##########]" in text and text.endswith("\n")
    plain = io.StringIO()
    ProgressBar(plain, tty=False)(r, 1, 2, 2_000_000, 4_000_000)
    line = plain.getvalue()
    assert "\x1b" not in line and line.startswith("pyloader: [1/2] converted src/a.weights -> out/a.keras")


SKIPPED_IMPORTS = """
import sys
from pyloader.cli import main
rc = main()  # the command line: sys.argv
print("UNUSED", [m for m in ("matplotlib", "pandas") if sys.modules.get(m) is not None], file=sys.stderr)
sys.exit(rc)
"""


def test_convert_command_skips_keras_optional_imports(mixed, tmp_path):
    """`pyloader convert` (its own process) runs without matplotlib and pandas, which Keras imports where installed
    and a conversion never uses; main() called from Python leaves the caller's imports alone."""
    src = mixed[0] / "a.weights"
    p = subprocess.run([sys.executable, "-c", SKIPPED_IMPORTS, "convert", src, "-o", tmp_path / "o", "-q"],
                       capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert p.returncode == 0 and "UNUSED []" in p.stderr, p.stderr[-2000:]
    called = SKIPPED_IMPORTS.replace("main()", "main(sys.argv[1:])").replace(
        '"UNUSED", [m for m in ("matplotlib", "pandas") if sys.modules.get(m) is not None]',
        '"BLOCKED", [m for m in ("matplotlib", "pandas") if m in sys.modules and sys.modules[m] is None]')
    p = subprocess.run([sys.executable, "-c", called, "convert", src, "-o", tmp_path / "p", "-q"],
                       capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert p.returncode == 0 and "BLOCKED []" in p.stderr, p.stderr[-2000:]
