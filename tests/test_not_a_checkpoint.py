"""A file that is not a checkpoint says what it is (issue 24 item 4): a .cfg, a model yaml, a .names file, an ONNX
model, a .keras or a TFLite file given as the source gets "this is a ...; pass ..." from pyloader.read, load, inspect
and the CLI, instead of a diagnosis of a Darknet header it never had."""

import os
import subprocess
import sys
import zipfile

import pytest

import pyloader
from pyloader import FormatError

CFG = "[net]\nwidth=32\nheight=32\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"


def _files(d):
    """(file, what the message must say) for each kind of non-checkpoint a user passes by mistake."""
    (d / "yolov4.cfg").write_text(CFG)
    (d / "model.yaml").write_text("nc: 80\nbackbone: []\nhead: []\n")
    (d / "coco.names").write_text("person\nbicycle\n")
    (d / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX ModelProto starts with field 1 (ir_version)
    with zipfile.ZipFile(d / "model.keras", "w") as z:  # what keras' .keras zip holds first
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", "{}")
    (d / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(24))
    (d / "weights.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(24))
    return [("yolov4.cfg", "Darknet .cfg"), ("model.yaml", "model yaml"), ("coco.names", "class names"),
            ("model.onnx", "ONNX"), ("model.keras", r"\.keras model"), ("model.tflite", "TFLite"),
            ("weights.weights.h5", "HDF5")]


def test_read_load_inspect_say_what_the_file_is(tmp_path):
    from pyloader.inspect_checkpoint import inspect

    for name, what in _files(tmp_path):
        for fn in (pyloader.read, pyloader.load, inspect):
            with pytest.raises(FormatError, match=rf"{name}: this is .*{what}.*not a checkpoint; pass|"
                                                  rf"{name}: this is .*{what}.*not a checkpoint; .*takes"):
                fn(tmp_path / name)


def test_a_cfg_passed_as_the_checkpoint_on_the_command_line(tmp_path):
    _files(tmp_path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for args in (["inspect", str(tmp_path / "yolov4.cfg")],
                 ["convert", str(tmp_path / "yolov4.cfg"), "-o", str(tmp_path / "out")]):
        r = subprocess.run([sys.executable, "-m", "pyloader", *args], capture_output=True, text=True, timeout=300,
                           env=env)
        text = r.stdout + r.stderr
        assert r.returncode == 1, text
        assert "this is a Darknet .cfg" in text and "pass the .weights file" in text, text
        assert "bad darknet header" not in text and "Traceback" not in text, text
