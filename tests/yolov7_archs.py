"""YOLOv7 architectures as yaml dicts, written as Python data for the reference tests (nothing fetched).

The dicts are what yaml.safe_load gives for those files (so `None` in an args list is the string "None").

Each function reproduces the rows of one official yaml of github.com/WongKinYiu/yolov7 (named in its
docstring): the ELAN blocks are runs of Conv rows joined by a Concat row, as in those yamls.
"""

from __future__ import annotations

LEAKY = "nn.LeakyReLU(0.1)"
P5_ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
TINY_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
P6_ANCHORS = [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137], [140, 301, 303, 264, 238, 542],
              [436, 615, 739, 380, 925, 792]]


class _Rows:
    def __init__(self, act=None):
        self.rows = []
        self.act = act

    def add(self, f, module, args) -> int:
        self.rows.append([f, 1, module, args])
        return len(self.rows) - 1

    def conv(self, c, k=1, s=1, f=-1) -> int:
        return self.add(f, "Conv", [c, k, s] + (["None", 1, self.act] if self.act else []))

    def elan(self, c1, c2, n3, cat, cout, src=-1) -> int:
        """Two 1x1 convs (both from the block's input), n3 3x3 convs, Concat of `cat`, a 1x1 conv."""
        self.conv(c1, f=src)
        self.conv(c1, f=-2 if src == -1 else src)
        for _ in range(n3):
            self.conv(c2, 3)
        self.add(cat, "Concat", [1])
        return self.conv(cout)

    def down(self, c, extra=()) -> int:
        """YOLOv7's MP block: MP + 1x1 conv | 1x1 conv + 3x3 stride-2 conv, concatenated."""
        self.add(-1, "MP", [])
        self.conv(c)
        self.conv(c, f=-3)
        self.conv(c, 3, 2)
        return self.add([-1, -3, *extra], "Concat", [1])

    def yaml(self, nc, anchors, n_backbone, depth=1.0, width=1.0) -> dict:
        return {"nc": nc, "depth_multiple": depth, "width_multiple": width, "anchors": anchors,
                "backbone": self.rows[:n_backbone], "head": self.rows[n_backbone:]}


def yolov7_tiny(nc=80) -> dict:
    """cfg/training/yolov7-tiny.yaml (LeakyReLU(0.1), SP pools, IDetect)."""
    r = _Rows(LEAKY)
    cat4 = [-1, -2, -3, -4]
    r.conv(32, 3, 2)
    r.conv(64, 3, 2)
    r.elan(32, 32, 2, cat4, 64)  # 7
    r.add(-1, "MP", [])
    p3 = r.elan(64, 64, 2, cat4, 128)  # 14
    r.add(-1, "MP", [])
    p4 = r.elan(128, 128, 2, cat4, 256)  # 21
    r.add(-1, "MP", [])
    r.elan(256, 256, 2, cat4, 512)  # 28
    nb = len(r.rows)
    r.conv(256)
    r.conv(256, f=-2)
    r.add(-1, "SP", [5])
    r.add(-2, "SP", [9])
    r.add(-3, "SP", [13])
    r.add(cat4, "Concat", [1])
    r.conv(256)
    r.add([-1, -7], "Concat", [1])
    sppcsp = r.conv(256)  # 37
    r.conv(128)
    r.add(-1, "nn.Upsample", ["None", 2, "nearest"])
    r.conv(128, f=p4)
    r.add([-1, -2], "Concat", [1])
    h4 = r.elan(64, 64, 2, cat4, 128)  # 47
    r.conv(64)
    r.add(-1, "nn.Upsample", ["None", 2, "nearest"])
    r.conv(64, f=p3)
    r.add([-1, -2], "Concat", [1])
    o3 = r.elan(32, 32, 2, cat4, 64)  # 57
    r.conv(128, 3, 2)
    r.add([-1, h4], "Concat", [1])
    o4 = r.elan(64, 64, 2, cat4, 128)  # 65
    r.conv(256, 3, 2)
    r.add([-1, sppcsp], "Concat", [1])
    o5 = r.elan(128, 128, 2, cat4, 256)  # 73
    heads = [r.conv(128, 3, f=o3), r.conv(256, 3, f=o4), r.conv(512, 3, f=o5)]
    r.add(heads, "IDetect", ["nc", "anchors"])
    return r.yaml(nc, TINY_ANCHORS, nb)


