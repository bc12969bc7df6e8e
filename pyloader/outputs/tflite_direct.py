"""The direct TFLite writer: a built Keras model's functional graph written as a TFLite flatbuffer of builtin
operators, without TensorFlow's converter (pyloader.outputs.tflite_schema lays the file out): float32, or with
float16 constants each read through a DEQUANTIZE (`fp16`: what the converter's float16 weights give).

The graph is the one the converter emits for the same model (tests/test_tflite_direct.py compares the two files
operator by operator and output by output): a Keras layer becomes the operators TensorFlow's converter gives it
(a Conv2D with its bias: CONV_2D, 'same' or 'valid' after a PAD for ZeroPadding2D; LeakyReLU: LEAKY_RELU; silu:
LOGISTIC then MUL; UpSampling2D's repeats: EXPAND_DIMS, TILE and a RESHAPE to a shape built from the input's SHAPE;
a BatchNormalization after a linear convolution: folded into its kernel and bias; a ZeroPadding2D that pads what
'same' would: the convolution after it 'same', no PAD; ...), the weights are buffers (kernels OHWI, as the
converter stores them; equal constants one buffer), the batch is dynamic (shape_signature -1) and the input,
outputs and signature are named as in the converter's file after pyloader.outputs.tflite renames them.

Keras' built-in layers have their emitters here (`_BUILTIN`, by exact class); any other layer writes itself through
a duck-typed method `tflite_ops(writer, inputs) -> outputs` next to its class, with the `Writer` methods below.
`uncovered(model)` names the first layer neither covers: such a model goes to the converter
(pyloader.outputs.tflite says which writer wrote a file). A layer's `tflite_ops` raises `Uncovered` for a
configuration it does not write (a dynamic input size, ...).
"""

from __future__ import annotations

import numpy as np

from .template import hwio_to_ohwi
from .tflite_schema import FLOAT16, FLOAT32, INT32, OPS, PADDING, serialize

__all__ = ["Uncovered", "Writer", "uncovered", "write_model"]


class Uncovered(Exception):
    """The direct writer does not write this layer (str: which and why); the converter does."""


