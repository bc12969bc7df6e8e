"""`--int8 --nms`: one TFLite file, the network int8 and NMS float, builtin operators only, its detections checked
in the TFLite interpreter against the float `--nms` file's (the yolov3-tiny case of test_int8_verify.py)."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from test_int8_verify import SIZE, _cli, case  # noqa: E402,F401  (case: the module fixture)


def _operators(path):
    """{(builtin operator name, first output's type)}, and the custom codes, of the file's subgraphs."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    ops, custom = set(), [c.customCode for c in model.operatorCodes if c.customCode]
    for sub in model.subgraphs:
        for op in sub.operators:
            code = model.operatorCodes[op.opcodeIndex]
            ops.add((names[max(code.builtinCode, code.deprecatedBuiltinCode)], types[sub.tensors[op.outputs[0]].type]))
    return ops, custom


def _detections(path, images):
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner()
    (name, _), = runner.get_input_details().items()
    return [runner(**{name: images[i:i + 1]}) for i in range(len(images))]


def test_int8_nms_one_file(case, tmp_path):
    from pyloader.calibration import list_images, load_images
    from pyloader.verify import match_detections

    weights, cfg, cal = case
    r = _cli(weights, "--cfg", cfg, "-o", tmp_path / "int8", "--format", "tflite", "--nms", "--int8", "--calibration",
             cal, "--verify", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verified: max rel diff" in r.stdout
    r = _cli(weights, "--cfg", cfg, "-o", tmp_path / "float", "--format", "tflite", "--nms", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    int8_file, float_file = tmp_path / "int8" / "tiny3.tflite", tmp_path / "float" / "tiny3.tflite"

    ops, custom = _operators(int8_file)
    assert not custom and all(name != "CUSTOM" for name, _ in ops), (custom, ops)  # no Flex / SELECT_TF_OPS
    assert ("CONV_2D", "INT8") in ops and ("LEAKY_RELU", "INT8") in ops  # the network in int8
    assert ("NON_MAX_SUPPRESSION_V4", "INT32") in ops and ("TOPK_V2", "FLOAT32") in ops  # NMS in float
    assert ("CONV_2D", "FLOAT32") in ops  # the heads' last convolutions
    assert not {("TOPK_V2", "INT8"), ("LOGISTIC", "INT8"), ("EXP", "INT8")} & ops
    assert os.path.getsize(int8_file) < 0.5 * os.path.getsize(float_file)

    images = load_images(list_images(cal), SIZE, letterbox=False)
    kept = n_float = 0
    for want, got in zip(_detections(float_file, images), _detections(int8_file, images)):
        assert got["boxes"].dtype == np.float32 and got["classes"].dtype == np.int32
        m, nw, _, _ = match_detections(want, got)
        kept, n_float = kept + m, n_float + nw
    print(f"--int8 --nms keeps {kept} of the float file's {n_float} detections")
    assert n_float >= 20 and kept >= 0.9 * n_float


def test_int8_io_nms_refused(case, tmp_path):
    weights, cfg, cal = case
    r = _cli(weights, "--cfg", cfg, "-o", tmp_path, "--format", "tflite", "--nms", "--int8", "--int8-io",
             "--calibration", cal, timeout=120)
    assert r.returncode == 2 and "int8_io with nms is not supported" in r.stderr, r.stderr[-2000:]
    assert os.listdir(tmp_path) == []
