"""Writing one model to one output format (the exporters), and the image --verify runs it on."""

from __future__ import annotations

from .atomic import remove


def write_output(model, tmp: str, job, letterbox: bool) -> None:
    """Write `model` in job's format to `tmp`; `letterbox`: how the family prepares calibration images."""
    from .. import metadata as M

    meta = M.complete(getattr(model, "metadata", None) or {}, getattr(model, "_pyloader_source_path", None))
    if job.format == "keras":
        model.save(tmp)  # the metadata goes into config.json (DetectionModel.get_config)
    elif job.format == "weights.h5":
        model.save_weights(tmp)
        M.write_h5(tmp, meta)
    elif job.format == "savedmodel":
        export_savedmodel(model, tmp, meta)
    elif job.format == "tflite":
        int8 = (_calibration_images(model, job, letterbox), job.int8_io) if job.int8 else None
        with open(tmp, "wb") as f:
            f.write(M.tflite_with_metadata(_tflite_bytes(model, tmp, job.tflite_fp16, int8), meta,
                                           model.output_names))
    else:
        raise ValueError(f"unknown format {job.format!r}")


def _calibration_images(model, job, letterbox: bool, count=None):
    """The job's calibration images (the first `count`), prepared as the model's family expects
    (pyloader.calibration)."""
    from ..calibration import list_images, load_images

    size = tuple(int(v) for v in model.inputs[0].shape[1:3])
    return load_images(list_images(job.calibration)[:count], size, letterbox=letterbox)


def _verify_image(model, job, letterbox: bool):
    """One image for --verify: the first calibration image, else a fixed random one."""
    import numpy as np

    if job.calibration is not None:
        return _calibration_images(model, job, letterbox, 1)
    shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32)


def verify_written(model, tmp: str, job, letterbox: bool) -> float:
    """Run the written output in its own runtime and compare it with `model` (pyloader.verify)."""
    from ..verify import verify_output

    return verify_output(model, tmp, job, _verify_image(model, job, letterbox))


def export_savedmodel(model, path: str, meta: dict) -> None:
    """A SavedModel whose serving signature's outputs are keyed by the model's output names, with a `metadata`
    signature and assets.extra/pyloader_metadata.json (pyloader/metadata.py)."""
    import keras
    import tensorflow as tf

    from .. import metadata as M

    named = keras.Model(model.inputs, dict(zip(model.output_names, model.outputs)), name=model.name)
    archive = keras.export.ExportArchive()
    spec = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name) for t in model.inputs]
    archive.track_and_add_endpoint("serve", named, spec)
    text = tf.constant(M.to_json(meta))
    archive._tf_trackable.metadata = tf.function(lambda: {M.KEY: text}, input_signature=[])
    archive._tf_trackable.metadata.get_concrete_function()
    _write_archive(archive, path, {"metadata": archive._tf_trackable.metadata})
    M.write_savedmodel_files(path, meta)


def _write_archive(archive, path, extra_signatures) -> None:
    """ExportArchive.write_out, plus signatures that are plain tf.functions (the metadata)."""
    import tensorflow as tf

    archive._filter_and_track_resources()
    signatures = {name: archive._get_concrete_fn(name) for name in archive._endpoint_names}
    signatures["serving_default"] = signatures["serve"]
    signatures.update(extra_signatures)
    tf.saved_model.save(archive._tf_trackable, path, signatures=signatures)


def _tflite_bytes(model, tmp: str, fp16: bool, int8=None) -> bytes:
    """TFLite flatbuffer: float32, float16 weights (fp16), or int8 = (calibration images, integer I/O)."""
    import tensorflow as tf

    saved = tmp + ".savedmodel"
    try:
        export_savedmodel(model, saved, getattr(model, "metadata", None) or {})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
        if fp16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if int8 is not None:
            images, int_io = int8

            def representative():
                for i in range(len(images)):
                    yield [images[i:i + 1]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            if int_io:  # full integer: every op int8, int8 input and outputs
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
            else:  # float input/output; ops without an int8 kernel (NMS) stay float
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                       tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()
    finally:
        remove(saved)


