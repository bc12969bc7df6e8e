"""The inert values a checkpoint's pickle becomes: nothing here imports or calls what a pickle names.

`ClassRef` (a class named by GLOBAL, never imported), `Record` (an object of such a class as data: class, args,
the state BUILD gave it), `MethodRef` (a pickled bound method), `StorageType` / `Storage` (torch storages: a
dtype, and a 1-d numpy view of the checkpoint's bytes), and `is_broadcast` (a tensor view that repeats elements).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ClassRef", "Record", "MethodRef", "StorageType", "Storage", "is_broadcast"]


@dataclass(frozen=True)
class ClassRef:
    """A class the pickle names; never imported."""

    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def is_(self, module_suffix: str, name: str) -> bool:
        """True for `name` in a module whose dotted path ends with `module_suffix` (e.g. 'models.common')."""
        return self.name == name and (self.module == module_suffix or self.module.endswith("." + module_suffix))


@dataclass(eq=False)
class Record:
    """An object of an allowed class, as data: its class, constructor args and the state BUILD gave it."""

    cls: ClassRef
    args: tuple = ()
    state: Any = None

    @property
    def type_name(self) -> str:
        return self.cls.name

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default) if isinstance(self.state, dict) else default

    def __repr__(self) -> str:  # short: records can be huge trees
        return f"<{self.cls.qualname} record>"


@dataclass(frozen=True)
class MethodRef:
    """getattr(record, name) as pickled for a bound method (YOLOv5's fuse() sets `m.forward = m.forward_fuse`).
    Inert: nothing is looked up or called."""

    record: Any
    name: str


@dataclass(frozen=True)
class StorageType:
    name: str  # e.g. 'HalfStorage'
    dtype: np.dtype


@dataclass(eq=False)
class Storage:
    """A typed storage: `array` is a 1-d numpy view over the checkpoint's bytes (read-only, not copied)."""

    dtype: np.dtype
    key: str
    numel: int
    array: np.ndarray
    where: str = ""  # e.g. "zip entry 'archive/data/3'", for messages


def is_broadcast(a: np.ndarray) -> bool:
    """A view repeating elements (a zero stride on a dimension longer than 1): not a parameter's layout."""
    return any(st == 0 and s > 1 for s, st in zip(a.shape, a.strides))
