"""SavedModel and `.keras` outputs with a dynamic batch and, for fully convolutional detectors, a dynamic height and
width (keras_blocks.model.dynamic_model): written at one size, each file is run in a fresh process at two sizes
(multiples of the max stride) and two batch sizes and compared with the Keras model pyloader builds at each fixed
size (max |file - model| <= 1e-5 * max |model|: one graph, traced instead of eager); the YOLOv8n `.keras` also
against the `ultralytics` package's model at the second size. NMS outputs keep a fixed size, batch dynamic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyloader
from pyloader.darknet.synthetic import write_weights

S1, S2 = (64, 96), (96, 64)  # built at S1; S2 only through the dynamic input


@pytest.fixture(scope="module")
def sources(tmp_path_factory, cfg_dir):
    from test_cli_convert import make_pt

    d = tmp_path_factory.mktemp("dyn")
    shutil.copy(cfg_dir / "yolov4-tiny.cfg", d / "v4t.cfg")
    write_weights(d / "v4t.weights", d / "v4t.cfg", seed=1)
    out = {"v4t": d / "v4t.weights"}
    if make_pt(d / "y5n.pt") is not None:
        out["y5n"] = d / "y5n.pt"
        from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

        write_ultralytics_checkpoint(str(d / "y8n.pt"), "yolov8n.yaml", seed=1)
        out["y8n"] = d / "y8n.pt"
    elif os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("CI needs torch, yolov5 and ultralytics")
    yield out
    shutil.rmtree(d, ignore_errors=True)


def run_outputs(paths, inputs):
    """{path: [outputs per input]} of each SavedModel / .keras file run in a fresh process."""
    script = textwrap.dedent("""
        import sys, numpy as np, keras, tensorflow as tf, pyloader
        data = np.load(sys.argv[1])
        xs = [data[k] for k in sorted(data.files)]
        out = {}
        for i, p in enumerate(sys.argv[3:]):
            if p.endswith(".keras"):
                m = keras.saving.load_model(p)
                f = tf.function(lambda x: m(x))  # traced: the graph of unknown height and width
                shape = m.inputs[0].shape
            else:
                s = tf.saved_model.load(p)
                f = s.serve
                shape = f.concrete_functions[0].structured_input_signature[0][0].shape if hasattr(
                    f, "concrete_functions") else None
            for j, x in enumerate(xs):
                y = f(tf.constant(x))
                y = [y[k] for k in sorted(y)] if isinstance(y, dict) else (y if isinstance(y, list) else [y])
                for n, t in enumerate(y):
                    out[f"{i}_{j}_{n}"] = np.asarray(t)
        np.savez(sys.argv[2], **out)
    """)
    d = os.path.dirname(paths[0])
    np.savez(os.path.join(d, "x.npz"), **{f"x{j}": x for j, x in enumerate(inputs)})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-c", script, os.path.join(d, "x.npz"), os.path.join(d, "y.npz"), *paths],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(os.path.join(d, "y.npz"))
    return {p: [[got[f"{i}_{j}_{n}"] for n in range(len([k for k in got.files if k.startswith(f"{i}_{j}_")]))]
                for j in range(len(inputs))] for i, p in enumerate(paths)}


def rel(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("decode", [False, True], ids=["raw", "decoded"])
def test_dynamic_batch_and_size(sources, tmp_path, decode):
    sources = sources if decode else {"v4t": sources["v4t"]}  # raw heads: the shared layers; decoded: each grid
    paths = []
    for fmt in ("savedmodel", "keras"):
        results = pyloader.convert(list(sources.values()), tmp_path, format=fmt, decode=decode, input_size=S1)
        assert all(r.status == "converted" for r in results), results
        paths += [r.output for r in results]
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, *S1, 3), np.float32), rng.random((2, *S2, 3), np.float32)]
    got = run_outputs(paths, inputs)
    for stem, src in sources.items():
        want = []
        for x, size in zip(inputs, (S1, S2)):
            m = pyloader.load(src, input_size=size, decode=decode)
            y = m(x)
            y = y if isinstance(y, (list, tuple)) else [y]
            want.append([np.asarray(y[i]) for i in np.argsort(m.output_names)])  # the files' outputs by name
        for p in paths:
            if os.path.basename(p).startswith(stem):
                for g, w in zip(got[p], want):
                    assert len(g) == len(w)
                    for a, b in zip(g, w):
                        assert rel(a, b) <= 1e-5, (p, rel(a, b))
    if decode and "y8n" in sources:  # the reference at the size the file was not built for
        from test_ultralytics_reference import _reference

        ref, _ = _reference(str(sources["y8n"]), inputs[1])
        assert rel(got[os.path.join(tmp_path, "y8n.keras")][1][0], ref) <= 1e-4


def test_nms_keeps_its_size_batch_dynamic(sources, tmp_path):
    """NMS needs its box count: the SavedModel keeps the built size, its batch dynamic."""
    src = sources["v4t"]
    (r,) = pyloader.convert([src], tmp_path, format="savedmodel", nms=True, input_size=S1)
    assert r.status == "converted", r
    x = np.random.default_rng(1).random((3, *S1, 3), np.float32)
    got = run_outputs([r.output], [x[:1], x])[r.output]
    m = pyloader.load(src, input_size=S1, nms=True)
    want = dict(zip(m.output_names, m(x)))
    for g, name in zip(got[1], sorted(want)):
        np.testing.assert_allclose(g, np.asarray(want[name]), rtol=1e-5, atol=1e-4)
    assert [g.shape[0] for g in got[0]] == [1] * len(want)
