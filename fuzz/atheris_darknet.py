"""atheris: pyloader.read on Darknet cfg + weights. An input is the cfg text, a NUL byte, then the .weights.

Any input must load or fail with FormatError. Run: python fuzz/atheris_darknet.py fuzz/corpus/darknet
"""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import pyloader
    import pyloader.darknet.cfg  # noqa: F401  (imported lazily by read: instrument it here)
    import pyloader.darknet.layers  # noqa: F401
    import pyloader.registry  # noqa: F401
    import pyloader.darknet.weights  # noqa: F401
    from pyloader.errors import FormatError

_DIR = tempfile.mkdtemp(prefix="pyloader-fuzz-darknet-")
_CFG, _WEIGHTS = os.path.join(_DIR, "net.cfg"), os.path.join(_DIR, "net.weights")


def test_one_input(data: bytes):
    cfg, _, weights = data.partition(b"\0")
    with open(_CFG, "wb") as f:
        f.write(cfg)
    with open(_WEIGHTS, "wb") as f:
        f.write(weights)
    try:
        pyloader.read(_WEIGHTS, _CFG)
    except FormatError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
