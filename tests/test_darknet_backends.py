"""The same darknet model on Keras' PyTorch (and, where installed, JAX) backend: Keras layers and keras.ops only.

Each backend runs in a subprocess (Keras picks its backend at import) and is compared with the numpy
transliteration of darknet, the same reference as test_darknet_semantics.py.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import darknet_numpy_ref as ref  # noqa: E402
from pyloader.darknet.synthetic import write_weights  # noqa: E402
from test_darknet_semantics import CFGS, NET  # noqa: E402

from pyloader.darknet.cfg import parse_network  # noqa: E402

SCRIPT = """
import sys, numpy as np, keras, pyloader
weights, cfg, image, out = sys.argv[1:5]
x = np.load(image)
outs = []
for fold_bn in (True, False):
    outs.append(keras.ops.convert_to_numpy(pyloader.load(weights, cfg, fold_bn=fold_bn)(x)))
np.save(out, np.stack(outs))
print(keras.backend.backend())
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backends_match_reference(backend, tmp_path):
    module = {"torch": "torch", "jax": "jax"}[backend]
    if importlib.util.find_spec(module) is None:
        if backend == "torch" and os.environ.get("CI") == "true":
            pytest.fail("torch must be installed in CI (the YOLOv5 reference tests need it too)")
        pytest.skip(f"{module} not installed")
    cfg = tmp_path / "net.cfg"
    cfg.write_text(NET.format(h=23, w=31) + CFGS["shortcuts_and_routes"] + "[reorg3d]\nstride=1\n\n"
                   + "[upsample]\nstride=2\n\n" + "[maxpool]\nsize=3\nstride=2\n\n"
                   + "[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\nactivation=mish\n")
    weights = tmp_path / "net.weights"
    tensors = write_weights(weights, cfg, seed=2)
    image = np.random.default_rng(0).uniform(0, 1, (1, 23, 31, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", image)
    env = {**os.environ, "KERAS_BACKEND": backend}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(weights), str(cfg), str(tmp_path / "x.npy"),
                        str(tmp_path / "out.npy")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == backend
    network = parse_network(cfg)
    want = ref.forward(network, tensors, image[0].transpose(2, 0, 1))[network.layers[-1].index]
    for got in np.load(tmp_path / "out.npy"):
        got = got[0].transpose(2, 0, 1)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max() + 1e-6
