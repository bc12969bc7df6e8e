"""Output formats: one module each, registered once here (in the order `--format` lists them).

Each format module declares:

* `NAME` (the `--format` value) and `FRAMEWORKS` (imported once per worker before its first conversion);
* `output_name(stem)`: the file or folder name of a checkpoint's output;
* `write(model, path, meta, job, letterbox)`: the exporter (the metadata `meta` included; `job`: the
  pyloader.bulk Job with the format's options; `letterbox`: how the family prepares calibration images);
* `metadata_blobs(meta)` and `parse_template(path, probes, fp16, blobs)`: the template outputs
  (pyloader.outputs.template);
* `run(path, image, output names, job)`: the output run in its own runtime, for `--verify` (pyloader.verify);
* `read_metadata(path)` (no TensorFlow, no Keras) and `is_output(path, head)`: what `pyloader inspect` reads.

The metadata is the same JSON text everywhere (pyloader.metadata: `to_json`, key `pyloader_metadata`); each
module's docstring says where its files keep it. Importing this package imports no framework.
"""

from __future__ import annotations

import os

from . import keras_file, savedmodel, tflite, weights_h5
from .template import NoTemplate
from .template import learn as _learn

__all__ = ["FORMATS", "output_format", "format_of_path", "read_metadata", "learn", "NoTemplate"]

_REGISTRY = {m.NAME: m for m in (keras_file, weights_h5, savedmodel, tflite)}
FORMATS = tuple(_REGISTRY)


def output_format(name: str):
    """The module of the output format `name`; ValueError naming the formats for another name."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {name!r}") from None


def format_of_path(path) -> str | None:
    """The format of a file or folder pyloader writes ('keras', 'weights.h5', 'savedmodel', 'tflite'), else
    None. Never opens a FIFO or device (it could block)."""
    path = os.fspath(path)
    head = b""
    if not os.path.isdir(path):
        if not os.path.isfile(path):
            return None
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError:
            return None
    return next((name for name, m in _REGISTRY.items() if m.is_output(path, head)), None)


def read_metadata(path) -> dict | None:
    """The metadata of a pyloader output (.keras, .weights.h5, SavedModel folder, .tflite), or None (without
    importing TensorFlow or Keras)."""
    name = format_of_path(path)
    return None if name is None else _REGISTRY[name].read_metadata(os.fspath(path))


def learn(name: str, model, export, **options):
    """The template of `model` in the format `name` (pyloader.outputs.template.learn)."""
    return _learn(output_format(name), model, export, **options)
