"""YOLO-World (WorldModel) and YOLOE (YOLOEModel, YOLOESegModel) checkpoints whose class embeddings the model holds
(numpy only): the rows C2fAttn and ImagePoolingAttn, the heads WorldDetect, YOLOEDetect and YOLOESegment, read with
the family's reader (`weights._Reader`) and checked against the yaml row and their inputs before use.

The class embeddings: WorldModel's `txt_feats` [1, nc, embed] (what `set_classes` stores: the text encoder's unit
vectors), YOLOE's `pe` [1, nc, embed] (`set_classes(names, embeddings)`); their rows are the classes (the head's nc,
the names). In eval mode the model runs on them alone, no text encoder:

* the head's class branch per level is cv3 (its last Conv2d gives `embed` channels), then the contrastive head
  cv4 against the embeddings w: BNContrastiveHead (YOLOE, YOLO-Worldv2) batch-normalises the features,
  ContrastiveHead (YOLO-World) L2-normalises them (`L2Norm`); the scores are x . (w / |w|) * exp(logit_scale) + bias:
  a 1x1 convolution whose kernel is computed here from w (`text_conv`; the BatchNorm after cv3's Conv2d, folded or
  not as any other);
* C2fAttn's MaxSigmoidAttnBlock and ImagePoolingAttn take the embeddings as a tensor (world_model.py): YOLO-World's
  ImagePoolingAttn makes them image-aware for the C2fAttn rows after it, the head keeps the stored ones.

A YOLOE head whose embeddings were fused into cv3 (`fuse(pe)`, is_fused) is cv3 alone. A checkpoint without stored
embeddings needs the text encoder at run time (a YOLOE model without `pe` runs on 80 zero rows), and the prompt-free
YOLOE (LRPCHead: its proposal filter keeps a data-dependent set of anchors) is refused by name. YOLOE's reprta and savpe (text and visual prompt encoders) are not used with stored embeddings and
not read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError
from ..torch_reader.modules import NN, ConvSpec, batchnorm, children, is_class, param, sequence
from .blocks import DetectLevel, Detect, Linear, Segment
from .end2end import head_levels
from .heads import detect_branch, strides_dfl
from .rtdetr import layernorm
from .task_heads import proto, proto26

__all__ = ["ROWS", "TEXT_MODELS", "TEXT_KEY", "class_embeddings", "C2fAttn", "ImagePoolingAttn", "L2Norm", "MaxSigmoidAttn"]

TEXT_MODELS = {"WorldModel": "txt_feats", "YOLOEModel": "pe", "YOLOESegModel": "pe"}  # model class -> embeddings
TEXT_KEY = "class_embeddings/embeddings"  # the plan's tensor (world_model.ClassEmbeddings) when the neck uses them


@dataclass(frozen=True)
class L2Norm:
    """F.normalize over the channels (ContrastiveHead's image features)."""

    name: str


@dataclass(frozen=True)
class MaxSigmoidAttn:
    """MaxSigmoidAttnBlock: per head, the max over the classes of embed . gl(text) / sqrt(hc) + bias, its sigmoid
    weighting the head's channels of proj_conv(x)."""

    name: str
    ec: ConvSpec | None  # 1x1 Conv to the embedding channels (None: x itself)
    gl: Linear  # the text guide's Linear (gc -> ec)
    proj: ConvSpec
    nh: int  # its bias (nh,): the plan's tensors


@dataclass(frozen=True)
class C2fAttn:
    name: str
    cv1: ConvSpec
    cv2: ConvSpec
    c: int
    m: list  # Bottleneck
    attn: MaxSigmoidAttn


@dataclass(frozen=True)
class ImagePoolingAttn:
    """The text embeddings updated by attention over each input's k x k adaptive max pool (after a 1x1 projection)."""

    name: str
    projections: list  # ConvSpec per input
    k: int
    nh: int
    eps: tuple  # the LayerNorms' epsilons: query, key, value
    ec: int


def class_embeddings(model, path, cname) -> np.ndarray:
    """The model's stored class embeddings [nc, embed] (float32), or a FormatError saying why there are none."""
    key = TEXT_MODELS[cname]
    t = model.attr(key)
    if t is None:
        raise FormatError(f"{path}: {cname} without stored class embeddings ('{key}'): its classes need the text "
                          f"encoder at run time (CLIP / MobileCLIP), which pyloader does not run; save the model after "
                          f"set_classes so that the embeddings are kept in the checkpoint")
    if not isinstance(t, np.ndarray) or t.ndim != 3 or t.shape[0] != 1 or not t.shape[1] or not t.shape[2]:
        raise FormatError(f"{path}: {cname}.{key} {short_repr(t)}: expected a tensor [1, classes, embed]")
    t = t[0].astype(np.float32)
    if not np.isfinite(t).all():
        raise FormatError(f"{path}: {cname}.{key} holds non-finite values")
    return t


def _scalar(rd, rec, mpath, key) -> float:
    v = param(rd.ctx, rec, mpath, key)
    if v.size != 1 or not np.isfinite(v.astype(np.float64)).all():
        raise rd.err(mpath, f"{key} {short_repr(v)}: expected one finite value")
    return float(v.astype(np.float32).reshape(()))


def text_conv(rd, rec, mpath, text, embed) -> ConvSpec:
    """A contrastive head (ContrastiveHead or BNContrastiveHead, not fused) against `text` [nc, embed] as a 1x1 conv:
    kernel (text / |text|) * exp(logit_scale), bias `bias` for every class."""
    if text.shape[1] != embed:
        raise rd.err(mpath, f"the class embeddings have {text.shape[1]} channels, the head's features {embed}")
    scale = np.exp(np.float32(_scalar(rd, rec, mpath, "logit_scale")))
    w = text / np.maximum(np.linalg.norm(text, axis=-1, keepdims=True), np.float32(1e-12))
    spec = ConvSpec(mpath.replace(".", "_") + "_text", _f32(w * scale)[:, :, None, None],
                    np.full(len(text), _scalar(rd, rec, mpath, "bias"), np.float32), (1, 1), (0, 0), (1, 1), 1)
    rd.convs.append(spec)
    return spec


def _contrastive(rd, rec, mpath, feats: ConvSpec) -> list:
    """The class branch's tail after cv3's Conv2d `feats`: [L2Norm, text conv] or (BN: into `feats`) [text conv]."""
    if is_class(rec, "BNContrastiveHead", "ultralytics.nn.modules"):
        if children(rec).get("norm") is None:
            raise rd.err(mpath, "a BNContrastiveHead without its norm (fused) in a head that is not fused (is_fused)")
        feats.bn = batchnorm(rd.ctx, children(rec)["norm"], mpath + ".norm", mpath.replace(".", "_") + "_norm")
        if feats.bn.gamma.shape[0] != feats.out_channels:
            raise rd.err(mpath + ".norm", f"{feats.bn.gamma.shape[0]} channels, cv3 gives {feats.out_channels}")
        return [text_conv(rd, rec, mpath, rd.text, feats.out_channels)]
    if is_class(rec, "ContrastiveHead", "ultralytics.nn.modules"):
        return [L2Norm(mpath.replace(".", "_") + "_l2norm"), text_conv(rd, rec, mpath, rd.text, feats.out_channels)]
    raise rd.err(mpath, f"expected a ContrastiveHead or BNContrastiveHead, found {short_repr(rec)}")


def _head(rd, rec, mpath, args, cin, c2_of, n_eff):
    """WorldDetect / YOLOEDetect / YOLOESegment(26): Detect's box branch, cv3 + the contrastive head for the classes
    (rd.text's rows; a fused YOLOE head: cv3 alone), YOLOESegment's cv5 (mask coefficients) and Proto (YOLOESegment26: Proto26); a YOLOE-26 head's branch per .end2end."""
    mods = rd.expect(rec, mpath, "WorldDetect", "YOLOEDetect", "YOLOESegment", "YOLOESegment26")
    _text(rd, mpath)
    if "lrpc" in mods or "one2one_lrpc" in mods:
        raise rd.err(mpath, "a prompt-free YOLOE head (LRPCHead) is not supported: its proposal filter keeps a "
                            "data-dependent set of anchors")
    nl, nc, reg_max = (rec.attr(k) for k in ("nl", "nc", "reg_max"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (nl, nc, reg_max)):
        raise rd.err(mpath, f"nl={short_repr(nl)} nc={short_repr(nc)} reg_max={short_repr(reg_max)}: expected positive ints")
    if nc != len(rd.text):
        raise rd.err(mpath, f"nc={nc}, the model's class embeddings have {len(rd.text)} rows")
    if len(cin) != nl:
        raise rd.err(mpath, f"{len(cin)} inputs in the yaml row, the head has nl={nl} levels")
    strides, bins = strides_dfl(rd, rec, mods, mpath, nl, reg_max)
    segment = rec.cls.name.startswith("YOLOESegment")
    fused = rec.attr("is_fused", False)  # YOLOE's fuse(embeddings): cv3 gives the class logits itself
    if not isinstance(fused, bool):
        raise rd.err(mpath, f"is_fused {short_repr(fused)}: expected a bool")

    def branch(prefix):
        box = detect_branch(rd, mods, mpath, prefix + "cv2", nl, 4 * reg_max)
        cls = detect_branch(rd, mods, mpath, prefix + "cv3", nl, nc if fused else rd.text.shape[1])
        heads = sequence(rd.ctx, mods.get(prefix + "cv4"), f"{mpath}.{prefix}cv4", "contrastive heads")
        if len(heads) != nl:
            raise rd.err(f"{mpath}.{prefix}cv4", f"{len(heads)} contrastive heads, expected nl={nl}")
        for i, h in enumerate(heads if fused else ()):  # the embeddings are in cv3: the heads pass it through
            if not is_class(h, "BNContrastiveHead", "ultralytics.nn.modules") or children(h).get("norm") is not None:
                raise rd.err(f"{mpath}.{prefix}cv4.{i}", f"expected a fused BNContrastiveHead (is_fused), found {short_repr(h)}")
        levels = [DetectLevel(b, c if fused else c + _contrastive(rd, h, f"{mpath}.{prefix}cv4.{i}", c[-1]))
                  for i, (b, c, h) in enumerate(zip(box, cls, heads))]
        for i, lv in enumerate(levels):
            for b, stages in (("cv2", lv.cv2), ("cv3", lv.cv3)):
                if stages[0].in_channels != cin[i]:
                    raise rd.err(f"{mpath}.{prefix}{b}.{i}", f"expected {cin[i]} input channels, the weight has "
                                                             f"{stages[0].in_channels}")
        if not segment:
            return levels
        nm = rec.attr("nm")
        masks = detect_branch(rd, mods, mpath, prefix + "cv5", nl, nm)
        for i, stages in enumerate(masks):
            if stages[0].in_channels != cin[i]:
                raise rd.err(f"{mpath}.{prefix}cv5.{i}", f"expected {cin[i]} input channels, the weight has "
                                                         f"{stages[0].in_channels}")
        return levels, masks

    got, rd.end2end = head_levels(rd, rec, mods, mpath, branch)
    name = mpath.replace(".", "_")
    if not segment:
        return Detect(name, got, nc, reg_max, strides, bins), 0
    nm, npr = rec.attr("nm"), rec.attr("npr")
    if rec.cls.name == "YOLOESegment26":
        P = proto26(rd, mods.get("proto"), mpath + ".proto", cin, npr, strides)
    else:
        P = proto(rd, mods.get("proto"), mpath + ".proto", cin[0])
    chain = P.proto if rec.cls.name == "YOLOESegment26" else P
    if chain.cv1.out_channels != npr or chain.cv3.out_channels != nm:
        raise rd.err(mpath + ".proto", f"{chain.cv1.out_channels} hidden and {chain.cv3.out_channels} output channels, "
                                       f"expected npr={npr} and nm={nm}")
    return Segment(name, got[0], nc, reg_max, strides, bins, cv4=got[1], nm=nm, proto=P), 0


def _text(rd, mpath, neck=False):
    if rd.text is None:
        raise rd.err(mpath, f"this module runs on class embeddings, which only a {', '.join(TEXT_MODELS)} holds")
    if neck:
        rd.tensors[TEXT_KEY] = rd.text


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def _linear(rd, rec, mpath, n_in, n_out) -> Linear:
    """An nn.Linear (n_in -> n_out) whose arrays Keras' MultiHeadAttention holds (per head), not a Dense."""
    lin = rd.linear(rec, mpath)
    rd.linears.remove(lin)
    if lin.weight.shape != (n_out, n_in):
        raise rd.err(mpath, f"weight {lin.weight.shape}: expected ({n_out}, {n_in})")
    return lin


def _check(rd, mpath, what, want, got):
    if want != got:
        raise rd.err(mpath, f"{what}: expected {want}, the checkpoint has {got}")


def _c2fattn(rd, rec, mpath, args, cin, c2_of, n_eff):
    """C2fAttn [c2, ec, nh, ...]: C2f's cv1 halves and bottlenecks, then the attention block on the last output;
    cv2 on the (3 + n) parts."""
    mods = rd.expect(rec, mpath, "C2fAttn")
    _text(rd, mpath, neck=True)
    c = rec.attr("c")
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    if not isinstance(c, int) or c <= 0 or cv1.out_channels != 2 * c:
        raise rd.err(mpath, f"hidden channels c={short_repr(c)}, cv1 gives {cv1.out_channels} (expected 2 * c)")
    m = [rd.bottleneck(r, f"{mpath}.m.{j}") for j, r in enumerate(sequence(rd.ctx, mods.get("m"), mpath + ".m", "blocks"))]
    _check(rd, mpath, "blocks (the yaml's depth)", n_eff, len(m))
    _check(rd, mpath + ".cv1", "input channels", cin[0], cv1.in_channels)
    _check(rd, mpath + ".cv2", "input channels ((3 + n) * c)", (3 + len(m)) * c, cv2.in_channels)
    _check(rd, mpath, "output channels", c2_of(args[0] if args else None), cv2.out_channels)
    ap, arec = mpath + ".attn", mods.get("attn")
    am = rd.expect(arec, ap, "MaxSigmoidAttnBlock")
    nh, hc = arec.attr("nh"), arec.attr("hc")
    if not (isinstance(nh, int) and isinstance(hc, int) and nh > 0 and hc > 0) or nh * hc != c:
        raise rd.err(ap, f"nh={short_repr(nh)} hc={short_repr(hc)}: expected positive ints, nh * hc = c = {c}")
    if arec.attr("scale", 1.0) != 1.0:
        raise rd.err(ap, f"scale {short_repr(arec.attr('scale'))}: only 1.0 (MaxSigmoidAttnBlock's scale=False)")
    ec = None if am.get("ec") is None else rd.conv(am["ec"], ap + ".ec")
    width = c if ec is None else ec.out_channels
    if ec is not None:
        _check(rd, ap + ".ec", "input channels", c, ec.in_channels)
    gl = rd.linear(am.get("gl"), ap + ".gl")
    _check(rd, ap + ".gl", "outputs (embedding channels)", width, gl.weight.shape[0])
    if gl.weight.shape[1] != rd.text.shape[1]:
        raise rd.err(ap + ".gl", f"{gl.weight.shape[1]} inputs, the class embeddings have {rd.text.shape[1]} channels")
    if width != nh * hc:
        raise rd.err(ap, f"{width} embedding channels, expected nh * hc = {nh * hc}")
    proj = rd.conv(am.get("proj_conv"), ap + ".proj_conv")
    _check(rd, ap + ".proj_conv", "channels (in, out)", (c, c), (proj.in_channels, proj.out_channels))
    bias = param(rd.ctx, arec, ap, "bias")
    _check(rd, ap, "bias shape", (nh,), bias.shape)
    rd.tensors[f"{ap.replace('.', '_')}/bias"] = _f32(bias)
    attn = MaxSigmoidAttn(ap.replace(".", "_"), ec, gl, proj, nh)
    return C2fAttn(mpath.replace(".", "_"), cv1, cv2, c, m, attn), cv2.out_channels


def _pooling_attn(rd, rec, mpath, args, cin, c2_of, n_eff):
    """ImagePoolingAttn [ec]: its output is the new text embeddings (the row's own output is its inputs)."""
    mods = rd.expect(rec, mpath, "ImagePoolingAttn")
    _text(rd, mpath, neck=True)
    ec, nh, k, nf = (rec.attr(n) for n in ("ec", "nh", "k", "nf"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (ec, nh, k, nf)) or ec % nh or nf != len(cin):
        raise rd.err(mpath, f"ec={short_repr(ec)} nh={short_repr(nh)} k={short_repr(k)} nf={short_repr(nf)}: expected "
                            f"positive ints, ec a multiple of nh, one input per feature map ({len(cin)})")
    if rec.attr("scale", 1.0) != 1.0:
        raise rd.err(mpath, f"scale {short_repr(rec.attr('scale'))}: only 1.0 (ImagePoolingAttn's scale=False)")
    if args and isinstance(args[0], int) and args[0] != ec:
        raise rd.err(mpath, f"embedding channels: the yaml row gives {args[0]}, the checkpoint has {ec}")
    ct = rd.text.shape[1]
    projs = [rd.plain_conv(r, f"{mpath}.projections.{i}")
             for i, r in enumerate(sequence(rd.ctx, mods.get("projections"), mpath + ".projections", "Conv2d"))]
    pools = sequence(rd.ctx, mods.get("im_pools"), mpath + ".im_pools", "AdaptiveMaxPool2d")
    if len(projs) != nf or len(pools) != nf:
        raise rd.err(mpath, f"{len(projs)} projections and {len(pools)} pools, expected {nf}")
    for i, (p, c) in enumerate(zip(projs, cin)):
        if p.kernel.shape != (ec, c, 1, 1) or p.bias is None:
            raise rd.err(f"{mpath}.projections.{i}", f"weight {p.kernel.shape}: expected a 1x1 Conv2d {c} -> {ec}, bias")
    for i, pool in enumerate(pools):
        if not is_class(pool, "AdaptiveMaxPool2d", *NN) or pool.attr("output_size") not in ((k, k), [k, k], k):
            raise rd.err(f"{mpath}.im_pools.{i}", f"expected AdaptiveMaxPool2d(({k}, {k})), found {short_repr(pool)}")
    eps, name = [], mpath.replace(".", "_") + "_attention"
    for part, n_in in (("query", ct), ("key", ec), ("value", ec)):
        items = sequence(rd.ctx, mods.get(part), f"{mpath}.{part}", "LayerNorm, Linear")
        if len(items) != 2:
            raise rd.err(f"{mpath}.{part}", f"{len(items)} modules, expected a LayerNorm and a Linear")
        eps.append(layernorm(rd, items[0], f"{mpath}.{part}.0", n_in))
        lin = _linear(rd, items[1], f"{mpath}.{part}.1", n_in, ec)
        rd.tensors[f"{name}/{part}/kernel"] = _f32(lin.weight.T).reshape(n_in, nh, ec // nh)
        rd.tensors[f"{name}/{part}/bias"] = _f32(lin.bias).reshape(nh, ec // nh)
    out = _linear(rd, mods.get("proj"), mpath + ".proj", ec, ct)
    rd.tensors[f"{name}/attention_output/kernel"] = _f32(out.weight.T).reshape(nh, ec // nh, ct)
    rd.tensors[f"{name}/attention_output/bias"] = _f32(out.bias)
    return ImagePoolingAttn(mpath.replace(".", "_"), projs, k, nh, tuple(eps), ec), cin[0]


ROWS = {"C2fAttn": ("C2fAttn", _c2fattn), "ImagePoolingAttn": ("ImagePoolingAttn", _pooling_attn),
        "WorldDetect": ("WorldDetect", _head), "YOLOEDetect": ("YOLOEDetect", _head),
        "YOLOESegment": ("YOLOESegment", _head), "YOLOESegment26": ("YOLOESegment26", _head)}
