"""The one path from a family's plan to a filled Keras model, for `pyloader.load` and every `convert` job: build
the empty model once per architecture (with NMS when asked), fill it with a checkpoint's arrays, attach the metadata
of exactly that model (pyloader.metadata.model_metadata). Shared by every family; names none."""

from __future__ import annotations

import os

from .errors import FormatError
from .keras_blocks.assign import assign_weights, build_filled, build_streamed
from .keras_blocks.model import attach_metadata
from .metadata import model_metadata

__all__ = ["build_model", "fill_model", "model_arrays", "load_model", "input_size_of"]


def input_size_of(model) -> tuple:
    return tuple(int(v) for v in model.inputs[0].shape[1:3])


def build_model(family, plan, options):
    """The empty model of `plan` (variables not yet holding the checkpoint's weights): the family's raw or decoded
    outputs, or NMS outputs when options.nms."""
    layout = family.layout(plan) if options.nms is not None else None
    if options.nms is not None and layout is None:
        raise FormatError(f"{plan.path}: nms is not available for this {family.name} model (task "
                          f"{getattr(plan, 'task', '?')}): its family declares no NMS layout for it; decode=True "
                          "gives its outputs")
    model = family.keras_module().build(plan, options)
    if options.nms is not None:
        from .keras_blocks.nms import add_nms

        model = add_nms(model, options.nms, layout)
    return model


def model_arrays(family, plan, fold_bn: bool) -> dict:
    """The checkpoint's arrays the model's variables take (pyloader.read returns every array)."""
    arrays = family.arrays(plan, fold_bn)
    return family.model_arrays(plan, arrays) if family.model_arrays is not None else arrays


def describe(model, family, plan, options, *, digest: bool = False):
    """Attach the metadata of `model` (built from `plan` with `options`); the source's SHA-256 is computed at the
    first save unless digest=True. Returns the model."""
    meta = model_metadata(family, plan, input_size_of(model), options, plan.path, digest=digest)
    attach_metadata(model, meta, plan.path)
    return model


def fill_model(model, family, plan, options, arrays: dict):
    """Assign `arrays` (model_arrays of this checkpoint) to a built model and attach this checkpoint's metadata."""
    assign_weights(model, arrays, plan.path)
    return describe(model, family, plan, options)


def load_model(family, plan, options):
    """Build and fill in one go without running initializers; a family with array_chunks streams one layer at a
    time, so a load holds about the variables (keras_blocks.assign). A model built before for this checkpoint
    file and architecture that no one holds any more is filled again instead (pyloader.model_pool)."""
    import keras

    from .keras_blocks.assign import fill_streamed
    from .model_pool import take

    streamed = family.array_chunks is not None

    def arrays():
        if streamed:
            return family.array_chunks(plan, options.fold_bn)
        return model_arrays(family, plan, options.fold_bn)

    def build():
        fill = build_streamed if streamed else build_filled
        return describe(fill(lambda: build_model(family, plan, options), arrays(), plan.path, discard_arrays=True),
                        family, plan, options)

    def refill(model):
        fill = fill_streamed if streamed else assign_weights
        fill(model, arrays(), plan.path, discard_arrays=True)
        return describe(model, family, plan, options)

    # the model's name comes from the checkpoint's file name: one file, one key
    key = (family.name, family.architecture(plan), options.key(), os.path.realpath(plan.path),
           keras.config.dtype_policy().name, keras.config.image_data_format())
    return take(key, build, refill)
