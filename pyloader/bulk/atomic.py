"""Atomic outputs: everything is written under a temporary name in the output folder
(`.pyloader-tmp-<pid>-<random>-<output name>`), then renamed into place; temporaries of dead processes are removed."""

from __future__ import annotations

import os
import shutil
import uuid

from .jobs import TMP_PREFIX


def clean_stale_temporaries(out_dir) -> list:
    """Remove temporary entries in out_dir left by processes that no longer run; returns their paths."""
    removed = []
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        pid = name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        path = os.path.join(out_dir, name)
        remove(path)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def tmp_path(final: str) -> str:
    d, name = os.path.split(final)
    return os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")


def write_atomically(final: str, overwrite: bool, produce):
    """`produce(tmp)` writes the output under a temporary name beside `final` (its return value is returned);
    then it is renamed into place (a folder: moved aside when overwriting). The temporary entry never stays."""
    tmp = tmp_path(final)
    try:
        got = produce(tmp)
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            _rename_folder(tmp, final, overwrite)
        else:
            if not overwrite and os.path.lexists(final):
                raise FileExistsError(f"{final} appeared while converting")
            os.replace(tmp, final)
    finally:
        if os.path.lexists(tmp):
            remove(tmp)
    return got


def _rename_folder(tmp: str, final: str, overwrite: bool) -> None:
    old = None
    if os.path.lexists(final):
        if not overwrite:
            raise FileExistsError(f"{final} appeared while converting")
        old = tmp_path(final)
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        remove(old)


