"""YOLOv10's modules (ultralytics.nn.modules.block), numpy only, read into the typed records of .blocks: SCDown (a
`Repeats` chain: the 1x1 cv1, then the strided depthwise cv2), PSA (a `C2PSA` of one PSABlock with its shortcuts:
cv2(cat(a, b + attn(b) + ffn(...))) of cv1's halves a, b), C2fCIB's CIB and its RepVGGDW. Each reader takes the
family's reader (`weights._Reader`: its conv, attention and err) and checks channels and groups before any
tensor is used; `row` checks a SCDown / PSA row against its yaml args."""

from __future__ import annotations

from ..boundary import short_repr
from ..torch_reader.modules import activation_of, sequence
from ..torch_reader.records import Record
from .blocks import C2PSA, CIB, PSABlock, Repeats, RepVGGDW

__all__ = ["scdown", "psa", "cib", "check_c2fcib", "row"]


def _depthwise(rd, spec, ch, mpath):
    if spec.groups != ch or spec.out_channels != ch or spec.in_channels != ch:
        raise rd.err(mpath, f"expected a depthwise conv of {ch} channels, got weight {spec.kernel.shape} groups {spec.groups}")


def scdown(rd, rec, mpath) -> Repeats:
    mods = rd.expect(rec, mpath, "SCDown")
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    _depthwise(rd, cv2, cv1.out_channels, mpath + ".cv2")
    return Repeats([cv1, cv2])


def psa(rd, rec, mpath) -> C2PSA:
    mods = rd.expect(rec, mpath, "PSA")
    c = rec.attr("c")
    cv1, cv2 = rd.conv(mods.get("cv1"), mpath + ".cv1"), rd.conv(mods.get("cv2"), mpath + ".cv2")
    if not isinstance(c, int) or isinstance(c, bool) or c <= 0 or cv1.out_channels != 2 * c or cv2.in_channels != 2 * c:
        raise rd.err(mpath, f"hidden channels c={short_repr(c)}: cv1 gives {cv1.out_channels}, cv2 takes {cv2.in_channels} "
                            f"(expected 2 * c each)")
    attn = rd.attention(mods.get("attn"), mpath + ".attn")
    ffn = [rd.conv(r, f"{mpath}.ffn.{j}") for j, r in enumerate(sequence(rd.ctx, mods.get("ffn"), mpath + ".ffn", "Conv"))]
    chain = [attn.qkv.in_channels, attn.proj.out_channels] + [v for f in ffn for v in (f.in_channels, f.out_channels)]
    if not ffn or chain[-1] != c or any(a != c for a in chain[:2]) or any(a != b for a, b in zip(chain[1::2], chain[2::2])):
        raise rd.err(mpath, f"attn and ffn channels {chain}: expected a chain from and to c={c}")
    name = mpath.replace(".", "_")
    return C2PSA(name, cv1, cv2, c, [PSABlock(name, attn, ffn, True)])


def _repvggdw(rd, rec, mpath) -> RepVGGDW:
    mods = rd.expect(rec, mpath, "RepVGGDW")
    dim = rec.attr("dim")
    convs = [rd.conv(mods.get("conv"), mpath + ".conv")]
    if mods.get("conv1") is not None:  # absent once RepVGGDW.fuse() merged it into conv
        convs.append(rd.conv(mods["conv1"], mpath + ".conv1"))
    for spec, k in zip(convs, ("conv", "conv1")):
        _depthwise(rd, spec, dim, f"{mpath}.{k}")
        kh, kw = spec.kernel.shape[2:]
        if spec.stride != (1, 1) or spec.padding != (kh // 2, kw // 2) or spec.act is not None:
            raise rd.err(f"{mpath}.{k}", f"stride {spec.stride} padding {spec.padding} act {spec.act}: expected a "
                                         f"size-keeping conv without activation")
    act = activation_of(rd.ctx, mods.get("act"), mpath + ".act")
    return RepVGGDW(mpath.replace(".", "_"), convs[0], convs[1] if len(convs) > 1 else None, act)


def cib(rd, rec, mpath) -> CIB:
    """CIB: cv1 = Sequential(depthwise Conv, Conv, RepVGGDW or depthwise Conv, Conv, depthwise Conv), x + cv1(x)."""
    mods = rd.expect(rec, mpath, "CIB")
    add = rec.attr("add")
    if not isinstance(add, bool):
        raise rd.err(mpath, f"CIB.add is {short_repr(add)}, expected a bool")
    items = sequence(rd.ctx, mods.get("cv1"), mpath + ".cv1", "Conv")
    cv1 = []
    for j, r in enumerate(items):
        p = f"{mpath}.cv1.{j}"
        cv1.append(_repvggdw(rd, r, p) if isinstance(r, Record) and r.cls.name == "RepVGGDW" else rd.conv(r, p))
    convs = [b.conv if isinstance(b, RepVGGDW) else b for b in cv1]
    for j, (a, b) in enumerate(zip(convs, convs[1:]), 1):
        if b.in_channels != a.out_channels:
            raise rd.err(f"{mpath}.cv1.{j}", f"expected {a.out_channels} input channels, the weight has {b.in_channels}")
    if not convs or (add and convs[-1].out_channels != convs[0].in_channels):
        raise rd.err(mpath, f"a shortcut adds {convs[0].in_channels if convs else 0} input channels to "
                            f"{convs[-1].out_channels if convs else 0} outputs")
    return CIB(mpath.replace(".", "_"), cv1, add)


def check_c2fcib(rd, P, args, mpath) -> None:
    """C2fCIB's yaml args [c2, shortcut, lk] against its CIBs: shortcut = CIB.add, lk = a RepVGGDW third."""
    shortcut, lk = (args[1] if len(args) > 1 else False), (args[2] if len(args) > 2 else False)
    for j, b in enumerate(P.m):
        got = (b.add, len(b.cv1) > 2 and isinstance(b.cv1[2], RepVGGDW))
        if got != (bool(shortcut), bool(lk)):
            raise rd.err(f"{mpath}.m.{j}", f"shortcut, large kernel: the yaml row gives {(bool(shortcut), bool(lk))}, "
                                           f"the checkpoint has {got}")


def row(rd, rec, mpath, kind, args, c2: int, cin: int) -> tuple:
    """A SCDown or PSA row: (its record, output channels), checked against the yaml's args and its input."""
    if kind == "SCDown":
        P = scdown(rd, rec, mpath)
        first, last = P.convs
        for what, want, got in (("kernel", args[1:2], last.kernel.shape[2:3]), ("stride", args[2:3], last.stride[:1])):
            if list(want) != [int(v) for v in got]:
                raise rd.err(mpath + ".cv2", f"{what}: the yaml row gives {want[0] if want else None}, the checkpoint has {got[0]}")
    else:
        P = psa(rd, rec, mpath)
        first, last = P.cv1, P.cv2
    if last.out_channels != c2 or (cin is not None and first.in_channels != cin):
        raise rd.err(mpath, f"channels: the yaml row gives {cin} -> {c2}, the checkpoint has {first.in_channels} -> {last.out_channels}")
    return P, last.out_channels
