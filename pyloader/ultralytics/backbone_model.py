"""Keras builders of the records `backbones` reads (YOLOv3u, Ghost, YOLOv6, YOLO12, YOLOv9 backbones and necks), as
PyTorch computes them; Keras layers only. Each builder takes (x, record, fold_bn, block), `block` being
`model._block` (a record of any type applied to x) for the records nested in these.

* GhostConv: cat(y, cv2(y)) of y = cv1(x); GhostBottleneck: conv(x) + shortcut(x);
* nn.ConvTranspose2d: Conv2DTranspose ('valid'), then torch's padding cropped from each side;
* A2C2f: cv1, each block on the last output, cv2 of them all (and x + gamma * that, gamma a 1x1 depthwise conv);
  its ABlocks are PSABlock records whose Attention has an `area` (model.PSAAttention);
* RepConv: act(conv1(x) + conv2(x)), the two convolutions as stored (not reparameterised);
* RepNCSPELAN4 / ELAN1: cv4(cat(a, b, c, d)) of cv1's halves a, b, c = cv2(b), d = cv3(c);
* ADown / AConv: a 2x2 stride-1 average pool (no padding) first;
* ResNetBlock (Ultralytics', torchvision's BasicBlock / Bottleneck): relu(convs(x) + shortcut(x));
* CBLinear: its conv's outputs as a list of channel groups; CBFuse: nearest upsampling by the integer size ratio
  (torch's interpolate to the target size), then the sum.
"""

from __future__ import annotations

from keras import layers

from ..keras_blocks.torch_layers import activation, conv as _conv, max_pool_layer
from .blocks import (A2C2f, ADown, AConv, CBFuse, CBLinear, ELAN, GhostBottleneck, GhostConv, Identity, MaxPool, RepConv,
                     ResNetBlock, SPP, TransposeConv, ZeroPad)
from .keras_layers import ChannelSplit

__all__ = ["BUILDERS"]


def _pool(x, p: MaxPool):
    return max_pool_layer(p.kernel, p.stride, p.padding, p.name, x.shape[1:3])(x)


def _cat(xs, name):
    return layers.Concatenate(axis=-1, name=name)(xs)


def _halves(x, name):
    c = int(x.shape[-1]) // 2
    return ChannelSplit(0, c, name=name + "_split0")(x), ChannelSplit(c, 2 * c, name=name + "_split1")(x)


def _avg_pool(x, name):
    """torch's avg_pool2d(x, 2, 1, 0, False, True)."""
    return layers.AveragePooling2D(2, 1, padding="valid", name=name + "_avgpool")(x)


def _chain(x, items, fold_bn, block):
    for it in items:
        x = block(x, it, fold_bn)
    return x


def _ghost_conv(x, B: GhostConv, fold_bn, block):
    y = _conv(x, B.cv1, fold_bn)
    return _cat([y, _conv(y, B.cv2, fold_bn)], B.name + "_cat")


def _ghost_bottleneck(x, B: GhostBottleneck, fold_bn, block):
    return layers.Add(name=B.name + "_add")([_chain(x, B.conv, fold_bn, block), _chain(x, B.shortcut, fold_bn, block)])


def _zero_pad(x, P: ZeroPad, fold_bn, block):
    left, right, top, bottom = P.pad
    return layers.ZeroPadding2D(((top, bottom), (left, right)), name=P.name)(x)


def _spp(x, B: SPP, fold_bn, block):
    y = _conv(x, B.cv1, fold_bn)
    return _conv(_cat([y] + [_pool(y, p) for p in B.pools], B.name + "_cat"), B.cv2, fold_bn)


def _transpose(x, T: TransposeConv, fold_bn, block):
    s = T.spec
    y = layers.Conv2DTranspose(T.out_channels, tuple(int(v) for v in s.kernel.shape[2:]), strides=s.stride,
                               padding="valid", use_bias=s.bias is not None, name=s.name,
                               kernel_initializer="zeros", bias_initializer="zeros")(x)
    (ph, pw) = s.padding
    return layers.Cropping2D(((ph, ph), (pw, pw)), name=s.name + "_crop")(y) if ph or pw else y


def _a2c2f(x, B: A2C2f, fold_bn, block):
    ys = [_conv(x, B.cv1, fold_bn)]
    for m in B.m:
        ys.append(block(ys[-1], m, fold_bn))
    y = _conv(_cat(ys, B.name + "_cat"), B.cv2, fold_bn)
    return y if B.gamma is None else layers.Add(name=B.name + "_add")([x, _conv(y, B.gamma, fold_bn)])


def _rep_conv(x, R: RepConv, fold_bn, block):
    y = layers.Add(name=R.name + "_add")([_conv(x, R.conv1, fold_bn), _conv(x, R.conv2, fold_bn)])
    return activation(y, R.act, R.name + "_act")


def _elan(x, B: ELAN, fold_bn, block):
    ys = list(_halves(_conv(x, B.cv1, fold_bn), B.name))
    for branch in (B.cv2, B.cv3):
        ys.append(_chain(ys[-1], branch, fold_bn, block))
    return _conv(_cat(ys, B.name + "_cat"), B.cv4, fold_bn)


def _adown(x, B: ADown, fold_bn, block):
    a, b = _halves(_avg_pool(x, B.name), B.name)
    b = _pool(b, MaxPool(B.name + "_maxpool", (3, 3), (2, 2), (1, 1)))  # max_pool2d(b, 3, 2, 1)
    return _cat([_conv(a, B.cv1, fold_bn), _conv(b, B.cv2, fold_bn)], B.name + "_cat")


def _aconv(x, B: AConv, fold_bn, block):
    return _conv(_avg_pool(x, B.name), B.cv1, fold_bn)


def _cblinear(x, B: CBLinear, fold_bn, block):
    y, start = _conv(x, B.conv, fold_bn), 0
    out = []
    for j, c in enumerate(B.splits):
        out.append(ChannelSplit(start, start + c, name=f"{B.name}_split{j}")(y))
        start += c
    return out


def _cbfuse(xs, B: CBFuse, fold_bn, block):
    *groups, target = xs
    th, tw = int(target.shape[1]), int(target.shape[2])
    res = []
    for j, (g, i) in enumerate(zip(groups, B.idx)):
        y = g[i]
        h, w = int(y.shape[1]), int(y.shape[2])
        if th % h or tw % w:
            raise ValueError(f"{B.name}: input {j} of {h}x{w} does not scale to {th}x{tw} by integer factors")
        res.append(y if (h, w) == (th, tw) else
                   layers.UpSampling2D((th // h, tw // w), interpolation="nearest", name=f"{B.name}_up{j}")(y))
    return layers.Add(name=B.name)(res + [target])


def _resnet_block(x, B: ResNetBlock, fold_bn, block):
    y = _chain(x, B.convs, fold_bn, block)
    s = x if B.shortcut is None else _conv(x, B.shortcut, fold_bn)
    return activation(layers.Add(name=B.name + "_add")([y, s]), "relu", B.name + "_relu")


BUILDERS = {GhostConv: _ghost_conv, GhostBottleneck: _ghost_bottleneck, ZeroPad: _zero_pad,
            MaxPool: lambda x, P, fold_bn, block: _pool(x, P), SPP: _spp, TransposeConv: _transpose, A2C2f: _a2c2f,
            RepConv: _rep_conv, ELAN: _elan, ADown: _adown, AConv: _aconv, Identity: lambda x, P, fold_bn, block: x,
            CBLinear: _cblinear, CBFuse: _cbfuse, ResNetBlock: _resnet_block}
