"""RT-DETR checkpoints (ultralytics.nn.tasks.RTDETRDetectionModel; numpy only): the records and readers of its rows,
HGStem, HGBlock (LightConv), RepC3 (RepConv), AIFI (the transformer encoder layer on the deepest map) and the
RTDETRDecoder head (input projections, query selection, the deformable transformer decoder, its box and score heads),
read with the family's reader (`weights._Reader`: conv, plain_conv, linear, expect, err). Every module is checked
against its yaml row and what feeds it before its tensors are used; LayerNorm and MultiheadAttention arrays go to
`rd.tensors` under their Keras variable paths (keras.layers.LayerNormalization, keras.layers.MultiHeadAttention).
rtdetr_model.py builds them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..boundary import short_repr
from ..torch_reader.modules import NN, ConvSpec, activation_of, batchnorm, children, conv2d, is_class, param, sequence
from .backbones import positive_int, rep_conv
from .blocks import Chain, Linear, MaxPool, ResNetBlock, Upsample

__all__ = ["RTDETR_ROWS", "RTDETR_ABSORBS_N", "level_strides", "layernorm", "HGStem", "HGBlock", "RepC3", "AIFI", "RTDETRHead"]


# -- records


@dataclass(frozen=True)
class HGStem:
    """stem1; zero-pad right and bottom by 1; cat(maxpool 2x2 stride 1, stem2b(pad(stem2a))); stem3; stem4."""

    name: str
    convs: list  # stem1, stem2a, stem2b, stem3, stem4


@dataclass(frozen=True)
class HGBlock:
    """y = [x, m0(x), m1(m0(x)), ...]; ec(sc(cat(y))) (+ x when add). Each m item: [Conv] or LightConv's [1x1 Conv
    without activation, depthwise Conv]."""

    name: str
    m: list  # lists of ConvSpec
    sc: ConvSpec
    ec: ConvSpec
    add: bool


@dataclass(frozen=True)
class RepC3:
    """cv3(m(cv1(x)) + cv2(x)); m chains RepConvs; cv3 None: nn.Identity."""

    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    m: list  # blocks.RepConv
    cv3: ConvSpec | None


@dataclass(frozen=True)
class Attention:
    """nn.MultiheadAttention as keras.layers.MultiHeadAttention `name` (its arrays in rd.tensors)."""

    name: str
    num_heads: int
    dim: int


@dataclass(frozen=True)
class AIFI:
    """TransformerEncoderLayer on the flattened map with the 2-D sin-cos position embedding added to q and k:
    post-norm (x = norm1(x + attn); norm2(x + fc2(gelu(fc1(x))))) or, normalize_before, pre-norm."""

    name: str
    attn: Attention
    fc1: Linear
    fc2: Linear
    norms: tuple  # (norm1, norm2) layer names
    eps: float
    pre_norm: bool


@dataclass(frozen=True)
class DecoderLayer:
    """DeformableTransformerDecoderLayer: self-attention (q = k = x + pos), norm1; MSDeformAttn (value_proj of the
    memory, sampling offsets and attention weights of x + pos, output_proj), norm2; linear2(act(linear1)), norm3."""

    name: str
    self_attn: Attention
    offsets: Linear
    weights: Linear
    value: Linear
    output: Linear
    ffn: tuple  # (linear1, linear2)
    act: str
    norms: tuple  # (norm1, norm2, norm3)


@dataclass(frozen=True)
class RTDETRHead:
    name: str
    input_proj: list  # ConvSpec (Conv2d without bias + BatchNorm2d) per level
    enc_output: Linear
    enc_norm: str
    enc_score: Linear
    enc_bbox: list  # MLP: Linears (ReLU between)
    query_pos: list
    layers: list  # DecoderLayer, up to eval_idx (the layers eval mode runs)
    dec_score: Linear  # eval_idx's
    dec_bbox: list  # per layer run: MLP Linears
    num_queries: int
    num_heads: int
    num_points: int
    eps: float  # the LayerNorms'

    @property
    def nc(self) -> int:
        return int(self.enc_score.weight.shape[0])


# -- readers of the parts


def _name(mpath):
    return mpath.replace(".", "_")


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def layernorm(rd, rec, mpath, dim) -> float:
    """An nn.LayerNorm over `dim` (its gamma, beta into rd.tensors); returns its epsilon."""
    if not is_class(rec, "LayerNorm", *NN):
        raise rd.err(mpath, f"expected a LayerNorm, found {short_repr(rec)}")
    eps = rec.attr("eps")
    if rec.attr("normalized_shape") not in ((dim,), [dim]) or not isinstance(eps, float) or not 0 < eps < 1:
        raise rd.err(mpath, f"normalized_shape {short_repr(rec.attr('normalized_shape'))} eps {short_repr(eps)}: "
                            f"expected ({dim},) and a float in (0, 1)")
    w, b = param(rd.ctx, rec, mpath, "weight"), param(rd.ctx, rec, mpath, "bias")
    if w.shape != (dim,) or b.shape != (dim,):
        raise rd.err(mpath, f"weight {w.shape} bias {b.shape}: expected ({dim},)")
    rd.tensors[f"{_name(mpath)}/gamma"], rd.tensors[f"{_name(mpath)}/beta"] = _f32(w), _f32(b)
    return eps


def _linear(rd, rec, mpath, n_in, n_out) -> Linear:
    lin = rd.linear(rec, mpath)
    if lin.weight.shape != (n_out, n_in):
        raise rd.err(mpath, f"weight {lin.weight.shape}: expected ({n_out}, {n_in})")
    return lin


def _mlp(rd, rec, mpath, dims) -> list:
    """Ultralytics' MLP (ReLU between its Linears, no residual, norm or sigmoid): `dims` in, hidden..., out."""
    mods = rd.expect(rec, mpath, "MLP")
    if rec.attr("sigmoid", False) or rec.attr("residual", False) or not is_class(mods.get("act"), "ReLU", *NN) or (
            mods.get("out_norm") is not None and not is_class(mods["out_norm"], "Identity", *NN)):
        raise rd.err(mpath, "expected an MLP with ReLU, no sigmoid, residual or output norm")
    items = sequence(rd.ctx, mods.get("layers"), mpath + ".layers", "Linear")
    if len(items) != len(dims) - 1:
        raise rd.err(mpath, f"{len(items)} layers, expected {len(dims) - 1}")
    return [_linear(rd, r, f"{mpath}.layers.{j}", dims[j], dims[j + 1]) for j, r in enumerate(items)]


