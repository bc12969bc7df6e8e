"""RT-DETR as Keras (keras.ops only; the records of .rtdetr): HGStem, HGBlock, RepC3, AIFI and the RTDETRDecoder head
in eval mode, as Ultralytics 8.4.190 computes them.

* AIFI: keras.layers.MultiHeadAttention with the 2-D sin-cos position embedding (`SinCosPosition2D`) added to the
  queries and keys, LayerNormalization, the GELU feed-forward;
* the decoder: input projections (Conv2d + BatchNorm2d), the maps flattened and concatenated; anchors per level from
  the map sizes ((x + 0.5) / w, (y + 0.5) / h, 0.05 * 2^level), those outside (0.01, 0.99) invalid (their features
  zeroed, their logit inf); the encoder head (Linear, LayerNorm, score Linear); the top-k (num_queries, at most the
  anchors) of each anchor's best class score (`SelectQueries`); reference boxes sigmoid(enc_bbox_head + anchor logit);
  each decoder layer up to eval_idx: self-attention, multi-scale deformable attention (`DeformableSampling`: torch's
  grid_sample, bilinear, align_corners=False, zeros outside, by gathers), the feed-forward, then the box refined as
  sigmoid(bbox_head + inverse_sigmoid(box)) (`RefineBoxes`); the eval layer's score head;
* decoded: RTDETRDecoder.postprocess (`RTDETRTopK`): the top k = min(num_queries, queries * nc) of the flattened
  (query, class) probabilities, rows cx, cy, w, h (normalised to the input), score, class index;
  raw: `predictions` [B, queries, 4 + nc], the eval layer's boxes (cx, cy, w, h normalised) then class logits.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..keras_blocks.layers import cell_grid
from ..keras_blocks.model import finish_plan_model
from ..keras_blocks.torch_layers import activation, conv as _conv
from .backbone_model import BUILDERS as BACKBONE_BUILDERS
from .blocks import RepConv
from .rtdetr import AIFI, HGBlock, HGStem, RTDETRHead, RepC3

__all__ = ["BUILDERS", "rtdetr_model", "SinCosPosition2D", "SelectQueries", "RefineBoxes", "DeformableSampling",
           "RTDETRTopK"]

_PKG = "pyloader_ultralytics"


def _position(h, w, dim, temperature=10000.0) -> np.ndarray:
    """AIFI.build_2d_sincos_position_embedding: [h * w, dim], rows flattened row-major."""
    grid = cell_grid(h, w, 0.0)  # (x, y) per cell, row-major
    omega = 1.0 / temperature ** (np.arange(dim // 4, dtype=np.float32) / np.float32(dim // 4))
    oh, ow = grid[:, 1:] * omega[None], grid[:, :1] * omega[None]
    return np.concatenate([np.sin(oh), np.cos(oh), np.sin(ow), np.cos(ow)], 1).astype(np.float32)


def _anchors(shapes, grid_size=0.05, eps=0.01):
    """RTDETRDecoder._generate_anchors: ([1, N, 4] logits, inf where invalid; [1, N, 1] valid mask as 0/1)."""
    out = []
    for i, (h, w) in enumerate(shapes):
        xy = cell_grid(h, w, 0.5) / np.array([w, h], np.float32)
        out.append(np.concatenate([xy, np.full_like(xy, grid_size * 2.0 ** i)], -1))
    a = np.concatenate(out)[None].astype(np.float32)
    valid = ((a > eps) & (a < 1 - eps)).all(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        logit = np.log(a / (1 - a)).astype(np.float32)
    return np.where(valid, logit, np.float32(np.inf)), valid.astype(np.float32)


class _Shapes(layers.Layer):
    def __init__(self, shapes, **kw):
        super().__init__(**kw)
        self.shapes = [[int(h), int(w)] for h, w in shapes]

    def get_config(self):
        return {**super().get_config(), "shapes": self.shapes}


@keras.saving.register_keras_serializable(package=_PKG)
class SinCosPosition2D(layers.Layer):
    """x [B, h * w, C] plus AIFI's 2-D sin-cos position embedding (sin, cos of the row, then of the column)."""

    def __init__(self, height, width, **kw):
        super().__init__(**kw)
        self.height, self.width = int(height), int(width)

    def call(self, x):
        return x + ops.convert_to_tensor(_position(self.height, self.width, int(x.shape[-1])))[None]

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


