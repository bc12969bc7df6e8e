"""atheris: pyloader.read on .pt files (torch zip and legacy containers, the pickle, the YOLOv5 plan reader).

Any input must load or fail with FormatError. Run: python fuzz/atheris_pt.py fuzz/corpus/pt
"""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import pyloader
    import pyloader.torch_reader.checkpoint  # noqa: F401  (imported lazily by read: instrument it here)
    import pyloader.registry  # noqa: F401
    import pyloader.yolov5.weights  # noqa: F401
    from pyloader.errors import FormatError

_DIR = tempfile.mkdtemp(prefix="pyloader-fuzz-pt-")
_PATH = os.path.join(_DIR, "input.pt")


def test_one_input(data: bytes):
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        pyloader.read(_PATH)
    except FormatError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
