"""Converted files as a user deploys them: each loads in a fresh process that imports only what a user would,
gives the in-memory model's outputs by name, and carries pyloader's metadata (issue 8 items 1, 2, 3, 7).

Checkpoints: yolov3-tiny (built-in Keras layers only), yolov4-tiny (route groups: pyloader's ChannelSlice) and a
YOLOv5n .pt (built-in layers only), at a small input. References: `pyloader.load` in this process (what each file
was made from; the models themselves are checked against OpenCV and the yolov5 package elsewhere). Tolerances:
1e-5 of the output's max for .keras / .weights.h5 / SavedModel (same graph; other backends' kernels), 1e-4 for
TFLite (its own kernels).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyloader
from pyloader.outputs import read_metadata

from pyloader.darknet.synthetic import write_weights
from test_cli_convert import make_pt

SMALL = (64, 96)
CLASSES80 = [f"name{i}" for i in range(80)]


def run_py(code, *args, env=None, timeout=600):
    """A fresh interpreter running `code` (triton hidden: torch after TensorFlow, see conftest)."""
    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full)


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, cfg_dir):
    d = tmp_path_factory.mktemp("ckpts")
    for stem, cfg, seed in (("v3t", "yolov3-tiny", 1), ("v4t", "yolov4-tiny", 2), ("v4t_other", "yolov4-tiny", 3)):
        write_weights(d / f"{stem}.weights", cfg_dir / f"{cfg}.cfg", seed=seed)
        shutil.copy(cfg_dir / f"{cfg}.cfg", d / f"{stem}.cfg")
    (d / "coco.names").write_text("\n".join(CLASSES80) + "\n")
    sources = [d / "v3t.weights", d / "v4t.weights"]
    if make_pt(d / "y5n.pt") is not None:
        sources.append(d / "y5n.pt")
    x = np.random.default_rng(0).uniform(0, 1, (1, *SMALL, 3)).astype(np.float32)
    np.save(d / "x.npy", x)
    refs = {}
    for s in sources:
        m = pyloader.load(s, input_size=SMALL)
        refs[s.stem] = dict(zip(m.output_names, (np.asarray(o) for o in m(x))))
        np.savez(d / f"{s.stem}.ref.npz", **refs[s.stem])
    return d, sources, x, refs


LOAD_KERAS = """
    import json, sys
    import numpy as np
    import keras  # first, alone: the files of built-in layers must load without pyloader
    d, plain = sys.argv[1], int(sys.argv[2])
    x = np.load(d + "/x.npy")
    report = {"backend": keras.config.backend()}
    for k, path in enumerate(sys.argv[3:]):
        if k == plain:  # the rest needs pyloader: imported after Keras, it registers its classes at once
            import pyloader
        m = keras.saving.load_model(path)
        ref = np.load(d + "/" + path.rsplit("/", 1)[1].split(".")[0] + ".ref.npz")
        outs = m(x)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        err = {n: float(np.abs(keras.ops.convert_to_numpy(o) - ref[n]).max() / np.abs(ref[n]).max())
               for n, o in zip(m.output_names, outs)}
        report[f"{k}:{path}"] = {"names": list(m.output_names), "err": err, "pyloader": "pyloader" in sys.modules,
                        "class_names": list(getattr(m, "class_names", None) or []) or None}
    print(json.dumps(report))
