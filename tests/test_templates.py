"""Template outputs (pyloader.outputs.template): a template-written file is the exporter's file for the same checkpoint.

Two architectures (a small Darknet cfg, YOLOv5n from a .pt) at small input sizes, every format: checkpoint A
goes first (the template is learned on probe weights, then A is written from it), checkpoint B, whose values
differ from A's in every tensor, is written from the template; the exporter (templates=False) then writes B
again. Byte for byte: .weights.h5, TFLite (float32 and float16); .keras: every member, the save date aside;
SavedModel: the variables (data shard and index, checksums included) byte for byte, and both folders loaded
in a fresh subprocess give the same outputs (its graph file names functions by a per-process counter, so two
exports never match byte for byte). A format whose exporter changes weights (TFLite with batch norm kept:
the converter folds it) falls back to the exporter and says why.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import pyloader
from pyloader.bulk import convert

from pyloader.darknet.synthetic import write_weights
from test_cli_convert import make_pt

CFG = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "cfg", "yolov3-tiny.cfg")
FORMATS = ["weights.h5", "keras", "savedmodel", "tflite", "tflite-fp16"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("templates")
    out = {}
    if os.path.exists(CFG):
        for s in (0, 1):
            write_weights(str(d / f"dk{s}.weights"), CFG, seed=s)
        out["darknet"] = ([str(d / "dk0.weights"), str(d / "dk1.weights")], dict(cfg=CFG, input_size=(64, 96)))
    if make_pt(str(d / "v5n0.pt"), seed=0) is not None:
        make_pt(str(d / "other-v5n1.pt"), seed=1, names=lambda k: f"b{k}-name")  # other class names
        out["yolov5"] = ([str(d / "v5n0.pt"), str(d / "other-v5n1.pt")], dict(input_size=(64, 64)))
    return out


def _differ_everywhere(a: str, b: str, kw: dict) -> None:
    ra = pyloader.read(a, kw.get("cfg"))
    rb = pyloader.read(b, kw.get("cfg"))
    assert ra.keys() == rb.keys()
    same = [k for k in ra if np.array_equal(ra[k], rb[k])]
    assert not same, f"tensors equal in both checkpoints: {same[:5]}"


def _keras_members(path: str) -> dict:
    with zipfile.ZipFile(path) as z:
        out = {}
        for info in z.infolist():
            body = z.read(info)
            if info.filename == "metadata.json":
                meta = json.loads(body)
                assert len(meta.pop("date_saved")) == 19
                body = meta
            out[info.filename] = (info.compress_type, body)
        return out


SAVEDMODEL_OUTPUTS = r"""
import json, sys, numpy as np, tensorflow as tf
x = np.random.default_rng(0).uniform(0, 1, size=tuple(int(v) for v in sys.argv[3:])).astype(np.float32)
outs, metas = [], []
for path in sys.argv[1:3]:
    loaded = tf.saved_model.load(path)
    r = loaded.signatures["serving_default"](tf.constant(x))
    outs.append([r[k].numpy() for k in sorted(r)])
    metas.append(json.loads(loaded.signatures["metadata"]()["pyloader_metadata"].numpy().decode()))
for a, b in zip(*outs):
    assert np.array_equal(a, b), float(np.abs(a - b).max())
