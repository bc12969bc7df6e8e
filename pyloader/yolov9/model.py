"""YOLOv9 .pt checkpoint -> functional keras.Model (Keras layers and keras.ops only: TF, JAX, PyTorch backends).

Semantics follow PyTorch exactly (keras_blocks.torch_layers): symmetric convolution padding, -inf padded max pools,
avg_pool2d(2, 1) as a valid 2x2 average pool, nearest upsampling, the checkpoint's batch-norm epsilon (fold_bn=False)
or folded batch norm; RepConvN stays two convolutions (3x3 and 1x1) added before the activation.

Input: NHWC float32 RGB in [0, 1] (YOLOv9 divides by 255); default 640x640; both sides multiples of the max stride.

Outputs, per returned branch of the head (weights.HEADS: one for Detect / DDetect / TripleDDetect, the last branch;
both for DualDetect / DualDDetect, the auxiliary branch first, as YOLOv9's eval forward returns `([y_aux, y_main],
[d_aux, d_main])`; three for TripleDetect): decode=False: one raw head per level, NHWC [B, H/stride, W/stride,
64 + nc] (cat(cv2, cv3) of YOLOv9's eval `d[i]`, NCHW there): DFL distance bins (l, t, r, b; 16 each), then class
logits. decode=True: per branch [B, 4 + nc, anchors] as YOLOv9's decoded `y`: x, y, w, h in input pixels, class
probabilities (sigmoid). With nms, the last branch (the main one, detect_dual.py's `pred[0][1]`) alone is built (plan.returned).

The model's `class_names` attribute is the checkpoint's class-name list.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..keras_blocks.layers import ChannelSlice, cell_grid, spatial
from ..keras_blocks.model import finish_plan_model, plan_input, run_nodes
from ..keras_blocks.torch_layers import activation, conv, max_pool_layer
from ..torch_reader.modules import ConvSpec
from .blocks import ADown, AConv, Bottleneck, CBFuse, CBLinear, CSP, ELAN, MaxPool, Named, RepConvN, SPPELAN, Upsample
from .weights import YoloV9Plan

__all__ = ["build", "DFLDecode"]


@keras.saving.register_keras_serializable(package="pyloader_yolov9")
class DFLDecode(layers.Layer):
    """One branch's raw heads -> [B, 4 + nc, anchors]: the DFL expectation of each side's bins (softmax . dfl), boxes
    x, y, w, h in pixels about the cell centres (dist2bbox), class sigmoid; levels, then rows, then columns."""

    def __init__(self, nc, strides, dfl, **kw):
        super().__init__(**kw)
        self.nc, self.strides, self.dfl = int(nc), [float(s) for s in strides], [float(v) for v in dfl]

    def call(self, heads):
        rm, out = len(self.dfl), []
        for x, s in zip(heads, self.strides):
            ny, nx = spatial(x)
            x = ops.reshape(x, (-1, ny * nx, 4 * rm + self.nc))
            bins = ops.softmax(ops.reshape(x[..., :4 * rm], (-1, ny * nx, 4, rm)), axis=-1)
            lt_rb = ops.sum(bins * ops.convert_to_tensor(np.asarray(self.dfl, np.float32)), axis=-1)
            centre = ops.convert_to_tensor(cell_grid(ny, nx, 0.5))[None]
            x1y1, x2y2 = centre - lt_rb[..., :2], centre + lt_rb[..., 2:]
            box = ops.concatenate([(x1y1 + x2y2) / 2.0, x2y2 - x1y1], axis=-1) * s
            out.append(ops.concatenate([box, ops.sigmoid(x[..., 4 * rm:])], axis=-1))
        return ops.transpose(ops.concatenate(out, axis=1) if len(out) > 1 else out[0], (0, 2, 1))

    def compute_output_shape(self, shapes):
        cells = [None if None in s[1:3] else s[1] * s[2] for s in shapes]
        return (shapes[0][0], 4 + self.nc, None if None in cells else sum(cells))

    def get_config(self):
        return {**super().get_config(), "nc": self.nc, "strides": self.strides, "dfl": self.dfl}


def _cat(xs, name):
    return layers.Concatenate(axis=-1, name=name)(list(xs))


def _halves(x, name):
    c = int(x.shape[-1]) // 2
    return [ChannelSlice(0, c, name=name + "_split0")(x), ChannelSlice(c, 2 * c, name=name + "_split1")(x)]


def _avg_pool(x, name):  # torch's avg_pool2d(x, 2, 1, 0, False, True)
    return layers.AveragePooling2D(2, 1, padding="valid", name=name + "_avgpool")(x)


def _pool(x, p: MaxPool):
    return max_pool_layer(p.kernel, p.stride, p.padding, p.name, x.shape[1:3])(x)


def _chain(x, items, fold_bn):
    for it in items:
        x = _block(x, it, fold_bn)
    return x


def _repconvn(x, r: RepConvN, fold_bn):
    if r.fused is not None:
        return conv(x, r.fused, fold_bn)
    y = layers.Add(name=r.name + "_add")([conv(x, r.conv1, fold_bn), conv(x, r.conv2, fold_bn)])
    return activation(y, r.act, r.name + "_act")


def _elan(x, b: ELAN, fold_bn):
    ys = _halves(conv(x, b.cv1, fold_bn), b.name)
    for branch in (b.cv2, b.cv3):
        ys.append(_chain(ys[-1], branch, fold_bn))
    return conv(_cat(ys, b.name + "_cat"), b.cv4, fold_bn)


def _adown(x, b: ADown, fold_bn):
    a, c = _halves(_avg_pool(x, b.name), b.name)
    c = _pool(c, MaxPool(b.name + "_maxpool", (3, 3), (2, 2), (1, 1)))
    return _cat([conv(a, b.cv1, fold_bn), conv(c, b.cv2, fold_bn)], b.name + "_cat")


def _sppelan(x, b: SPPELAN, fold_bn):
    ys = [conv(x, b.cv1, fold_bn)]
    for p in b.pools:
        ys.append(_pool(ys[-1], p))
    return conv(_cat(ys, b.name + "_cat"), b.cv5, fold_bn)


def _cblinear(x, b: CBLinear, fold_bn):
    y, cuts = conv(x, b.conv, fold_bn), np.cumsum((0,) + b.splits)
    return [ChannelSlice(int(lo), int(hi), name=f"{b.name}_split{j}")(y) for j, (lo, hi) in enumerate(zip(cuts, cuts[1:]))]


def _cbfuse(xs, b: CBFuse, fold_bn):
    *groups, target = xs
    (th, tw), res = (int(v) for v in target.shape[1:3]), []
    for j, (g, i) in enumerate(zip(groups, b.idx)):
        y = g[i]
        h, w = (int(v) for v in y.shape[1:3])
        if th % h or tw % w:
            raise ValueError(f"{b.name}: input {j} of {h}x{w} does not scale to {th}x{tw} by integer factors")
        res.append(y if (h, w) == (th, tw) else
                   layers.UpSampling2D((th // h, tw // w), interpolation="nearest", name=f"{b.name}_up{j}")(y))
    return layers.Add(name=b.name)(res + [target])


_BUILD = {  # record type -> (x, record, fold_bn) -> Keras output
    ConvSpec: conv,
    RepConvN: _repconvn,
    Bottleneck: lambda x, b, f: (layers.Add(name=b.name + "_add")([x, _chain(x, (b.cv1, b.cv2), f)]) if b.add
                                 else _chain(x, (b.cv1, b.cv2), f)),
    CSP: lambda x, b, f: conv(_cat([_chain(conv(x, b.cv1, f), b.m, f), conv(x, b.cv2, f)], b.name + "_cat"), b.cv3, f),
    ELAN: _elan,
    ADown: _adown,
    AConv: lambda x, b, f: conv(_avg_pool(x, b.name), b.cv1, f),
    SPPELAN: _sppelan,
    CBLinear: _cblinear,
    CBFuse: _cbfuse,
    Named: lambda x, b, f: _cat(x, b.name) if b.kind == "Concat" else x,
    Upsample: lambda x, b, f: layers.UpSampling2D(size=b.size, interpolation="nearest", name=b.name)(x),
}


def _block(x, b, fold_bn):
    return _BUILD[type(b)](x, b, fold_bn)


def build(plan: YoloV9Plan, options) -> keras.Model:
    """The family's empty model (pyloader.family): the returned branches' raw heads, or their decoded outputs."""
    inp, _ = plan_input(plan, options.input_size, (640, 640))
    ys = {}  # row index -> output, for the head's inputs
    run_nodes(inp, plan.nodes[:-1], lambda x, node: ys.setdefault(node.index, _block(x, node.parts, options.fold_bn)),
              used=plan.used)
    head, fold, last = plan.head, options.fold_bn, plan.nodes[-1]
    src = [last.index + j if j < 0 else j for j in ([last.source] if isinstance(last.source, int) else last.source)]
    heads, outputs, names = [], [], []
    for prefix, b in zip(head.prefixes[-len(plan.returned):], plan.returned):
        br = head.branches[b]
        raw = [_cat([_chain(ys[src[j]], box, fold), _chain(ys[src[j]], cls, fold)], f"{prefix}head_{i}_cat")
               for i, (j, box, cls) in enumerate(zip(br.sources, br.box, br.cls))]
        heads += raw
        if options.decoded:
            outputs.append(DFLDecode(head.nc, head.strides, br.dfl, name=f"{prefix}decode")(raw))
            names.append(prefix + "detections")
        else:
            outputs += raw
            names += [f"{prefix}head_{i}" for i in range(len(raw))]
    return finish_plan_model(inp, heads, outputs if len(outputs) > 1 else outputs[0], plan, "yolov9",
                             decode=options.decoded, names=names)
