"""The yaml rows of the YOLOv3u, Ghost, YOLOv6, YOLO12 and YOLOv9 backbones and necks (numpy only): Bottleneck rows,
nn.MaxPool2d, nn.ZeroPad2d, SPP, GhostConv, C3Ghost (GhostBottleneck), nn.ConvTranspose2d, A2C2f (ABlock, AAttn),
RepNCSPELAN4 (RepCSP, RepBottleneck, RepConv), ELAN1, ADown, AConv, SPPELAN, and YOLOv9-E's nn.Identity, CBLinear
and CBFuse (a CBLinear's output channels are its list of groups).

`ROWS` maps a yaml module name to (the kind `pyloader inspect` counts, its row reader); `weights.read_plan` calls
the reader with its `_Reader` (`rd`), which checks each module against its row (output channels, kernel, stride,
repeats) and against what feeds it before any tensor is used, and collects every ConvSpec for the arrays.
"""

from __future__ import annotations

from ..boundary import short_repr
from ..torch_reader.modules import NN, ConvSpec, activation_of, is_class, maxpool, pair, param, sequence
from .blocks import (A2C2f, ADown, AConv, Attention, Bottleneck, C3, CBFuse, CBLinear, Chain, ELAN, GhostBottleneck,
                     GhostConv, Identity, MaxPool, PSABlock, RepConv, SPP, SPPF, TransposeConv, ZeroPad)

__all__ = ["positive_int", "ROWS", "ABSORBS_N"]


def _name(mpath: str) -> str:
    return mpath.replace(".", "_")


def _out(rec) -> int:
    """A record's output channels."""
    if isinstance(rec, (ConvSpec, GhostConv, RepConv)):
        return rec.out_channels
    if isinstance(rec, GhostBottleneck):
        return _out(rec.conv[-1])
    if isinstance(rec, ADown):
        return rec.cv1.out_channels + rec.cv2.out_channels
    return (rec.cv2 if isinstance(rec, Bottleneck) else rec.cv3).out_channels  # Bottleneck, C3


def _inputs(rec) -> list:
    """The ConvSpecs that take a record's input."""
    return {ConvSpec: lambda r: [r], GhostConv: lambda r: [r.cv1], RepConv: lambda r: [r.conv1, r.conv2],
            C3: lambda r: [r.cv1, r.cv2], Bottleneck: lambda r: _inputs(r.cv1),
            GhostBottleneck: lambda r: _inputs(r.conv[0]) + r.shortcut[:1]}[type(rec)](rec)


def _check(rd, mpath, what, want, got):
    if want != got:
        raise rd.err(mpath, f"{what}: expected {want}, the checkpoint has {got}")


def _walk(rd, mpath, cin, items) -> int:
    """Each record of `items` takes the previous one's outputs (the first: `cin`, unless None); the last's outputs."""
    for it in items:
        for spec in _inputs(it):
            if cin is not None and spec.in_channels != cin:
                raise rd.err(mpath, f"{spec.name}: expected {cin} input channels, the weight has {spec.in_channels}")
        cin = _out(it)
    return cin


def positive_int(rd, rec, mpath, key):
    """The record's attribute `key`, a positive int (else a FormatError naming the module)."""
    v = rec.attr(key)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise rd.err(mpath, f"{key} {short_repr(v)}: expected a positive int")
    return v


def _kernel_stride(rd, mpath, spec, args, at=1):
    """A Conv-like row's kernel (args[at]) and stride (args[at + 1]), where given as ints."""
    for what, i, got in (("kernel", at, tuple(int(v) for v in spec.kernel.shape[2:])), ("stride", at + 1, spec.stride)):
        if len(args) > i and isinstance(args[i], int):
            _check(rd, mpath, what, (args[i], args[i]), got)


# -- modules


