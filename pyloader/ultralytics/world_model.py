"""YOLO-World's neck in Keras (Keras layers and keras.ops only): the class embeddings as a tensor (ClassEmbeddings,
[B, nc, embed], the checkpoint's txt_feats), C2fAttn's MaxSigmoidAttnBlock (MaxSigmoidAttention) and ImagePoolingAttn
(AdaptiveMaxPool2D, keras.layers.MultiHeadAttention), run in WorldModel.predict's order: an ImagePoolingAttn row
replaces the embeddings the later C2fAttn rows see. The heads' contrastive part is a 1x1 convolution (world.py),
ContrastiveHead's L2 normalisation keras.layers.UnitNormalization."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from ..keras_blocks.layers import spatial
from ..keras_blocks.model import run_nodes
from ..keras_blocks.torch_layers import conv as _conv
from .keras_layers import ChannelSplit
from .world import TEXT_KEY, C2fAttn, ImagePoolingAttn, L2Norm

__all__ = ["BUILDERS", "world_nodes", "ClassEmbeddings", "MaxSigmoidAttention", "AdaptiveMaxPool2D"]

_PKG = "pyloader_ultralytics"


@keras.saving.register_keras_serializable(package=_PKG)
class ClassEmbeddings(layers.Layer):
    """The model's class embeddings (a weight [nc, embed]) for each image of the batch: [B, nc, embed]."""

    def __init__(self, classes, channels, **kw):
        super().__init__(**kw)
        self.classes, self.channels = int(classes), int(channels)
        self.embeddings = self.add_weight(name="embeddings", shape=(self.classes, self.channels), trainable=False,
                                          initializer="zeros")

    def call(self, images):
        return ops.broadcast_to(self.embeddings[None], (ops.shape(images)[0], self.classes, self.channels))

    def compute_output_shape(self, shape):
        return (shape[0], self.classes, self.channels)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "channels": self.channels}


@keras.saving.register_keras_serializable(package=_PKG)
class MaxSigmoidAttention(layers.Layer):
    """MaxSigmoidAttnBlock on (embed [B, H, W, nh*hc], proj [B, H, W, C], guide [B, nc, nh*hc]): per head m, the max
    over the classes of embed_m . guide_m / sqrt(hc) + bias[m], its sigmoid times head m's C / nh channels of proj."""

    def __init__(self, num_heads, **kw):
        super().__init__(**kw)
        self.num_heads = int(num_heads)
        self.bias = self.add_weight(name="bias", shape=(self.num_heads,), initializer="zeros")

    def call(self, embed, proj, guide):
        h, w = spatial(proj)
        nh = self.num_heads
        hc, c = embed.shape[-1] // nh, proj.shape[-1]
        e = ops.reshape(embed, (-1, h * w, nh, hc))
        g = ops.reshape(guide, (-1, ops.shape(guide)[1], nh, hc))
        aw = ops.max(ops.einsum("bpmc,bnmc->bpmn", e, g), axis=-1) / math.sqrt(hc) + self.bias
        y = ops.reshape(proj, (-1, h * w, nh, c // nh)) * ops.sigmoid(aw)[..., None]
        return ops.reshape(y, (-1, h, w, c))

    def compute_output_shape(self, embed_shape, proj_shape, guide_shape):
        return proj_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package=_PKG)
class AdaptiveMaxPool2D(layers.Layer):
    """nn.AdaptiveMaxPool2d((k, k)) of a map of known size, as [B, k * k, C] (row-major cells): cell i of n spans
    floor(i * size / k) to ceil((i + 1) * size / k), as PyTorch's."""

    def __init__(self, k, **kw):
        super().__init__(**kw)
        self.k = int(k)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if not isinstance(h, int) or not isinstance(w, int):
            raise ValueError(f"{self.name}: the adaptive pool needs the map's size")
        k = self.k
        cut = lambda i, n: (i * n // k, -(-(i + 1) * n // k))  # noqa: E731
        cells = [ops.max(x[:, cut(i, h)[0]:cut(i, h)[1], cut(j, w)[0]:cut(j, w)[1], :], axis=(1, 2))
                 for i in range(k) for j in range(k)]
        return ops.stack(cells, axis=1)

    def compute_output_shape(self, shape):
        return (shape[0], self.k * self.k, shape[-1])

    def get_config(self):
        return {**super().get_config(), "k": self.k}


def _c2fattn(x, B: C2fAttn, fold_bn, text, block):
    """C2f's halves and bottlenecks, then the attention block on the last part guided by the embeddings, cv2."""
    c, name, A = B.c, B.name, B.attn
    y = _conv(x, B.cv1, fold_bn)
    ys = [ChannelSplit(0, c, name=name + "_split0")(y), ChannelSplit(c, 2 * c, name=name + "_split1")(y)]
    for blk in B.m:
        ys.append(block(ys[-1], blk, fold_bn))
    guide = layers.Dense(A.gl.weight.shape[0], name=A.gl.name)(text)
    embed = ys[-1] if A.ec is None else _conv(ys[-1], A.ec, fold_bn)
    ys.append(MaxSigmoidAttention(A.nh, name=A.name)(embed, _conv(ys[-1], A.proj, fold_bn), guide))
    return _conv(layers.Concatenate(axis=-1, name=name + "_cat")(ys), B.cv2, fold_bn)


def _pooling_attn(x, P: ImagePoolingAttn, fold_bn, text):
    """The embeddings + attention (their queries, keys and values of the inputs' pooled k x k cells)."""
    cells = [AdaptiveMaxPool2D(P.k, name=f"{P.name}_pool{i}")(_conv(xi, spec, fold_bn))
             for i, (xi, spec) in enumerate(zip(x, P.projections))]
    cells = layers.Concatenate(axis=1, name=P.name + "_cells")(cells) if len(cells) > 1 else cells[0]
    norm = [layers.LayerNormalization(epsilon=e, name=f"{P.name}_{part}_0")(t)
            for e, part, t in zip(P.eps, ("query", "key", "value"), (text, cells, cells))]
    att = layers.MultiHeadAttention(P.nh, P.ec // P.nh, name=P.name + "_attention")(norm[0], norm[2], key=norm[1])
    return layers.Add(name=P.name + "_add")([att, text])


def world_nodes(inp, plan, fold_bn, block):
    """The yaml graph of a model whose neck uses its class embeddings (plan.tensors[TEXT_KEY])."""
    nc, ct = plan.tensors[TEXT_KEY].shape
    text = [ClassEmbeddings(nc, ct, name=TEXT_KEY.split("/")[0])(inp)]

    def node(x, n):
        if isinstance(n.parts, C2fAttn):
            return _c2fattn(x, n.parts, fold_bn, text[0], block)
        if isinstance(n.parts, ImagePoolingAttn):
            text[0] = _pooling_attn(x, n.parts, fold_bn, text[0])
            return x
        return block(x, n.parts, fold_bn)

    return run_nodes(inp, plan.nodes, node)


BUILDERS = {L2Norm: lambda x, P, fold_bn: layers.UnitNormalization(axis=-1, name=P.name)(x)}