def _attention(rd, rec, mpath, dim, heads=None) -> Attention:
    """nn.MultiheadAttention (packed q, k, v of one width, biases, no bias_k / zero attention) as Keras'
    MultiHeadAttention arrays: query/key/value kernels (dim, heads, head_dim), attention_output (heads, head_dim,
    dim)."""
    if not is_class(rec, "MultiheadAttention", *NN):
        raise rd.err(mpath, f"expected a MultiheadAttention, found {short_repr(rec)}")
    nh = positive_int(rd, rec, mpath, "num_heads")
    if rec.attr("embed_dim") != dim or (heads is not None and nh != heads) or dim % nh or not rec.attr(
            "_qkv_same_embed_dim", True) or rec.attr("add_zero_attn", False) or any(
            param(rd.ctx, rec, mpath, k, required=False) is not None for k in ("bias_k", "bias_v")):
        raise rd.err(mpath, f"embed_dim {short_repr(rec.attr('embed_dim'))}, {nh} heads: expected {dim} and "
                            f"{heads or 'a divisor'}, packed q/k/v, no bias_k/bias_v, no zero attention")
    w, b = param(rd.ctx, rec, mpath, "in_proj_weight"), param(rd.ctx, rec, mpath, "in_proj_bias")
    if w.shape != (3 * dim, dim) or b.shape != (3 * dim,):
        raise rd.err(mpath, f"in_proj_weight {w.shape} in_proj_bias {b.shape}: expected ({3 * dim}, {dim}), "
                            f"({3 * dim},)")
    out, op = children(rec).get("out_proj"), mpath + ".out_proj"
    if not is_class(out, "NonDynamicallyQuantizableLinear", *NN) and not is_class(out, "Linear", *NN):
        raise rd.err(op, f"expected a Linear, found {short_repr(out)}")
    ow, ob = param(rd.ctx, out, op, "weight"), param(rd.ctx, out, op, "bias")
    if ow.shape != (dim, dim) or ob.shape != (dim,):
        raise rd.err(op, f"weight {ow.shape} bias {ob.shape}: expected ({dim}, {dim}), ({dim},)")
    name, hd = _name(mpath), dim // nh
    for i, part in enumerate(("query", "key", "value")):
        rd.tensors[f"{name}/{part}/kernel"] = _f32(w[i * dim:(i + 1) * dim].T).reshape(dim, nh, hd)
        rd.tensors[f"{name}/{part}/bias"] = _f32(b[i * dim:(i + 1) * dim]).reshape(nh, hd)
    rd.tensors[f"{name}/attention_output/kernel"] = _f32(ow.T).reshape(nh, hd, dim)
    rd.tensors[f"{name}/attention_output/bias"] = _f32(ob)
    return Attention(name, nh, dim)