@keras.saving.register_keras_serializable(package=_PKG)
class AnchorMask(_Shapes):
    """The flattened maps [B, N, C] times the valid-anchor mask (RTDETRDecoder: valid_mask * feats)."""

    def call(self, x):
        return x * ops.convert_to_tensor(_anchors(self.shapes)[1])

    def compute_output_shape(self, shape):
        return shape


@keras.saving.register_keras_serializable(package=_PKG)
class SelectQueries(_Shapes):
    """(features [B, N, C], scores [B, N, nc]) -> the k rows of highest best-class score (torch.topk's order):
    (their features [B, k, C], their anchors' logits [B, k, 4]; inf where invalid)."""

    def __init__(self, shapes, k, **kw):
        super().__init__(shapes, **kw)
        self.k = int(k)

    def call(self, features, scores):
        _, index = ops.top_k(ops.max(scores, axis=-1), k=self.k, sorted=True)
        anchors = ops.convert_to_tensor(_anchors(self.shapes)[0][0])
        return ops.take_along_axis(features, index[..., None], axis=1), ops.take(anchors, index, axis=0)

    def compute_output_shape(self, features_shape, scores_shape):
        return (features_shape[0], self.k, features_shape[2]), (features_shape[0], self.k, 4)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


def _inverse_sigmoid(x, eps=1e-5):
    x = ops.clip(x, 0.0, 1.0)
    return ops.log(ops.maximum(x, eps) / ops.maximum(1.0 - x, eps))


@keras.saving.register_keras_serializable(package=_PKG)
class RefineBoxes(layers.Layer):
    """sigmoid(delta + logits) (the first reference boxes from the anchors' logits), or with `inverse`
    sigmoid(delta + inverse_sigmoid(boxes)) (a decoder layer's refinement)."""

    def __init__(self, inverse=True, **kw):
        super().__init__(**kw)
        self.inverse = bool(inverse)

    def call(self, delta, base):
        return ops.sigmoid(delta + (_inverse_sigmoid(base) if self.inverse else base))

    def compute_output_shape(self, delta_shape, base_shape):
        return delta_shape

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse}


@keras.saving.register_keras_serializable(package=_PKG)
class DeformableSampling(_Shapes):
    """MSDeformAttn's core (multi_scale_deformable_attn_pytorch) between its projections: (value [B, N, C], offsets
    [B, Q, heads * levels * points * 2], attention logits [B, Q, heads * levels * points], boxes [B, Q, 4] cx, cy, w,
    h normalised) -> [B, Q, C]. Each point samples at box centre + offset / points * box size / 2, per level, with
    grid_sample's bilinear weights (align_corners=False: pixel x = loc * w - 0.5), corners outside the map adding 0;
    the samples weighted by the softmax of the attention logits over levels and points."""

    def __init__(self, shapes, num_heads, num_points, **kw):
        super().__init__(shapes, **kw)
        self.num_heads, self.num_points = int(num_heads), int(num_points)

    def call(self, value, offsets, logits, boxes):
        nh, npt, nl = self.num_heads, self.num_points, len(self.shapes)
        q, c = int(offsets.shape[1]), int(value.shape[-1])
        dh = c // nh
        off = ops.reshape(offsets, (-1, q, nh, nl * npt, 2))
        attn = ops.softmax(ops.reshape(logits, (-1, q, nh, nl * npt)), axis=-1)
        loc = boxes[:, :, None, None, :2] + off / float(npt) * boxes[:, :, None, None, 2:] * 0.5  # [B, Q, nh, LP, 2]
        v = ops.transpose(ops.reshape(value, (-1, int(value.shape[1]), nh, dh)), (0, 2, 1, 3))  # [B, nh, N, dh]
        out, start = 0.0, 0
        for lv, (h, w) in enumerate(self.shapes):
            pts = slice(lv * npt, (lv + 1) * npt)
            px, py = loc[:, :, :, pts, 0] * w - 0.5, loc[:, :, :, pts, 1] * h - 0.5  # [B, Q, nh, P]
            x0, y0 = ops.floor(px), ops.floor(py)
            fx, fy = px - x0, py - y0
            idx, wts = [], []
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                xi, yi = x0 + dx, y0 + dy
                inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
                wt = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy) * attn[:, :, :, pts]
                wts.append(ops.where(inside, wt, 0.0))
                idx.append(ops.cast(ops.clip(yi, 0, h - 1) * w + ops.clip(xi, 0, w - 1), "int32"))
            idx = ops.reshape(ops.transpose(ops.stack(idx, axis=-1), (0, 2, 1, 3, 4)), (-1, nh, q * npt * 4))
            wts = ops.reshape(ops.transpose(ops.stack(wts, axis=-1), (0, 2, 1, 3, 4)), (-1, nh, q, npt * 4, 1))
            got = ops.take_along_axis(v[:, :, start:start + h * w], idx[..., None], axis=2)  # [B, nh, Q*P*4, dh]
            out = out + ops.sum(ops.reshape(got, (-1, nh, q, npt * 4, dh)) * wts, axis=3)  # [B, nh, Q, dh]
            start += h * w
        return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, q, c))

    def compute_output_shape(self, value_shape, offsets_shape, logits_shape, boxes_shape):
        return (offsets_shape[0], offsets_shape[1], value_shape[2])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "num_points": self.num_points}


