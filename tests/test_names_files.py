"""Class names where model zoos keep them (pyloader.darknet.names): `<stem>.names` beside a `.weights`, else the
`names=` entry of `<stem>.data` (relative to the .data's folder, then the current directory), for `pyloader.load`
and `pyloader convert`; `--names` on a folder that also holds a .pt goes to the .weights only; a count that is
not the cfg's `classes=` is a FormatError naming both counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

import pyloader
from pyloader import FormatError
from pyloader.darknet.synthetic import tiny_cfg, write_weights
from pyloader.family import Options
from pyloader.registry import open_checkpoint

CFG = tiny_cfg(classes=3)


def checkpoint(d, stem="net"):
    (d / f"{stem}.cfg").write_text(CFG)
    write_weights(d / f"{stem}.weights", d / f"{stem}.cfg", seed=1)
    return d / f"{stem}.weights"


def plan_names(weights, names=None):
    return open_checkpoint(weights, None, Options(names=names))[1].names


def test_beside_names_file_and_load(tmp_path):
    w = checkpoint(tmp_path)
    assert plan_names(w) is None  # nothing beside it: class0, ...
    (tmp_path / "net.names").write_text("cat\ndog\nbird\n")
    assert plan_names(w) == ["cat", "dog", "bird"]
    assert plan_names(w, ["a", "b", "c"]) == ["a", "b", "c"]  # names= wins over the file beside it
    assert pyloader.load(w).class_names == ["cat", "dog", "bird"]


def test_data_file_names_entry(tmp_path, monkeypatch):
    w = checkpoint(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "obj.names").write_text("x\ny\nz\n")
    (tmp_path / "net.data").write_text("# zoo\nclasses = 3\n names = sub/obj.names \nbackup = backup/\n")
    assert plan_names(w) == ["x", "y", "z"]  # relative to the .data's folder
    elsewhere = tmp_path / "darknet"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "coco.names").write_text("p\nq\nr\n")
    (tmp_path / "net.data").write_text("names=data/coco.names\n")
    with pytest.raises(FormatError, match=r"names=data/coco.names: no such file") as e:
        plan_names(w)
    assert "net.data" in str(e.value)
    monkeypatch.chdir(elsewhere)  # darknet's rule: relative to the directory it runs in
    assert plan_names(w) == ["p", "q", "r"]
    (tmp_path / "net.data").write_text("classes=3\n")
    with pytest.raises(FormatError, match=r"net.data: no names= entry"):
        plan_names(w)


def test_count_mismatch_names_both_counts(tmp_path):
    w = checkpoint(tmp_path)
    (tmp_path / "net.names").write_text("cat\ndog\n")
    with pytest.raises(FormatError, match=r"net.names: lists 2 class names, the cfg .*net.cfg has classes=3"):
        plan_names(w)
    with pytest.raises(FormatError, match=r"names=: lists 4 class names, the cfg .*classes=3"):
        plan_names(w, list("abcd"))


def test_cli_names_folder_with_pt(tmp_path):
    from test_cli_convert import make_pt

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    checkpoint(src, "a")
    (src / "a.names").write_text("beside\nfile\nnames\n")
    checkpoint(src, "b")
    if make_pt(src / "y5n.pt", names=lambda k: f"pt{k}") is None:
        pytest.skip("torch / yolov5 not installed")
    given = tmp_path / "given.names"
    given.write_text("g0\ng1\ng2\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", src, "-o", out, "--names", given,
                        "--format", "keras"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr

    def names(stem):
        with zipfile.ZipFile(out / f"{stem}.keras") as z:
            return json.loads(json.loads(z.read("config.json"))["config"]["pyloader_metadata"])["class_names"]

    assert names("a") == names("b") == ["g0", "g1", "g2"]  # --names over the file beside a.weights
    assert names("y5n")[:2] == ["pt0", "pt1"]
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", src / "y5n.pt", "-o", tmp_path / "o2",
                        "--names", given], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode != 0 and "Darknet .weights" in r.stderr, r.stdout + r.stderr
