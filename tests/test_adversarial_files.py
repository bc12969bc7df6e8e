"""Regression files found by fuzzing (fuzz/run.sh), one test each, saying what went wrong.

Native-harness inputs (tests/adversarial/<libFuzzer target>/) are also replayed under ASan+UBSan by fuzz/run.sh;
here they are checked through the release build's Python API.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pyloader import _core

HERE = os.path.join(os.path.dirname(__file__), "adversarial")


def _file(*parts) -> bytes:
    with open(os.path.join(HERE, *parts), "rb") as f:
        return f.read()


def test_misaligned_float_input_to_the_transforms():
    # darknet_cpp/misaligned_weights.bin: fuzz_darknet (UBSan) found float loads at addresses that are not a
    # multiple of 4 in csrc/transform.cpp (darknet weights at an odd offset; legacy torch storages start at any
    # byte). The transforms now load through memcpy; their results on a misaligned view must equal numpy's.
    assert len(_file("darknet_cpp", "misaligned_weights.bin")) > 0
    rng = np.random.default_rng(0)
    k = rng.normal(size=(4, 3, 3, 3)).astype("<f4")
    raw = np.zeros(k.nbytes + 1, np.uint8)
    raw[1:] = k.view(np.uint8).ravel()
    misaligned = raw[1:].view("<f4").reshape(k.shape)
    assert not misaligned.flags.aligned
    np.testing.assert_array_equal(_core.oihw_to_hwio(misaligned), k.transpose(2, 3, 1, 0))
    h = k.astype("<f2")
    raw = np.zeros(h.nbytes + 1, np.uint8)
    raw[1:] = h.view(np.uint8).ravel()
    np.testing.assert_array_equal(_core.oihw_to_hwio(raw[1:].view("<f2").reshape(h.shape)),
                                  h.astype(np.float32).transpose(2, 3, 1, 0))


def test_zip_entry_name_that_is_not_utf8(tmp_path):
    # pt/non_utf8_entry_name.pt: atheris_pt found a torch zip whose entry name has a 0xff byte; the binding's
    # str conversion raised UnicodeDecodeError out of pyloader.read. Names now decode losslessly
    # (surrogateescape) and C++ messages with backslashreplace: the file gets a FormatError.
    import pyloader
    from pyloader.errors import FormatError

    path = tmp_path / "in.pt"
    path.write_bytes(_file("pt", "non_utf8_entry_name.pt"))
    with pytest.raises(FormatError):
        pyloader.read(str(path))
    index = _core.zip_directory(np.frombuffer(_file("pt", "non_utf8_entry_name.pt"), np.uint8))
    assert any("\udcff" in name for name, *_ in index)
