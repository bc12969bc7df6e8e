"""darknet semantics that OpenCV does not share or does not implement, against a numpy transliteration of
darknet's C loops (tests/darknet_numpy_ref.py): BN epsilon 1e-5, the logistic default activation, mish,
silu, symmetric padding at odd and even sizes, stride_x/stride_y, dilation, maxpool padding and
maxpool_depth, shortcut weights and unequal channels, route groups, upsample scale and negative stride, the
old [reorg] and [reorg3d], sam, scale_channels (and scale_wh), dropout, grouped and depthwise convolutions.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import darknet_numpy_ref as ref  # noqa: E402
from pyloader.darknet.synthetic import write_weights  # noqa: E402

import pyloader  # noqa: E402
from pyloader.darknet.cfg import parse_network  # noqa: E402


def conv(filters, size=3, stride=1, act=None, bn=1, pad=1, extra=""):
    a = "" if act is None else f"activation={act}\n"
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\n"
            f"pad={pad}\n{a}{extra}\n")


NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n\n"

CFGS = {
    # default activation (logistic), every activation, stride 2 on odd sizes, stride_x/y, dilation, groups
    "activations_and_padding": (
        conv(8, act=None) + conv(8, act="leaky") + conv(16, stride=2, act="mish") + conv(16, act="swish")
        + conv(16, act="silu") + conv(16, act="tanh") + conv(16, act="relu", extra="stride_x=2\nstride_y=1\n")
        + conv(16, act="linear", extra="dilation=2\n") + conv(32, act="leaky", extra="groups=4\n")
        + conv(32, act="leaky", extra="groups=32\n") + conv(24, size=1, act="logistic", bn=0)
        + conv(12, size=4, stride=2, pad=0, act="leaky", extra="padding=1\n")
    ),
    # maxpool variants: 2x2/2 on odd sizes, 2x2/1, 3x3/2 with explicit and default padding, 5/1 (SPP),
    # stride_x != stride_y, maxpool_depth
    "maxpools": (
        conv(8, act="leaky") + "[maxpool]\nsize=2\nstride=2\n\n" + "[maxpool]\nsize=2\nstride=1\n\n"
        + "[maxpool]\nsize=3\nstride=2\npadding=1\n\n" + "[maxpool]\nsize=5\nstride=1\n\n"
        + "[maxpool]\nsize=3\nstride=2\n\n" + "[maxpool]\nstride_x=2\nstride_y=1\nsize=2\n\n"
        + "[maxpool]\nmaxpool_depth=1\nout_channels=3\n\n" + conv(4, act="leaky")
    ),
    # shortcut: plain, unequal channels both ways, weights per_feature/softmax and per_channel/relu
    "shortcuts_and_routes": (
        conv(8, act="leaky") + conv(16, act="leaky") + conv(16, act="mish")
        + "[shortcut]\nfrom=-2\nactivation=leaky\n\n"          # 3: equal channels, with activation
        + "[shortcut]\nfrom=-4\n\n"                            # 4: from has 8 channels, input 16
        + conv(4, size=1, act="leaky")                         # 5
        + "[shortcut]\nfrom=-3\n\n"                            # 6: from has 16 channels, input 4
        + conv(4, size=1, act="leaky")                         # 7
        + "[shortcut]\nfrom=-2,-3\nweights_type=per_feature\nweights_normalization=softmax\n\n"  # 8
        + "[shortcut]\nfrom=-3\nweights_type=per_channel\nweights_normalization=relu\nactivation=swish\n\n"  # 9
        + "[shortcut]\nfrom=-4\nweights_type=per_feature\n\n"  # 10: weights without normalization
        + "[route]\nlayers=-1,2,-9\n\n"                        # 11: three inputs
        + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n"       # 12: second half of the channels
        + "[route]\nlayers=-1,-2\ngroups=2\ngroup_id=0\n\n"   # 13
        + "[dropout]\nprobability=.5\n\n" + conv(6, act="leaky")
    ),
    # upsample (scale), negative stride, sam, scale_channels, scale_wh, avgpool
    "upsample_sam_scale": (
        conv(8, act="leaky") + "[upsample]\nstride=2\nscale=0.5\n\n" + conv(8, stride=2, act="leaky")
        + "[upsample]\nstride=-2\n\n" + conv(8, act="logistic")
        + "[sam]\nfrom=-2\n\n"                                  # 5
        + "[avgpool]\n\n" + conv(8, size=1, act="logistic", bn=0)
        + "[scale_channels]\nfrom=-3\n\n"                       # 8
        + conv(1, size=1, act="logistic") + "[scale_channels]\nfrom=-2\nscale_wh=1\n\n" + conv(5, act="leaky")
    ),
    # the old [reorg] of YOLOv2 and [reorg3d]
    "reorgs": (
        conv(8, act="leaky") + "[reorg]\nstride=2\n\n" + conv(8, act="leaky") + "[route]\nlayers=-3\n\n"
        + "[reorg3d]\nstride=2\n\n" + "[route]\nlayers=-1,-3\n\n" + conv(6, size=1, act="linear")
    ),
}
SIZES = {"reorgs": [(16, 24)], "default": [(23, 31), (24, 30)]}  # odd and even, non-square


def cases():
    return [pytest.param(name, size, id=f"{name}-{size[0]}x{size[1]}")
            for name in CFGS for size in SIZES.get(name, SIZES["default"])]


@pytest.mark.parametrize("name,size", cases())
@pytest.mark.parametrize("fold_bn", [True, False])
def test_matches_numpy_transliteration(name, size, fold_bn, tmp_path):
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(NET.format(h=size[0], w=size[1]) + CFGS[name])
    weights = tmp_path / f"{name}.weights"
    tensors = write_weights(weights, cfg, seed=11)
    network = parse_network(cfg)
    image = np.random.default_rng(5).uniform(0, 1, (1, *size, 3)).astype(np.float32)
    want = ref.forward(network, tensors, image[0].transpose(2, 0, 1))[network.layers[-1].index]
    model = pyloader.load(weights, cfg, fold_bn=fold_bn)
    got = np.asarray(model(image))[0].transpose(2, 0, 1)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale + 1e-6, np.abs(got - want).max() / scale


def test_bn_epsilon_is_darknets(tmp_path):
    # One BN conv with tiny variances: epsilon 1e-5 vs Keras' default 1e-3 (or OpenCV's 1e-6) differs a lot.
    cfg = tmp_path / "eps.cfg"
    cfg.write_text(NET.format(h=4, w=4) + conv(2, size=1, act="linear"))
    weights = tmp_path / "eps.weights"
    header = np.array([0, 2, 5], "<i4").tobytes() + np.zeros(1, "<u8").tobytes()
    beta, gamma, mean, var = [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1e-5, 4e-5]
    kernel = np.eye(2, 3, dtype=np.float32)  # filter o takes input channel o
    weights.write_bytes(header + np.array(beta + gamma + mean + var, "<f4").tobytes() + kernel.astype("<f4").tobytes())
    image = np.ones((1, 4, 4, 3), np.float32)
    for fold_bn in (True, False):
        out = np.asarray(pyloader.load(weights, cfg, fold_bn=fold_bn)(image))[0, 0, 0]
        np.testing.assert_allclose(out, [1 / np.sqrt(2e-5), 1 / np.sqrt(5e-5)], rtol=1e-5)


def test_silu_is_swish_not_relu(tmp_path):
    # 'silu' (WongKinYiu's yolov7 cfgs) is computed as x * sigmoid(x), the intended SiLU; darknet would use relu.
    cfg = tmp_path / "silu.cfg"
    cfg.write_text(NET.format(h=1, w=1) + conv(3, size=1, act="silu", bn=0))
    weights = tmp_path / "silu.weights"
    header = np.array([0, 2, 5], "<i4").tobytes() + np.zeros(1, "<u8").tobytes()
    weights.write_bytes(header + np.zeros(3, "<f4").tobytes() + np.eye(3, dtype="<f4").tobytes())
    x = np.array([[[[-2.0, 0.5, 3.0]]]], np.float32)
    out = np.asarray(pyloader.load(weights, cfg)(x))[0, 0, 0]
    np.testing.assert_allclose(out, x[0, 0, 0] / (1 + np.exp(-x[0, 0, 0])), rtol=1e-6)
