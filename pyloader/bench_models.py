"""The benchmark's embedded default: synthetic Darknet architectures written here, and generated weights.

`csp_darknet_cfg` writes a CSP-Darknet53-like cfg (mish backbone of cross-stage-partial residual stages, SPP,
a PANet-style top-down/bottom-up neck and three [yolo] heads): with the default widths it has about 64M
parameters (YOLOv4's size); `SMALL` is the same structure narrowed and shortened (~1M parameters).
`write_weights` fills a cfg's layers with well-scaled random values in Darknet's .weights layout.
Nothing here reads files outside the package.
"""

from __future__ import annotations

import os

import numpy as np

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


def write_weights(path, cfg, seed: int = 0) -> int:
    """Write a Darknet .weights (v0.2.5 header, 64-bit `seen`) for `cfg`; returns the parameter count."""
    from .darknet.cfg import parse_network
    from .darknet.weights import weight_plan

    rng = np.random.default_rng(seed)
    total = 0
    with open(path, "wb") as f:
        f.write(np.array([0, 2, 5], "<i4").tobytes())
        f.write(np.array([seed], "<u8").tobytes())
        for item in weight_plan(parse_network(cfg)):
            if item[0] == "floats":
                a = rng.uniform(0.5, 1.5, item[2]).astype("<f4")
                f.write(a.tobytes())
                total += a.size
                continue
            _, _, n, cpg, kh, kw, bn = item
            parts = [rng.normal(0, 0.1, n)]
            if bn:
                parts += [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 1.5, n)]
            for p in parts:
                f.write(p.astype("<f4").tobytes())
            k = rng.standard_normal(n * cpg * kh * kw, dtype=np.float32)
            k *= np.float32(1.0 / np.sqrt(cpg * kh * kw))
            f.write(k.astype("<f4", copy=False).tobytes())
            total += len(parts) * n + k.size
    return total


def randomize_yolov5(model, seed: int = 0):
    """Random weights for a torch YOLOv5 model that keep activations at a sane scale through ~100 layers:
    conv kernels ~ N(0, 1/fan_in), BN gamma U(0.5, 1.5), beta N(0, 0.2), mean N(0, 0.5), variance U(0.5, 1.5)."""
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def write_yolov5_checkpoint(path, yaml_name: str = "yolov5x.yaml", seed: int = 0) -> int:
    """A YOLOv5 checkpoint saved as YOLOv5's train.py saves (fp16 `model` and `ema`), built by the `yolov5`
    package from its own yaml with random well-scaled weights. Needs torch and yolov5; returns the parameter
    count."""
    import torch
    import yolov5.models.yolo as Y5Y

    model = Y5Y.DetectionModel(os.path.join(os.path.dirname(Y5Y.__file__), yaml_name))
    randomize_yolov5(model, seed)
    model.names = [f"class_{k}" for k in range(model.yaml["nc"])]
    model.eval()
    import copy

    half = copy.deepcopy(model).half()
    torch.save({"epoch": 1, "best_fitness": None, "model": half, "ema": half, "updates": 1, "optimizer": None},
               path)
    return sum(p.numel() for p in model.parameters())


def randomize_ultralytics(model, seed: int = 0):
    """randomize_yolov5's well-scaled random weights for an Ultralytics model; the DFL's fixed integral
    weights (0..reg_max-1, not trained) are kept."""
    import torch

    dfl = [(m.conv, m.conv.weight.detach().clone()) for m in model.modules() if type(m).__name__ == "DFL"]
    randomize_yolov5(model, seed)
    with torch.no_grad():
        for conv, w in dfl:
            conv.weight.copy_(w)
    return model


def write_ultralytics_checkpoint(path, yaml_name: str = "yolov8x.yaml", seed: int = 0, stripped=None) -> int:
    """An Ultralytics checkpoint written as its trainer's `save_model` writes `last.pt` (fp16 `ema`, `model`
    None, the AdamW optimizer state of `build_optimizer` after one step, the scaler, `train_args`, the
    IterableSimpleNamespace `args` on the model, dates and versions), built by the `ultralytics` package from
    its own yaml (a name shipped inside the package, or a path) with random well-scaled weights. With
    `stripped`, also `strip_optimizer(path, stripped)` (the trainer's final `best.pt`). Needs torch and
    ultralytics (nothing is downloaded); returns the parameter count."""
    import copy
    import datetime
    import types

    import torch
    from ultralytics import __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import convert_optimizer_state_dict_to_fp16, strip_optimizer

    model = DetectionModel(yaml_name, verbose=False)
    randomize_ultralytics(model, seed)
    args = get_cfg()
    model.args = args  # as the trainer sets it (an IterableSimpleNamespace)
    model.names = {k: f"class_{k}" for k in range(model.yaml["nc"])}
    trainer = types.SimpleNamespace(args=args, data={"nc": model.yaml["nc"]})
    opt = BaseTrainer.build_optimizer(trainer, model, name="AdamW", lr=0.001)
    g = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opt.step()
    opt.zero_grad()
    randomize_ultralytics(model, seed)  # the step moved the weights; keep them well-scaled
    ema = copy.deepcopy(model).eval().half()
    torch.save({
        "epoch": 4, "best_fitness": 0.25, "stopper": {"best_fitness": 0.25, "best_epoch": 3}, "model": None,
        "ema": ema, "updates": 120, "modelopt": None,
        "optimizer": convert_optimizer_state_dict_to_fp16(copy.deepcopy(opt.state_dict())),
        "scaler": torch.amp.GradScaler("cpu").state_dict(), "train_args": vars(args),
        "train_metrics": {"metrics/mAP50(B)": 0.1, "fitness": 0.25}, "train_results": {"epoch": [1.0, 2.0]},
        "date": datetime.datetime.now().astimezone().isoformat(), "version": __version__,
        "git": {"root": None, "branch": None, "commit": None, "message": None, "origin": None},
        "license": "AGPL-3.0 (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
    }, path)
    if stripped is not None:
        strip_optimizer(path, stripped)
    return sum(p.numel() for p in model.parameters())
