"""Pickling a reference package's classes under the GitHub repository's own module names (models.yolo,
models.common, ...), as checkpoints written by the repository itself name them (tests of the YOLOv7 and YOLOv9
families, whose PyPI packages prefix those modules)."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def pickled_as(pkg, mods):
    """Within the block, `pkg` is importable as `models` and each (module, short name) of `mods` as its short name,
    and the classes each module defines report that short name as their __module__ (what pickle writes)."""
    aliases = {"models": pkg, **{short: m for m, short in mods}}
    saved_modules = {k: sys.modules.get(k) for k in aliases}
    classes = {id(c): (c, short) for mod, short in mods for c in vars(mod).values()
               if isinstance(c, type) and c.__module__ == mod.__name__}
    saved = [(c, c.__module__) for c, _ in classes.values()]
    try:
        sys.modules.update(aliases)
        for c, short in classes.values():
            c.__module__ = short
        yield
    finally:
        for c, mod in saved:
            c.__module__ = mod
        for k, v in saved_modules.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
