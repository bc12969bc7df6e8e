"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (small files, generated, not committed).

pickle: plain data at every protocol, a torch-like checkpoint pickle (state dict of tensors, model records);
pt: small torch zip and legacy checkpoints (torch.save when torch is installed; else a hand-made zip);
darknet: a tiny cfg with matching .weights (cfg + a NUL + weights in one input).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))

TINY_CFG = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=4
size=1
stride=1
activation=linear

[shortcut]
from=-2
activation=linear
"""


def _pickles():
    data = {"int": [0, 1, -1, 255, 65536, 2**31, 2**64 + 3, -(2**100)], "float": [0.5, 1e300],
            "str": ["", "abc", "ü€"], "bytes": [b"", b"\x00\xff"], "tuple": [(), (1,), (1, 2), (1, 2, 3)],
            "set": {1, 2}, "frozenset": frozenset({"a"}), "none": None, "bool": [True, False],
            "od": collections.OrderedDict([("x", 1)])}
    shared = [1, 2]
    for proto in range(6):
        yield f"plain_p{proto}", pickle.dumps(data, protocol=proto)
        yield f"shared_p{proto}", pickle.dumps({"a": shared, "b": shared}, protocol=proto)
    try:
        import torch
    except ImportError:
        return
    sd = collections.OrderedDict([("w", torch.ones(2, 3)), ("b", torch.zeros(3).half()), ("n", torch.tensor(7))])
    buf = io.BytesIO()
    torch.save({"epoch": 1, "model": sd, "names": ["a", "b"]}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        yield "torch_state_dict", z.read(name)
        yield "pt_zip", buf.getvalue()
    legacy = io.BytesIO()
    torch.save({"model": sd}, legacy, _use_new_zipfile_serialization=False)
    yield "pt_legacy", legacy.getvalue()


def _darknet():
    import numpy as np

    rng = np.random.default_rng(0)
    head = struct.pack("<iiiq", 0, 2, 5, 0)
    # conv 1: 8 filters, bn, 3x3x3 -> biases, scales, mean, var, weights; conv 2: 4 biases + 4*8 weights
    floats = np.concatenate([rng.normal(0, 0.1, 8 * 4 + 8 * 3 * 9), rng.normal(0, 0.1, 4 + 4 * 8)]).astype("<f4")
    return TINY_CFG.encode() + b"\0" + head + floats.tobytes()


def main(out=os.path.join(HERE, "corpus")):
    for t in ("pickle", "pickle_vm", "pt", "zip", "darknet", "darknet_cpp"):
        os.makedirs(os.path.join(out, t), exist_ok=True)

    def put(target, name, blob):
        with open(os.path.join(out, target, name), "wb") as f:
            f.write(blob)

    for name, blob in _pickles():
        if name.startswith("pt_"):
            put("pt", name, blob)
            put("zip", name, blob)
        else:
            put("pickle", name, blob)
            put("pickle_vm", name, blob)
    dk = _darknet()
    put("darknet", "tiny", dk)
    weights = dk.split(b"\0", 1)[1]
    # fuzz_darknet: [layers][4 bytes per layer] then the file: plan conv(bn, 8 filters, 3 ch, 3x3), conv(4, 8, 1x1)
    put("darknet_cpp", "tiny", bytes([2, 3, 8, 3, 1, 1, 4, 8, 0]) + weights)
    print(f"seeds written to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
