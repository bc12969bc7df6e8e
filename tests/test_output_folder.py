"""`pyloader convert -o OUTDIR` is checked before any work, as a command.

An -o that is a file, cannot be created, is not writable or is on a read-only file system: exit 2 before the
framework import, one line on stderr naming the folder and the reason, no traceback, nothing created. A run
that fails validation (a missing source, invalid options) creates no -o either. Root ignores chmod: where
os.access says the chmod'ed folder is writable anyway, the case uses /proc/sys instead (no new entry there, for
anyone); /proc takes no new folder either, though os.access says root may write there.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from pyloader.darknet.synthetic import write_weights

CFG = "[net]\nwidth=32\nheight=32\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"

RUN = """
import json, sys
from pyloader.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "heavy": sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("outdir_src")
    (d / "net.cfg").write_text(CFG)
    write_weights(d / "net.weights", str(d / "net.cfg"))
    return d / "net.weights"


def convert(*args):
    """`pyloader convert ARGS` (pyloader.cli.main in a fresh interpreter): (exit status, stderr, heavy modules
    imported)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run([sys.executable, "-c", RUN, "convert", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.stdout.strip(), p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    return got["rc"], p.stderr, got["heavy"]


def refused(out, source, *words):
    rc, err, heavy = convert(source, "-o", out)
    assert rc == 2, err
    assert heavy == [], heavy  # before the framework import
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"output folder {out}" in err and all(w in err for w in words), err
    return err


@pytest.fixture
def locked(tmp_path):
    """A folder this process cannot write (chmod 0555), or None where chmod does not stop it (root)."""
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    yield None if os.access(d, os.W_OK) else d
    d.chmod(stat.S_IRWXU)


def test_file_as_output_folder(source, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("keep me")
    refused(f, source, "not a folder")
    refused(f / "sub", source, "cannot be created", f"{f} is not a folder")
    assert f.read_text() == "keep me"


def test_unwritable_output_folder(source, locked):
    if locked is None:  # the root of /proc/sys takes no new entry, whoever asks
        refused("/proc/sys", source, "not writable")
    else:
        refused(locked, source, "not writable", "permission denied")
        assert os.listdir(locked) == []


def test_output_folder_that_cannot_be_created(source, locked):
    if locked is None:
        refused("/proc/sys/out", source, "cannot be created in /proc/sys")
    else:
        refused(locked / "out", source, f"cannot be created in {locked}", "permission denied")
        assert os.listdir(locked) == []
    refused("/proc/pyloader-out", source, "cannot be created in /proc")
    assert not os.path.exists("/proc/pyloader-out")


def _read_only_folder():
    """A folder under /proc or /sys on a file system mounted read-only, or None."""
    with open("/proc/mounts") as f:
        for line in f:
            point, opts = line.split()[1], line.split()[3].split(",")
            under = point in ("/proc", "/sys") or point.startswith(("/proc/", "/sys/"))
            if "ro" in opts and under and os.path.isdir(point):
                return point
    return None


def test_read_only_file_system(source):
    folder = _read_only_folder()
    if folder is None:
        pytest.skip("no read-only file system under /proc or /sys on this machine")
    refused(os.path.join(folder, "pyloader-out"), source, "read-only file system")


def test_failed_validation_creates_nothing(source, tmp_path):
    out = tmp_path / "out"
    rc, err, heavy = convert(tmp_path / "missing.weights", "-o", out)
    assert rc == 1 and "no such file or folder" in err, err
    assert not out.exists()
    for bad in (["--nms", "--format", "weights.h5"], ["--int8"], ["--iou", "0.5"]):
        rc, err, heavy = convert(source, "-o", out, *bad)
        assert rc == 2 and "Traceback" not in err, err
        assert not out.exists()
    rc, err, heavy = convert(source, "-o", out, "--format", "weights.h5")  # and a good run makes it
    assert rc == 0 and os.listdir(out) == ["net.weights.h5"], err
