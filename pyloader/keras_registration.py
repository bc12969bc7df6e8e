"""Register pyloader's Keras classes with Keras, without importing Keras at `import pyloader` time.

A .keras file that uses one of pyloader's layers (or restores its metadata) names it by its registered name
(`pyloader>...`, `pyloader_yolov5>...`); Keras finds such classes only once they are registered. `import
pyloader` calls `install()`: if Keras is already imported the classes are registered at once, otherwise a
finder on sys.meta_path waits for `keras` to be imported (by the user, `keras.saving.load_model`, TensorFlow)
and registers them right after Keras' own package has run. So `import pyloader, keras;
keras.saving.load_model(path)` works in a fresh process, and `import pyloader` alone (or `pyloader.read`)
still does not import Keras or TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

__all__ = ["install", "register_now"]

# The shared modules that define (and register) pyloader's Keras classes; each family declares its own
# (pyloader.family.Family.keras_modules).
SHARED_MODULES = ("pyloader.keras_blocks.model", "pyloader.keras_blocks.nms")


def register_now() -> None:
    from .registry import families

    for name in SHARED_MODULES + tuple(m for fam in families() for m in fam.keras_modules):
        importlib.import_module(name)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of the top-level `keras` package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _uninstall()
            register_now()

        loader.exec_module = exec_module  # this loader instance was made for this import only
        return spec


_FINDER = _AfterKeras()


def _uninstall() -> None:
    try:
        sys.meta_path.remove(_FINDER)
    except ValueError:
        pass


def install() -> None:
    if "keras" in sys.modules:
        register_now()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