"""


def builtin_only(path) -> bool:
    import zipfile

    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    return all(l["module"].startswith("keras.") for l in config["config"]["layers"])


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_keras_loads_in_a_fresh_process(ckpts, tmp_path, backend):
    pytest.importorskip(backend)
    d, sources, _, refs = ckpts
    out = tmp_path / "out"
    results = pyloader.convert(sources, out, input_size=SMALL)
    assert [r.status for r in results] == ["converted"] * len(sources), results
    files = {r.output: r.source for r in results}
    plain = [f for f in files if builtin_only(f)]
    # yolov3-tiny and YOLOv5n need nothing but Keras; yolov4-tiny's route groups need pyloader's ChannelSlice
    assert sorted(os.path.basename(f) for f in plain) == sorted(
        n for n in ("v3t.keras", "y5n.keras") if any(s.name.startswith(n[:-6] + ".") for s in sources))
    custom = [f for f in files if f not in plain]
    # plain files without pyloader, then (pyloader imported) the custom one and the plain ones again
    order = plain + custom + plain
    p = run_py(LOAD_KERAS, d, len(plain), *order, env={"KERAS_BACKEND": backend})
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    for k, f in enumerate(order):
        got = report[f"{k}:{f}"]
        stem = os.path.basename(f).split(".")[0]
        assert got["pyloader"] == (k >= len(plain)), got
        assert got["names"] == list(refs[stem]), got  # one order: the in-memory model's
        assert max(got["err"].values()) <= 1e-5, (backend, f, got["err"])
        # the metadata is restored where pyloader is imported; plain Keras gives a plain functional model
        want = list(pyloader.load(files[f], input_size=SMALL).class_names) if got["pyloader"] else None
        assert got["class_names"] == want
    print(backend, {f"{k}:{os.path.basename(f)}": report[f"{k}:{f}"]["err"] for k, f in enumerate(order)})


def test_pyloader_imported_before_keras(ckpts, tmp_path):
    """`import pyloader` first (Keras not imported yet): its classes are registered when Keras is imported."""
    r = pyloader.convert([ckpts[0] / "v4t.weights"], tmp_path, input_size=SMALL)[0]
    code = """
        import sys, pyloader
        assert "keras" not in sys.modules
        import keras
        m = keras.saving.load_model(sys.argv[1])
        print(m.metadata["source"]["name"], m.output_names)
    """
    p = run_py(code, r.output)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[0] == "v4t.weights"


def test_every_format_by_name_with_metadata(ckpts, tmp_path):
    d, sources, x, refs = ckpts
    sources = [s for s in sources if s.stem != "v3t"]  # yolov4-tiny and YOLOv5n
    outs = {}
    for fmt in ("weights.h5", "savedmodel", "tflite"):
        results = pyloader.convert(sources, tmp_path / fmt, format=fmt, input_size=SMALL)
        assert [r.status for r in results] == ["converted"] * len(sources), results
        outs.update({(r.source, fmt): r.output for r in results})
    # TensorFlow alone for SavedModel and TFLite, as a serving stack has it
    code = """
        import json, sys
        import numpy as np
        import tensorflow as tf
        x = np.load(sys.argv[1])
        report = {}
        for kind, path in zip(sys.argv[2::2], sys.argv[3::2]):
            if kind == "savedmodel":
                loaded = tf.saved_model.load(path)
                outs = {k: v.numpy() for k, v in loaded.signatures["serving_default"](tf.constant(x)).items()}
                meta = json.loads(loaded.signatures["metadata"]()["pyloader_metadata"].numpy().decode())
                report[path] = {"order": sorted(outs), "meta": meta["class_names"][:2]}
            else:
                it = tf.lite.Interpreter(model_path=path)
                it.allocate_tensors()
                it.set_tensor(it.get_input_details()[0]["index"], x)
                it.invoke()
                details = it.get_output_details()
                outs = {o["name"]: it.get_tensor(o["index"]) for o in details}
                sig = it.get_signature_runner()(**{it.get_signature_list()["serving_default"]["inputs"][0]: x})
                assert all(np.array_equal(sig[k], outs[k]) for k in outs)
                from tensorflow.lite.tools import flatbuffer_utils  # TFLite's own flatbuffer tooling
                fb = flatbuffer_utils.read_model(path)
                entry = [m for m in fb.metadata if m.name == b"pyloader_metadata"][0]
                meta = json.loads(bytes(fb.buffers[entry.buffer].data).decode())
                report[path] = {"order": [o["name"] for o in details], "meta": meta["class_names"][:2]}
            np.savez(path.rstrip("/") + ".got.npz", **outs)
        print(json.dumps(report))
    """
    args = [a for (src, fmt), p in outs.items() if fmt != "weights.h5" for a in (fmt, p)]
    p = run_py(code, d / "x.npy", *args)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    measured = {}
    for (src, fmt), path in outs.items():
        stem = os.path.basename(src).split(".")[0]
        ref = refs[stem]
        if fmt == "tflite":
            assert report[path]["order"] == list(ref)  # the Keras model's names, in its order
        if fmt == "savedmodel":
            assert report[path]["order"] == sorted(ref)
        if fmt != "weights.h5":
            assert report[path]["meta"] == read_metadata(path)["class_names"][:2]
            got = np.load(path.rstrip("/") + ".got.npz")
            measured[(stem, fmt)] = {n: rel_err(got[n], ref[n]) for n in ref}
            assert max(measured[(stem, fmt)].values()) <= (1e-4 if fmt == "tflite" else 1e-5), measured
        meta = read_metadata(path)
        assert meta["source"]["name"] == os.path.basename(src)
        assert [o["name"] for o in meta["outputs"]] == list(ref)
        assert meta["input"]["size"] == list(SMALL)
        # pyloader inspect OUTPUT: no TensorFlow needed
        p = subprocess.run([sys.executable, "-m", "pyloader", "inspect", path, "--json"], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        info = json.loads(p.stdout)
        assert info["format"] == fmt and info["metadata"] == meta
    # .weights.h5: a model of the same architecture (other weights) takes them back; metadata in the h5
    code = """
        import json, sys
        import numpy as np
        import pyloader, keras
        x = np.load(sys.argv[1])
        m = pyloader.load(sys.argv[2], input_size=(64, 96))
        m.load_weights(sys.argv[3])
        np.savez(sys.argv[3] + ".got.npz", **dict(zip(m.output_names, (np.asarray(o) for o in m(x)))))
    """
    h5 = outs[(os.fspath(d / "v4t.weights"), "weights.h5")]
    p = run_py(code, d / "x.npy", d / "v4t_other.weights", h5)
    assert p.returncode == 0, p.stderr[-3000:]
    got = np.load(h5 + ".got.npz")
    measured[("v4t", "weights.h5")] = {n: rel_err(got[n], refs["v4t"][n]) for n in refs["v4t"]}
    assert max(measured[("v4t", "weights.h5")].values()) <= 1e-5
    print(measured)


def test_tflite_from_the_jax_backend(ckpts, tmp_path):
    """yolov4-tiny's route groups (a channel slice) convert to TFLite under JAX too."""
    pytest.importorskip("jax")
    d, _, x, refs = ckpts
    code = """
        import sys, pyloader
        r = pyloader.convert([sys.argv[1]], sys.argv[2], format="tflite", input_size=(64, 96))
        assert r[0].status == "converted", r
    """
    p = run_py(code, d / "v4t.weights", tmp_path, env={"KERAS_BACKEND": "jax"})
    assert p.returncode == 0, p.stderr[-3000:]
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(tmp_path / "v4t.tflite"))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    got = {o["name"]: it.get_tensor(o["index"]) for o in it.get_output_details()}
    assert list(got) == list(refs["v4t"])
    errs = {n: rel_err(got[n], refs["v4t"][n]) for n in got}
    assert max(errs.values()) <= 1e-4, errs
    print("jax tflite", errs)


