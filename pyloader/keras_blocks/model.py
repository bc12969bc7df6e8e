"""The keras.Model class pyloader builds: a functional model that carries its metadata into .keras files.

`DetectionModel` is a plain functional model plus `metadata` (a dict, see pyloader/metadata.py) and
`class_names`. Its saved config is written with Keras' own class path (module `keras.src.models.functional`,
class_name `Functional`) and the registered name `pyloader>DetectionModel`:

* where pyloader is imported, Keras finds the registered class, which restores `model.metadata` and
  `model.class_names` from the config entry `pyloader_metadata`;
* where it is not, Keras falls back to the module path and loads a plain functional model (the metadata stays
  in the file's config.json, and `pyloader inspect` reads it), so a file made of built-in layers only loads
  with plain Keras.
"""

from __future__ import annotations

import weakref

import keras

from ..metadata import output_names

__all__ = ["DetectionModel", "dynamic_model", "name_outputs", "METADATA_KEY", "plan_input", "run_nodes", "finish_plan_model"]

METADATA_KEY = "pyloader_metadata"


@keras.saving.register_keras_serializable(package="pyloader", name="DetectionModel")
class DetectionModel(keras.Model):
    """A functional keras.Model with `metadata` and `class_names` that survive `save` / `load_model`."""

    def get_config(self):
        config = super().get_config()
        meta = getattr(self, "metadata", None)
        if meta:
            from ..metadata import complete, config_text

            meta = complete(_plain(meta), getattr(self, "_pyloader_source_path", None))
            attach_metadata(self, meta)
            config[METADATA_KEY] = config_text(meta)  # JSON text of a fixed length bucket (templates)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        meta = config.get(METADATA_KEY)
        model = super().from_config({k: v for k, v in config.items() if k != METADATA_KEY}, custom_objects)
        if meta:
            from ..metadata import parse

            attach_metadata(model, parse(meta))
        return model


# The saved config names Keras' own functional class (see the module docstring); the registration above
# keeps the name pyloader>DetectionModel.
DetectionModel.__module__ = "keras.src.models.functional"
DetectionModel.__name__ = "Functional"


def attach_metadata(model, meta: dict, source_path=None) -> None:
    """Set model.metadata (a plain dict) and model.class_names; `source_path`: the checkpoint, hashed at the
    first save when the metadata's sha256 was left out (pyloader.metadata.complete)."""
    meta = _plain(meta)
    model.metadata = meta
    model.class_names = list(meta.get("class_names") or [])
    if source_path is not None:
        model._pyloader_source_path = str(source_path)


_DYNAMIC = weakref.WeakKeyDictionary()  # model -> its dynamic-size twin (sharing its layers) or itself, built once


def dynamic_model(model):
    """`model` with an input of unknown batch, height and width, sharing model's layers (so its weights: no copy)
    and holding its metadata, where its graph builds that way: every layer of the Darknet, YOLOv5, YOLOv7 and
    Ultralytics detectors computes its grid from the runtime size (raw or decoded heads). Where a layer needs a
    known size, Keras raises ValueError or TypeError and the answer is `model` itself, whose batch alone is
    dynamic: a fully connected classifier, NMS (its box count and box scale) and the end-to-end top-k (min(max_det,
    boxes)). Sizes other than the built one must be multiples of the model's max stride (its pooling pads and
    grids are the built size's)."""
    dyn = _DYNAMIC.get(model)
    if dyn is None:
        inputs = [keras.Input(batch_shape=(None,) * (len(t.shape) - 1) + (t.shape[-1],), dtype=t.dtype, name=t.name)
                  for t in model.inputs]
        try:
            dyn = keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0],
                                           clone_function=lambda layer: layer)
        except (ValueError, TypeError):
            dyn = model
        _DYNAMIC[model] = dyn
    if dyn is not model and getattr(model, "metadata", None) is not None:
        attach_metadata(dyn, model.metadata, getattr(model, "_pyloader_source_path", None))
    return dyn


def plan_input(plan, input_size, default_size) -> tuple:
    """The `images` input of a .pt family's model and its (h, w): `input_size`, else `default_size`, each a
    positive multiple of the plan's max stride (ValueError naming the checkpoint otherwise)."""
    h, w = default_size if input_size is None else tuple(int(v) for v in input_size)
    if h <= 0 or w <= 0 or h % plan.max_stride or w % plan.max_stride:
        raise ValueError(
            f"{plan.path}: input_size {(h, w)} must be positive multiples of the model's max stride {plan.max_stride}"
        )
    return keras.Input(shape=(h, w, 3), name="images"), (h, w)


def run_nodes(inp, nodes, build_node, *, used=None, source=lambda node: node.source):
    """The yaml graph of a .pt family: each node built by `build_node(x, node)` from its `from` column (-1: the
    node before, or the input; an index; a list of those). Nodes outside `used` (when given) are skipped.
    Returns the last node's output."""
    ys, x = [], inp
    for node in nodes:
        if used is not None and node.index not in used:
            ys.append(None)
            continue
        src = source(node)
        if src != -1:
            x = ys[src] if isinstance(src, int) else [x if j == -1 else ys[j] for j in src]
        else:
            x = ys[-1] if ys else inp
        x = build_node(x, node)
        ys.append(x)
    return x


def finish_plan_model(inp, heads, outputs, plan, default_name: str, *, decode: bool, names=None):
    """A .pt family's DetectionModel: outputs named `names` (default: head_i, or detections when decoded), the
    model named `default_name` (the family): one model serves every checkpoint of its architecture (reused, and
    the template of bulk outputs), so nothing of it names one checkpoint file (the metadata's source does)."""
    outputs = name_outputs(outputs, names or output_names(1 if decode else len(heads), decode))
    return DetectionModel(inp, outputs, name=default_name)


def name_outputs(outputs, names):
    """Each output tensor through an Identity layer named `names[i]`: the model's output names."""
    single = not isinstance(outputs, (list, tuple))
    outs = [outputs] if single else list(outputs)
    if len(outs) != len(names):
        raise ValueError(f"{len(outs)} outputs, {len(names)} names")
    named = [keras.layers.Identity(name=n)(o) for o, n in zip(outs, names)]
    return named[0] if single else named


def _plain(obj):
    """JSON-able copies (Keras wraps dicts/lists set as attributes in tracking containers)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj
