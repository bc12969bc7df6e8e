"""The models `pyloader.load` handed out, kept for reuse: a call for a checkpoint it loaded before gets back a model
that no one holds any more, filled again, instead of a new Keras build (the build is most of a load).

A model is reused only when nothing outside the pool refers to it, nor to any of its layers, graph nodes, symbolic
tensors, variables or the variables' backend tensors: each of those objects' reference counts must be what it was
when the pool alone held the model (CPython's counts, checked before reuse). A caller who still holds the model, a
layer, a variable or a tensor of its graph (a sub-model built from it, `model.weights`, `model.outputs`) keeps it
out of reuse, and the next load builds a new model. Something that references the model for good (Keras'
`predict` keeps its compiled function on the model) keeps it out of reuse too: the pool drops it when full.

Each checkpoint file and architecture (pyloader.family.Family.architecture, the options that change the model,
Keras' dtype policy and image data format) keeps at most PER_KEY models, the pool at most MODELS in all, least
recently used first out (MODELS: 2, or PYLOADER_MODEL_POOL); `release()` empties it. Thread-safe: a model is taken under the pool's lock.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict

__all__ = ["take", "release", "PER_KEY", "MODELS", "COUNTS"]

PER_KEY = 2  # `m = pyloader.load(f)` in a loop holds the previous model while the next loads: two alternate
# Models kept in all (PYLOADER_MODEL_POOL; 0: none kept, every load builds): a dropped model's memory stays until it
# is reused or pushed out, so the default keeps just the two a `m = pyloader.load(f)` loop alternates between.
MODELS = int(os.environ.get("PYLOADER_MODEL_POOL", "2"))

_POOL: OrderedDict = OrderedDict()  # key -> [_Kept, ...]
_LOCK = threading.Lock()
COUNTS = {"built": 0, "reused": 0}  # this process' loads so far (the soak reports them)


class _Kept:
    __slots__ = ("model", "objects", "counts")

    def __init__(self, model):
        self.model = model
        self.objects = tuple(_observable(model))
        self.counts = None


def _observable(model):
    """The objects through which a caller could see (or change) the model's weights."""
    import keras

    yield model
    yield model.inputs  # Keras hands out its own lists of the graph's tensors
    yield model.outputs
    for layer in model._flatten_layers(include_self=False, recursive=True):
        yield layer
        for node in layer._inbound_nodes:
            yield node
            yield from node.output_tensors
    keep_values = keras.backend.backend() in ("tensorflow", "torch")  # assigned in place; JAX replaces its arrays
    for v in model.weights:
        yield v
        if keep_values:
            yield v.value


def _counts(kept: _Kept) -> list:
    return [sys.getrefcount(o) for o in kept.objects]


def take(key, build, refill):
    """A model for `key`: a kept one no one holds, passed through `refill(model)` (which fills it with this
    checkpoint's weights and metadata), else `build()`'s, kept for later calls. Returns the model."""
    if MODELS <= 0:  # the pool is off: nothing to look for, nothing to keep
        with _LOCK:
            COUNTS["built"] += 1
        return build()
    with _LOCK:
        kept = next((k for k in _POOL.get(key, ()) if _counts(k) == k.counts), None)
        model = None if kept is None else kept.model  # held from here on: no other call takes it
        if key in _POOL:
            _POOL.move_to_end(key)
    if model is not None:
        with _LOCK:
            COUNTS["reused"] += 1
        return refill(model)
    kept = _Kept(build())
    with _LOCK:
        COUNTS["built"] += 1
        entries = _POOL.setdefault(key, [])
        entries.append(kept)
        _POOL.move_to_end(key)
        del entries[:-PER_KEY]
        while sum(len(e) for e in _POOL.values()) > MODELS:
            first = next(iter(_POOL))
            _POOL[first].pop(0)
            if not _POOL[first]:
                del _POOL[first]
        kept.counts = _counts(kept)  # held by `kept` alone, as when it is free again (the build leaves no
        # garbage that refers to the model's objects: tests/test_load_cache.py checks it against a full collection)
    return kept.model


def release() -> None:
    """Drop every kept model (the models callers still hold are theirs, untouched)."""
    with _LOCK:
        _POOL.clear()
