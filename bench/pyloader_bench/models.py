"""The benchmark's embedded default: synthetic Darknet architectures written here, given generated weights
(pyloader.darknet.synthetic), and a YOLOv5 checkpoint built by the yolov5 package (synthetic_pt) when installed.

`csp_darknet_cfg` writes a CSP-Darknet53-like cfg (mish backbone of cross-stage-partial residual stages, SPP,
a PANet-style top-down/bottom-up neck and three [yolo] heads): with the default widths it has about 64M
parameters (YOLOv4's size); `small` is the same structure narrowed and shortened (~1M parameters).
Nothing here reads files outside the package.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pyloader.darknet.synthetic import write_weights


ANCHORS = "12,16, 19,36, 40,28, 36,75, 76,55, 72,146, 142,110, 192,243, 459,401"


class _Cfg:
    """Appends sections and tracks the index of the last layer (routes use absolute indices)."""

    def __init__(self, height: int, width: int):
        self.parts = [
            "[net]\nbatch=1\nsubdivisions=1\n"
            f"width={width}\nheight={height}\nchannels=3\n"
            "momentum=0.949\ndecay=0.0005\nlearning_rate=0.001\n"
        ]
        self.n = 0  # layers so far

    def add(self, text: str) -> int:
        self.parts.append(text)
        self.n += 1
        return self.n - 1

    def conv(self, filters: int, size: int = 1, stride: int = 1, act: str = "mish") -> int:
        return self.add(f"[convolutional]\nbatch_normalize=1\nfilters={filters}\nsize={size}\nstride={stride}\n"
                        f"pad=1\nactivation={act}\n")

    def route(self, *layers: int) -> int:
        return self.add("[route]\nlayers=" + ",".join(str(i) for i in layers) + "\n")

    def shortcut(self) -> int:
        return self.add("[shortcut]\nfrom=-3\nactivation=linear\n")

    def maxpool(self, size: int) -> int:
        return self.add(f"[maxpool]\nstride=1\nsize={size}\n")

    def upsample(self) -> int:
        return self.add("[upsample]\nstride=2\n")

    def head(self, filters: int, mask: str, classes: int) -> int:
        self.conv(filters, 3, act="leaky")
        self.add(f"[convolutional]\nsize=1\nstride=1\npad=1\nfilters={3 * (classes + 5)}\nactivation=linear\n")
        return self.add(f"[yolo]\nmask={mask}\nanchors={ANCHORS}\nclasses={classes}\nnum=9\njitter=.3\n"
                        "ignore_thresh=.7\ntruth_thresh=1\nscale_x_y=1.1\niou_thresh=0.213\ncls_normalizer=1.0\n"
                        "iou_normalizer=0.07\niou_loss=ciou\nnms_kind=greedynms\nbeta_nms=0.6\n")

    def text(self) -> str:
        return "\n".join(self.parts)


def _csp_stage(c: _Cfg, filters: int, blocks: int, half: bool) -> int:
    """Downsample, split into a shortcut part and a residual part, merge: returns the stage's last layer."""
    c.conv(filters, 3, 2)
    inner = filters // 2 if half else filters
    part = c.conv(inner)
    c.route(part - 1)
    c.conv(inner)
    for _ in range(blocks):
        c.conv(inner if half else filters // 2)
        c.conv(inner, 3)
        c.shortcut()
    last = c.conv(inner)
    c.route(last, part)
    return c.conv(filters)


def _five(c: _Cfg, filters: int, act: str = "leaky") -> int:
    for i in range(5):
        last = c.conv(filters if i % 2 == 0 else filters * 2, 1 if i % 2 == 0 else 3, act=act)
    return last


def csp_darknet_cfg(width: float = 1.0, depth=(1, 2, 8, 8, 4), size=(512, 512), classes: int = 80) -> str:
    """A CSP-Darknet53 + SPP + PANet + 3 heads cfg; `width` scales every filter count."""
    w = lambda f: max(8, int(round(f * width / 8)) * 8)  # noqa: E731
    c = _Cfg(*size)
    c.conv(w(32), 3)
    outs = []
    for i, (f, n) in enumerate(zip((64, 128, 256, 512, 1024), depth)):
        outs.append(_csp_stage(c, w(f), n, half=i > 0))
    p3, p4, p5 = outs[2], outs[3], outs[4]
    # SPP
    c.conv(w(512), act="leaky")
    c.conv(w(1024), 3, act="leaky")
    spp_in = c.conv(w(512), act="leaky")
    c.maxpool(5)
    c.route(spp_in)
    c.maxpool(9)
    c.route(spp_in)
    c.maxpool(13)
    c.route(c.n - 1, c.n - 3, c.n - 5, spp_in)
    c.conv(w(512), act="leaky")
    c.conv(w(1024), 3, act="leaky")
    n5 = c.conv(w(512), act="leaky")
    # top-down
    c.conv(w(256), act="leaky")
    up = c.upsample()
    lat = c.route(p4)
    c.conv(w(256), act="leaky")
    c.route(lat + 1, up)
    n4 = _five(c, w(256))
    c.conv(w(128), act="leaky")
    up = c.upsample()
    lat = c.route(p3)
    c.conv(w(128), act="leaky")
    c.route(lat + 1, up)
    n3 = _five(c, w(128))
    # bottom-up with the heads
    c.head(w(256), "0,1,2", classes)
    c.route(n3)
    c.conv(w(256), 3, 2, act="leaky")
    c.route(c.n - 1, n4)
    b4 = _five(c, w(256))
    c.head(w(512), "3,4,5", classes)
    c.route(b4)
    c.conv(w(512), 3, 2, act="leaky")
    c.route(c.n - 1, n5)
    _five(c, w(512))
    c.head(w(1024), "6,7,8", classes)
    del p5
    return c.text()


# name -> (cfg text, description)
MODELS = {
    "small": (csp_darknet_cfg(width=0.25, depth=(1, 1, 2, 2, 1), size=(256, 256)),
              "CSP-Darknet-like, width 0.25, depth (1,1,2,2,1), 256x256"),
    "yolov4-size": (csp_darknet_cfg(), "CSP-Darknet53 + SPP + PANet + 3 yolo heads (YOLOv4's structure), 512x512"),
}


def write_cfg(directory, name: str) -> str:
    path = os.path.join(os.fspath(directory), f"{name}.cfg")
    with open(path, "w") as f:
        f.write(MODELS[name][0])
    return path


def prepare_default(tmp: str, small: bool, with_pt: bool, pt_yaml: str) -> dict:
    """Write the embedded models to `tmp`: {"darknet": {name: {cfg, weights, description}}, "pt": .pt or None}."""
    models = {}
    for name in (["small"] if small else ["small", "yolov4-size"]):
        cfg = write_cfg(tmp, name)
        w = os.path.join(tmp, f"{name}.weights")
        write_weights(w, cfg, seed=0)
        models[name] = {"cfg": cfg, "weights": w, "description": MODELS[name][1]}
    pt = None
    if with_pt:
        path = os.path.join(tmp, os.path.splitext(pt_yaml)[0] + ".pt")
        code = ("import sys, warnings; warnings.filterwarnings('ignore'); from pyloader_bench.synthetic_pt "
                "import write_yolov5_checkpoint as w; print('@@P', w(sys.argv[1], sys.argv[2]))")
        p = subprocess.run([sys.executable, "-c", code, path, pt_yaml], capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if p.returncode == 0:
            pt = {"path": path, "description": f"{pt_yaml} built by the yolov5 package, random weights, fp16 "
                                               "model+ema as train.py saves"}
        else:
            pt = {"error": "could not write the YOLOv5 checkpoint: " + p.stderr.strip()[-300:]}
    return {"darknet": models, "pt": pt}


def param_bytes(weights: str, cfg: str | None) -> int:
    """Bytes of the float32 arrays pyloader.read returns (BN folded), read in a fresh process."""
    code = ("import sys, pyloader; a = pyloader.read(sys.argv[1], None if sys.argv[2] == '-' else sys.argv[2]);"
            " print('@@P', sum(v.nbytes for v in a.values()))")
    p = subprocess.run([sys.executable, "-c", code, weights, cfg or "-"], capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    for line in p.stdout.splitlines():
        if line.startswith("@@P "):
            return int(line.split()[1])
    raise RuntimeError(f"pyloader.read({weights}) failed: {p.stderr.strip()[-300:]}")
