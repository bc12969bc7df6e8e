"""Checkpoints written by earlier ultralytics releases (8.0.x to 8.3.x; issue 20 item 7), which pickle other module
paths (`ultralytics.nn.modules.Conv` before the package was split into files, `ultralytics.yolo.*` in 8.0.x), other
head attributes and other trainer keys (8.0.0-8.0.6 store OmegaConf DictConfig arguments).

Each release is installed with pip (`--no-deps --target`, plus the few packages its import needs that the current
environment lacks) into a cache folder ($PYLOADER_TEST_CACHE or ~/.cache/pyloader-test); tests/old_ultralytics.py then
runs with that release alone on PYTHONPATH: the release builds each model from its own yaml, its own trainer's
save_model writes last.pt / best.pt, its own strip_optimizer finalises best.pt, and it computes the reference outputs
of best.pt. pyloader reads both files (last.pt: the fp16 EMA beside the optimizer; best.pt: the stripped model), raw
and decoded (last.pt decoded with fold_bn; best.pt raw and decoded without), every part within 1e-4 of the reference's
max |value|. A YOLOv10 head (v10Detect) of 8.2-8.3 has `end2end = True` as a class attribute: its release returns the
one-to-one branch's top-k rows; ultralytics 8.4 (a property over the pickled `_end2end`, absent in these files) and
pyloader (pyloader/ultralytics/end2end.py) decode the one-to-many branch, checked against the release's own decoding
of that branch (its `_inference`). The P2 / P6 forms each release ships (P26, P26_GHOST; 8.0.6: yolov8x6), the P6 ones at
128x192. Eight models of three releases by default (DEFAULT), all with PYLOADER_FULL=1. Needs
the package registry (pip); under CI=true nothing skips.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyloader

FULL = os.environ.get("PYLOADER_FULL") == "1"
RTOL = 1e-4
GENERATOR = Path(__file__).with_name("old_ultralytics.py")
CACHE = Path(os.environ.get("PYLOADER_TEST_CACHE", Path.home() / ".cache" / "pyloader-test")) / "ultralytics-releases"

D, S, P, O, C = "DetectionModel", "SegmentationModel", "PoseModel", "OBBModel", "ClassificationModel"
# release: (packages its import needs beside ultralytics, installed with it; the models it writes, yaml: class)
# the P2 / P6 forms each release ships (models/v8/yolov8-p2.yaml ...; 8.0.6: yolov8x6.yaml only)
P26 = {"yolov8n-p2.yaml": D, "yolov8n-p6.yaml": D, "yolov8n-pose-p6.yaml": P}
P26_GHOST = {**P26, "yolov8n-seg-p6.yaml": S, "yolov8n-ghost-p2.yaml": D, "yolov8n-ghost-p6.yaml": D}
RELEASES = {
    "8.0.6": (["hydra-core==1.3.2", "omegaconf==2.3.0", "antlr4-python3-runtime==4.9.3"],
              {"yolov8n.yaml": D, "yolov8n-seg.yaml": S, "yolov8n-cls.yaml": C, "yolov8x6.yaml": D}),
    "8.0.100": ([], {"yolov8n.yaml": D, "yolov8n-seg.yaml": S, "yolov8n-pose.yaml": P, "yolov8n-cls.yaml": C, **P26}),
    "8.1.0": (["hub-sdk==0.0.25"], {"yolov8n.yaml": D, "yolov8n-pose.yaml": P, "yolov8n-obb.yaml": O, **P26_GHOST}),
    "8.2.0": ([], {"yolov8n.yaml": D, "yolov8n-seg.yaml": S, "yolov8n-obb.yaml": O, "yolov8n-cls.yaml": C, **P26_GHOST}),
    "8.2.103": ([], {"yolov10n.yaml": D, "yolov9t.yaml": D, "yolov5nu.yaml": D, "yolov6n.yaml": D,
                     "yolov8n-ghost.yaml": D, "yolov3-tinyu.yaml": D, **P26_GHOST}),
    "8.3.0": ([], {"yolo11n.yaml": D, "yolo11n-seg.yaml": S, "yolo11n-pose.yaml": P, "yolo11n-obb.yaml": O,
                   "yolo11n-cls.yaml": C, **P26_GHOST}),
    "8.3.100": ([], {"yolov8n.yaml": D, "yolo11n-pose.yaml": P, "yolo11n-cls.yaml": C, "yolo12n.yaml": D,
                     "yolo12n-seg.yaml": S, "yolov10n.yaml": D, **P26_GHOST}),
}
# without PYLOADER_FULL: the oldest paths (ultralytics.yolo, one nn/modules.py, OmegaConf arguments), the split
# modules, and YOLO11; every task among them; a P2 and a P6 form
DEFAULT = {("8.0.6", "yolov8n.yaml"), ("8.0.6", "yolov8n-seg.yaml"), ("8.0.6", "yolov8n-cls.yaml"),
           ("8.1.0", "yolov8n-pose.yaml"), ("8.1.0", "yolov8n-obb.yaml"), ("8.3.0", "yolo11n.yaml"),
           ("8.1.0", "yolov8n-p2.yaml"), ("8.3.0", "yolov8n-seg-p6.yaml")}
SELECTED = {v: [y for y in models if FULL or (v, y) in DEFAULT] for v, (_, models) in RELEASES.items()}
CASES = [pytest.param(v, y, id=f"{v}-{y[:-5]}") for v, models in SELECTED.items() for y in models]


def _install(version: str) -> Path:
    """The release (and what its import needs) in the cache, installed by pip once: no dependencies, so the
    current torch and numpy are the ones it runs with."""
    target = CACHE / version
    if (target / "ultralytics" / "__init__.py").exists():
        return target
    tmp = CACHE / f".{version}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(tmp),
                        f"ultralytics=={version}", *RELEASES[version][0]], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"pip could not install ultralytics=={version}: {r.stderr[-2000:]}"
    try:
        tmp.rename(target)
    except OSError:  # another process installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """version -> the folder of its checkpoints (one generator process per release, every model of it)."""
    done = {}

    def get(version):
        if version not in done:
            out = tmp_path_factory.mktemp(f"ul{version}")
            home = tmp_path_factory.mktemp("home")  # the release's settings file stays out of the user's
            env = dict(os.environ, PYTHONPATH=str(_install(version)), HOME=str(home), YOLO_CONFIG_DIR=str(home),
                       YOLO_OFFLINE="1")
            specs = [f"{y}:{RELEASES[version][1][y]}" for y in SELECTED[version]]
            r = subprocess.run([sys.executable, str(GENERATOR), str(out), *specs], capture_output=True, text=True,
                               timeout=900, env=env, cwd=out)
            assert r.returncode == 0, f"ultralytics {version}: {r.stdout[-2000:]}{r.stderr[-4000:]}"
            done[version] = out
        return done[version]

    return get


def _close(got, want, what):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert err <= RTOL, f"{what}: relative error {err:.3g}"
    return err


def _flat(levels):
    """Per-level NHWC tensors as Ultralytics' flattened [B, C, anchors]."""
    return np.concatenate([np.asarray(t).reshape(len(t), -1, t.shape[-1]) for t in levels], axis=1).transpose(0, 2, 1)


