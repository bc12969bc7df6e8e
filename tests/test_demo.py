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
