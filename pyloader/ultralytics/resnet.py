"""The ResNet rows of Ultralytics' classifiers (numpy only): `ResNetLayer` (yolov8-cls-resnet50 / -resnet101: a 7x7
stem conv + max pool, or a run of ResNetBlocks) and `TorchVision` holding a torchvision ResNet unwrapped and truncated
before its pool (yolo11-cls-resnet18: conv1, bn1, relu, maxpool, then layer1.. of BasicBlock or Bottleneck).

Each row is a `Chain` of ConvSpec, MaxPool and ResNetBlock records, checked against its yaml row (ResNetLayer's
args c1, c2, s, is_first, n, e are not scaled by the width; TorchVision's c2 is its output channels) and every block
against what feeds it (channels, the stride of the convs matching the shortcut's) before any tensor is used.
"""

from __future__ import annotations

from ..boundary import short_repr
from ..torch_reader.modules import NN, ConvSpec, activation_of, batchnorm, children, conv2d, is_class, maxpool, sequence
from .blocks import Chain, MaxPool, ResNetBlock

__all__ = ["ROWS"]

_TV = ("torchvision.models",)


def _name(mpath: str) -> str:
    return mpath.replace(".", "_")


def _check(rd, mpath, what, want, got):
    if want != got:
        raise rd.err(mpath, f"{what}: expected {want}, the checkpoint has {got}")


def _ul_block(rd, rec, mpath) -> ResNetBlock:
    mods = rd.expect(rec, mpath, "ResNetBlock")
    convs = [rd.conv(mods.get(k), f"{mpath}.{k}") for k in ("cv1", "cv2", "cv3")]
    sc = mods.get("shortcut")
    if is_class(sc, "Identity", *NN):
        return ResNetBlock(_name(mpath), convs, None)
    items = sequence(rd.ctx, sc, mpath + ".shortcut", "Conv")
    if len(items) != 1:
        raise rd.err(mpath + ".shortcut", f"{len(items)} modules, expected one Conv")
    return ResNetBlock(_name(mpath), convs, rd.conv(items[0], mpath + ".shortcut.0"))


def _tv_conv(rd, conv, bn, cpath, bpath, act) -> ConvSpec:
    """torchvision's Conv2d followed by its BatchNorm2d (and the block's ReLU, when `act`)."""
    spec = conv2d(rd.ctx, conv, cpath, _name(cpath))
    spec.bn = batchnorm(rd.ctx, bn, bpath, _name(bpath))
    _check(rd, bpath, "channels (the conv's outputs)", spec.out_channels, int(spec.bn.gamma.shape[0]))
    spec.act, spec.act_name = act, _name(cpath) + "_act"
    rd.convs.append(spec)
    return spec


def _tv_block(rd, rec, mpath) -> ResNetBlock:
    """torchvision.models.resnet.BasicBlock (conv1, conv2) or Bottleneck (conv1..conv3), each with its bn."""
    k = 2 if is_class(rec, "BasicBlock", *_TV) else 3 if is_class(rec, "Bottleneck", *_TV) else 0
    if not k:
        raise rd.err(mpath, f"expected a torchvision BasicBlock or Bottleneck, found {short_repr(rec)}")
    mods = children(rec)
    act = activation_of(rd.ctx, mods.get("relu"), mpath + ".relu")
    if act != "relu":
        raise rd.err(mpath + ".relu", f"expected a ReLU, found {short_repr(mods.get('relu'))}")
    convs = [_tv_conv(rd, mods.get(f"conv{i}"), mods.get(f"bn{i}"), f"{mpath}.conv{i}", f"{mpath}.bn{i}",
                      act if i < k else None) for i in range(1, k + 1)]
    ds = mods.get("downsample")
    if ds is None:
        return ResNetBlock(_name(mpath), convs, None)
    items = sequence(rd.ctx, ds, mpath + ".downsample", "Conv2d, BatchNorm2d")
    if len(items) != 2:
        raise rd.err(mpath + ".downsample", f"{len(items)} modules, expected Conv2d and BatchNorm2d")
    return ResNetBlock(_name(mpath), convs, _tv_conv(rd, items[0], items[1], mpath + ".downsample.0",
                                                     mpath + ".downsample.1", None))