@pytest.mark.parametrize("version, yaml_name", CASES)
def test_release_checkpoint_matches_its_release(release, version, yaml_name):
    """last.pt and best.pt of the release read, raw and decoded, against the release's own outputs of best.pt."""
    d = release(version) / yaml_name[:-5]
    ref = np.load(d / "ref.npz")
    assert str(ref["version"]) == version
    task, x = str(ref["task"]), ref["x"]
    size = x.shape[1:3]
    for path, fold_bn, raw in ((d / "last.pt", True, False), (d / "best.pt", False, True)):
        what = f"{version} {yaml_name} {path.name}"
        dec = pyloader.load(path, fold_bn=fold_bn, decode=True, input_size=size)
        assert dec.metadata["task"] == task
        got = _outputs(dec(x))
        raw = pyloader.load(path, fold_bn=fold_bn, input_size=size) if raw else None
        out = _outputs(raw(x)) if raw else None
        if task == "classify":
            _close(got[0], ref["probabilities"], f"{what} probabilities")
            _close(got[1], ref["logits"], f"{what} logits")
            if raw is not None:
                _close(out[0], ref["logits"], f"{what} raw logits")
            continue
        if "topk" in ref:  # see the module docstring: v10Detect of 8.2-8.3 is read as ultralytics 8.4 reads it
            assert dec.metadata["end2end"]["branch"] == "one2many"
        det, nc = ref["det"], ref["scores"].shape[1]
        for part, rows in (("boxes", slice(0, 4)), ("classes", slice(4, 4 + nc)), ("extra", slice(4 + nc, None))):
            if det[:, rows].size:
                _close(got[0][:, rows], det[:, rows], f"{what} decoded {part}")
        if task == "segment":
            _close(np.transpose(got[1], (0, 3, 1, 2)), ref["proto"], f"{what} decoded prototypes")
        if raw is None:
            continue
        nl = sum(n.startswith("head_") for n in raw.output_names)
        heads = _flat(out[:nl])
        rm = ref["boxes"].shape[1]
        _close(heads[:, :rm], ref["boxes"], f"{what} raw boxes")
        _close(heads[:, rm:], ref["scores"], f"{what} raw scores")
        if task != "detect":
            extra = _flat(out[nl:2 * nl])
            if task == "obb":  # the reference keeps the angle, (sigmoid - 0.25) * pi, not its logit
                extra = (1 / (1 + np.exp(-extra)) - 0.25) * math.pi
            _close(extra, ref["extra"], f"{what} raw {task}")
        if task == "segment":
            _close(np.transpose(out[-1], (0, 3, 1, 2)), ref["proto"], f"{what} raw prototypes")