def _act(rd, rec, mpath, gelu=False) -> str:
    if gelu and is_class(rec, "GELU", *NN):
        if rec.attr("approximate", "none") != "none":
            raise rd.err(mpath, f"GELU approximate={short_repr(rec.attr('approximate'))}: only 'none' is supported")
        return "gelu"
    act = activation_of(rd.ctx, rec, mpath)
    if act not in ("relu", "silu") and not gelu:
        raise rd.err(mpath, f"activation {short_repr(act)}: expected ReLU")
    return act


def _check(rd, mpath, what, want, got):
    if want != got:
        raise rd.err(mpath, f"{what}: the yaml row gives {want}, the checkpoint has {got}")


def _chain(rd, mpath, specs, cin):
    for spec in specs:
        if spec.in_channels != cin:
            raise rd.err(mpath, f"{spec.name}: expected {cin} input channels, the weight has {spec.in_channels}")
        cin = spec.out_channels
    return cin


# -- rows: (rd, rec, mpath, args, cin, c2_of, n_eff) -> (record, output channels)


def _hgstem(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "HGStem")
    keys = ("stem1", "stem2a", "stem2b", "stem3", "stem4")
    s = {k: rd.conv(mods.get(k), f"{mpath}.{k}") for k in keys}
    pool = mods.get("pool")
    if not is_class(pool, "MaxPool2d", *NN) or (pool.attr("kernel_size"), pool.attr("stride"), pool.attr("padding")) \
            not in ((2, 1, 0), ((2, 2), (1, 1), (0, 0))) or pool.attr("dilation", 1) not in (1, (1, 1)):
        raise rd.err(mpath + ".pool", f"expected MaxPool2d(2, stride 1, no padding), found {short_repr(pool)}")
    cm, c2 = (args + [None, None])[:2]
    got = [(k, tuple(v.kernel.shape[2:]), v.stride, v.padding) for k, v in s.items()]
    want = [("stem1", (3, 3), (2, 2), (1, 1)), ("stem2a", (2, 2), (1, 1), (0, 0)), ("stem2b", (2, 2), (1, 1), (0, 0)),
            ("stem3", (3, 3), (2, 2), (1, 1)), ("stem4", (1, 1), (1, 1), (0, 0))]
    if got != want or (cm, c2) != (s["stem1"].out_channels, s["stem4"].out_channels):
        raise rd.err(mpath, f"convs {got}, channels {s['stem1'].out_channels}, {s['stem4'].out_channels}: expected "
                            f"{want} and the yaml's {cm}, {c2}")
    _chain(rd, mpath, [s["stem1"], s["stem2a"], s["stem2b"]], cin[0])
    _chain(rd, mpath, [s["stem3"], s["stem4"]], 2 * cm)
    return HGStem(_name(mpath), [s[k] for k in keys]), c2


