"""int8 quantization of a TFLite conversion: the network in int8, its detection tail in float.

A YOLO head's last convolution mixes roles in one tensor (box offsets, objectness and class logits; Ultralytics'
DFL bins and class logits), and one int8 tensor has one scale: objectness logits of empty cells (-90) stretch it
so far that box offsets and scores near the threshold lose most of their resolution, and a decoded output that
concatenates pixel boxes and [0, 1] scores is worse. Here the converter calibrates the whole model once
(TensorFlow's QuantizationDebugger: the converter's own calibration and MLIR quantizer), then quantizes it with
the tail kept float: every operator from which no weighted operator (convolution, depthwise, transpose
convolution, fully connected) can be reached, i.e. the decode and NMS, and (`float_heads`) the weighted operators
that feed only the tail, i.e. the heads' last convolutions; and (`float_stem`, the stem) the network's first operators, in execution order, while they
hold at most that share of the weights (10%): they hold few weights but the full-resolution activations, whose
rounding every later layer carries (Yolo-Fastest 1.1 on photos: the first 1% of the weights float cut the score
error threefold, 10% kept 53 of 54 float detections against 49; the file 6% larger than all int8). Every other
tensor is int8 with per-channel weights (the converter's default); no tensor holds two roles under one scale.
Builtin operators only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["calibrate", "int8_flatbuffer", "float_tail", "WEIGHTED"]

WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "CONV_3D", "BATCH_MATMUL"}


def _operators(data: bytes):
    """[(op type name, input tensor ids, output tensor names, output tensor ids, weight count)] of subgraph 0, in
    order; the weight count is the element count of a weighted operator's second input (0 for the others)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sub = model.subgraphs[0]
    ops = []
    for op in sub.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        outs = [int(t) for t in op.outputs]
        weights = int(np.prod(sub.tensors[op.inputs[1]].shape)) if kind in WEIGHTED else 0
        ops.append((kind, [int(t) for t in op.inputs if t >= 0], [sub.tensors[t].name.decode() for t in outs], outs,
                    weights))
    return ops


def float_tail(data: bytes, float_heads: bool = True, float_stem: float = 0.1) -> tuple:
    """(output tensor names, operator types) to keep float in the calibrated flatbuffer `data` (module docstring).

    The quantizer finds an operator by its output's name only when it has one output; an operator with several
    (TOPK_V2) is kept float by its type, which no int8 operator has."""
    ops = _operators(data)
    consumers: dict = {}
    for i, (_, ins, _, _, _) in enumerate(ops):
        for t in ins:
            consumers.setdefault(t, []).append(i)
    tail = [False] * len(ops)  # no weighted operator can be reached from this one's outputs
    for i in range(len(ops) - 1, -1, -1):  # operators are in execution order: consumers come later
        tail[i] = all(ops[j][0] not in WEIGHTED and tail[j] for t in ops[i][3] for j in consumers.get(t, ()))
    weights = np.cumsum([op[4] for op in ops])
    stem = int(np.searchsorted(weights, float_stem * weights[-1], side="right")) if len(ops) else 0
    names, kinds = [], set()
    for i, (kind, _, outs, _, _) in enumerate(ops):
        if i < stem or tail[i] and (float_heads or kind not in WEIGHTED):
            names.extend(outs)
            if len(outs) > 1:
                kinds.add(kind)
    kinds -= {op[0] for i, op in enumerate(ops) if not tail[i]}
    return names, sorted(kinds)


def calibrate(converter, images):
    """Set `converter` (a TFLiteConverter) to quantize, calibrated on `images` [N, H, W, 3] one at a time; returns
    the representative dataset."""
    import tensorflow as tf

    def representative():
        for i in range(len(images)):
            yield [images[i:i + 1]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    return representative


def int8_flatbuffer(converter, images, float_heads: bool = True, float_stem: float = 0.1) -> bytes:
    """The int8 flatbuffer of `converter` (a TFLiteConverter, float input and outputs), calibrated on `images`
    [N, H, W, 3], its tail float (module docstring)."""
    import tensorflow as tf

    representative = calibrate(converter, images)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative)
    nodes, kinds = float_tail(debugger.calibrated_model, float_heads, float_stem)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes, denylisted_ops=kinds)
    return debugger.get_nondebug_quantized_model()