def test_torch_backend_refuses_savedmodel_clearly(ckpts, tmp_path):
    pytest.importorskip("torch")
    code = """
        import sys, pyloader
        try:
            pyloader.convert([sys.argv[1]], sys.argv[2], format="savedmodel")
        except ValueError as e:
            print("refused:", e)
    """
    p = run_py(code, ckpts[0] / "v4t.weights", tmp_path, env={"KERAS_BACKEND": "torch"})
    assert "refused:" in p.stdout and "KERAS_BACKEND=tensorflow" in p.stdout, p.stdout + p.stderr[-2000:]
    assert os.listdir(tmp_path) == []


def run_cli(*args, env=None, timeout=600):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyloader", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full)


def test_cli_training_run_folders_names_and_logs(ckpts, tmp_path):
    d = ckpts[0]
    runs = tmp_path / "runs"
    for rel in ("train/exp3/weights/best", "train/exp3/weights/last", "train/exp4/weights/best", "top"):
        (runs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(d / "v3t.weights", runs / f"{rel}.weights")
        shutil.copy(d / "v3t.cfg", runs / f"{rel}.cfg")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    p = run_cli("convert", tmp_path / "empty", "-o", tmp_path / "o0")
    assert p.returncode == 1 and "no checkpoint found" in p.stdout + p.stderr and ".weights" in p.stderr
    p = run_cli("convert", runs, "-o", tmp_path / "out", "--input-size", "64x64", "--names", d / "coco.names")
    assert p.returncode == 0, p.stderr
    want = ["top.keras", "train-exp3-best.keras", "train-exp3-last.keras", "train-exp4-best.keras"]
    assert sorted(os.listdir(tmp_path / "out")) == want
    assert "found 4 checkpoints" in p.stderr and "train/exp3/weights/best.weights" in p.stderr
    assert "framework import:" in p.stdout and p.stdout.count("framework import:") == 1
    # TensorFlow's C++ log lines (I0000 ... port.cc:153] oneDNN ...) are filtered; -v keeps them
    assert not any(l[:1] in "IWE" and l[1:5].isdigit() for l in p.stderr.splitlines()), p.stderr
    assert "absl::InitializeLog" not in p.stderr
    assert read_metadata(tmp_path / "out" / "train-exp3-best.keras")["class_names"] == CLASSES80
    p = run_cli("convert", runs / "top.weights", "-o", tmp_path / "out")
    assert p.returncode == 0 and "(use --overwrite)" in p.stdout and "(use overwrite)" not in p.stdout + p.stderr


def test_missing_backend_says_what_to_install(ckpts, tmp_path):
    code = """
        import sys
        sys.modules["jax"] = None  # as if not installed
        from pyloader.cli import main
        sys.exit(main(["convert", sys.argv[1], "-o", sys.argv[2]]))
    """
    p = run_py(code, ckpts[0] / "v3t.weights", tmp_path / "o", env={"KERAS_BACKEND": "jax"})
    assert p.returncode == 1, p.stderr
    assert "pip install 'pyloader[jax]'" in p.stderr and "Traceback" not in p.stderr


def test_fork_pool_refused_after_tensorflow(ckpts, tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import tensorflow  # noqa: F401 - loaded in this process, as in a notebook that used it

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as ex:
        with pytest.raises(ValueError, match="spawn"):
            pyloader.convert([ckpts[0] / "v3t.weights"], tmp_path / "o", executor=ex)
    assert not (tmp_path / "o").exists()


def test_dask_local_cluster_executor(ckpts, tmp_path):
    distributed = pytest.importorskip("distributed")
    d = ckpts[0]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc:
        with distributed.Client(lc) as client:
            results = pyloader.convert([d / "v3t.weights", d / "v4t.weights"], tmp_path, input_size=SMALL,
                                       executor=client.get_executor())
    assert sorted(r.status for r in results) == ["converted", "converted"], results
    assert sorted(os.listdir(tmp_path)) == ["v3t.keras", "v4t.keras"]


def test_keras_mish_is_darknets_mish():
    """darknet: x * tanh(softplus(x)) with softplus = x above 20, exp(x) below -20; Keras' mish has no
    thresholds. In float32 both agree to rounding over the whole range (checked around the thresholds)."""
    import keras

    x = np.concatenate([np.linspace(-40, 40, 200001), np.linspace(19.5, 20.5, 10001),
                        np.linspace(-20.5, -19.5, 10001)]).astype(np.float32)
    x64 = x.astype(np.float64)
    sp = np.where(x64 > 20, x64, np.where(x64 < -20, np.exp(x64), np.log1p(np.exp(x64))))
    darknet = x64 * np.tanh(sp)
    got = np.asarray(keras.activations.mish(keras.ops.convert_to_tensor(x)), np.float64)
    err = np.abs(got - darknet) / np.maximum(np.abs(darknet), 1e-30)
    assert float(err.max()) <= 1e-6, float(err.max())
