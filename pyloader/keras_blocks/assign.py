"""Fill a keras.Model from arrays keyed by variable path ('<layer name>/<variable>')."""

from __future__ import annotations

import keras

from ..errors import FormatError


def _matched(model, arrays: dict, source: str) -> dict:
    """{path: (variable, array)}; both sides must match exactly, names and shapes."""
    variables = {v.path: v for v in model.weights}
    missing = sorted(set(variables) - set(arrays))
    extra = sorted(set(arrays) - set(variables))
    if missing or extra:
        raise FormatError(
            f"{source}: the checkpoint's arrays do not match the model: "
            f"{len(missing)} model variables have no array (first: {missing[:3]}), "
            f"{len(extra)} arrays have no variable (first: {extra[:3]})"
        )
    for path, v in variables.items():
        a = arrays[path]
        if tuple(v.shape) != tuple(a.shape):
            raise FormatError(f"{source}: {path}: expected shape {tuple(v.shape)}, got {tuple(a.shape)}")
    return {path: (v, arrays[path]) for path, v in variables.items()}


def assign_weights(model, arrays: dict, source: str, *, discard_arrays: bool = False) -> None:
    """Assign every variable of a built model from `arrays` (`source` names the checkpoint in errors);
    discard_arrays as in build_filled."""
    put = _putter(_assign, discard_arrays)
    for v, a in _matched(model, arrays, source).values():
        put(v, a)


def _assign(v, a) -> None:
    v.assign(a)


def _initialize(v, a) -> None:
    v._initialize(a)
    v._initializer = None


def _putter(put, discard_arrays: bool):
    """put(variable, array), then, with discard_arrays on TensorFlow (its variables hold copies), the array's
    memory handed back to the system."""
    if not (discard_arrays and keras.backend.backend() == "tensorflow"):
        return put
    from .. import _core

    def put_discard(v, a):
        put(v, a)
        _core.discard_memory(a)
    return put_discard


def build_filled(build, arrays: dict, source: str, *, discard_arrays: bool = False):
    """`build()` a model without initialising its variables, then create each variable from its array.

    Keras spends a large part of a build running initializers and a later assign copies every tensor
    again; building under keras.StatelessScope(initialize_variables=False) skips both. This relies on
    Keras 3's deferred-initialisation internals (Variable._initialize and the pending-variable list); where
    they differ, it builds normally and assigns, with the same result.

    discard_arrays=True hands each array's memory back to the system once its variable holds a copy (the
    TensorFlow backend copies; JAX and PyTorch may alias numpy memory, so it is ignored there): a load's
    peak memory is then about one copy of the parameters. The arrays must not be used afterwards.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - other Keras layouts
        global_state = None
    if global_state is None or not hasattr(keras, "StatelessScope"):
        model = build()
        assign_weights(model, arrays, source)
        return model
    with keras.StatelessScope(initialize_variables=False):
        model = build()
    pairs = _matched(model, arrays, source)
    ours = {id(v) for v, _ in pairs.values()}
    try:
        put = _putter(_initialize, discard_arrays)
        for v, a in pairs.values():
            put(v, a)
    finally:  # take ours off Keras' list of variables still waiting for their initializer
        pending = global_state.get_global_attribute("uninitialized_variables", [])
        global_state.set_global_attribute("uninitialized_variables", [v for v in pending if id(v) not in ours])
    return model


def build_streamed(build, chunks, source: str, *, discard_arrays: bool = False):
    """Like build_filled, but the arrays come in chunks ({path: array} per layer, from an iterable) made
    while the variables are created: only one chunk's arrays exist at a time, so a load's peak is about the
    variables plus one layer. Every variable must get exactly one array of its shape."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - other Keras layouts
        global_state = None
    if global_state is None or not hasattr(keras, "StatelessScope"):
        arrays = {}
        for chunk in chunks:
            arrays.update(chunk)
        model = build()
        assign_weights(model, arrays, source)
        return model
    with keras.StatelessScope(initialize_variables=False):
        model = build()
    ours = {id(v) for v in model.weights}
    try:
        _fill_chunks(model, chunks, source, _initialize, discard_arrays)
    finally:  # take ours off Keras' list of variables still waiting for their initializer
        pending = global_state.get_global_attribute("uninitialized_variables", [])
        global_state.set_global_attribute("uninitialized_variables", [v for v in pending if id(v) not in ours])
    return model


def fill_streamed(model, chunks, source: str, *, discard_arrays: bool = False) -> None:
    """Assign every variable of a built model from chunks of arrays, as build_streamed takes them."""
    _fill_chunks(model, chunks, source, _assign, discard_arrays)


def _fill_chunks(model, chunks, source: str, put, discard_arrays: bool) -> None:
    """put(variable, array) for each array of each chunk, checked: every variable exactly once, its shape."""
    variables = {v.path: v for v in model.weights}
    done: set = set()
    put = _putter(put, discard_arrays)
    for chunk in chunks:
        for path, a in chunk.items():
            v = variables.get(path)
            if v is None or path in done:
                what = "has no variable" if v is None else "comes twice"
                raise FormatError(f"{source}: the checkpoint's arrays do not match the model: {path} {what}")
            if tuple(v.shape) != tuple(a.shape):
                raise FormatError(f"{source}: {path}: expected shape {tuple(v.shape)}, got {tuple(a.shape)}")
            put(v, a)
            done.add(path)
    missing = sorted(set(variables) - done)
    if missing:
        raise FormatError(f"{source}: the checkpoint's arrays do not match the model: {len(missing)} model "
                          f"variables have no array (first: {missing[:3]})")