def _hgblock(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "HGBlock")
    cm, c2, k, light, shortcut = (args + [None, None, 3, False, False][len(args):])[:5]
    m = []
    for j, r in enumerate(sequence(rd.ctx, mods.get("m"), mpath + ".m", "Conv or LightConv")):
        p = f"{mpath}.m.{j}"
        if light:
            sub = rd.expect(r, p, "LightConv")
            item = [rd.conv(sub.get("conv1"), p + ".conv1"), rd.conv(sub.get("conv2"), p + ".conv2")]
            if item[0].act is not None or item[0].kernel.shape[2:] != (1, 1) or item[1].groups != item[1].out_channels:
                raise rd.err(p, "expected LightConv's 1x1 Conv without activation, then a depthwise Conv")
        else:
            item = [rd.conv(r, p)]
        if item[-1].kernel.shape[2:] != (k, k) or item[-1].out_channels != cm:
            raise rd.err(p, f"kernel {item[-1].kernel.shape[2:]}, {item[-1].out_channels} channels: the yaml gives "
                            f"{k}, {cm}")
        _chain(rd, p, item, cin[0] if j == 0 else cm)
        m.append(item)
    sc, ec = rd.conv(mods.get("sc"), mpath + ".sc"), rd.conv(mods.get("ec"), mpath + ".ec")
    _check(rd, mpath, "blocks", n_eff, len(m))
    _check(rd, mpath, "output channels", c2, ec.out_channels)
    _chain(rd, mpath, [sc, ec], cin[0] + n_eff * cm)
    _check(rd, mpath, "shortcut", bool(shortcut) and cin[0] == c2, rec.attr("add"))
    return HGBlock(_name(mpath), m, sc, ec, rec.attr("add")), c2


def _repc3(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "RepC3")
    c2 = c2_of(args[0] if args else None)
    c_ = int(c2 * (args[1] if len(args) > 1 else 1.0))
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    items = sequence(rd.ctx, mods.get("m"), mpath + ".m", "RepConv")
    m = [rep_conv(rd, r, f"{mpath}.m.{j}") for j, r in enumerate(items)]
    cv3 = None if is_class(mods.get("cv3"), "Identity", *NN) else rd.conv(mods.get("cv3"), mpath + ".cv3")
    _check(rd, mpath, "blocks", n_eff, len(m))
    for spec in (cv1, cv2):
        _chain(rd, mpath, [spec], cin[0])
        _check(rd, mpath, "hidden channels", c_, spec.out_channels)
    _chain(rd, mpath, [c for r in m for c in (r.conv1,)], c_)
    for r in m:
        _chain(rd, mpath, [r.conv2], c_)
    if (cv3 is None) != (c_ == c2) or (cv3 is not None and _chain(rd, mpath, [cv3], c_) != c2):
        raise rd.err(mpath + ".cv3", f"expected {'nn.Identity' if c_ == c2 else f'a Conv {c_} -> {c2}'}")
    return RepC3(_name(mpath), cv1, cv2, m, cv3), c2


def _aifi(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "AIFI")
    c1 = cin[0]
    cm, nh = (args + [2048, 8][len(args):])[:2]
    if c1 % 4:
        raise rd.err(mpath, f"{c1} channels: the 2-D sin-cos position embedding needs a multiple of 4")
    attn = _attention(rd, mods.get("ma"), mpath + ".ma", c1, nh)
    fc1 = _linear(rd, mods.get("fc1"), mpath + ".fc1", c1, cm)
    fc2 = _linear(rd, mods.get("fc2"), mpath + ".fc2", cm, c1)
    eps = {layernorm(rd, mods.get(k), f"{mpath}.{k}", c1) for k in ("norm1", "norm2")}
    pre = rec.attr("normalize_before")
    if len(eps) != 1 or not isinstance(pre, bool):
        raise rd.err(mpath, f"norm eps {sorted(eps)}, normalize_before {short_repr(pre)}: expected one eps, a bool")
    if _act(rd, mods.get("act"), mpath + ".act", gelu=True) != "gelu":
        raise rd.err(mpath + ".act", "expected GELU")
    return AIFI(_name(mpath), attn, fc1, fc2, (f"{_name(mpath)}_norm1", f"{_name(mpath)}_norm2"), eps.pop(), pre), c1