assert metas[0] == metas[1], (metas[0]["source"], metas[1]["source"])
print("same", len(outs[0]), json.dumps(metas[0]["source"]))
"""

KERAS_METADATA = r"""
import json, sys, keras, pyloader
print(json.dumps(keras.saving.load_model(sys.argv[1], compile=False).metadata))
"""


# float16 TFLite once (Darknet): the same buffer matching as float32, with the cast; saves two TFLite exports
CASES = [(a, f) for a in ("darknet", "yolov5") for f in FORMATS if not (a == "yolov5" and f == "tflite-fp16")]


@pytest.mark.parametrize("arch,fmt", CASES)
def test_template_output_is_the_exporters(sources, tmp_path, arch, fmt):
    if arch not in sources:
        pytest.skip(f"no {arch} checkpoint here (../shared/cfg or torch+yolov5 missing)")
    (a, b), kw = sources[arch]
    if fmt == "keras":
        _differ_everywhere(a, b, kw)  # once per architecture
    fp16 = fmt == "tflite-fp16"
    fmt = "tflite" if fp16 else fmt
    if fmt == "tflite":  # templates are for the converter's files (the direct writer needs none)
        kw = {**kw, "tflite_writer": "converter"}
    got = convert([a, b], tmp_path / "t", format=fmt, tflite_fp16=fp16, **kw)
    assert [r.status for r in got] == ["converted", "converted"], [(r.reason, r.note) for r in got]
    assert [r.note for r in got] == ["", ""]  # both written from the template
    ref = convert([b], tmp_path / "e", format=fmt, tflite_fp16=fp16, templates=False, **kw)
    assert ref[0].status == "converted", ref[0].reason
    mine, theirs = got[1].output, ref[0].output
    if fmt == "keras":
        assert _keras_members(mine) == _keras_members(theirs)
    elif fmt == "savedmodel":
        for f in ("variables/variables.data-00000-of-00001", "variables/variables.index"):
            assert filecmp.cmp(os.path.join(mine, f), os.path.join(theirs, f), shallow=False), f
        assert sorted(os.listdir(mine)) == sorted(os.listdir(theirs))
        h, w = kw["input_size"]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        p = subprocess.run([sys.executable, "-c", SAVEDMODEL_OUTPUTS, mine, theirs, "1", str(h), str(w), "3"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0 and "same" in p.stdout, p.stderr[-3000:]
    else:
        assert filecmp.cmp(mine, theirs, shallow=False)
    _check_metadata(mine, theirs, b, fmt)


def _check_metadata(mine: str, theirs: str, source: str, fmt: str) -> None:
    """The template-written output carries its own checkpoint's metadata: the exporter's for that checkpoint."""
    from pyloader.metadata import file_sha256
    from pyloader.outputs import read_metadata

    meta = read_metadata(mine)
    assert meta == read_metadata(theirs)
    assert meta["source"] == {"name": os.path.basename(source), "bytes": os.path.getsize(source),
                              "sha256": file_sha256(source)}
    if source.endswith(".pt"):
        assert meta["class_names"][:2] == ["b0-name", "b1-name"]
    p = subprocess.run([sys.executable, "-m", "pyloader", "inspect", "--json", mine], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["metadata"] == meta
    if fmt == "keras":  # a user's fresh process: load_model restores model.metadata
        p = subprocess.run([sys.executable, "-c", KERAS_METADATA, mine], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert p.returncode == 0, p.stderr[-3000:]
        assert json.loads(p.stdout.strip().splitlines()[-1]) == meta


def test_exporter_fallback_says_why(sources, tmp_path):
    """TFLite folds kept batch norms into the convolutions: no exact transform, so the exporter runs."""
    if "darknet" not in sources:
        pytest.skip("no ../shared/cfg")
    (a, _), kw = sources["darknet"]
    got = convert([a], tmp_path, format="tflite", fold_bn=False, tflite_writer="converter", **kw)
    assert got[0].status == "converted", got[0].reason
    assert "no template" in got[0].note and "bn_" in got[0].note, got[0].note


def test_metadata_blobs_are_rewritten(sources, tmp_path):
    """The hook for per-checkpoint metadata: a blob the exporter stored is found and replaced per output."""
    import h5py

    from pyloader import outputs as templates

    if "darknet" not in sources:
        pytest.skip("no ../shared/cfg")
    (a, _), kw = sources["darknet"]
    model = pyloader.load(a, kw["cfg"], input_size=kw["input_size"])
    probe = b'{"source": "PROBE-PROBE-PROBE", "sha256": "' + b"0" * 64 + b'"}'

    def export(m, path):
        m.save_weights(path)
        with h5py.File(path, "r+") as f:
            f.attrs["pyloader"] = np.frombuffer(probe, np.uint8)

    tpl = templates.learn("weights.h5", model, export, blobs=[probe], workdir=str(tmp_path))
    arrays = {v.path: np.full(v.shape, 0.25, np.float32) for v in model.weights}
    blob = b'{"source": "' + b"dk0.weights".ljust(17) + b'", "sha256": "' + b"f" * 64 + b'"}'
    assert len(blob) == len(probe)
    tpl.write(arrays, str(tmp_path / "out.weights.h5"), blobs=[blob])
    with h5py.File(tmp_path / "out.weights.h5") as f:
        assert f.attrs["pyloader"].tobytes() == blob
    model.load_weights(str(tmp_path / "out.weights.h5"))
    assert all(np.array_equal(v.numpy(), arrays[v.path]) for v in model.weights)
    with pytest.raises(templates.NoTemplate, match="bytes"):
        tpl.write(arrays, str(tmp_path / "bad.weights.h5"), blobs=[blob + b" "])


def test_reads_reuse_a_freed_arena(sources):
    """A read reuses the last freed arena; arrays still alive are never handed out again."""
    from pyloader import _core

    if "darknet" not in sources:
        pytest.skip("no ../shared/cfg")
    (a, b), kw = sources["darknet"]
    _core.arena_pool_clear()  # the pool keeps several freed arenas: only second's, below
    first = pyloader.read(a, kw["cfg"])
    keep = {k: v.copy() for k, v in first.items()}
    second = pyloader.read(b, kw["cfg"])  # first is alive: a fresh arena
    assert all(np.array_equal(first[k], keep[k]) for k in keep)
    del second
    assert _core.arena_pool_bytes() > 0
    third = pyloader.read(b, kw["cfg"])  # reuses second's arena
    assert _core.arena_pool_bytes() == 0
    assert all(np.array_equal(first[k], keep[k]) for k in keep)
    ref = pyloader.read(b, kw["cfg"])
    assert all(np.array_equal(third[k], ref[k]) for k in ref)
    _core.arena_pool_clear()


def test_no_source_hash(sources, tmp_path):
    """`pyloader convert --no-source-hash`: every output's metadata says the SHA-256 was not computed (the second
    checkpoint is still written from the template, its metadata its own), and `inspect` shows it."""
    from pyloader.metadata import NOT_HASHED
    from pyloader.outputs import read_metadata

    if "darknet" not in sources:
        pytest.skip("no ../shared/cfg")
    (a, b), kw = sources["darknet"]
    cmd = [sys.executable, "-m", "pyloader.cli", "convert", a, b, "--cfg", kw["cfg"], "--input-size", "64x96",
           "--format", "weights.h5", "-o", str(tmp_path / "o"), "--no-source-hash", "-v"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "exporter" not in p.stderr, p.stderr[-3000:]  # -v names every output the exporter wrote
    for src in (a, b):
        out = str(tmp_path / "o" / (os.path.splitext(os.path.basename(src))[0] + ".weights.h5"))
        meta = read_metadata(out)
        assert meta["source"] == {"name": os.path.basename(src), "bytes": os.path.getsize(src),
                                  "sha256": NOT_HASHED}
    q = subprocess.run([sys.executable, "-m", "pyloader", "inspect", out], capture_output=True, text=True,
                       timeout=300)
    assert q.returncode == 0 and f"sha256 {NOT_HASHED}" in q.stdout, q.stdout + q.stderr[-2000:]