def _outputs(y):
    return [np.asarray(o) for o in (y if isinstance(y, (list, tuple)) else [y])]


def test_cases_cover_every_task():
    """The cases run by default hold the oldest module paths, the split modules, every task, a P2 and a P6 form."""
    assert {RELEASES[v][1][y] for v, y in DEFAULT} == {D, S, P, O, C}
    assert {y[-7:-5] for _, y in DEFAULT} >= {"p2", "p6"}
    assert {v for v, _ in DEFAULT} == {"8.0.6", "8.1.0", "8.3.0"}


@pytest.mark.parametrize("interpreter", ["load_pickle", "load_pickle_reference"])
def test_old_release_pickle_forms(interpreter):
    """What the releases pickle beyond today's checkpoints, in both pickle interpreters: getattr on a class (Segment /
    Pose / OBB before 8.4 hold `self.detect = Detect.forward`) is an inert reference, collections.defaultdict of a
    class (OmegaConf's node metadata) a plain dict; getattr on anything else, or a defaultdict whose factory is not a
    class, stay refused."""
    import collections
    import pickle

    from pyloader.errors import UnsafePickleError
    from pyloader.torch_reader import unpickle
    from pyloader.torch_reader.records import ClassRef

    from test_pickle_asm import PROTO2, REDUCE, STOP, TUPLE1, glob, s

    def load(data):
        return getattr(unpickle, interpreter)(data)[0]

    ref = load(PROTO2 + glob("builtins", "getattr") + glob("ultralytics.nn.modules.head", "Detect") + s("forward")
               + b"\x86" + REDUCE + STOP)
    assert ref == ClassRef("ultralytics.nn.modules.head", "Detect.forward")
    assert load(pickle.dumps(collections.defaultdict(dict, {"a": 1}), protocol=2)) == {"a": 1}
    for bad in (glob("builtins", "getattr") + s("x") + s("upper") + b"\x86" + REDUCE,
                glob("collections", "defaultdict") + s("x") + TUPLE1 + REDUCE):
        with pytest.raises(UnsafePickleError):
            load(PROTO2 + bad + STOP)