def _decoder_layer(rd, rec, mpath, hd, nh, nl, npt) -> tuple:
    mods = rd.expect(rec, mpath, "DeformableTransformerDecoderLayer")
    attn = _attention(rd, mods.get("self_attn"), mpath + ".self_attn", hd, nh)
    ca, cp = rd.expect(mods.get("cross_attn"), mpath + ".cross_attn", "MSDeformAttn"), mpath + ".cross_attn"
    got = tuple(mods["cross_attn"].attr(k) for k in ("d_model", "n_levels", "n_heads", "n_points"))
    if got != (hd, nl, nh, npt):
        raise rd.err(cp, f"d_model, n_levels, n_heads, n_points {got}: expected {(hd, nl, nh, npt)}")
    lins = [_linear(rd, ca.get(k), f"{cp}.{k}", hd, n) for k, n in (
        ("sampling_offsets", nh * nl * npt * 2), ("attention_weights", nh * nl * npt), ("value_proj", hd),
        ("output_proj", hd))]
    d_ffn = int(param(rd.ctx, mods.get("linear1"), mpath + ".linear1", "weight").shape[0])
    ffn = (_linear(rd, mods.get("linear1"), mpath + ".linear1", hd, d_ffn),
           _linear(rd, mods.get("linear2"), mpath + ".linear2", d_ffn, hd))
    eps = {layernorm(rd, mods.get(k), f"{mpath}.{k}", hd) for k in ("norm1", "norm2", "norm3")}
    names = tuple(f"{_name(mpath)}_norm{i}" for i in (1, 2, 3))
    return DecoderLayer(_name(mpath), attn, *lins, ffn, _act(rd, mods.get("act"), mpath + ".act"), names), eps


