"""A Darknet checkpoint's class names, found where model zoos keep them (numpy-free, no framework).

Order, per checkpoint: names given by the caller (`names=` / `--names`); else `<stem>.names` beside the
`.weights`; else the `names=` entry of `<stem>.data` beside it, a relative path resolved against the `.data`
file's folder (zoo folders ship `obj.data` with `names = obj.names`) and, when no file is there, against the
current directory, as darknet does when run from its root (`names = data/coco.names`); else class0, class1, ...
Whatever is found must list exactly the cfg's classes: a FormatError names both counts and both files.
"""

from __future__ import annotations

import os

from ..boundary import open_regular, shown
from ..errors import FormatError
from ..metadata import read_names_file

__all__ = ["beside_names", "checkpoint_names"]


def beside_names(weights: str):
    """The .names file for `weights` found beside it (see the module docstring), or None."""
    stem = os.path.splitext(weights)[0]
    if os.path.isfile(stem + ".names"):
        return stem + ".names"
    data = stem + ".data"
    if not os.path.isfile(data):
        return None
    entry = _data_entry(data, "names")
    if entry is None:
        raise FormatError(f"{shown(data)}: no names= entry (the class names of {shown(weights)}); add one, or "
                          "pass names= (--names)")
    tried = [entry] if os.path.isabs(entry) else [os.path.join(os.path.dirname(data), entry), entry]
    for p in tried:
        if os.path.isfile(p):
            return p
    raise FormatError(f"{shown(data)}: names={entry}: no such file (looked for "
                      f"{' and '.join(shown(os.path.abspath(p)) for p in tried)})")


def checkpoint_names(weights: str, given, nc: int, cfg: str):
    """The class names of a Darknet checkpoint with `nc` classes: `given` (a list or a .names path) else the
    file beside it, checked against nc; None when there are none (the metadata then says class0, ...)."""
    source = given if given is not None else beside_names(weights)
    if source is None:
        return None
    names = [str(n) for n in source] if not isinstance(source, (str, os.PathLike)) else read_names_file(source)
    if nc and len(names) != nc:
        what = shown(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "names="
        raise FormatError(f"{what}: lists {len(names)} class names, the cfg {shown(cfg)} has classes={nc} "
                          f"(checkpoint {shown(weights)})")
    return names


def _data_entry(path: str, key: str):
    """The value of `key` in a darknet .data file (`key = value` lines; '#' and ';' start comments), or None."""
    with open_regular(path) as f:
        try:
            text = f.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{shown(path)}: not a darknet .data text file ({e})") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        if k.strip() == key:
            return v.strip()
    return None
