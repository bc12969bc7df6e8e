"""Atomic outputs: everything is written under a temporary name in the output folder
(`.pyloader-tmp-<pid>-<random>-<output name>`), then renamed into place while the run that asked for it is open
(`Run`: an interrupted run knows every output it renamed, and none appears after it stopped); temporaries of dead
processes are removed."""

from __future__ import annotations

import contextvars
import errno
import fcntl
import os
import shutil
import signal
import threading
import uuid
from contextlib import contextmanager

from .jobs import TMP_PREFIX


def clean_stale_temporaries(out_dir, pids=()) -> list:
    """Remove temporary entries in out_dir left by processes that no longer run, and those of `pids` (processes
    known to have stopped writing); returns their paths."""
    removed = []
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        pid = name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) not in pids and _alive(int(pid)):
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


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space(e: BaseException) -> bool:
    """Whether `e`, or an error it was raised from, is a full device or an exceeded quota: an OSError with that
    errno, or a library's own error carrying the system's text (h5py and TensorFlow re-raise it so)."""
    texts = [os.strerror(n) for n in _NO_SPACE]
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno in _NO_SPACE) or any(t in str(e) for t in texts):
            return True
        e = e.__cause__ or e.__context__
    return False


def tmp_path(final: str) -> str:
    d, name = os.path.split(final)
    return os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")


# ---------------------------------------------------------------------------------------------------------
# The run: outputs are renamed into place only while it is open


class RunClosed(Exception):
    """The run an output belongs to was interrupted: the output is not renamed into place."""


class Run:
    """One conversion run's log, a temporary entry in its output folder. A job renames its output into place only
    while it holds the log's lock (flock) and the log still exists, and then appends the output's path to it;
    `close()` takes the lock, reads the paths and removes the log. After close() no output of the run appears,
    and those that appeared are exactly the paths it returns (whichever process or machine renamed them)."""

    def __init__(self, out_dir):
        self.path = tmp_path(os.path.join(os.fspath(out_dir), "run"))
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        self.renamed = None

    def close(self) -> list:
        if self.renamed is None:
            with open(self.path, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                data = f.read()
                os.unlink(self.path)
            self.renamed = [os.fsdecode(p) for p in data.split(b"\0") if p]
        return self.renamed


_RUN = contextvars.ContextVar("pyloader_run", default=None)  # the log path of the run the current job is in


@contextmanager
def in_run(log):
    """The block's outputs belong to the run whose log is `log` (None: no run, renamed unconditionally)."""
    token = _RUN.set(log)
    try:
        yield
    finally:
        _RUN.reset(token)


def run_open() -> bool:
    log = _RUN.get()
    return log is None or os.path.exists(log)


@contextmanager
def _renaming(final: str):
    """Held while `final` is renamed into place: the run's lock, RunClosed when the run is over; the path is
    logged when the block succeeds. A Ctrl-C here waits until the block ends (rename and log stay together)."""
    log = _RUN.get()
    if log is None:
        yield
        return
    try:
        f = os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND), "ab")  # never created here: gone is closed
    except FileNotFoundError:
        raise RunClosed(f"{final}: not written, the run was interrupted") from None
    with f, signals_held():
        fcntl.flock(f, fcntl.LOCK_EX)
        if os.fstat(f.fileno()).st_nlink == 0:
            raise RunClosed(f"{final}: not written, the run was interrupted")
        yield
        f.write(os.fsencode(final) + b"\0")


@contextmanager
def signals_held(replay: bool = True):
    """SIGINT and SIGTERM arriving during the block are handled when it ends (replay) or dropped. Python runs
    signal handlers in the main thread only: elsewhere nothing can interrupt the block, and nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved = {s: h for s, h in saved.items() if h is not None}  # None: set outside Python, left alone
    for s in saved:
        signal.signal(s, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        if got and replay:
            signal.raise_signal(got[0])


class OutputAppeared(FileExistsError):
    """The output was put in place by someone else (another convert run into the same folder) while this one was
    being written: that output is complete (it was renamed into place whole), so this one is dropped."""


def write_atomically(final: str, overwrite: bool, produce):
    """`produce(tmp)` writes the output under a temporary name beside `final` (its return value is returned);
    then it is renamed into place (a folder: the old one moved aside when overwriting, then removed). The
    temporary entry never stays."""
    tmp = tmp_path(final)
    old = None
    try:
        got = produce(tmp)
        with _renaming(final):
            old = _rename(tmp, final, overwrite)
    finally:
        for p in (tmp, old):
            if p is not None and os.path.lexists(p):
                remove(p)
    return got


def _rename(tmp: str, final: str, overwrite: bool):
    """Rename tmp to final; returns where an old output folder was moved (to be removed), else None. Without
    overwrite, an output that is there already (or appears at the same moment: link and rename of a folder fail
    when the name exists) is OutputAppeared, and nothing of it is touched."""
    appeared = OutputAppeared(f"{final} appeared while converting (another run wrote it)")
    if not overwrite and os.path.lexists(final):
        raise appeared
    if not os.path.isdir(tmp) or os.path.islink(tmp):
        if overwrite:
            os.replace(tmp, final)
            return None
        try:
            os.link(tmp, final)  # atomic and never replaces: of two runs at once, one gets the name
        except FileExistsError:
            raise appeared from None
        except OSError:  # a file system without hard links: the check above, then the rename
            os.replace(tmp, final)
            return None
        os.unlink(tmp)
        return None
    if not overwrite:
        try:
            os.rename(tmp, final)  # a folder: fails when a non-empty one has the name
        except OSError as e:
            if os.path.lexists(final):
                raise appeared from e
            raise
        return None
    old = None
    if os.path.lexists(final):
        old = tmp_path(final)
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    return old
