"""Synthetic Darknet .weights for any cfg: well-scaled random values in Darknet's file layout.

The demo, the benchmark and the tests write their checkpoints with it. Written from the format description
(header; per convolutional layer biases, [scales, mean, variance], OIHW weights; shortcut weights),
independently of pyloader's reader (darknet/weights.py), so that the tests check the reader against it.
"""

from __future__ import annotations

import numpy as np

from .cfg import parse_network

def tiny_cfg(classes: int = 1) -> str:
    """A 32x32 cfg of two 3x3 convolutions (batch norm, leaky) and one [yolo] head of `classes` classes: the smallest
    complete detector, for soaks and tests."""
    return ("[net]\nwidth=32\nheight=32\nchannels=3\n\n"
            + "".join(f"[convolutional]\nbatch_normalize=1\nfilters={f}\nsize=3\nstride=2\npad=1\nactivation=leaky\n\n"
                      for f in (8, 16))
            + f"[convolutional]\nsize=1\nstride=1\npad=1\nfilters={3 * (5 + classes)}\nactivation=linear\n\n"
            + f"[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses={classes}\nnum=3\n")


HEADERS = {
    "v0.2.5": (0, 2, 5, 64),  # AlexeyAB: 64-bit `seen`, 20-byte header
    "v0.1.0": (0, 1, 0, 32),  # old pjreddie: 32-bit `seen`, 16-byte header
}


def layer_tensors(network, rng):
    """Yield (layer, dict of named float32 arrays in darknet order) for every weighted layer."""
    for layer in network.layers:
        if layer.type == "conv":
            p = layer.params
            src = layer.inputs[0]
            c_in = network.channels if src < 0 else network.layers[src].shape[2]
            n, cpg, k = p["filters"], c_in // p["groups"], p["size"]
            t = {"biases": rng.normal(0, 0.1, n)}
            if p["batch_normalize"]:
                t["scales"] = rng.uniform(0.5, 1.5, n)
                t["mean"] = rng.normal(0, 0.2, n)
                t["variance"] = rng.uniform(0.5, 1.5, n)
            t["weights"] = rng.normal(0, 1.0 / np.sqrt(cpg * k * k), (n, cpg, k, k))
            yield layer, {key: v.astype(np.float32) for key, v in t.items()}
        elif layer.type == "shortcut" and layer.params["nweights"]:
            yield layer, {"weights": rng.uniform(0.5, 1.5, layer.params["nweights"]).astype(np.float32)}


def write_weights(path, cfg, seed=0, header="v0.2.5", variance_offset=0.0, tweak=None):
    """Write a .weights file for `cfg`; returns {layer index: tensors}. variance_offset is added to every
    BN variance in the file (used to give OpenCV, whose epsilon is 1e-6, darknet's 1e-5). `tweak(network,
    layer, tensors)`, if given, may change a layer's tensors (in place) before they are written."""
    network = parse_network(cfg)
    rng = np.random.default_rng(seed)
    major, minor, rev, seen_bits = HEADERS[header]
    tensors = {}
    with open(path, "wb") as f:
        f.write(np.array([major, minor, rev], "<i4").tobytes())
        f.write(np.array([12345], "<u8" if seen_bits == 64 else "<u4").tobytes())
        for layer, t in layer_tensors(network, rng):
            if tweak is not None:
                tweak(network, layer, t)
            tensors[layer.index] = t
            for key, v in t.items():
                if key == "variance":
                    v = (v.astype(np.float64) + variance_offset).astype(np.float32)
                f.write(v.astype("<f4").tobytes())
    return tensors
