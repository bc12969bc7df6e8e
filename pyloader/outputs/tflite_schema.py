"""TFLite's flatbuffer schema (tensorflow/compiler/mlir/lite/schema/schema.fbs, file identifier `TFL3`) as the
direct writer (pyloader.outputs.tflite_direct) needs it: the builtin operator codes, their options tables (union
type and field ids) and `serialize`, which lays a whole Model out with the `flatbuffers` package from the schema's
field ids (no generated code, no TensorFlow). tests/test_tflite_direct.py checks every number here against
TensorFlow's generated schema."""

from __future__ import annotations

import numpy as np

__all__ = ["OPS", "OPTIONS", "FLOAT32", "FLOAT16", "INT32", "PADDING", "serialize"]

# BuiltinOperator
OPS = {"ADD": 0, "CONCATENATION": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4, "DEQUANTIZE": 6, "LOGISTIC": 14, "MAX_POOL_2D": 17, "MUL": 18,
       "RESHAPE": 22, "SOFTMAX": 25, "TANH": 28, "PAD": 34, "TRANSPOSE": 39, "SUB": 41, "STRIDED_SLICE": 45, "EXP": 47,
       "TRANSPOSE_CONV": 67, "TILE": 69, "SPLIT_V": 102, "EXPAND_DIMS": 70, "LOG": 73, "SUM": 74, "SHAPE": 77, "PACK": 83, "SQUARE": 92, "LEAKY_RELU": 98,
       "BATCH_MATMUL": 126}