def ghost_conv(rd, rec, mpath) -> GhostConv:
    mods = rd.expect(rec, mpath, "GhostConv")
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    c = cv1.out_channels
    _check(rd, mpath + ".cv2", "a depthwise conv over cv1's outputs (channels in, out, groups)", (c, c, c),
           (cv2.in_channels, cv2.out_channels, cv2.groups))
    return GhostConv(_name(mpath), cv1, cv2)


def ghost_bottleneck(rd, rec, mpath) -> GhostBottleneck:
    mods = rd.expect(rec, mpath, "GhostBottleneck")
    conv = []
    for j, r in enumerate(sequence(rd.ctx, mods.get("conv"), mpath + ".conv", "GhostConv, DWConv, GhostConv")):
        p = f"{mpath}.conv.{j}"
        if is_class(r, "Identity", *NN):
            continue
        conv.append(ghost_conv(rd, r, p) if j != 1 else rd.conv(r, p))
    short = mods.get("shortcut")
    shortcut = [] if is_class(short, "Identity", *NN) else [
        rd.conv(r, f"{mpath}.shortcut.{j}") for j, r in enumerate(sequence(rd.ctx, short, mpath + ".shortcut", "Conv"))]
    first = conv[0].cv1 if conv and isinstance(conv[0], GhostConv) else None
    if (len(conv), len(shortcut)) not in ((2, 0), (3, 2)) or first is None or not isinstance(conv[-1], GhostConv):
        raise rd.err(mpath, f"expected conv = GhostConv, GhostConv with an identity shortcut, or GhostConv, DWConv, "
                            f"GhostConv with a two-conv one; found {len(conv)} conv and {len(shortcut)} shortcut modules")
    c1 = first.in_channels
    c2, want = _walk(rd, mpath + ".conv", c1, conv), _walk(rd, mpath + ".shortcut", c1, shortcut)
    if want != c2:
        raise rd.err(mpath, f"the shortcut gives {want} channels, the conv branch {c2}")
    return GhostBottleneck(_name(mpath), conv, shortcut)


def c3_ghost(rd, rec, mpath) -> C3:
    mods = rd.expect(rec, mpath, "C3Ghost")
    cv1, cv2, cv3 = (rd.conv(mods.get(k), f"{mpath}.{k}") for k in ("cv1", "cv2", "cv3"))
    m = [ghost_bottleneck(rd, r, f"{mpath}.m.{j}")
         for j, r in enumerate(sequence(rd.ctx, mods.get("m"), mpath + ".m", "GhostBottleneck"))]
    _check(rd, mpath + ".cv3", "input channels", _walk(rd, mpath + ".m", cv1.out_channels, m) + cv2.out_channels, cv3.in_channels)
    return C3(_name(mpath), cv1, cv2, cv3, m)


def rep_conv(rd, rec, mpath) -> RepConv:
    mods = rd.expect(rec, mpath, "RepConv")
    if mods.get("bn") is not None:
        raise rd.err(mpath + ".bn", "RepConv with an identity batch-norm branch is not supported")
    if mods.get("conv") is not None:
        raise rd.err(mpath + ".conv", "a fused RepConv (deploy form) is not supported")
    conv1, conv2 = rd.conv(mods.get("conv1"), mpath + ".conv1"), rd.conv(mods.get("conv2"), mpath + ".conv2")
    if (conv1.act, conv2.act) != (None, None) or conv1.kernel.shape[2:] != (3, 3) or conv2.kernel.shape[2:] != (1, 1) \
            or (conv1.in_channels, conv1.out_channels, conv1.stride) != (conv2.in_channels, conv2.out_channels, conv2.stride):
        raise rd.err(mpath, f"expected a 3x3 and a 1x1 Conv of the same channels and stride, no activation; got "
                            f"{conv1.kernel.shape}, {conv2.kernel.shape}")
    return RepConv(_name(mpath), conv1, conv2, activation_of(rd.ctx, mods.get("act"), mpath + ".act"))