def _rtdetr_decoder(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "RTDETRDecoder")
    hd, nh, nl, nc, nq = (positive_int(rd, rec, mpath, k) for k in ("hidden_dim", "nhead", "nl", "nc", "num_queries"))
    if args and isinstance(args[0], int):
        _check(rd, mpath, "classes (nc)", args[0], nc)
    if nl != len(cin) or hd % nh:
        raise rd.err(mpath, f"nl={nl} levels, hidden_dim {hd}, {nh} heads: the yaml row has {len(cin)} inputs")
    if rec.attr("learnt_init_query") is not False:
        raise rd.err(mpath, f"learnt_init_query {short_repr(rec.attr('learnt_init_query'))}: only False (queries from "
                            "the selected encoder features) is supported")
    proj = []
    for i, r in enumerate(sequence(rd.ctx, mods.get("input_proj"), mpath + ".input_proj", "Sequential")):
        p = f"{mpath}.input_proj.{i}"
        items = sequence(rd.ctx, r, p, "Conv2d, BatchNorm2d")
        spec = conv2d(rd.ctx, items[0] if items else None, p + ".0", _name(p) + "_0")
        if len(items) != 2 or spec.bias is not None or spec.kernel.shape[2:] != (1, 1) or spec.out_channels != hd:
            raise rd.err(p, f"expected a 1x1 Conv2d to {hd} channels without bias, then a BatchNorm2d")
        spec.bn = batchnorm(rd.ctx, items[1], p + ".1", _name(p) + "_1")
        _chain(rd, p, [spec], cin[min(i, len(cin) - 1)])
        if spec.bn.gamma.shape != (hd,):
            raise rd.err(p + ".1", f"{spec.bn.gamma.shape[0]} channels, expected {hd}")
        rd.convs.append(spec)
        proj.append(spec)
    dec = rd.expect(mods.get("decoder"), mpath + ".decoder", "DeformableTransformerDecoder")
    layers = sequence(rd.ctx, dec.get("layers"), mpath + ".decoder.layers", "decoder layers")
    eval_idx = mods["decoder"].attr("eval_idx")
    ndl = positive_int(rd, rec, mpath, "num_decoder_layers")
    if len(proj) != nl or len(layers) != ndl or not (isinstance(eval_idx, int) and 0 <= eval_idx < ndl):
        raise rd.err(mpath, f"{len(proj)} input projections, {len(layers)} decoder layers, eval_idx "
                            f"{short_repr(eval_idx)}: expected {nl}, {ndl} and an index into them")
    first = f"{mpath}.decoder.layers.0"
    rd.expect(rd.expect(layers[0], first, "DeformableTransformerDecoderLayer").get("cross_attn") if layers else None,
              first + ".cross_attn", "MSDeformAttn")
    npt = positive_int(rd, children(layers[0])["cross_attn"], first + ".cross_attn", "n_points")
    run, eps = [], set()
    for i in range(eval_idx + 1):  # eval mode stops at eval_idx
        lay, e = _decoder_layer(rd, layers[i], f"{mpath}.decoder.layers.{i}", hd, nh, nl, npt)
        run.append(lay)
        eps |= e
    enc = sequence(rd.ctx, mods.get("enc_output"), mpath + ".enc_output", "Linear, LayerNorm")
    if len(enc) != 2:
        raise rd.err(mpath + ".enc_output", f"{len(enc)} modules, expected a Linear and a LayerNorm")
    enc_lin = _linear(rd, enc[0], mpath + ".enc_output.0", hd, hd)
    eps.add(layernorm(rd, enc[1], mpath + ".enc_output.1", hd))
    if len(eps) != 1:
        raise rd.err(mpath, f"LayerNorm eps {sorted(eps)}: expected one value")
    heads = [sequence(rd.ctx, mods.get(k), f"{mpath}.{k}", "heads") for k in ("dec_score_head", "dec_bbox_head")]
    if any(len(h) != ndl for h in heads):
        raise rd.err(mpath, f"{[len(h) for h in heads]} score and box heads, expected {ndl}")
    return RTDETRHead(
        _name(mpath), proj, enc_lin, _name(mpath) + "_enc_output_1",
        _linear(rd, mods.get("enc_score_head"), mpath + ".enc_score_head", hd, nc),
        _mlp(rd, mods.get("enc_bbox_head"), mpath + ".enc_bbox_head", (hd, hd, hd, 4)),
        _mlp(rd, mods.get("query_pos_head"), mpath + ".query_pos_head", (4, 2 * hd, hd)), run,
        _linear(rd, heads[0][eval_idx], f"{mpath}.dec_score_head.{eval_idx}", hd, nc),
        [_mlp(rd, heads[1][i], f"{mpath}.dec_bbox_head.{i}", (hd, hd, hd, 4)) for i in range(eval_idx + 1)],
        nq, nh, npt, eps.pop()), 0


RTDETR_ROWS = {  # yaml module: (the kind `pyloader inspect` counts, its row reader)
    "HGStem": ("HGStem", _hgstem), "HGBlock": ("HGBlock", _hgblock), "RepC3": ("RepC3", _repc3),
    "AIFI": ("AIFI", _aifi), "RTDETRDecoder": ("RTDETRDecoder", _rtdetr_decoder),
}
RTDETR_ABSORBS_N = {"HGBlock", "RepC3"}  # n is their inner block count


def _stride(P) -> float:
    """How much a row's record downsamples (HGStem 4; convolutions, pools and ResNet chains by their strides)."""
    if isinstance(P, HGStem):
        return 4
    if isinstance(P, (ConvSpec, MaxPool)):
        return P.stride[0]
    if isinstance(P, Upsample):
        return 1 / P.size[0]
    if isinstance(P, (Chain, ResNetBlock)):
        return float(np.prod([_stride(p) for p in (P.items if isinstance(P, Chain) else P.convs)]))
    return 1


def level_strides(nodes, head) -> list:
    """The stride of each map the head takes (from the rows' convolutions, pools and upsampling)."""
    strides = []
    for node in nodes:
        src = node.source if isinstance(node.source, int) else node.source[0]
        before = (strides[src] if src >= 0 else strides[len(strides) + src]) if strides else 1
        strides.append(before * _stride(node.parts))
    return [float(strides[i]) for i in head.source]
