"""The README's main command: `python -m pyloader.demo DIR` writes a checkpoint, loads it and runs an image."""

import subprocess
import sys

import numpy as np

import pyloader


def test_demo_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyloader.demo", str(tmp_path / "demo")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "head output (1, 16, 20, 24)" in r.stdout and "decoded boxes (1, 4800, 8)" in r.stdout
    # The files it wrote are a valid checkpoint: the reader accepts them and the values are finite.
    arrays = pyloader.read(tmp_path / "demo" / "demo-yolo.weights")
    assert arrays and all(np.isfinite(a).all() for a in arrays.values())


def test_demo_is_quiet_and_its_next_commands_work(tmp_path):
    """Issue 24 item 6: no TensorFlow C++ log lines, the framework import timed apart from the load, and the
    next commands it prints run as printed."""
    import re
    import shlex

    r = subprocess.run([sys.executable, "-m", "pyloader.demo", str(tmp_path / "demo")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuInit", text, re.M), text
    assert re.search(r"^framework import: [\d.]+ s", r.stdout, re.M) and "pyloader.load: " in r.stdout
    nxt = r.stdout.split("next:", 1)[1].splitlines()[1:]
    assert [c.split()[:2] for c in nxt] == [["pyloader", "convert"], ["pyloader", "inspect"]], r.stdout
    for cmd in nxt:
        args = shlex.split(cmd)
        p = subprocess.run([sys.executable, "-m", "pyloader", *args[1:]], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
    assert "pyloader_metadata" in p.stdout or "darknet" in p.stdout, p.stdout
