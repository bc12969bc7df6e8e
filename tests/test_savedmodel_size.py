"""SavedModel output stores each variable once (issue 21): Keras' ExportArchive, given the model to `track`,
saves every weight twice (the Keras variable and the tf.Variable the endpoint captures: yolov8s 90.4 MB for
44.6 MB of weights). For yolov4-tiny (a Darknet cfg) and YOLOv8n (an Ultralytics checkpoint), read in a fresh
process by TensorFlow's own checkpoint reader: every Keras variable's values are in the bundle exactly once and
the variables/ folder is within 1.1x of the weights' bytes; `tf.saved_model.load` serves the model's outputs by
name, equal to the Keras model's; `saved_model_cli show --all` (TensorFlow Serving's inspection tool) reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pyloader
from test_dynamic_sizes import sources  # noqa: F401 (yolov4-tiny, YOLOv8n checkpoints)
from test_outputs import run_py

SIZE = (64, 96)

CHECK = """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, data = sys.argv[1], np.load(sys.argv[2])
    reader = tf.train.load_checkpoint(path + "/variables/variables")
    stored = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    by_bytes = {}
    for t in stored:
        by_bytes.setdefault((t.shape, t.tobytes()), []).append(t)
    weights = [data[k] for k in data.files if k.startswith("w")]
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](tf.constant(data["x"]))
    print(json.dumps({
        "stored": len(stored),
        "copies": [len(by_bytes.get((w.shape, w.tobytes()), [])) for w in weights],
        "variables": [len(loaded.variables), len(loaded.trainable_variables), len(loaded.non_trainable_variables)],
        "outputs": list(out),
        "serve": list(loaded.serve(tf.constant(data["x"]))),
    }))
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
"""


@pytest.mark.parametrize("name", ["v4t", "y8n"])
def test_savedmodel_stores_each_variable_once(sources, name, tmp_path):
    if name not in sources:
        pytest.skip("needs torch and ultralytics")
    src = sources[name]
    model = pyloader.load(str(src), input_size=SIZE)
    weights = [np.asarray(v.numpy()) for v in model.weights]
    nbytes = sum(w.nbytes for w in weights)
    (r,) = pyloader.convert([str(src)], tmp_path, format="savedmodel", input_size=SIZE)
    assert r.status == "converted", r
    var_dir = os.path.join(r.output, "variables")
    on_disk = sum(os.path.getsize(os.path.join(var_dir, f)) for f in os.listdir(var_dir))
    assert nbytes <= on_disk <= 1.1 * nbytes, (on_disk, nbytes)

    x = np.random.default_rng(0).uniform(0, 1, (2, *SIZE, 3)).astype(np.float32)
    ref = model(x, training=False)
    ref = dict(zip(model.output_names, ref if isinstance(ref, (list, tuple)) else [ref]))
    np.savez(tmp_path / "in.npz", x=x, **{f"w{i:04d}": w for i, w in enumerate(weights)})
    p = run_py(CHECK, r.output, tmp_path / "in.npz", tmp_path / "out.npz")
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["copies"] == [1] * len(weights), [w.shape for w, c in zip(weights, rep["copies"]) if c != 1][:5]
    assert rep["stored"] == len(weights)
    n_train = sum(1 for v in model.weights if v.trainable)
    assert rep["variables"] == [len(weights), n_train, len(weights) - n_train]
    assert sorted(rep["outputs"]) == sorted(model.output_names) == sorted(rep["serve"])
    got = np.load(tmp_path / "out.npz")
    for k, v in ref.items():
        v = np.asarray(v)
        assert float(np.abs(got[k] - v).max()) <= 1e-5 * float(np.abs(v).max()), k

    cli = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", r.output,
                          "--all"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "signature_def['serve']" in cli.stdout and "signature_def['metadata']" in cli.stdout
    for k in model.output_names:
        assert f"outputs['{k}']" in cli.stdout