class Writer:
    """The graph being written: tensors (static shapes, batch 1; activations carry a dynamic batch), constant
    buffers and operators in order. Each op method takes tensor indices and returns the output's index."""

    def __init__(self, fp16: bool = False):
        self.fp16 = fp16  # float constants stored float16, each read through a DEQUANTIZE (the converter's fp16)
        self.tensors: list = []  # (name, shape, shape_signature or None, type, buffer)
        self.buffers: list = [b""]
        self.owned: set = set()  # indices of buffers that are the writer's own copies (`const(..., own=True)`)
        self.operators: list = []
        self.consts: dict = {}  # (dtype, shape, CRC-32C) -> [(bytes, tensor)]: equal constants are one tensor, as
        # the converter's
        self.bn: dict = {}  # id(convolution layer) -> the BatchNormalization folded into it (write_model)
        self.padded: dict = {}  # id(convolution layer) -> the ZeroPadding2D folded into it: 'same' (write_model)

    def shape(self, t: int) -> tuple:
        return tuple(self.tensors[t][1])

    # -- tensors
    def tensor(self, shape, name: str = "", dtype: int = FLOAT32, batch: bool = True) -> int:
        """An activation tensor of `shape` (its first dimension the dynamic batch where `batch`)."""
        shape = [int(v) for v in shape]
        sig = [-1, *shape[1:]] if batch and shape else None
        self.tensors.append((name or f"t{len(self.tensors)}", shape, sig, dtype, 0))
        return len(self.tensors) - 1

    def const(self, value, name: str = "", own: bool = False) -> int:
        """A constant tensor (float32, or int32 for an integer array; one tensor for equal constants). With fp16 a
        float constant is stored float16 and the tensor returned is its DEQUANTIZE's float32 output."""
        from .. import _core

        a = np.asarray(value)
        a = np.array(a, np.int32 if a.dtype.kind in "iub" else np.float32, order="C", copy=None)  # a scalar stays one
        data = a.reshape(-1).view(np.uint8)  # its bytes, no copy
        same = self.consts.setdefault((a.dtype.char, a.shape, _core.crc32c(data)), [])
        for other, t in same:
            if np.array_equal(other, data):
                return t
        if self.fp16 and a.dtype == np.float32:
            stored = self._stored(a.astype(np.float16).reshape(-1).view(np.uint8), a.shape, FLOAT16, name, True)
            t = self.op("DEQUANTIZE", [stored], a.shape, batch=False)
        else:
            t = self._stored(data, a.shape, INT32 if a.dtype == np.int32 else FLOAT32, name, own)
        same.append((data, t))
        return t

    def _stored(self, data, shape, dtype: int, name: str, own: bool = False) -> int:
        if own:  # the writer's own copy: its pages go back to the system once serialize has copied it
            self.owned.add(len(self.buffers))
        self.buffers.append(data)
        self.tensors.append((name or f"c{len(self.tensors)}", list(shape), None, dtype, len(self.buffers) - 1))
        return len(self.tensors) - 1

    def op(self, code: str, inputs, shape, options: str | None = None, batch: bool = True, dtype: int = FLOAT32,
           **values) -> int:
        out = self.tensor(shape, dtype=dtype, batch=batch)
        self.operators.append((OPS[code], [int(i) for i in inputs], [out], options, values))
        return out

    def split(self, x: int, sizes, axis: int) -> list:
        """SPLIT_V of `x` in parts of `sizes` along `axis`: their indices."""
        shape = list(self.shape(x))
        outs = []
        for n in sizes:
            shape[axis] = int(n)
            outs.append(self.tensor(shape))
        self.operators.append((OPS["SPLIT_V"], [x, self.const(np.asarray(sizes, np.int32)),
                                                self.const(np.int32(axis))], outs, "SplitVOptions",
                               {"num_splits": len(sizes)}))
        return outs

    # -- operators
    def unary(self, code: str, x: int) -> int:
        """LOGISTIC, TANH, EXP, LOG, SQUARE."""
        return self.op(code, [x], self.shape(x))

    def binary(self, code: str, a, b) -> int:
        """ADD, SUB, MUL with broadcasting; `a` or `b` may be a numpy value (a constant)."""
        a, b = (v if isinstance(v, int) else self.const(v) for v in (a, b))
        shape = np.broadcast_shapes(self.shape(a), self.shape(b))
        return self.op(code, [a, b], shape, {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}[code])

    def silu(self, x: int) -> int:
        return self.binary("MUL", x, self.unary("LOGISTIC", x))

    def leaky_relu(self, x: int, alpha: float) -> int:
        return self.op("LEAKY_RELU", [x], self.shape(x), "LeakyReluOptions", alpha=float(alpha))

    def reshape(self, x: int, shape) -> int:
        """To `shape`, its first dimension the batch (-1)."""
        shape = [int(v) for v in shape]
        return self.op("RESHAPE", [x, self.const([-1, *shape[1:]])], [1, *shape[1:]])

    def concat(self, xs, axis: int) -> int:
        shapes = [self.shape(x) for x in xs]
        ax = axis % len(shapes[0])
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return self.op("CONCATENATION", xs, out, "ConcatenationOptions", axis=int(axis))

    def slice(self, x: int, axis: int, start: int, stop: int | None, shrink: bool = False, batch: bool = True) -> int:
        """x[..., start:stop, ...] along `axis` (STRIDED_SLICE; `shrink`: that axis dropped, stop = start + 1)."""
        shape = list(self.shape(x))
        r, ax = len(shape), axis % len(shape)
        stop = shape[ax] if stop is None else stop
        begin, end = [0] * r, [0] * r
        begin[ax], end[ax] = start, stop
        others = ((1 << r) - 1) ^ (1 << ax)
        shape[ax] = stop - start
        if shrink:
            del shape[ax]
        return self.op("STRIDED_SLICE", [x, self.const(begin), self.const(end), self.const([1] * r)], shape,
                       "StridedSliceOptions", batch=batch, dtype=self.tensors[x][3], begin_mask=others, end_mask=others,
                       shrink_axis_mask=(1 << ax) if shrink else 0)

    def pack(self, xs, axis: int, batch: bool = True) -> int:
        shape = list(self.shape(xs[0]))
        shape.insert(axis % (len(shape) + 1), len(xs))
        return self.op("PACK", xs, shape, "PackOptions", batch=batch, dtype=self.tensors[xs[0]][3],
                       values_count=len(xs), axis=int(axis))

    def transpose(self, x: int, perm) -> int:
        s = self.shape(x)
        return self.op("TRANSPOSE", [x, self.const(list(perm))], [s[p] for p in perm])

    def softmax(self, x: int) -> int:
        return self.op("SOFTMAX", [x], self.shape(x), "SoftmaxOptions", beta=1.0)

    def reduce_sum(self, x: int, axis: int) -> int:
        s = list(self.shape(x))
        del s[axis % len(s)]
        return self.op("SUM", [x, self.const(np.int32(axis))], s, "ReducerOptions")

    def batch_matmul(self, a: int, b: int, adj_y: bool = False) -> int:
        """a @ b (a @ b^T with adj_y) over the last two axes."""
        sa, sb = self.shape(a), self.shape(b)
        return self.op("BATCH_MATMUL", [a, b], [*sa[:-1], sb[-2 if adj_y else -1]], "BatchMatMulOptions",
                       adj_y=bool(adj_y))

    def pad(self, x: int, pads) -> int:
        """Zero padding, `pads` [(before, after)] per axis."""
        s = self.shape(x)
        return self.op("PAD", [x, self.const(np.asarray(pads))], [n + a + b for n, (a, b) in zip(s, pads)],
                       "PadOptions")

    def repeat(self, x: int, factor: int, axis: int) -> int:
        """tf.repeat by an integer `factor` along `axis` as the converter writes it: EXPAND_DIMS, TILE and a
        RESHAPE to (batch from the input's SHAPE, the other sizes)."""
        s = list(self.shape(x))
        r = len(s)
        e = self.op("EXPAND_DIMS", [x, self.const(np.int32(axis + 1))], [*s[:axis + 1], 1, *s[axis + 1:]],
                    "ExpandDimsOptions")
        reps = [1] * (r + 1)
        reps[axis + 1] = factor
        t = self.op("TILE", [e, self.const(reps)], [*s[:axis + 1], factor, *s[axis + 1:]], "TileOptions")
        dims = self.op("SHAPE", [x], [r], "ShapeOptions", batch=False, dtype=INT32, out_type=INT32)
        lead = self.slice(dims, 0, 0, axis, batch=False)
        out = [*s[:axis], s[axis] * factor, *s[axis + 1:]]
        new = self.op("CONCATENATION", [lead, self.const([out[axis]]), self.const(out[axis + 1:])], [r],
                      "ConcatenationOptions", batch=False, dtype=INT32, axis=0)
        return self.op("RESHAPE", [t, new], out)

    def conv(self, x: int, kernel, bias, strides, padding: str, dilation=(1, 1), depthwise: bool = False) -> int:
        """CONV_2D (kernel HWIO, grouped where I < the input's channels) or DEPTHWISE_CONV_2D (kernel HW,C,M)."""
        kernel = np.asarray(kernel, np.float32)
        kh, kw, ci, co = kernel.shape
        n, h, w, c = self.shape(x)
        if depthwise:
            co *= ci
            k = self.const(kernel.reshape(1, kh, kw, co))
        else:
            k = self.const(hwio_to_ohwi(kernel), own=True)
        b = self.const(np.zeros(co, np.float32) if bias is None else np.asarray(bias, np.float32))
        ekh, ekw = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
        if padding == "same":
            oh, ow = -(-h // strides[0]), -(-w // strides[1])
        else:
            oh, ow = (h - ekh) // strides[0] + 1, (w - ekw) // strides[1] + 1
        common = dict(padding=PADDING[padding], stride_w=int(strides[1]), stride_h=int(strides[0]),
                      dilation_w_factor=int(dilation[1]), dilation_h_factor=int(dilation[0]))
        if depthwise:
            return self.op("DEPTHWISE_CONV_2D", [x, k, b], [n, oh, ow, co], "DepthwiseConv2DOptions",
                           depth_multiplier=int(co // c), **common)
        return self.op("CONV_2D", [x, k, b], [n, oh, ow, co], "Conv2DOptions", **common)

    def max_pool(self, x: int, size, strides, padding: str) -> int:
        n, h, w, c = self.shape(x)
        if padding == "same":
            oh, ow = -(-h // strides[0]), -(-w // strides[1])
        else:
            oh, ow = (h - size[0]) // strides[0] + 1, (w - size[1]) // strides[1] + 1
        return self.op("MAX_POOL_2D", [x], [n, oh, ow, c], "Pool2DOptions", padding=PADDING[padding],
                       stride_w=int(strides[1]), stride_h=int(strides[0]), filter_width=int(size[1]),
                       filter_height=int(size[0]))


# ---------------------------------------------------------------------------------------------------------
# Keras' built-in layers


def _activation(w: Writer, name: str, x: int) -> int:
    if name == "linear":
        return x
    if name == "sigmoid":
        return w.unary("LOGISTIC", x)
    if name in ("silu", "swish"):
        return w.silu(x)
    if name == "mish":  # Keras' mish: x * tanh(softplus(x)), softplus as the converter writes it: log(exp(x) + 1)
        return w.binary("MUL", x, w.unary("TANH", w.unary("LOG", w.binary("ADD", w.unary("EXP", x),
                                                                           np.float32(1.0)))))
    raise Uncovered(f"activation {name!r}")


def _conv(w, layer, x):
    depthwise = type(layer).__name__ == "DepthwiseConv2D"
    if layer.padding not in PADDING or layer.data_format != "channels_last":
        raise Uncovered(f"{layer.name}: padding {layer.padding!r}")
    from keras.ops import convert_to_numpy

    kernel = convert_to_numpy(layer.depthwise_kernel if depthwise else layer.kernel)
    bias = convert_to_numpy(layer.bias) if layer.use_bias else None
    bn = w.bn.get(id(layer))
    if bn is not None:  # folded as the converter folds it: kernel * scale, (bias - mean) * scale + beta
        scale, shift = _bn_affine(bn)
        kernel = kernel * scale.reshape(kernel.shape[2:] if depthwise else -1)
        bias = (0 if bias is None else bias) * scale + shift
    padding = "same" if id(layer) in w.padded else layer.padding
    y = w.conv(x, kernel, bias, layer.strides, padding, layer.dilation_rate, depthwise)
    return _activation(w, layer.activation.__name__, y)


def _conv_transpose(w, layer, x):
    """TRANSPOSE_CONV (kernel OHWI, bias), its output shape packed from the input's batch as the converter does."""
    if (layer.padding != "valid" or layer.output_padding is not None or tuple(layer.dilation_rate) != (1, 1)
            or layer.data_format != "channels_last"):
        raise Uncovered(f"{layer.name}: a Conv2DTranspose other than 'valid' without output padding or dilation")
    from keras.ops import convert_to_numpy

    kernel = convert_to_numpy(layer.kernel)  # (kh, kw, out, in)
    kh, kw, co, _ = kernel.shape
    n, h, wd, _ = w.shape(x)
    sh, sw = layer.strides
    out = [n, (h - 1) * sh + kh, (wd - 1) * sw + kw, co]
    dims = w.op("SHAPE", [x], [4], "ShapeOptions", batch=False, dtype=INT32, out_type=INT32)
    shape = w.pack([w.slice(dims, 0, 0, 1, shrink=True, batch=False), *(w.const(np.int32(v)) for v in out[1:])], 0,
                   batch=False)
    bias = convert_to_numpy(layer.bias) if layer.use_bias else np.zeros(co, np.float32)
    y = w.op("TRANSPOSE_CONV", [shape, w.const(np.transpose(kernel, (2, 0, 1, 3))), x, w.const(bias)], out,
             "TransposeConvOptions", padding=PADDING["valid"], stride_w=int(sw), stride_h=int(sh))
    return _activation(w, layer.activation.__name__, y)


def _bn_affine(layer) -> tuple:
    """(scale, shift) of an inference BatchNormalization: x * scale + shift, in float32."""
    from keras.ops import convert_to_numpy

    def get(v, default):
        return default if v is None else convert_to_numpy(v).astype(np.float32)

    var = get(layer.moving_variance, None)
    scale = get(layer.gamma, np.float32(1)) / np.sqrt(var + np.float32(layer.epsilon))
    return scale, get(layer.beta, np.float32(0)) - get(layer.moving_mean, None) * scale


def _batch_norm(w, layer, x):
    if not any(bn is layer for bn in w.bn.values()):
        raise Uncovered(f"{layer.name}: a BatchNormalization that does not follow a convolution of its own")
    return x  # folded into the convolution before it (write_model)


def _zero_padding(w, layer, x):
    (t, b), (l, r) = layer.padding
    return w.pad(x, [(0, 0), (t, b), (l, r), (0, 0)])


def _max_pool(w, layer, x):
    if layer.padding not in PADDING:
        raise Uncovered(f"{layer.name}: padding {layer.padding!r}")
    return w.max_pool(x, layer.pool_size, layer.strides, layer.padding)


def _upsampling(w, layer, x):
    if layer.interpolation != "nearest":
        raise Uncovered(f"{layer.name}: interpolation {layer.interpolation!r}")
    fh, fw = layer.size
    return w.repeat(w.repeat(x, fh, 1), fw, 2)


def _leaky(w, layer, x):
    return w.leaky_relu(x, layer.negative_slope)


def _binary(code):
    def emit(w, layer, *xs):
        out = xs[0]
        for y in xs[1:]:
            out = w.binary(code, out, y)
        return out
    return emit


_BUILTIN = {
    "Conv2D": _conv,
    "DepthwiseConv2D": _conv,
    "ZeroPadding2D": _zero_padding,
    "MaxPooling2D": _max_pool,
    "UpSampling2D": _upsampling,
    "Concatenate": lambda w, layer, *xs: w.concat(list(xs), layer.axis),
    "Add": _binary("ADD"),
    "Multiply": _binary("MUL"),
    "Activation": lambda w, layer, x: _activation(w, layer.activation.__name__, x),
    "LeakyReLU": _leaky,
    "Identity": lambda w, layer, x: x,
    "BatchNormalization": _batch_norm,
    "Conv2DTranspose": _conv_transpose,
}


def _emitter(layer):
    import keras

    own = getattr(layer, "tflite_ops", None)
    if own is not None:
        return lambda w, _layer, *xs: own(w, list(xs))
    cls = type(layer)
    if cls.__module__.startswith("keras.") and cls.__name__ in _BUILTIN and isinstance(layer, keras.layers.Layer):
        return _BUILTIN[cls.__name__]
    return None


def _nodes(model):
    """(layer, input KerasTensors, output KerasTensors) of every call in the model, in the order of
    model.operations (Keras' topological order: the converter's for the layers before a decode)."""
    mine = {id(n) for nodes in model._nodes_by_depth.values() for n in nodes}
    return [(op, list(n.arguments.keras_tensors), list(n.outputs)) for op in model.operations
            if type(op).__name__ != "InputLayer" for n in op._inbound_nodes if id(n) in mine]


def uncovered(model) -> str | None:
    """Why the direct writer does not write `model` (its first layer without an emitter), or None."""
    if len(model.inputs) != 1 or any(None in tuple(t.shape[1:]) for t in model.inputs):
        return "the model's input size is not fixed"
    for layer, _, _ in _nodes(model):
        if _emitter(layer) is None:
            return f"layer {layer.name} ({type(layer).__name__}) has no direct emitter"
    return None


def _folds(nodes, outputs) -> tuple:
    """What the converter folds into a convolution (Conv2D / DepthwiseConv2D) whose input or output nothing else
    reads: ({id(convolution): BatchNormalization on the last axis after it (the convolution linear)},
    {id(convolution): the ZeroPadding2D before it, where that padding is what 'same' pads: the convolution then
    reads the unpadded input with 'same'})."""
    readers: dict = {}
    for layer, ins, _ in nodes:
        for t in ins:
            readers.setdefault(id(t), []).append(layer)
    producer = {id(t): layer for layer, _, outs in nodes for t in outs}
    inputs = {id(layer): ins for layer, ins, _ in nodes}

    def sole(t, kinds):  # the layer of `kinds` that made t, where only one layer reads t and t is no output
        layer = producer.get(id(t))
        ok = layer is not None and type(layer).__name__ in kinds and id(t) not in outputs and len(readers[id(t)]) == 1
        return layer if ok else None

    bns, pads = {}, {}
    for layer, ins, _ in nodes:
        kind = type(layer).__name__
        if kind == "BatchNormalization" and len(ins) == 1 and layer.axis in (-1, 3):
            conv = sole(ins[0], ("Conv2D", "DepthwiseConv2D"))
            if conv is not None and conv.activation.__name__ == "linear":
                bns[id(conv)] = layer
        elif kind in ("Conv2D", "DepthwiseConv2D") and layer.padding == "valid":
            pad = sole(ins[0], ("ZeroPadding2D",))
            if pad is not None and list(map(tuple, pad.padding)) == _same_pads(inputs[id(pad)][0].shape[1:3], layer):
                pads[id(layer)] = pad
    return bns, pads


def _same_pads(size, conv) -> list:
    """The (before, after) padding per spatial axis that 'same' gives `conv` on an input of `size` (TensorFlow's
    rule: the odd pixel after)."""
    k, s, d = conv.kernel_size, conv.strides, conv.dilation_rate
    totals = [max((-(-n // s[i]) - 1) * s[i] + (k[i] - 1) * d[i] + 1 - n, 0) for i, n in enumerate(size)]
    return [(t // 2, t - t // 2) for t in totals]


def write_model(model, metadata: list, fp16: bool = False) -> memoryview:
    """The TFLite flatbuffer of `model` (bytes-like), float32 or with float16 constants (`fp16`) (`uncovered(model)` must be
    None; a layer may still raise Uncovered). metadata: [(entry name, bytes)], the model's metadata list."""
    w = Writer(fp16)
    (image,) = model.inputs
    name = image.name
    ids = {id(image): w.tensor([1, *image.shape[1:]], f"serving_default_{name}:0")}
    nodes = _nodes(model)
    w.bn, w.padded = _folds(nodes, {id(t) for t in model.outputs})
    folded_pads = {id(p) for p in w.padded.values()}
    for layer, ins, outs in nodes:
        if id(layer) in folded_pads:  # the convolution after it pads ('same'): it reads the unpadded input
            ids[id(outs[0])] = ids[id(ins[0])]
            continue
        got = _emitter(layer)(w, layer, *(ids[id(t)] for t in ins))
        got = got if isinstance(got, (list, tuple)) else [got]
        for t, g in zip(outs, got):
            if w.shape(g)[1:] != tuple(t.shape[1:]):
                raise Uncovered(f"layer {layer.name}: written shape {w.shape(g)}, Keras' {tuple(t.shape)}")
            ids[id(t)] = g
    outputs = [ids[id(t)] for t in model.outputs]
    if len(set(outputs)) != len(outputs) or ids[id(image)] in outputs:
        raise Uncovered("an output is the input or another output")
    for n, t in zip(model.output_names, outputs):
        w.tensors[t] = (n, *w.tensors[t][1:])
    for entry, data in metadata:
        w.buffers.append(bytes(data))
    first = len(w.buffers) - len(metadata)
    w.consts.clear()  # the buffers alone hold the constants' bytes: serialize lets go of each as it copies it
    if sum(len(d) for d in w.buffers) >= 2**31 - 2**24:  # the flatbuffer's limit; the converter stores them outside
        raise Uncovered("the weights are over 2 GiB, more than a TFLite flatbuffer holds")
    return serialize(w.tensors, w.buffers, w.operators, [ids[id(image)]], outputs,
                     ("serving_default", [(name, ids[id(image)])], list(zip(model.output_names, outputs))),
                     [(entry, first + i) for i, (entry, _) in enumerate(metadata)], discard=w.owned)