# BuiltinOptions union type of each option table, and its fields: name -> (field id, kind); kind "b" byte / bool,
# "i" int32, "f" float32
OPTIONS = {
    "Conv2DOptions": (1, {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i"), "dilation_w_factor": (4, "i"),
                          "dilation_h_factor": (5, "i")}),
    "DepthwiseConv2DOptions": (2, {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i"),
                                   "depth_multiplier": (3, "i"), "dilation_w_factor": (5, "i"),
                                   "dilation_h_factor": (6, "i")}),
    "Pool2DOptions": (5, {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i"), "filter_width": (3, "i"),
                          "filter_height": (4, "i")}),
    "SoftmaxOptions": (9, {"beta": (0, "f")}),
    "ConcatenationOptions": (10, {"axis": (0, "i")}),
    "AddOptions": (11, {}),
    "MulOptions": (21, {}),
    "PadOptions": (22, {}),
    "TransposeOptions": (26, {}),
    "ReducerOptions": (27, {"keep_dims": (0, "b")}),
    "SubOptions": (28, {}),
    "StridedSliceOptions": (32, {"begin_mask": (0, "i"), "end_mask": (1, "i"), "shrink_axis_mask": (4, "i")}),
    "ExpOptions": (33, {}),
    "TransposeConvOptions": (49, {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i")}),
    "TileOptions": (51, {}),
    "ExpandDimsOptions": (52, {}),
    "ShapeOptions": (55, {"out_type": (0, "b")}),
    "PackOptions": (59, {"values_count": (0, "i"), "axis": (1, "i")}),
    "SplitVOptions": (79, {"num_splits": (0, "i")}),
    "LeakyReluOptions": (75, {"alpha": (0, "f")}),
    "BatchMatMulOptions": (101, {"adj_x": (0, "b"), "adj_y": (1, "b")}),
}
FLOAT32, FLOAT16, INT32 = 0, 1, 2  # TensorType
PADDING = {"same": 0, "valid": 1}  # Padding
_VERSION = 3
_IDENTIFIER = b"TFL3"
# field counts of the tables written
_MODEL, _OPCODE, _SUBGRAPH, _TENSOR, _BUFFER, _OPERATOR, _METADATA, _SIGNATURE, _TENSORMAP = 8, 4, 6, 8, 3, 5, 2, 5, 2


def _table(b, fields: int, refs=(), scalars=()) -> int:
    """A table: refs [(field id, offset)], scalars [(field id, kind, value)] (kind b / i / u / f)."""
    b.StartObject(fields)
    for i, o in refs:
        b.PrependUOffsetTRelativeSlot(i, o, 0)
    for i, kind, v in scalars:
        {"b": b.PrependUint8Slot, "i": b.PrependInt32Slot, "u": b.PrependUint32Slot,
         "f": b.PrependFloat32Slot}[kind](i, v, None)  # default None: always written
    return b.EndObject()


def _offsets(b, offsets) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _ints(b, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, np.int32))


def _bytes(b, data, align: int = 16) -> int:
    """A [ubyte] vector aligned to `align` (Buffer.data is force_align: 16)."""
    b.StartVector(1, len(data), align)
    b.head -= len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def serialize(tensors: list, buffers: list, operators: list, inputs: list, outputs: list, signature: tuple,
              metadata: list, discard=()) -> memoryview:
    """The Model flatbuffer of one subgraph (a view of the builder's bytes: no copy of them).

    tensors: (name, shape, shape_signature or None, type, buffer index); buffers: bytes (buffer 0 must be b"";
    each entry is set to None once copied, so that the caller's list holds no second copy of the weights);
    operators: (builtin code, inputs, outputs, options name or None, {option: value}); inputs / outputs: tensor
    indices; signature: (key, [(name, tensor)] inputs, [(name, tensor)] outputs); metadata: [(name, buffer index)];
    discard: indices of buffers (writable numpy arrays) that are the caller's own copies, whose memory pages go
    back to the system once copied.
    """
    from .. import _core

    import mmap

    import flatbuffers

    # Room for everything up front (a builder that grows copies all it holds into a buffer twice as large), in
    # anonymous memory whose pages are zero until written (a bytearray's are all written when it is made): with
    # each buffer let go of once copied, the weights are in memory about once, not twice.
    names = sum(len(t[0]) for t in tensors) + sum(len(n) for n, _ in metadata)
    size = sum(len(d) + 32 for d in buffers) + 128 * len(tensors) + 96 * len(operators) + 4 * names + 65536
    if size > flatbuffers.Builder.MAX_BUFFER_SIZE:
        raise ValueError(f"a TFLite flatbuffer holds at most 2 GiB; this model needs about {size} bytes")
    b = flatbuffers.Builder(0)
    b.Bytes, b.head = mmap.mmap(-1, size), size
    bufs = []
    for i, d in enumerate(buffers):
        bufs.append(_table(b, _BUFFER, [(0, _bytes(b, d))] if len(d) else []))
        if i in discard:
            _core.discard_memory(d)
        buffers[i] = None
    codes = sorted({op[0] for op in operators}, key=[op[0] for op in operators].index)
    opcodes = [_table(b, _OPCODE, scalars=[(0, "b", min(c, 127)), (2, "i", 1), (3, "i", c)]) for c in codes]
    ts = []
    for name, shape, sig, dtype, buf in tensors:
        refs = [(0, _ints(b, shape)), (3, b.CreateString(name))] + ([(7, _ints(b, sig))] if sig is not None else [])
        ts.append(_table(b, _TENSOR, refs, [(1, "b", dtype), (2, "u", buf)]))
    ops = []
    for code, ins, outs, opt, values in operators:
        refs = [(1, _ints(b, ins)), (2, _ints(b, outs))]
        scalars = [(0, "u", codes.index(code))]
        if opt is not None:
            union, fields = OPTIONS[opt]
            refs.append((4, _table(b, max([i for i, _ in fields.values()], default=-1) + 1,
                                   scalars=[(*fields[k], v) for k, v in values.items()])))
            scalars.append((3, "b", union))
        ops.append(_table(b, _OPERATOR, refs, scalars))
    subgraph = _table(b, _SUBGRAPH, [(0, _offsets(b, ts)), (1, _ints(b, inputs)), (2, _ints(b, outputs)),
                                     (3, _offsets(b, ops)), (4, b.CreateString("main"))])
    key, sig_in, sig_out = signature

    def maps(pairs):
        return _offsets(b, [_table(b, _TENSORMAP, [(0, b.CreateString(n))], [(1, "u", t)]) for n, t in pairs])

    sig = _table(b, _SIGNATURE, [(0, maps(sig_in)), (1, maps(sig_out)), (2, b.CreateString(key))], [(4, "u", 0)])
    meta = [_table(b, _METADATA, [(0, b.CreateString(n))], [(1, "u", i)]) for n, i in metadata]
    model = _table(b, _MODEL, [(1, _offsets(b, opcodes)), (2, _offsets(b, [subgraph])),
                               (3, b.CreateString("pyloader direct TFLite writer")), (4, _offsets(b, bufs)),
                               (6, _offsets(b, meta)), (7, _offsets(b, [sig]))], [(0, "u", _VERSION)])
    b.Finish(model, file_identifier=_IDENTIFIER)
    return memoryview(b.Bytes)[b.Head():]
