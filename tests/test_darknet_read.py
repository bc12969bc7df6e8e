"""pyloader.read on darknet files: Keras layout, exact values, zero-copy views, no TensorFlow import."""

import gc
import subprocess
import sys

import numpy as np
import pytest

import pyloader
from pyloader.darknet.synthetic import write_weights


@pytest.fixture(scope="module")
def tiny(cfg_dir, tmp_path_factory):
    cfg = cfg_dir / "yolov4-tiny.cfg"
    weights = tmp_path_factory.mktemp("read") / "yolov4-tiny.weights"
    tensors = write_weights(weights, cfg, seed=3)
    yield weights, cfg, tensors
    weights.unlink(missing_ok=True)  # 24 MB: gone even when a test fails (pytest keeps failed dirs)


def test_unfolded_arrays_are_the_file(tiny):
    weights, cfg, tensors = tiny
    arrays = pyloader.read(weights, cfg, fold_bn=False)
    for index, t in tensors.items():
        np.testing.assert_array_equal(arrays[f"conv_{index}/kernel"], t["weights"].transpose(2, 3, 1, 0))
        if "scales" in t:
            np.testing.assert_array_equal(arrays[f"bn_{index}/gamma"], t["scales"])
            np.testing.assert_array_equal(arrays[f"bn_{index}/beta"], t["biases"])
            np.testing.assert_array_equal(arrays[f"bn_{index}/moving_mean"], t["mean"])
            np.testing.assert_array_equal(arrays[f"bn_{index}/moving_variance"], t["variance"])
            assert f"conv_{index}/bias" not in arrays
        else:
            np.testing.assert_array_equal(arrays[f"conv_{index}/bias"], t["biases"])


def test_folded_arrays(tiny):
    weights, cfg, tensors = tiny
    arrays = pyloader.read(weights, cfg)  # fold_bn=True is the default
    assert not any(k.startswith("bn_") for k in arrays)
    for index, t in tensors.items():
        if "scales" not in t:
            continue
        s = t["scales"].astype(np.float64) / np.sqrt(t["variance"].astype(np.float64) + 1e-5)
        want_k = t["weights"].astype(np.float64).transpose(2, 3, 1, 0) * s
        want_b = t["biases"] - t["mean"] * s
        np.testing.assert_allclose(arrays[f"conv_{index}/kernel"], want_k, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(arrays[f"conv_{index}/bias"], want_b, rtol=1e-6, atol=1e-6)


def test_arrays_own_memory_and_are_aligned(tiny):
    weights, cfg, _ = tiny
    arrays = pyloader.read(weights, cfg, fold_bn=False)
    gamma = arrays["bn_0/gamma"]
    kernel = arrays["conv_0/kernel"]
    for a in (gamma, kernel):
        assert not a.flags.owndata and a.base is not None  # backed by the native owner, not a copy
    assert gamma.flags.writeable  # memory of its own (read with pread), not a view of the file
    assert kernel.ctypes.data % 64 == 0  # transformed arrays are 64-byte aligned
    # The owner keeps the memory alive after the dict is gone.
    want = gamma.copy()
    del arrays
    gc.collect()
    np.testing.assert_array_equal(gamma, want)


def test_read_does_not_import_tensorflow(tiny):
    weights, cfg, _ = tiny
    code = ("import sys, pyloader\na = pyloader.read(%r, %r)\n"
            "print(len(a), 'tensorflow' in sys.modules, 'keras' in sys.modules)") % (str(weights), str(cfg))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    n, tf_loaded, keras_loaded = r.stdout.split()
    assert int(n) > 0 and tf_loaded == "False" and keras_loaded == "False"


def test_cfg_beside_the_weights_is_found(tiny, tmp_path):
    weights, cfg, _ = tiny
    (tmp_path / "m.cfg").write_bytes(open(cfg, "rb").read())
    (tmp_path / "m.weights").write_bytes(open(weights, "rb").read())
    a = pyloader.read(tmp_path / "m.weights")
    assert "conv_0/kernel" in a


def test_model_layer_names_follow_darknet_indices(tiny):
    weights, cfg, _ = tiny
    model = pyloader.load(weights, cfg)
    names = {layer.name for layer in model.layers}
    assert {"conv_0", "leaky_0", "route_3_slice0", "route_8", "maxpool_9", "upsample_33"} <= names
    assert [tuple(o.shape) for o in model.outputs] == [(None, 13, 13, 255), (None, 26, 26, 255)]


def test_load_leaves_keras_state_clean(tiny):
    # load builds without initialising and creates each variable from its array: nothing may stay on Keras'
    # list of variables waiting for initialisation (a later StatelessScope would try to initialise them).
    import keras

    weights, cfg, _ = tiny
    model = pyloader.load(weights, cfg)
    with keras.StatelessScope():
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
    assert layer.kernel.shape == (3, 2)
    # The model's values survive (the arrays it was built from have been handed back to the system).
    kernel = model.get_layer("conv_0").kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kernel), pyloader.read(weights, cfg)["conv_0/kernel"])
