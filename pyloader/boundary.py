"""The line between a file and pyloader: every failure a file causes leaves as one FormatError naming the file.

* `reads_file(arg)`: the decorator on every public entry point that reads a file (read, load, inspect, each
  convert job). Whatever escapes the function -- a FormatError, or anything else raised while reading
  (OverflowError, RecursionError, MemoryError, a pybind11 cast, a bug) -- leaves as FormatError naming the file,
  with the type and a bounded message of the original (kept as `__cause__`). KeyboardInterrupt and SystemExit
  pass through.
* `open_regular(path)`: opens regular files only, checked without blocking (a FIFO named like a checkpoint
  would block `open()` forever): `os.stat` first, then `open(O_NONBLOCK)` and `fstat` of what was opened.
* `unchanged_file(path)`: the same opening, as (fd, size) for the native core's pread readers, and the check that
  the file did not change while it was read (a trainer rewriting `last.pt`): FormatError "changed while reading".
* `short_repr(x)`: a repr bounded in length, depth and work (the only way messages quote file values; the
  built-in repr of a shared-reference graph is exponential and of a deep one recursive).
* Paths: any Linux file name works. Public functions take str, bytes or os.PathLike; `fs_str` gives the str
  form (undecodable bytes as surrogates, Python's convention), `fs_bytes` what the native core is given,
  `shown(path)` the printable form used in messages.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import reprlib
import stat

from .errors import FormatError

__all__ = ["reads_file", "open_regular", "unchanged_file", "check_regular", "short_repr", "fs_str", "fs_bytes",
           "shown", "error_text", "free_bytes", "MAX_NESTING"]

# The deepest nesting of containers a pickle may build (tuples, lists, dicts, sets, records). Checkpoints nest
# about 10 deep (model -> _modules -> Sequential -> ... -> _parameters); CPython's C-recursive operations
# (hashing a tuple used as a dict key or set member) crash the interpreter at about 10^5 levels.
MAX_NESTING = 1000


def fs_str(path) -> str:
    """str form of a path (str, bytes or os.PathLike); undecodable bytes become surrogates (lossless)."""
    return os.fsdecode(os.fspath(path))


def fs_bytes(path) -> bytes:
    """The file name's bytes, as the native core opens it (std::string from bytes: any Linux name)."""
    return os.fsencode(os.fspath(path))


def shown(path) -> str:
    """A path as messages print it: undecodable bytes as \\xNN escapes."""
    try:
        text = fs_str(path)
    except TypeError:
        return short_repr(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_KIND = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link"}


def _not_regular(path, mode) -> FormatError:
    kind = _KIND.get(stat.S_IFMT(mode), "not a regular file")
    return FormatError(f"{shown(path)}: not a regular file ({kind}); checkpoints and cfgs must be regular files")


def check_regular(path) -> int:
    """Raise FormatError unless `path` is a regular file (following links); returns its size. Never opens."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise FormatError(f"{shown(path)}: cannot open: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return st.st_size


def _open_regular_fd(path) -> tuple:
    """(fd, fstat of it) of a regular file, opened without ever blocking; FormatError otherwise."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise FormatError(f"{shown(path)}: cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between stat and open
            raise _not_regular(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path):
    """A binary file object for a regular file, opened without ever blocking; FormatError otherwise."""
    return os.fdopen(_open_regular_fd(path)[0], "rb")


def _version(st) -> tuple:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


@contextlib.contextmanager
def unchanged_file(path):
    """(fd, size) of a regular file opened as open_regular opens it, for reading with pread (a file rewritten,
    truncated or deleted later cannot touch what was read; a shrunk one is a short read, which the native core
    reports as "changed while reading"). On leaving, its size and modification and change times (fstat of the
    open file) must be what they were when opened: FormatError "<path>: changed while reading" otherwise, also
    in place of an error that the reading raised (what was read may mix two versions). A file replaced by a
    rename is not a change: the open file is still the old one, read whole. Timestamps resolve a change made in
    the same clock tick as the previous one only where the kernel gives fine-grained times (Linux 6.13+)."""
    fd, st = _open_regular_fd(path)
    before = _version(st)
    try:
        try:
            yield fd, st.st_size
        except Exception as e:
            _check_unchanged(path, fd, before, e)
            raise
        _check_unchanged(path, fd, before, None)
    finally:
        os.close(fd)


def _check_unchanged(path, fd, before: tuple, cause) -> None:
    after = _version(os.fstat(fd))
    if after == before:
        return
    what = (f"{before[0]} bytes when opened, {after[0]} now" if after[0] != before[0]
            else "modified while being read")
    raise FormatError(f"{shown(path)}: changed while reading ({what}); read it again once it is written") from cause


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxtuple = _REPR.maxlist = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 6
_REPR.maxarray = 6
_REPR.maxstring = 60
_REPR.maxlong = 40
_REPR.maxother = 60


def short_repr(x, limit: int = 80) -> str:
    """repr(x) cut to about `limit` characters, built with bounded work whatever x is (deep, shared, huge)."""
    try:
        if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 128:
            s = f"<int of {x.bit_length()} bits>"
        else:
            s = _REPR.repr(x)
    except Exception:  # noqa: BLE001 - a repr that fails (huge int digits, a broken object) is described
        s = f"<{type(x).__name__} object>"
    return s if len(s) <= limit else s[: limit - 3] + "..."


def error_text(e: BaseException, limit: int = 300) -> str:
    """'<Type>: <message>' of an exception, bounded (str() of a KeyError reprs its key: unbounded)."""
    if isinstance(e, RecursionError):
        msg = "nested too deeply"
    elif isinstance(e, MemoryError):
        msg = "out of memory"
    elif len(e.args) == 1 and isinstance(e.args[0], str):
        msg = e.args[0]
    elif e.args:
        msg = short_repr(e.args if len(e.args) > 1 else e.args[0], limit)
    else:
        msg = ""
    msg = msg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def as_format_error(e: BaseException, path) -> FormatError:
    """FormatError for an exception raised while reading `path` (a FormatError is returned as it is)."""
    if isinstance(e, FormatError):
        return e
    return FormatError(f"{shown(path)}: {error_text(e)}")


def reads_file(arg: str):
    """Decorator: the function's parameter `arg` names the file it reads; nothing but FormatError escapes."""

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except FormatError:
                raise
            except (MemoryError, RecursionError) as e:
                what = type(e).__name__
                del e  # drop the frames (and what they allocated) before building the message
                raise FormatError(f"{shown(_arg(sig, args, kwargs, arg))}: {what}: the file needs more memory or "
                                  "nesting than pyloader allows (reading it was stopped)") from None
            except Exception as e:  # noqa: BLE001 - the boundary: whatever a file causes is a FormatError
                raise as_format_error(e, _arg(sig, args, kwargs, arg)) from e

        return wrapper

    return deco


def _arg(sig, args, kwargs, name):
    try:
        return sig.bind_partial(*args, **kwargs).arguments.get(name, "<file>")
    except TypeError:
        return "<file>"


def free_bytes(folder: str) -> int:
    """Bytes an unprivileged process can still write on the device holding `folder`."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