def _blocks(rd, mpath, cin, blocks) -> int:
    """Each block takes the previous one's outputs (the first: `cin`); its convs keep the map's size up to their
    strides (odd kernels, padding k // 2), whose product is the shortcut's stride (1 for the identity, which also
    needs as many outputs as inputs); the last conv and the shortcut have no activation. The last's outputs."""
    for B in blocks:
        p = B.name
        out, stride = B.convs[-1].out_channels, [1, 1]
        for j, spec in enumerate(B.convs):
            want_in = cin if j == 0 else B.convs[j - 1].out_channels
            kh, kw = (int(v) for v in spec.kernel.shape[2:])
            _check(rd, p, f"{spec.name}: input channels, groups, dilation, padding (kernel {kh}x{kw})",
                   (want_in, 1, (1, 1), (kh // 2, kw // 2)), (spec.in_channels, spec.groups, spec.dilation, spec.padding))
            if kh % 2 == 0 or kw % 2 == 0:
                raise rd.err(p, f"{spec.name}: an even kernel {kh}x{kw} is not supported")
            stride = [a * b for a, b in zip(stride, spec.stride)]
        sc = B.shortcut
        got = (None, (1, 1)) if sc is None else (
            sc.act, (sc.in_channels, sc.out_channels, tuple(int(v) for v in sc.kernel.shape[2:]), sc.padding, sc.groups, sc.stride))
        want = (None, (1, 1)) if sc is None else (None, (cin, out, (1, 1), (0, 0), 1, tuple(stride)))
        if sc is None and (cin != out or tuple(stride) != (1, 1)):
            raise rd.err(p, f"an identity shortcut adds {cin} input channels to {out} outputs at stride {tuple(stride)}")
        _check(rd, p, "the last conv's activation, the shortcut (activation; inputs, outputs, kernel, padding, groups, "
                      "stride)", (None, want), (B.convs[-1].act, got))
        cin = out
    return cin


def _int_args(rd, mpath, args, n):
    if len(args) < n or not all(isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in args[:n]):
        raise rd.err(mpath, f"yaml args {short_repr(args)}: expected {n} positive ints first")


def _resnet_layer_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "ResNetLayer")
    _int_args(rd, mpath, args, 3)
    c1, c2, s = args[:3]
    first = bool(args[3]) if len(args) > 3 else False
    n, e = (args[4] if len(args) > 4 else 1), (args[5] if len(args) > 5 else 4)
    _int_args(rd, mpath, [n, e], 2)
    _check(rd, mpath, "is_first (the yaml row)", first, rec.attr("is_first"))
    _check(rd, mpath, "input channels (the yaml row's c1)", c1, cin[0])
    p = mpath + ".layer"
    items = sequence(rd.ctx, mods.get("layer"), p, "ResNetBlock" if not first else "Conv, MaxPool2d")
    if first:
        if len(items) != 2:
            raise rd.err(p, f"{len(items)} modules, expected Conv and MaxPool2d")
        conv, pool = rd.conv(items[0], p + ".0"), maxpool(rd.ctx, items[1], p + ".1")
        _check(rd, p, "conv (inputs, outputs, kernel, stride, padding), pool (kernel, stride, padding)",
               (c1, c2, (7, 7), (2, 2), (3, 3), (3, 3), (2, 2), (1, 1)),
               (conv.in_channels, conv.out_channels, tuple(int(v) for v in conv.kernel.shape[2:]), conv.stride, conv.padding,
                pool["kernel"], pool["stride"], pool["padding"]))
        return Chain([conv, MaxPool(**pool)]), c2
    _check(rd, p, "blocks (the yaml row's n)", n, len(items))
    blocks = [_ul_block(rd, r, f"{p}.{j}") for j, r in enumerate(items)]
    _check(rd, p, "each block's (bottleneck channels, outputs, stride) (the yaml row)",
           [(c2, e * c2, (s, s) if j == 0 else (1, 1)) for j in range(n)],
           [(B.convs[0].out_channels, B.convs[-1].out_channels, B.convs[1].stride) for B in blocks])
    return Chain(blocks), _blocks(rd, p, c1, blocks)


def _torchvision_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "TorchVision")
    p = mpath + ".m"
    if rec.attr("split") is not False or not is_class(mods.get("m"), "Sequential", *NN):
        raise rd.err(mpath, f"split {short_repr(rec.attr('split'))}, m {short_repr(mods.get('m'))}: only an unwrapped "
                            "torchvision model (unwrap=True, split=False) is supported")
    items = sequence(rd.ctx, mods["m"], p, "modules")
    if len(items) < 5 or not all(is_class(r, k, *NN) for r, k in zip(items, ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"))):
        raise rd.err(p, f"{len(items)} modules ({', '.join(short_repr(r) for r in items[:4])}...): only a torchvision "
                        "ResNet truncated before its pool is supported (conv1, bn1, relu, maxpool, then layer1..)")
    stem = _tv_conv(rd, items[0], items[1], p + ".0", p + ".1", activation_of(rd.ctx, items[2], p + ".2"))
    _check(rd, p + ".0", "input channels", cin[0], stem.in_channels)
    blocks = [_tv_block(rd, q, f"{p}.{j}.{k}") for j, r in enumerate(items[4:], 4)
              for k, q in enumerate(sequence(rd.ctx, r, f"{p}.{j}", "BasicBlock or Bottleneck"))]
    out = _blocks(rd, p, stem.out_channels, blocks)
    _check(rd, mpath, "output channels (the yaml row)", args[0] if args else None, out)
    return Chain([stem, MaxPool(**maxpool(rd.ctx, items[3], p + ".3")), *blocks]), out


ROWS = {"ResNetLayer": ("ResNetLayer", _resnet_layer_row), "TorchVision": ("TorchVision", _torchvision_row)}
