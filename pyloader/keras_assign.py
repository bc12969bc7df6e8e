"""Fill a built keras.Model from arrays keyed by variable path ('<layer name>/<variable>')."""

from __future__ import annotations

from .errors import FormatError


def assign_weights(model, arrays: dict, source: str) -> None:
    """Assign every model variable from `arrays`; both sides must match exactly (names and shapes).

    `source` names the checkpoint in error messages.
    """
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
        v.assign(a)
