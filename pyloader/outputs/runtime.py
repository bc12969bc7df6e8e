"""Running a written output for `--verify` (pyloader.verify): its outputs as {name: array}, a fresh Python
process that loads a file with Keras (the formats whose runtime is Keras itself), and the TFLite runtime: LiteRT
(`ai-edge-litert`, `ai_edge_litert.interpreter.Interpreter`) where it is installed, else TensorFlow's own
`tf.lite.Interpreter` (deprecated in favour of LiteRT); `tflite_runtime()` names the one that runs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

__all__ = ["as_dict", "run_fresh", "tflite_runtime", "tflite_interpreter"]


def as_dict(outputs, names) -> dict:
    """A model's or runtime's outputs (a dict, a list in `names` order, or one array) as {name: array}."""
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {n: np.asarray(v) for n, v in zip(names, outputs)}


def tflite_runtime() -> str:
    """The runtime `tflite_interpreter` uses, in words (with its version)."""
    from importlib import metadata

    try:
        return f"LiteRT {metadata.version('ai-edge-litert')} (ai_edge_litert.interpreter)"
    except metadata.PackageNotFoundError:
        import tensorflow as tf

        return f"TensorFlow {tf.__version__} tf.lite.Interpreter (deprecated; pip install ai-edge-litert for LiteRT)"


def tflite_interpreter(path: str):
    """The interpreter of the TFLite file at `path`, in the runtime `tflite_runtime` names."""
    if tflite_runtime().startswith("LiteRT"):
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=path)
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # its deprecation warning: the runtime is named where verify reports
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return tf.lite.Interpreter(model_path=path)


_HEAD = textwrap.dedent("""
    import sys
    sys.modules.setdefault("triton", None)
    import numpy as np
    import pyloader  # as a user: pyloader registers its layers when Keras is imported
    import keras
    path, x_path, out_path = sys.argv[1:4]
    x = np.load(x_path)
""")
_TAIL = textwrap.dedent("""
    out = model(x)
    if not isinstance(out, dict):
        out = out if isinstance(out, (list, tuple)) else [out]
        out = dict(zip(model.output_names, out))
    np.savez(out_path, **{k: np.asarray(v) for k, v in out.items()})
""")


def run_fresh(path: str, image: np.ndarray, load: str, *args: str) -> dict:
    """Run the output at `path` on `image` in a fresh Python process that imports pyloader and keras (nothing
    else): `load` is the code that sets `model` from `path` (sys.argv[4:] are `args`)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="pyloader-verify-") as d:
        x_path, out_path = os.path.join(d, "x.npy"), os.path.join(d, "y.npz")
        np.save(x_path, image)
        script = _HEAD + textwrap.dedent(load) + _TAIL
        env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
        r = subprocess.run([sys.executable, "-c", script, path, x_path, out_path, *args], capture_output=True,
                           text=True, env=env, timeout=1800)
        if r.returncode != 0:
            last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit {r.returncode}"]
            raise RuntimeError(f"a fresh process could not load and run it: {last[0]}")
        with np.load(out_path) as z:
            return {k: z[k] for k in z.files}