def _yolov7_like(nc, stem, widths, n3, cat, head_w, out_w, repconv: bool) -> dict:
    """cfg/training/yolov7.yaml (n3=4, cat [-1,-3,-5,-6]) and yolov7x.yaml (n3=6, cat [-1,-3,-5,-7,-8])."""
    r = _Rows()
    for c, k, s in stem:
        r.conv(c, k, s)
    (e1, o1), (e2, o2), (e3, o3), (e4, o4) = widths
    r.elan(e1, e1, n3, cat, o1)
    r.down(o1 // 2)
    p3 = r.elan(e2, e2, n3, cat, o2)
    r.down(o2 // 2)
    p4 = r.elan(e3, e3, n3, cat, o3)
    r.down(o3 // 2)
    r.elan(e4, e4, n3, cat, o4)
    nb = len(r.rows)
    (c5, c4, c3), (m5, m4, m3, m2) = head_w
    hcat = [-1, -2, -3, -4, -5, -6] if n3 == 4 else cat
    h2 = 1 if n3 == 4 else 2  # yolov7's head ELAN halves its 3x3 convs; yolov7x's does not
    spp = r.add(-1, "SPPCSPC", [c5])
    r.conv(c4)
    r.add(-1, "nn.Upsample", ["None", 2, "nearest"])
    r.conv(c4, f=p4)
    r.add([-1, -2], "Concat", [1])
    t4 = r.elan(m4, m4 * h2 // 2, n3, hcat, c4)
    r.conv(c3)
    r.add(-1, "nn.Upsample", ["None", 2, "nearest"])
    r.conv(c3, f=p3)
    r.add([-1, -2], "Concat", [1])
    o3 = r.elan(m3, m3 * h2 // 2, n3, hcat, c3)
    r.down(c3, (t4,))
    o4 = r.elan(m4, m4 * h2 // 2, n3, hcat, c4)
    r.down(c4, (spp,))
    o5 = r.elan(m2, m2 * h2 // 2, n3, hcat, c5)
    heads = [r.add(o, "RepConv" if repconv else "Conv", [w, 3, 1]) for o, w in zip((o3, o4, o5), out_w)]
    r.add(heads, "IDetect", ["nc", "anchors"])
    return r.yaml(nc, P5_ANCHORS, nb)


def yolov7(nc=80) -> dict:
    """cfg/training/yolov7.yaml (SiLU, MP blocks, SPPCSPC, RepConv heads, IDetect)."""
    return _yolov7_like(nc, [(32, 3, 1), (64, 3, 2), (64, 3, 1), (128, 3, 2)],
                        [(64, 256), (128, 512), (256, 1024), (256, 1024)], 4, [-1, -3, -5, -6],
                        ((512, 256, 128), (512, 256, 128, 512)), (256, 512, 1024), repconv=True)


def yolov7x(nc=80) -> dict:
    """cfg/training/yolov7x.yaml (wider, 6-conv ELAN blocks, plain Conv heads)."""
    return _yolov7_like(nc, [(40, 3, 1), (80, 3, 2), (80, 3, 1), (160, 3, 2)],
                        [(64, 320), (128, 640), (256, 1280), (256, 1280)], 6, [-1, -3, -5, -7, -8],
                        ((640, 320, 160), (512, 256, 128, 512)), (320, 640, 1280), repconv=False)


def yolov7_w6(nc=80) -> dict:
    """cfg/training/yolov7-w6.yaml (ReOrg stem, stride-2 Conv downsampling, 4 levels, IAuxDetect with 4
    auxiliary heads)."""
    r = _Rows()
    cat = [-1, -3, -5, -6]
    hcat = [-1, -2, -3, -4, -5, -6]
    r.add(-1, "ReOrg", [])
    r.conv(64, 3)
    outs = []
    for c, e in ((128, 64), (256, 128), (512, 256), (768, 384), (1024, 512)):
        r.conv(c, 3, 2)
        outs.append(r.elan(e, e, 4, cat, c))
    _, p3, p4, p5, _ = outs
    nb = len(r.rows)
    spp = r.add(-1, "SPPCSPC", [512])
    tops = [spp]
    for c, src in ((384, p5), (256, p4), (128, p3)):
        r.conv(c)
        r.add(-1, "nn.Upsample", ["None", 2, "nearest"])
        r.conv(c, f=src)
        r.add([-1, -2], "Concat", [1])
        tops.append(r.elan(c, c // 2, 4, hcat, c))
    o = [tops[3]]
    for c, t in ((256, tops[2]), (384, tops[1]), (512, tops[0])):
        r.conv(c, 3, 2)
        r.add([-1, t], "Concat", [1])
        o.append(r.elan(c, c // 2, 4, hcat, c))
    main = [r.conv(w, 3, f=src) for w, src in zip((256, 512, 768, 1024), o)]
    aux = [r.conv(w, 3, f=src) for w, src in zip((320, 640, 960, 1280), (tops[3], tops[2], tops[1], tops[0]))]
    r.add(main + aux, "IAuxDetect", ["nc", "anchors"])
    return r.yaml(nc, P6_ANCHORS, nb)


def mini_p6(nc=5) -> dict:
    """A small P6 model of the modules of cfg/training/yolov7-e6.yaml and yolov7-e6e.yaml (ReOrg stem, DownC
    downsampling, a Shortcut of two ELAN branches, SPPCSPC, SP, RepConv with and without identity and with
    stride 2, IAuxDetect): not an official yaml, each module used as those yamls use it, at a small width."""
    r = _Rows()
    cat = [-1, -3, -5, -6]
    r.add(-1, "ReOrg", [])
    r.conv(16, 3)
    outs = []
    for c in (32, 48, 64, 80, 96):  # strides 4, 8, 16, 32, 64
        d = r.add(-1, "DownC", [c])
        a = r.elan(c // 2, c // 2, 4, cat, c)
        if c == 48:  # e6e: a second ELAN branch from the same input, added to the first
            r.elan(c // 2, c // 2, 4, cat, c, src=d)
            a = r.add([-1, a], "Shortcut", [1])
        outs.append(a)
    nb = len(r.rows)
    spp = r.add(outs[4], "SPPCSPC", [48])
    p3 = r.add(outs[1], "RepConv", [48, 3, 1])  # in == out, stride 1: with the identity branch
    p4 = r.add(outs[2], "RepConv", [32, 3, 1])
    q = r.add(outs[2], "RepConv", [40, 3, 2])
    r.add([q, outs[3]], "Concat", [1])
    p5 = r.add(-1, "SP", [5])
    main = [r.conv(24, 3, f=src) for src in (p3, p4, p5, spp)]
    aux = [r.conv(16, 3, f=src) for src in outs[1:]]
    r.add(main + aux, "IAuxDetect", ["nc", "anchors"])
    return r.yaml(nc, P6_ANCHORS, nb)