def rep_csp(rd, rec, mpath) -> C3:
    """RepCSP: a C3 whose blocks are RepBottlenecks (cv1 a RepConv)."""
    mods = rd.expect(rec, mpath, "RepCSP")
    cv1, cv2, cv3 = (rd.conv(mods.get(k), f"{mpath}.{k}") for k in ("cv1", "cv2", "cv3"))
    m = []
    for j, r in enumerate(sequence(rd.ctx, mods.get("m"), mpath + ".m", "RepBottleneck")):
        p = f"{mpath}.m.{j}"
        sub = rd.expect(r, p, "RepBottleneck")
        add = r.attr("add")
        if not isinstance(add, bool):
            raise rd.err(p, f"RepBottleneck.add is {short_repr(add)}, expected a bool")
        b = Bottleneck(_name(p), rep_conv(rd, sub.get("cv1"), p + ".cv1"), rd.conv(sub.get("cv2"), p + ".cv2"), add)
        _walk(rd, p, cv1.out_channels, [b.cv1, b.cv2])
        if add and b.cv2.out_channels != cv1.out_channels:
            raise rd.err(p, f"a shortcut adds {cv1.out_channels} channels to {b.cv2.out_channels}")
        m.append(b)
    return C3(_name(mpath), cv1, cv2, cv3, m)


def area_attention(rd, rec, mpath) -> Attention:
    """AAttn: Attention's computation with key_dim = head_dim, scale head_dim ** -0.5, over `area` runs of rows."""
    mods = rd.expect(rec, mpath, "AAttn")
    nh, hd, area = (positive_int(rd, rec, mpath, k) for k in ("num_heads", "head_dim", "area"))
    qkv, proj, pe = (rd.conv(mods.get(k), f"{mpath}.{k}") for k in ("qkv", "proj", "pe"))
    dim = nh * hd
    _check(rd, mpath, f"qkv outputs, proj in/out, pe in/out/groups (num_heads {nh}, head_dim {hd})",
           (3 * dim, dim, proj.in_channels, dim, dim, dim),
           (qkv.out_channels, pe.in_channels, proj.in_channels, proj.out_channels, pe.out_channels, pe.groups))
    return Attention(_name(mpath), qkv, proj, pe, nh, hd, hd, float(hd ** -0.5), area)


def a_block(rd, rec, mpath) -> PSABlock:
    mods = rd.expect(rec, mpath, "ABlock")
    attn = area_attention(rd, mods.get("attn"), mpath + ".attn")
    mlp = [rd.conv(r, f"{mpath}.mlp.{j}") for j, r in enumerate(sequence(rd.ctx, mods.get("mlp"), mpath + ".mlp", "Conv"))]
    if not mlp or _walk(rd, mpath + ".mlp", attn.qkv.in_channels, mlp) != attn.qkv.in_channels:
        raise rd.err(mpath + ".mlp", f"expected a Conv chain back to {attn.qkv.in_channels} channels")
    return PSABlock(_name(mpath), attn, mlp, True)


def a2c2f(rd, rec, mpath) -> A2C2f:
    mods = rd.expect(rec, mpath, "A2C2f")
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    m = []
    for j, r in enumerate(sequence(rd.ctx, mods.get("m"), mpath + ".m", "blocks")):
        p = f"{mpath}.m.{j}"
        if is_class(r, "Sequential", *NN):
            m.append(Chain([a_block(rd, q, f"{p}.{k}") for k, q in enumerate(sequence(rd.ctx, r, p, "ABlock"))]))
            _check(rd, p, "block channels", cv1.out_channels, m[-1].items[0].attn.qkv.in_channels if m[-1].items else None)
        else:
            m.append(rd.c3(r, p, "C3k"))
            _walk(rd, p, cv1.out_channels, m[-1:])
    _check(rd, mpath + ".cv2", "input channels", (1 + len(m)) * cv1.out_channels, cv2.in_channels)
    g = param(rd.ctx, rec, mpath, "gamma", required=False)
    if g is None and rec.attr("gamma") is not None:
        raise rd.err(mpath, f"gamma {short_repr(rec.attr('gamma'))}: expected a parameter or None")
    gamma = None
    if g is not None:
        c = cv2.out_channels
        if g.shape != (c,):
            raise rd.err(mpath, f"gamma of shape {g.shape}, expected ({c},)")
        # x + gamma * y: a 1x1 depthwise conv without bias multiplies each channel by its gamma, exactly
        gamma = ConvSpec(_name(mpath) + "_gamma", g.reshape(c, 1, 1, 1), None, (1, 1), (0, 0), (1, 1), c)
        rd.convs.append(gamma)
    return A2C2f(_name(mpath), cv1, cv2, m, gamma)