@keras.saving.register_keras_serializable(package=_PKG)
class RTDETRTopK(layers.Layer):
    """RTDETRDecoder.postprocess: (boxes [B, Q, 4], class logits [B, Q, nc]) -> [B, k, 6] rows cx, cy, w, h, score,
    class index (a float), best first; k = min(max_det, Q * nc) of the flattened (query, class) sigmoid scores."""

    def __init__(self, nc, max_det, **kw):
        super().__init__(**kw)
        self.nc, self.max_det = int(nc), int(max_det)

    def call(self, boxes, logits):
        q, nc = int(boxes.shape[1]), self.nc
        score, index = ops.top_k(ops.reshape(ops.sigmoid(logits), (-1, q * nc)), k=min(self.max_det, q * nc))
        box = ops.take_along_axis(boxes, (index // nc)[..., None], axis=1)
        return ops.concatenate([box, score[..., None], ops.cast(index % nc, box.dtype)[..., None]], axis=-1)

    def compute_output_shape(self, boxes_shape, logits_shape):
        return (boxes_shape[0], min(self.max_det, boxes_shape[1] * self.nc), 6)

    def get_config(self):
        return {**super().get_config(), "nc": self.nc, "max_det": self.max_det}


def _linear(lin, act=None):
    return layers.Dense(int(lin.weight.shape[0]), activation=act, name=lin.name,
                        kernel_initializer="zeros", bias_initializer="zeros")


def _dense(x, lin, act=None):
    return _linear(lin, act)(x)


def _mlp(x, lins):
    """Ultralytics' MLP (ReLU between the Linears); `lins` may be Keras layers already made (a shared MLP)."""
    for j, lin in enumerate(lins):
        x = (lin if isinstance(lin, layers.Layer) else _linear(lin, "relu" if j < len(lins) - 1 else None))(x)
    return x


def _norm(x, name, eps):
    return layers.LayerNormalization(epsilon=eps, name=name)(x)


def _mha(q, k, v, A):
    return layers.MultiHeadAttention(A.num_heads, A.dim // A.num_heads, name=A.name)(q, v, key=k)


def _hgstem(x, S: HGStem, fold_bn):
    c1, c2a, c2b, c3, c4 = S.convs
    pad = lambda t, i: layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{S.name}_pad{i}")(t)  # noqa: E731 F.pad
    x = pad(_conv(x, c1, fold_bn), 1)
    x2 = _conv(pad(_conv(x, c2a, fold_bn), 2), c2b, fold_bn)
    x1 = layers.MaxPooling2D(2, 1, padding="valid", name=S.name + "_pool")(x)
    return _conv(_conv(layers.Concatenate(axis=-1, name=S.name + "_cat")([x1, x2]), c3, fold_bn), c4, fold_bn)


def _hgblock(x, B: HGBlock, fold_bn):
    ys = [x]
    for item in B.m:
        y = ys[-1]
        for spec in item:
            y = _conv(y, spec, fold_bn)
        ys.append(y)
    y = _conv(_conv(layers.Concatenate(axis=-1, name=B.name + "_cat")(ys), B.sc, fold_bn), B.ec, fold_bn)
    return layers.Add(name=B.name + "_add")([y, x]) if B.add else y


def _repc3(x, B: RepC3, fold_bn):
    y = _conv(x, B.cv1, fold_bn)
    for r in B.m:
        y = BACKBONE_BUILDERS[RepConv](y, r, fold_bn, None)
    y = layers.Add(name=B.name + "_add")([y, _conv(x, B.cv2, fold_bn)])
    return y if B.cv3 is None else _conv(y, B.cv3, fold_bn)


def _aifi(x, A: AIFI, fold_bn):
    h, w, c = (int(v) for v in x.shape[1:])
    src = layers.Reshape((h * w, c), name=A.name + "_flat")(x)
    n1, n2 = A.norms
    s2 = _norm(src, n1, A.eps) if A.pre_norm else src
    qk = SinCosPosition2D(h, w, name=A.name + "_pos")(s2)
    src = layers.Add(name=A.name + "_add1")([src, _mha(qk, qk, s2, A.attn)])
    src = src if A.pre_norm else _norm(src, n1, A.eps)
    f = _dense(_dense(_norm(src, n2, A.eps) if A.pre_norm else src, A.fc1, "gelu"), A.fc2)
    src = layers.Add(name=A.name + "_add2")([src, f])
    return layers.Reshape((h, w, c), name=A.name + "_map")(src if A.pre_norm else _norm(src, n2, A.eps))


def _decoder(x, H: RTDETRHead, fold_bn):
    """RTDETRDecoder in eval mode up to the eval layer: [boxes [B, Q, 4], class logits [B, Q, nc]]."""
    maps = [_conv(xi, spec, fold_bn) for xi, spec in zip(x, H.input_proj)]
    shapes = [(int(m.shape[1]), int(m.shape[2])) for m in maps]
    hd = int(maps[0].shape[-1])
    feats = layers.Concatenate(axis=1, name=H.name + "_feats")(
        [layers.Reshape((h * w, hd), name=f"{H.name}_flat{i}")(m) for i, (m, (h, w)) in enumerate(zip(maps, shapes))])
    enc = _norm(_dense(AnchorMask(shapes, name=H.name + "_mask")(feats), H.enc_output), H.enc_norm, H.eps)
    k = min(H.num_queries, sum(h * w for h, w in shapes))
    embed, anchor = SelectQueries(shapes, k, name=H.name + "_select")(enc, _dense(enc, H.enc_score))
    box = RefineBoxes(False, name=H.name + "_refer")(_mlp(embed, H.enc_bbox), anchor)
    query_pos = [_linear(lin, "relu" if j < len(H.query_pos) - 1 else None) for j, lin in enumerate(H.query_pos)]
    for L, bbox_head in zip(H.layers, H.dec_bbox):
        pos = _mlp(box, query_pos)  # one MLP for every layer
        n1, n2, n3 = L.norms
        qk = layers.Add(name=L.name + "_qk")([embed, pos])
        embed = _norm(layers.Add(name=L.name + "_add1")([embed, _mha(qk, qk, embed, L.self_attn)]), n1, H.eps)
        q = layers.Add(name=L.name + "_q")([embed, pos])
        t = DeformableSampling(shapes, H.num_heads, H.num_points, name=L.name + "_sample")(
            _dense(feats, L.value), _dense(q, L.offsets), _dense(q, L.weights), box)
        embed = _norm(layers.Add(name=L.name + "_add2")([embed, _dense(t, L.output)]), n2, H.eps)
        f = _dense(activation(_dense(embed, L.ffn[0]), L.act, L.name + "_act"), L.ffn[1])
        embed = _norm(layers.Add(name=L.name + "_add3")([embed, f]), n3, H.eps)
        box = RefineBoxes(True, name=L.name + "_refine")(_mlp(embed, bbox_head), box)
    return [box, _dense(embed, H.dec_score)]


BUILDERS = {HGStem: _hgstem, HGBlock: _hgblock, RepC3: _repc3, AIFI: _aifi, RTDETRHead: _decoder}


def rtdetr_model(inp, out, plan, decoded) -> keras.Model:
    """Raw: `predictions` [B, Q, 4 + nc] (boxes, class logits); decoded: `detections` [B, k, 6] (postprocess)."""
    H = plan.nodes[-1].parts
    if decoded:
        det = RTDETRTopK(plan.nc, H.num_queries, name="topk")(*out)
        return finish_plan_model(inp, out, [det], plan, "ultralytics", decode=True, names=["detections"])
    raw = layers.Concatenate(axis=-1, name="raw")(out)
    return finish_plan_model(inp, out, [raw], plan, "ultralytics", decode=False, names=["predictions"])
