"""pyloader.load's reuse of the models it handed out (pyloader.model_pool): a later load of a checkpoint gets a
model no one holds any more, filled again, and only such a model.

Every returned model is independent (changing one never changes another), a model a caller still holds (itself,
a layer, a variable, its output tensors) is never reused, and the pool is keyed right: other options, input sizes,
checkpoints and a rewritten file give models with the right weights, checked against OpenCV's Darknet importer
and, for a .pt, against the ultralytics package. The soak command (bench/pyloader_bench/load_soak.py) runs at a
tiny scale.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import SHARED_CFG  # noqa: E402
from test_darknet_opencv import (DARKNET_EPS, OPENCV_EPS, assert_close, opencv_cfg,  # noqa: E402
                                 run_opencv)

cv2 = pytest.importorskip("cv2") if os.environ.get("CI") != "true" else __import__("cv2")

import pyloader  # noqa: E402
from pyloader import model_pool  # noqa: E402
from pyloader.darknet.cfg import parse_network  # noqa: E402
from pyloader.darknet.synthetic import write_weights  # noqa: E402

CFG = str(SHARED_CFG / "yolov3-tiny.cfg")
SIZE = (96, 160)


@pytest.fixture(autouse=True)
def _empty_pool():
    model_pool.release()
    gc.collect()
    yield
    model_pool.release()


@pytest.fixture(scope="module")
def darknet(tmp_path_factory):
    """checkpoint(seed) -> (our .weights, OpenCV's copy): synthetic weights of yolov3-tiny, one seed each."""
    if not os.path.exists(CFG):
        pytest.skip(f"{CFG} not found")  # conftest fails CI when ../shared is missing
    d = tmp_path_factory.mktemp("cache")

    def checkpoint(seed, name=None):
        ours, theirs = d / (name or f"s{seed}.weights"), d / f"opencv_s{seed}.weights"
        write_weights(ours, CFG, seed=seed)
        write_weights(theirs, CFG, seed=seed, variance_offset=DARKNET_EPS - OPENCV_EPS)
        return str(ours), str(theirs)
    checkpoint.dir = d
    return checkpoint


IMAGE = np.random.default_rng(3).uniform(0, 1, (1, *SIZE, 3)).astype(np.float32)


def check_opencv(model, theirs, tmp_path, what):
    """model's raw heads on IMAGE against OpenCV's on `theirs` (yolov3-tiny at SIZE)."""
    network = parse_network(CFG, SIZE)
    want, _ = run_opencv(opencv_cfg(CFG, tmp_path, SIZE), theirs, IMAGE, network.heads, network)
    for got, ref in zip(model(IMAGE), want):
        assert_close(np.asarray(got), ref, what)


def test_independent_and_reused(darknet, tmp_path):
    ours, theirs = darknet(1)
    a = pyloader.load(ours, CFG, input_size=SIZE)
    b = pyloader.load(ours, CFG, input_size=SIZE)
    assert a is not b
    kernel = b.get_layer("conv_0").kernel
    before = kernel.numpy()
    a.get_layer("conv_0").kernel.assign(np.zeros(before.shape, np.float32))
    np.testing.assert_array_equal(np.asarray(kernel), before)  # changing a leaves b alone
    del kernel
    b.get_layer("conv_0").kernel.assign(np.ones(before.shape, np.float32))
    first = id(a)
    del a
    c = pyloader.load(ours, CFG, input_size=SIZE)
    assert id(c) == first, "a model no one holds is reused"
    check_opencv(c, theirs, tmp_path, "reused model")  # refilled: conv_0 is the checkpoint's again
    assert float(np.abs(np.asarray(b.get_layer("conv_0").kernel) - 1).max()) == 0  # b untouched


@pytest.mark.parametrize("hold", ["layer", "variable", "weights", "outputs", "value"])
def test_held_parts_keep_a_model_out_of_reuse(darknet, hold):
    ours, _ = darknet(1)
    m = pyloader.load(ours, CFG, input_size=SIZE)
    first = id(m)
    held = {"layer": lambda: m.get_layer("conv_4"), "variable": lambda: m.get_layer("conv_4").kernel,
            "weights": lambda: m.weights, "outputs": lambda: m.outputs,
            "value": lambda: m.get_layer("conv_4").kernel.value}[hold]()
    kernel = m.get_layer("conv_4").kernel.numpy()
    m.get_layer("conv_4").kernel.assign(kernel + 1)
    del m
    other = pyloader.load(ours, CFG, input_size=SIZE)
    assert id(other) != first, f"a model whose {hold} is held was reused"
    np.testing.assert_array_equal(np.asarray(other.get_layer("conv_4").kernel), kernel)
    assert held is not None


def test_keyed_by_options_size_checkpoint_and_content(darknet, tmp_path):
    (o1, t1), (o2, t2) = darknet(1), darknet(2)
    for _ in range(2):  # the second round reuses what the first built (each dropped at once)
        check_opencv(pyloader.load(o1, CFG, input_size=SIZE), t1, tmp_path, "seed 1")
        check_opencv(pyloader.load(o2, CFG, input_size=SIZE), t2, tmp_path, "seed 2")
        check_opencv(pyloader.load(o1, CFG, input_size=SIZE, fold_bn=False), t1, tmp_path, "seed 1 fold_bn=False")
        raw = pyloader.load(o1, CFG, input_size=SIZE)
        dec = pyloader.load(o1, CFG, input_size=SIZE, decode=True)
        assert len(raw.outputs) == 2 and len(dec.outputs) == 1
        assert raw.name == "yolov3-tiny" and raw.metadata["source"]["name"] == os.path.basename(o1)
        native = pyloader.load(o1, CFG)
        assert tuple(native.inputs[0].shape[1:3]) == (416, 416)
        del raw, dec, native
    # the same file rewritten with other weights (one architecture): the reused model takes the new ones
    ours, theirs = darknet(3, name="s1.weights")
    assert ours == o1
    check_opencv(pyloader.load(ours, CFG, input_size=SIZE), theirs, tmp_path, "rewritten file")


def test_ultralytics_pt_reused_matches_reference(tmp_path):
    torch = pytest.importorskip("torch") if os.environ.get("CI") != "true" else __import__("torch")
    from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

    pts = [str(tmp_path / f"v8n-{i}.pt") for i in range(2)]
    for i, p in enumerate(pts):
        write_ultralytics_checkpoint(p, "yolov8n.yaml", seed=i)
    x = np.random.default_rng(1).random((1, 64, 96, 3), dtype=np.float32)
    for p in pts + pts:  # the second pass reuses each file's model
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        with torch.no_grad():
            want = (ckpt.get("ema") or ckpt["model"]).float().eval()(torch.from_numpy(x).permute(0, 3, 1, 2))[0]
        got = np.asarray(pyloader.load(p, decode=True, input_size=(64, 96))(x))
        assert float(np.abs(got - want.numpy()).max() / np.abs(want.numpy()).max()) <= 1e-4, p


def test_counts_taken_without_garbage(darknet):
    """The pool's counts, taken right after a build, are those of the model alone: a full garbage collection
    changes none (else a collection could later make a held model look free)."""
    ours, _ = darknet(1)
    gc.disable()
    try:
        pyloader.load(ours, CFG, input_size=SIZE)
        (kept,) = next(iter(model_pool._POOL.values()))
        assert model_pool._counts(kept) == kept.counts  # free again: the caller dropped it
        gc.collect()
        assert model_pool._counts(kept) == kept.counts
    finally:
        gc.enable()


def test_load_soak_command_tiny():
    r = subprocess.run([sys.executable, "-m", "pyloader_bench.load_soak", "--count", "30", "--warm", "10",
                        "--files", "2"],
                       capture_output=True, text=True, timeout=300)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["problems"] == [], (report, r.stderr[-2000:])  # RSS held after warm-up
    assert report["loads"] == 30 and report["rss_mb"]["after_warm"] > 0 and report["rss_mb"]["end"] > 0
    assert report["models_built"] == 2, report  # one per file: the rest were reused