def elan(rd, rec, mpath, kind) -> ELAN:
    """RepNCSPELAN4 (cv2, cv3: Sequential(RepCSP, Conv)) or ELAN1 (cv2, cv3: Conv)."""
    mods = rd.expect(rec, mpath, kind)
    cv1, cv4 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv4"), mpath + ".cv4")
    branches = []
    for k in ("cv2", "cv3"):
        p = f"{mpath}.{k}"
        if kind == "ELAN1":
            branches.append([rd.conv(mods.get(k), p)])
            continue
        items = sequence(rd.ctx, mods.get(k), p, "RepCSP, Conv")
        if len(items) != 2:
            raise rd.err(p, f"{len(items)} modules, expected RepCSP and Conv")
        branches.append([rep_csp(rd, items[0], p + ".0"), rd.conv(items[1], p + ".1")])
    if cv1.out_channels % 2:
        raise rd.err(mpath + ".cv1", f"{cv1.out_channels} outputs: expected an even count (chunked in two)")
    c4 = _walk(rd, mpath + ".cv3", _walk(rd, mpath + ".cv2", cv1.out_channels // 2, branches[0]), branches[1])
    _check(rd, mpath + ".cv4", "input channels", cv1.out_channels + _out(branches[0][-1]) + c4, cv4.in_channels)
    return ELAN(_name(mpath), cv1, branches[0], branches[1], cv4)


def adown(rd, rec, mpath) -> ADown:
    mods = rd.expect(rec, mpath, "ADown")
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    _check(rd, mpath, "cv1 (kernel, stride, padding), cv2 (kernel, stride, padding), their inputs",
           ((3, 3), (2, 2), (1, 1), (1, 1), (1, 1), (0, 0), cv1.in_channels),
           (cv1.kernel.shape[2:], cv1.stride, cv1.padding, cv2.kernel.shape[2:], cv2.stride, cv2.padding, cv2.in_channels))
    return ADown(_name(mpath), cv1, cv2)


def aconv(rd, rec, mpath) -> AConv:
    cv1 = rd.conv(rd.expect(rec, mpath, "AConv").get("cv1"), mpath + ".cv1")
    _check(rd, mpath + ".cv1", "kernel, stride, padding", ((3, 3), (2, 2), (1, 1)),
           (cv1.kernel.shape[2:], cv1.stride, cv1.padding))
    return AConv(_name(mpath), cv1)


def sppelan(rd, rec, mpath) -> SPPF:
    """SPPELAN is SPPF's computation with three pools and no shortcut (cv5 as cv2)."""
    mods = rd.expect(rec, mpath, "SPPELAN")
    cv1, cv5 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv5"), mpath + ".cv5")
    pools = [maxpool(rd.ctx, mods.get(k), f"{mpath}.{k}") for k in ("cv2", "cv3", "cv4")]
    if any({**p, "name": ""} != {**pools[0], "name": ""} for p in pools):
        raise rd.err(mpath, f"the three pools differ: {pools}")
    _check(rd, mpath + ".cv5", "input channels", 4 * cv1.out_channels, cv5.in_channels)
    return SPPF(_name(mpath), cv1, cv5, 3, False, MaxPool(**pools[0]))


# -- rows: (record, output channels), checked against the yaml row and the channels feeding it


def _convlike_row(read):
    def row(rd, rec, mpath, args, cin, c2_of, n_eff):
        P = read(rd, rec, mpath)
        out = _out(P.cv1 if isinstance(P, AConv) else P)
        _check(rd, mpath, "output channels (the yaml row)", c2_of(args[0] if args else None), out)
        if isinstance(P, GhostConv):
            _kernel_stride(rd, mpath, P.cv1, args)
        c = cin[0] if cin[0] is None or not isinstance(P, ADown) else cin[0] // 2  # ADown chunks its input in two
        _walk(rd, mpath, c, [P.cv2 if isinstance(P, ADown) else P.cv1])
        return P, out
    return row


def _csp_row(read):
    """C3Ghost / A2C2f rows: n blocks (the yaml's depth), the output channels, cv1's (and C3's cv2's) inputs."""
    def row(rd, rec, mpath, args, cin, c2_of, n_eff):
        P = read(rd, rec, mpath)
        _check(rd, mpath, "blocks (the yaml's depth)", n_eff, len(P.m))
        out = (P.cv3 if isinstance(P, C3) else P.cv2).out_channels
        _check(rd, mpath, "output channels (the yaml row)", c2_of(args[0] if args else None), out)
        _walk(rd, mpath, cin[0], [P] if isinstance(P, C3) else [P.cv1])
        if isinstance(P, A2C2f) and P.gamma is not None and cin[0] != out:
            raise rd.err(mpath, f"the residual adds {cin[0]} input channels to {out} outputs")
        return P, out
    return row


def _bottleneck_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    B = rd.bottleneck(rec, mpath)
    out = B.cv2.out_channels
    _check(rd, mpath, "output channels (the yaml row)", c2_of(args[0] if args else None), out)
    _walk(rd, mpath, cin[0], [B.cv1, B.cv2])
    shortcut = args[1] if len(args) > 1 else True
    if cin[0] is not None:
        _check(rd, mpath, "the shortcut (yaml shortcut and channels in == out)", bool(shortcut) and cin[0] == out, B.add)
    return B, out


def _maxpool_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    P = maxpool(rd.ctx, rec, mpath)
    want = [pair(a, mpath, rd.ctx, "yaml arg") for a in args[:3]]
    _check(rd, mpath, "kernel, stride, padding (the yaml row)", want, [P["kernel"], P["stride"], P["padding"]][:len(want)])
    return MaxPool(**P), cin[0]


def _zeropad_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    if not is_class(rec, "ZeroPad2d", *NN):
        raise rd.err(mpath, f"expected a ZeroPad2d, found {short_repr(rec)}")
    pad, value = rec.attr("padding"), rec.attr("value", 0.0)
    if not (isinstance(pad, (tuple, list)) and len(pad) == 4 and all(isinstance(v, int) and v >= 0 for v in pad)) \
            or value != 0:
        raise rd.err(mpath, f"padding {short_repr(pad)} value {short_repr(value)}: expected 4 ints >= 0, zeros")
    want = args[0] if args else None
    want = (want,) * 4 if isinstance(want, int) else tuple(want) if isinstance(want, (list, tuple)) else None
    _check(rd, mpath, "padding (the yaml row)", want, tuple(pad))
    return ZeroPad(_name(mpath), tuple(pad)), cin[0]


def _spp_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    mods = rd.expect(rec, mpath, "SPP")
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    pools = [MaxPool(**maxpool(rd.ctx, r, f"{mpath}.m.{j}"))
             for j, r in enumerate(sequence(rd.ctx, mods.get("m"), mpath + ".m", "MaxPool2d"))]
    ks = args[1] if len(args) > 1 else (5, 9, 13)
    _check(rd, mpath, "pools (kernel, stride 1, padding k // 2)", [((k, k), (1, 1), (k // 2, k // 2)) for k in ks],
           [(p.kernel, p.stride, p.padding) for p in pools])
    _check(rd, mpath, "output channels (the yaml row)", c2_of(args[0] if args else None), cv2.out_channels)
    _walk(rd, mpath, cin[0], [cv1])
    _check(rd, mpath + ".cv2", "input channels", (len(pools) + 1) * cv1.out_channels, cv2.in_channels)
    return SPP(_name(mpath), cv1, cv2, pools), cv2.out_channels


def read_transpose_conv(rd, rec, mpath) -> TransposeConv:
    """nn.ConvTranspose2d (YOLOv6's neck rows, Segment's Proto): groups 1, dilation 1, no output padding, a kernel
    at least the stride; its arrays go with the convolutions' (conv_arrays' OIHW -> HWIO is (in, out, kh, kw) ->
    Keras' (kh, kw, out, in))."""
    if not is_class(rec, "ConvTranspose2d", *NN):
        raise rd.err(mpath, f"expected a ConvTranspose2d, found {short_repr(rec)}")
    w, b = param(rd.ctx, rec, mpath, "weight"), param(rd.ctx, rec, mpath, "bias", required=False)
    attrs = {k: pair(rec.attr(k, d), mpath, rd.ctx, k) for k, d in
             (("stride", 1), ("padding", 0), ("dilation", 1), ("output_padding", 0))}
    if w.ndim != 4 or rec.attr("groups", 1) != 1 or attrs["dilation"] != (1, 1) or attrs["output_padding"] != (0, 0) \
            or rec.attr("padding_mode", "zeros") != "zeros" or (b is not None and b.shape != (w.shape[1],)):
        raise rd.err(mpath, f"weight {w.shape}, groups {short_repr(rec.attr('groups'))}, {attrs}: only groups 1, "
                            "dilation 1, no output padding, zero padding mode are supported")
    if any(k < st for k, st in zip(w.shape[2:], attrs["stride"])):
        raise rd.err(mpath, f"kernel {tuple(w.shape[2:])} smaller than the stride {attrs['stride']} is not supported")
    spec = ConvSpec(_name(mpath), w, b, attrs["stride"], attrs["padding"], (1, 1), 1)
    rd.convs.append(spec)
    return TransposeConv(spec)


def _transpose_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    P = read_transpose_conv(rd, rec, mpath)
    w, attrs = P.spec.kernel, {"stride": P.spec.stride, "padding": P.spec.padding}
    _check(rd, mpath, "output channels (the yaml row)", c2_of(args[0] if args else None), P.out_channels)
    if len(args) > 1:
        _check(rd, mpath, "kernel, stride, padding (the yaml row)", [pair(a, mpath, rd.ctx, "yaml arg") for a in args[1:4]],
               [tuple(int(v) for v in w.shape[2:]), attrs["stride"], attrs["padding"]][:len(args[1:4])])
    if cin[0] is not None:
        _check(rd, mpath, "input channels", cin[0], int(w.shape[0]))
    return P, P.out_channels


def _elan_row(kind):
    def row(rd, rec, mpath, args, cin, c2_of, n_eff):
        P = elan(rd, rec, mpath, kind)
        _check(rd, mpath, "output channels (the yaml row)", c2_of(args[0] if args else None), P.cv4.out_channels)
        want = [a for a in args[1:3] if isinstance(a, int)]
        _check(rd, mpath, "hidden channels c3, c4 (the yaml row)", want, [P.cv1.out_channels, _out(P.cv2[-1])][:len(want)])
        if kind == "RepNCSPELAN4":
            n = args[3] if len(args) > 3 else 1
            _check(rd, mpath, "RepCSP blocks (the yaml row)", [n, n], [len(P.cv2[0].m), len(P.cv3[0].m)])
        _walk(rd, mpath, cin[0], [P.cv1])
        return P, P.cv4.out_channels
    return row


def _sppelan_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    P = sppelan(rd, rec, mpath)
    _check(rd, mpath, "output channels (the yaml row)", c2_of(args[0] if args else None), P.cv2.out_channels)
    if len(args) > 2 and isinstance(args[2], int):
        _check(rd, mpath, "pool kernel (the yaml row)", (args[2], args[2]), P.pool.kernel)
    _walk(rd, mpath, cin[0], [P.cv1])
    return P, P.cv2.out_channels


def _identity_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    if not is_class(rec, "Identity", *NN):
        raise rd.err(mpath, f"expected an Identity, found {short_repr(rec)}")
    return Identity(_name(mpath)), cin[0]


def _ints(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in v)


def _cblinear_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    """CBLinear: its channel groups are the yaml's as written (parse_model does not scale them)."""
    mods = rd.expect(rec, mpath, "CBLinear")
    splits = rec.attr("c2s")
    if not _ints(splits):
        raise rd.err(mpath, f"c2s {short_repr(splits)}: expected a list of positive ints")
    _check(rd, mpath, "channel groups (the yaml row)", args[0] if args else None, list(splits))
    conv = rd.plain_conv(mods.get("conv"), mpath + ".conv")
    _check(rd, mpath + ".conv", "outputs (the sum of the groups), a bias", (sum(splits), True),
           (conv.out_channels, conv.bias is not None))
    _kernel_stride(rd, mpath, conv, args)
    _walk(rd, mpath, cin[0], [conv])
    return CBLinear(_name(mpath), conv, list(splits)), list(splits)


def _cbfuse_row(rd, rec, mpath, args, cin, c2_of, n_eff):
    rd.expect(rec, mpath, "CBFuse")
    idx = rec.attr("idx")
    if not (isinstance(idx, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx)):
        raise rd.err(mpath, f"idx {short_repr(idx)}: expected a list of ints")
    _check(rd, mpath, "idx (the yaml row)", args[0] if args else None, idx)
    *groups, target = cin
    if len(idx) != len(groups) or not all(isinstance(g, list) for g in groups) or isinstance(target, list):
        raise rd.err(mpath, f"expected {len(idx)} CBLinear inputs and a feature map, the row's inputs give {cin}")
    for j, (g, i) in enumerate(zip(groups, idx)):
        if i >= len(g) or g[i] != target:
            raise rd.err(mpath, f"input {j}: group {i} of {g} does not have the {target} channels of the last input")
    return CBFuse(_name(mpath), list(idx)), target


ROWS = {
    "Bottleneck": ("Bottleneck", _bottleneck_row),
    "nn.MaxPool2d": ("MaxPool2d", _maxpool_row),
    "nn.ZeroPad2d": ("ZeroPad2d", _zeropad_row),
    "SPP": ("SPP", _spp_row),
    "GhostConv": ("GhostConv", _convlike_row(ghost_conv)),
    "C3Ghost": ("C3Ghost", _csp_row(c3_ghost)),
    "nn.ConvTranspose2d": ("ConvTranspose2d", _transpose_row),
    "A2C2f": ("A2C2f", _csp_row(a2c2f)),
    "RepNCSPELAN4": ("RepNCSPELAN4", _elan_row("RepNCSPELAN4")),
    "ELAN1": ("ELAN1", _elan_row("ELAN1")),
    "ADown": ("ADown", _convlike_row(adown)),
    "AConv": ("AConv", _convlike_row(aconv)),
    "SPPELAN": ("SPPELAN", _sppelan_row),
    "nn.Identity": ("Identity", _identity_row),
    "CBLinear": ("CBLinear", _cblinear_row),
    "CBFuse": ("CBFuse", _cbfuse_row),
}
ABSORBS_N = {"C3Ghost", "A2C2f"}  # n is their inner block count, not a Sequential of repeats
