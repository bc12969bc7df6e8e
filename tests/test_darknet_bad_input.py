"""Bad darknet input: each case raises FormatError naming the file, the layer and expected vs actual.

Every test writes its own small files; none may crash the interpreter or leave anything behind.
"""

import subprocess
import sys

import numpy as np
import pytest

import pyloader
from pyloader import FormatError, _core

TINY_CFG = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=16
size=1
stride=1
pad=1
activation=linear
"""
# layer 0: 8 x (4 vectors) + 8*3*3*3 = 32 + 216 floats; layer 2: 16 biases + 16*8 weights
TINY_FLOATS = 8 * 4 + 8 * 3 * 3 * 3 + 16 + 16 * 8
HEADER = np.array([0, 2, 5], "<i4").tobytes() + np.array([0], "<u8").tobytes()


def write(tmp_path, cfg_text=TINY_CFG, floats=TINY_FLOATS, header=HEADER, name="net"):
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(cfg_text)
    weights = tmp_path / f"{name}.weights"
    weights.write_bytes(header + np.ones(floats, "<f4").tobytes())
    return str(weights), str(cfg)


def test_good_tiny_file_reads(tmp_path):
    # The baseline the broken variants below deviate from.
    weights, cfg = write(tmp_path)
    arrays = pyloader.read(weights, cfg)
    assert arrays["conv_0/kernel"].shape == (3, 3, 3, 8)
    assert arrays["conv_2/kernel"].shape == (1, 1, 8, 16)


def test_missing_weights_file(tmp_path):
    # The path does not exist: say so, with the path.
    with pytest.raises(FormatError, match="nope.weights"):
        pyloader.read(tmp_path / "nope.weights", cfg=tmp_path / "x.cfg")


def test_missing_cfg(tmp_path):
    # No cfg given and none of the same stem beside the weights.
    weights = tmp_path / "alone.weights"
    weights.write_bytes(HEADER)
    with pytest.raises(FormatError, match=r"alone\.cfg"):
        pyloader.read(weights)


def test_empty_file(tmp_path):
    # Zero bytes cannot hold the 16/20-byte header.
    weights, cfg = write(tmp_path, floats=0, header=b"")
    with pytest.raises(FormatError, match=r"net\.weights: file is 0 bytes, too short for a darknet header"):
        pyloader.read(weights, cfg)


def test_bad_header_version(tmp_path):
    # A negative major version is no darknet file; refuse before reading anything.
    header = np.array([-7, 2, 5], "<i4").tobytes() + np.array([0], "<u8").tobytes()
    weights, cfg = write(tmp_path, header=header)
    with pytest.raises(FormatError, match=r"bad darknet header: version -7\.2\.5"):
        pyloader.read(weights, cfg)


def test_zip_given_as_weights(tmp_path):
    # A PyTorch zip named .weights, with a cfg: the file's magic decides, and the cfg is refused.
    weights, cfg = write(tmp_path, header=b"PK\x03\x04" + b"\0" * 16)
    with pytest.raises(FormatError, match="PyTorch checkpoint carries its architecture; cfg must be None"):
        pyloader.read(weights, cfg)
    # The native header check names it too, should a zip reach it.
    with pytest.raises(FormatError, match="zip archive"):
        _core.darknet_header(open(weights, "rb").read(20))


def test_one_float_short(tmp_path):
    # The last layer misses 4 bytes: name that layer, its cfg line, and the byte counts.
    weights, cfg = write(tmp_path, floats=TINY_FLOATS - 1)
    need = 20 + TINY_FLOATS * 4
    with pytest.raises(FormatError) as e:
        pyloader.read(weights, cfg)
    msg = str(e.value)
    assert "net.weights" in msg
    assert f"file is {need - 4} bytes but the cfg's 2 weighted layers need {need}" in msg
    assert "ends inside layer 2 [convolutional] (net.cfg line 18)" in msg
    assert "4 bytes missing" in msg


def test_one_float_long(tmp_path):
    # One float too many: the weights belong to something else; darknet would ignore it silently.
    weights, cfg = write(tmp_path, floats=TINY_FLOATS + 1)
    with pytest.raises(FormatError, match=r"4 bytes \(1 floats\) are left after the last weighted layer, "
                                          r"layer 2 \[convolutional\] \(net\.cfg line 18\)"):
        pyloader.read(weights, cfg)


def test_old_header_size_counts(tmp_path):
    # A 0.1 header has a 32-bit `seen` (16 bytes): the same floats after a 20-byte header are 4 bytes long.
    header = np.array([0, 1, 0], "<i4").tobytes() + np.array([0], "<u8").tobytes()
    weights, cfg = write(tmp_path, header=header)
    with pytest.raises(FormatError, match="4 bytes .* left after"):
        pyloader.read(weights, cfg)


def test_weights_of_a_different_cfg(tmp_path, cfg_dir):
    # yolov3-tiny's weights read with yolov4-tiny's cfg: sizes disagree; name where the file runs out.
    from pyloader.darknet.synthetic import write_weights

    weights = tmp_path / "v3tiny.weights"
    write_weights(weights, cfg_dir / "yolov3-tiny.cfg")
    with pytest.raises(FormatError, match=r"v3tiny\.weights: file is \d+ bytes but the cfg's \d+ weighted layers "
                                          r"need \d+ .*yolov4-tiny\.cfg line \d+"):
        pyloader.read(weights, cfg_dir / "yolov4-tiny.cfg")


def test_unknown_section(tmp_path):
    # [lstm] is a darknet section pyloader does not build: name it, its index and its line.
    weights, cfg = write(tmp_path, TINY_CFG + "\n[lstm]\noutput=4\n")
    with pytest.raises(FormatError, match=r"net\.cfg: layer 3 \[lstm\] \(net\.cfg line 25\): unsupported section"):
        pyloader.read(weights, cfg)


def test_malformed_line(tmp_path):
    # A line that is neither [section] nor key=value.
    weights, cfg = write(tmp_path, TINY_CFG.replace("filters=16", "filters 16"))
    with pytest.raises(FormatError, match=r"net\.cfg: line 19: expected 'key=value'"):
        pyloader.read(weights, cfg)


def test_unknown_option(tmp_path):
    # An option darknet knows but pyloader does not compute (binary convolution) is refused, not ignored.
    weights, cfg = write(tmp_path, TINY_CFG.replace("filters=16", "filters=16\nxnor=1"))
    with pytest.raises(FormatError, match=r"layer 2 \[convolutional\] .*option 'xnor' on line 20.*unsupported"):
        pyloader.read(weights, cfg)


def test_unknown_activation(tmp_path):
    # darknet silently falls back to relu; pyloader names the activation instead.
    weights, cfg = write(tmp_path, TINY_CFG.replace("activation=linear", "activation=gelu2"))
    with pytest.raises(FormatError, match=r"layer 2 \[convolutional\].*unsupported activation 'gelu2'"):
        pyloader.read(weights, cfg)


@pytest.mark.parametrize("option,value", [("filters", "0"), ("filters", "-8"), ("size", "0"), ("size", "-3"),
                                          ("stride", "0"), ("stride", "-1")])
def test_non_positive_conv_parameters(tmp_path, option, value):
    # Zero or negative sizes would make darknet allocate nonsense; refuse with the option and its line.
    text = TINY_CFG.replace(f"{option}=1\n" if option != "filters" else "filters=16\n", f"{option}={value}\n", 1)
    text = text.replace("filters=8\n", "filters=8\n") if option != "filters" else text
    weights, cfg = write(tmp_path, text)
    with pytest.raises(FormatError, match=rf"layer \d \[convolutional\].*must be positive, got {value}"):
        pyloader.read(weights, cfg)


def test_route_to_a_later_layer(tmp_path):
    # A route may only name earlier layers.
    weights, cfg = write(tmp_path, TINY_CFG + "\n[route]\nlayers=5\n")
    with pytest.raises(FormatError, match=r"layer 3 \[route\].*expected an earlier layer 0\.\.2"):
        pyloader.read(weights, cfg)


def test_not_text_cfg(tmp_path):
    # A binary file passed as cfg.
    weights, _ = write(tmp_path)
    bad = tmp_path / "bad.cfg"
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(FormatError, match=r"bad\.cfg: not a text cfg"):
        pyloader.read(weights, bad)


def test_bad_input_does_not_crash_the_interpreter(tmp_path):
    # The same short file in a fresh interpreter: a clean FormatError and exit code, no signal.
    weights, cfg = write(tmp_path, floats=3)
    code = ("import pyloader\ntry:\n    pyloader.read(%r, %r)\nexcept pyloader.FormatError as e:\n"
            "    print('FormatError', e)\n    raise SystemExit(3)\n") % (weights, cfg)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert r.returncode == 3, r.stderr
    assert "FormatError" in r.stdout and "ends inside layer 0 [convolutional]" in r.stdout
