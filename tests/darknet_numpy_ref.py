"""A small darknet forward pass in numpy, transliterated from AlexeyAB/darknet's C loops (NCHW memory).

The reference for what OpenCV computes differently from darknet (BN epsilon, default activation, shortcut
weights) or not at all (old reorg, negative upsample, maxpool_depth). Slow; for small test networks only.
It reads weights from pyloader.darknet.synthetic's tensors, not from pyloader's reader.
"""

from __future__ import annotations

import numpy as np


def act(name, x):
    x = x.astype(np.float32)
    if name == "linear":
        return x
    if name == "leaky":
        return np.where(x > 0, x, np.float32(0.1) * x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "logistic":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name in ("swish", "silu"):
        return x / (1 + np.exp(-x))
    if name == "mish":
        sp = np.where(x > 20, x, np.where(x < -20, np.exp(x), np.log(np.exp(x) + 1)))
        return x * np.tanh(sp)
    raise ValueError(name)


def conv(x, t, p):
    """x (C, H, W); darknet: pad `padding*dilation` with zeros, im2col, out size (h + 2p - size)/s + 1."""
    c, h, w = x.shape
    k, g, d = p["size"], p["groups"], p["dilation"]
    sy, sx = p["stride"]
    pad = p["padding"]
    oh = (h + 2 * pad - k) // sy + 1
    ow = (w + 2 * pad - k) // sx + 1
    xp = np.pad(x, ((0, 0), (pad * d, pad * d), (pad * d, pad * d))).astype(np.float64)
    W = t["weights"].astype(np.float64)
    n = W.shape[0]
    out = np.zeros((n, oh, ow))
    cg, ng = c // g, n // g
    for gi in range(g):
        for ky in range(k):
            for kx in range(k):
                patch = xp[gi * cg:(gi + 1) * cg, ky * d: ky * d + (oh - 1) * sy + 1: sy,
                           kx * d: kx * d + (ow - 1) * sx + 1: sx]
                out[gi * ng:(gi + 1) * ng] += np.einsum("oc,chw->ohw", W[gi * ng:(gi + 1) * ng, :, ky, kx], patch)
    if p["batch_normalize"]:
        s, m, v = (t[key].astype(np.float64)[:, None, None] for key in ("scales", "mean", "variance"))
        out = (out - m) / np.sqrt(v + 1e-5) * s
    out = out + t["biases"].astype(np.float64)[:, None, None]
    return act(p["activation"], out)


def maxpool(x, layer):
    """darknet's forward_maxpool_layer; size/stride/padding read from the section with darknet's defaults."""
    opt = {k: v for k, (v, _) in layer.section.options.items()}
    c, h, w = x.shape
    if int(opt.get("maxpool_depth", 0)):
        oc = int(opt.get("out_channels", 1))
        out = np.full((oc, h, w), -np.inf, np.float32)
        for g in range(oc):
            for k in range(g, c, oc):
                out[g] = np.maximum(out[g], x[k])
        return out
    stride = int(opt.get("stride", 1))
    sx, sy = int(opt.get("stride_x", stride)), int(opt.get("stride_y", stride))
    size = int(opt.get("size", stride))
    pad = int(opt.get("padding", size - 1))
    oh = (h + pad - size) // sy + 1
    ow = (w + pad - size) // sx + 1
    out = np.empty((c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            best = np.full(c, -np.finfo(np.float32).max, np.float32)
            for n in range(size):
                for m in range(size):
                    y, xx = -(pad // 2) + i * sy + n, -(pad // 2) + j * sx + m
                    if 0 <= y < h and 0 <= xx < w:
                        best = np.maximum(best, x[:, y, xx])
            out[:, i, j] = best
    return out


def reorg_cpu(x_flat, w, h, c, stride, forward):
    """darknet's reorg_cpu, literally (batch 1)."""
    out = np.empty_like(x_flat)
    in_c = c // (stride * stride)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * k)
                c2 = k % in_c
                offset = k // in_c
                w2 = i * stride + offset % stride
                h2 = j * stride + offset // stride
                out_index = w2 + w * stride * (h2 + h * stride * c2)
                if forward:
                    out[out_index] = x_flat[in_index]
                else:
                    out[in_index] = x_flat[out_index]
    return out


def shortcut(x, others, weights, p):
    """shortcut_multilayer_cpu for batch 1: x (C, H, W), others list of arrays."""
    src = x.reshape(-1)
    src_outputs = src.size
    n = len(others)
    if weights is None:  # darknet's own fast path, vectorized: add the overlapping flat prefix
        out = src.copy()
        for o in others:
            k = min(o.size, src_outputs)
            out[:k] += o.reshape(-1)[:k]
        return act(p["activation"], out.reshape(x.shape))
    out = np.empty_like(src)
    nweights = 0 if weights is None else weights.size
    layer_step = nweights // (n + 1) if nweights else 0
    step = src_outputs // layer_step if nweights else 0
    flat_others = [o.reshape(-1) for o in others]
    norm = p["weights_normalization"]
    for idx in range(src_outputs):
        total, max_val = 1.0, -np.finfo(np.float32).max
        if weights is not None and norm != "none":
            ws = [weights[idx // step + i * layer_step] for i in range(n + 1)]
            if norm == "softmax":
                max_val = max(ws)
            total = 0.0001
            for wv in ws:
                total += max(wv, 0) if norm == "relu" else np.exp(wv - max_val)

        def weight(k):
            wv = weights[idx // step + k * layer_step]
            if norm == "relu":
                return max(wv, 0) / total
            if norm == "softmax":
                return np.exp(wv - max_val) / total
            return wv

        out[idx] = src[idx] * weight(0) if weights is not None else src[idx]
        for i, o in enumerate(flat_others):
            if idx < o.size:
                out[idx] += o[idx] * weight(i + 1) if weights is not None else o[idx]
    return act(p["activation"], out.reshape(x.shape))


def upsample(x, p):
    s, scale = p["stride"], p["scale"]
    c, h, w = x.shape
    if s > 0:
        return scale * x.repeat(s, axis=1).repeat(s, axis=2)
    s = -s
    oh, ow = h // s, w // s
    out = np.zeros((c, oh, ow), np.float32)
    for j in range(oh * s):
        for i in range(ow * s):
            out[:, j // s, i // s] += scale * x[:, j, i]
    return out


def forward(network, tensors, image_chw):
    """Outputs (C, H, W) of every layer; `tensors` as written by pyloader.darknet.synthetic.write_weights."""
    outs = {}
    x = image_chw.astype(np.float32)
    for layer in network.layers:
        p, i = layer.params, layer.index
        inp = x if layer.inputs[0] < 0 else outs[layer.inputs[0]]
        if layer.type == "conv":
            y = conv(inp, tensors[i], p)
        elif layer.type == "maxpool":
            y = maxpool(inp, layer)
        elif layer.type == "avgpool":
            y = inp.mean(axis=(1, 2), keepdims=True)
        elif layer.type in ("dropout", "yolo", "region"):
            y = inp
        elif layer.type == "route":
            parts = []
            for j in layer.inputs:
                o = outs[j]
                cg = o.shape[0] // p["groups"]
                parts.append(o[p["group_id"] * cg:(p["group_id"] + 1) * cg])
            y = np.concatenate(parts, axis=0)
        elif layer.type == "shortcut":
            y = shortcut(inp, [outs[j] for j in layer.inputs[1:]], tensors.get(i, {}).get("weights"), p)
        elif layer.type == "upsample":
            y = upsample(inp, p)
        elif layer.type == "reorg":
            c, h, w = inp.shape
            s = p["stride"]
            y = reorg_cpu(inp.reshape(-1), w, h, c, s, 0).reshape(c * s * s, h // s, w // s)
        elif layer.type == "reorg3d":
            c, h, w = inp.shape
            s = p["stride"]
            oc, oh, ow = c * s * s, h // s, w // s
            y = reorg_cpu(inp.reshape(-1), ow, oh, oc, s, 0).reshape(oc, oh, ow)
        elif layer.type == "sam":
            y = act(p["activation"], inp * outs[layer.inputs[1]])
        elif layer.type == "scale_channels":
            y = act(p["activation"], inp * outs[layer.inputs[1]])  # (C,1,1) or (1,H,W) broadcasts
        else:
            raise ValueError(layer.type)
        outs[i] = y.astype(np.float32)
    return outs
