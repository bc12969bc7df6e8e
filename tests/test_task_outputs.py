"""Every head type of issue 20 through every output format, as a user runs it (issue 20 item 6).

Heads, one architecture each, built by the `ultralytics` package from its own yaml with random well-scaled weights
and saved as its trainer saves: YOLO26 detect with the end-to-end top-k (end2end on), YOLOv8 Segment, YOLO11 Pose,
YOLOv8 OBB, YOLOv8 Classify, YOLO26 Segment26 / Pose26 / OBB26 (end2end on), YOLO26 semantic segmentation and depth.
Two checkpoints per head (seeds 3 and 4: one architecture) go through each `python -m pyloader.cli convert` run
(`--decode`, 64x96), so the second of each is written from the first's template (pyloader.outputs.template; `-v`
names any exporter fallback). Each output is then run in a fresh process importing what a user would: `.keras` with
keras and pyloader (its layers), `.weights.h5` loaded into the model pyloader builds (its weights zeroed first; the
DFL bins are the decode layer's constants, not weights: a model built from another checkpoint keeps its own), SavedModel with TensorFlow alone, TFLite in LiteRT (tf.lite where absent); outputs by name against `pyloader.load`'s
(1e-5 of the output's max; TFLite float32 1e-4, float16 3e-2), detection rows paired first (rows of near-equal score
may come in either order). int8: `--verify` (pyloader's own tolerance) and the kept rows against the float model.
Metadata through `pyloader inspect --json` (task, class names, kpt_shape, strides, output names, shapes and
layouts). Templates: the second checkpoint's file equals a `--no-templates` conversion of it (byte for byte;
.keras: every member but the save date). The pyloader model itself: every head's decoded output against the
ultralytics model in eval mode (1e-4 of the reference's max), so no check here passes on a wrong model.

CI: the heads of CI_HEADS (end-to-end detect, Segment, Pose, OBB26, depth) through .keras, .weights.h5, SavedModel
(its first checkpoint) and the templates of .keras / .weights.h5; TFLite for the heads in TFLITE_CI (a TFLite
conversion costs 5-30 s per head on 2 cores); PYLOADER_FULL=1: every head through every format and TFLite
precision, the .keras files on the JAX and PyTorch backends, the SavedModel and TFLite templates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import FULL, require  # noqa: E402

torch = require("torch")
require("ultralytics")

import pyloader  # noqa: E402
from pyloader.outputs import read_metadata  # noqa: E402
from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint  # noqa: E402

SIZE = (64, 96)
# stem -> (yaml, ultralytics.nn.tasks class, end2end set as YOLO26's trainer leaves it)
HEADS = {"y26det": ("yolo26n.yaml", "DetectionModel", True),
         "v8seg": ("yolov8n-seg.yaml", "SegmentationModel", False),
         "v11pose": ("yolo11n-pose.yaml", "PoseModel", False),
         "v8obb": ("yolov8n-obb.yaml", "OBBModel", False),
         "v8cls": ("yolov8n-cls.yaml", "ClassificationModel", False),
         "y26seg": ("yolo26n-seg.yaml", "SegmentationModel", True),
         "y26pose": ("yolo26n-pose.yaml", "PoseModel", True),
         "y26obb": ("yolo26n-obb.yaml", "OBBModel", True),
         "y26sem": ("yolo26n-sem.yaml", "SemanticSegmentationModel", False),
         "y26depth": ("yolo26n-depth.yaml", "DepthModel", False)}
TASK = {"y26det": "detect", "v8seg": "segment", "v11pose": "pose", "v8obb": "obb", "v8cls": "classify",
        "y26seg": "segment", "y26pose": "pose", "y26obb": "obb", "y26sem": "semantic", "y26depth": "depth"}
CI_HEADS = ("y26det", "v8seg", "v11pose", "y26obb", "y26depth")  # one of each kind of head and output; all in FULL
ACTIVE = HEADS if FULL else {h: HEADS[h] for h in CI_HEADS}
TFLITE_CI = {"fp32": ("y26det", "v8seg"), "fp16": ("y26obb",), "int8": ("v11pose",)}
TFLITE_FLAGS = {"fp32": ["--verify"], "fp16": ["--tflite-fp16", "--verify"], "int8": ["--int8", "--verify"]}
TOL = {"keras": 1e-5, "weights.h5": 1e-5, "savedmodel": 1e-5, "fp32": 1e-4, "fp16": 3e-2}
SEEDS = {"a": 3, "b": 4}
# the one exporter fallback (`convert -v` says why): a Segment head's prototype upsampling (ConvTranspose2d) kernel,
# Keras [h, w, out, in], is TRANSPOSE_CONV's [out, h, w, in] in TFLite, a transform the template does not know yet
TFLITE_NO_TEMPLATE = "proto_upsample/kernel']): the exporter changes them"


def _stems():
    return [f"{h}-{s}" for h in ACTIVE for s in SEEDS]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """(folder with src/ (the checkpoints), cal/ (calibration images), x.npy; {stem: {output name: array}} of
    pyloader.load(decode=True))."""
    from PIL import Image

    d = tmp_path_factory.mktemp("task_outputs")
    (d / "src").mkdir()
    for head, (yaml_name, cls, e2e) in ACTIVE.items():
        for s, seed in SEEDS.items():
            path = d / "src" / f"{head}-{s}.pt"
            write_ultralytics_checkpoint(path, yaml_name, seed=seed, task_model=cls)
            if e2e:  # the one-to-one branch and the top-k, as trained with end2end (Ultralytics' YOLO26 default)
                ckpt = torch.load(path, map_location="cpu", weights_only=False)
                ckpt["ema"].end2end = True
                torch.save(ckpt, path)
    (d / "cal").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # smooth random images of different sizes (as test_int8_verify.py)
        small = (rng.random((5 + i, 7, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((120 + 13 * i, 90 + 7 * i), Image.BILINEAR).save(d / "cal" / f"img{i}.png")
    x = rng.random((2, *SIZE, 3), dtype=np.float32)
    np.save(d / "x.npy", x)
    refs, metas = {}, {}
    for stem in _stems():
        m = pyloader.load(d / "src" / f"{stem}.pt", decode=True, input_size=SIZE)
        refs[stem] = {n: np.asarray(o) for n, o in zip(m.output_names, m(x) if len(m.output_names) > 1 else [m(x)])}
        metas[stem] = m.metadata
    return d, refs, metas


def _cli(*args, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "pyloader.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def converted(case):
    """(format, precision) -> output folder: one `convert` run per format over every head (TFLite: the heads of
    TFLITE_CI, every head with PYLOADER_FULL=1), both checkpoints of each, decoded, with -v."""
    d = case[0]
    made = {}

    def get(fmt, precision="fp32"):
        key = (fmt, precision)
        if key not in made:
            out = d / ("out-" + fmt + ("" if fmt != "tflite" else "-" + precision))
            if fmt == "tflite":
                heads = ACTIVE if FULL else TFLITE_CI[precision]
                src = [d / "src" / f"{h}-{s}.pt" for h in heads for s in SEEDS]
                extra = TFLITE_FLAGS[precision] + (["--calibration", d / "cal"] if precision == "int8" else [])
            elif fmt == "savedmodel" and not FULL:  # loading a SavedModel takes seconds: the first checkpoints
                src, extra = [d / "src" / f"{h}-a.pt" for h in ACTIVE], []
            else:
                src, extra = [d / "src"], []
            p = _cli("convert", *src, "-o", out, "--format", fmt, "--decode", "--input-size", "x".join(map(str, SIZE)),
                     "-v", *extra)
            assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
            made[key] = out, p
        return made[key]

    return get


def _output(out, stem, fmt):
    return out / (f"{stem}_saved_model" if fmt == "savedmodel" else f"{stem}.{fmt}")


RUN = """
    import json, sys
    import numpy as np
    fmt, d, *items = sys.argv[1:]
    x = np.load(d + "/x.npy")
    if fmt == "keras":
        import keras, pyloader  # pyloader registers its layers
        for path, dst in zip(items[::2], items[1::2]):
            m = keras.saving.load_model(path)
            outs = m(x)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            np.savez(dst, **{n: keras.ops.convert_to_numpy(o) for n, o in zip(m.output_names, outs)})
    elif fmt == "weights.h5":  # the model pyloader builds, its weights zeroed, takes the file's
        import pyloader
        for src, path, dst in zip(items[::3], items[1::3], items[2::3]):
            m = pyloader.load(src, decode=True, input_size=x.shape[1:3])
            m.set_weights([np.zeros_like(w) for w in m.get_weights()])
            m.load_weights(path)
            outs = m(x)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            np.savez(dst, **{n: np.asarray(o) for n, o in zip(m.output_names, outs)})
    elif fmt == "savedmodel":
        import tensorflow as tf
        for path, dst in zip(items[::2], items[1::2]):
            loaded = tf.saved_model.load(path)
            outs = loaded.signatures["serving_default"](tf.constant(x))
            np.savez(dst, **{k: v.numpy() for k, v in outs.items()})
    else:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tensorflow.lite import Interpreter
        for path, dst in zip(items[::2], items[1::2]):
            runner = Interpreter(model_path=path).get_signature_runner()
            (name, _), = runner.get_input_details().items()
            outs = [runner(**{name: x[i:i + 1]}) for i in range(len(x))]
            np.savez(dst, **{k: np.concatenate([o[k] for o in outs]) for k in outs[0]})
    print("ran", len(items))
"""


def _run_fresh(fmt, args, env=None):
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN), fmt, *map(str, args)], capture_output=True,
                       text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    assert p.returncode == 0, p.stderr[-3000:]


def _paired(got, want, score_tol):
    """got's detection rows [B, k, C] (x1, y1, x2, y2, score, class, ...) reordered to want's: each want row takes
    the nearest free got row of its class whose score is within score_tol (rows of near-equal score may come in
    either order); a row without one keeps got's row at its place (the comparison then fails)."""
    got, out = np.asarray(got), np.array(got, copy=True)
    for b in range(len(want)):
        free = np.ones(len(got[b]), bool)
        for i, row in enumerate(want[b]):
            cand = np.flatnonzero(free & (got[b][:, 5] == row[5]) & (np.abs(got[b][:, 4] - row[4]) <= score_tol))
            if cand.size:
                j = cand[int(np.argmin(np.abs(got[b][cand] - row).max(1)))]
                free[j] = False
                out[b, i] = got[b][j]
    return out


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


def _errors(got: dict, want: dict, rows: set, tol: float) -> dict:
    assert set(got) == set(want), (sorted(got), sorted(want))
    return {n: _rel(_paired(got[n], w, tol * max(float(np.abs(w[..., 4]).max()), 1e-12)) if n in rows else got[n], w)
            for n, w in want.items()}


def _rows(meta) -> set:
    return {o["name"] for o in meta["outputs"] if o.get("rows")}


def _check_format(case, converted, tmp_path, fmt, precision="fp32", env=None, heads=ACTIVE):
    d, refs, _ = case
    out, p = converted(fmt, precision)
    stems = [f"{h}-{s}" for h in heads for s in SEEDS if FULL or fmt != "savedmodel" or s == "a"]
    # both checkpoints of every head from the template (no exporter note), or the note says why
    notes = [line for line in p.stderr.splitlines() if line.startswith("pyloader convert:") and "exporter" in line]
    fallbacks = [n for n in notes if "int8" not in n and "(tflite)" not in n]
    args = []
    for stem in stems:
        if fmt == "weights.h5":
            args.append(d / "src" / f"{stem}.pt")
        args += [_output(out, stem, fmt), tmp_path / f"{stem}.npz"]
    _run_fresh(fmt, [d, *args], env)
    errors = {}
    for stem in stems:
        meta = read_metadata(_output(out, stem, fmt))
        got = dict(np.load(tmp_path / f"{stem}.npz"))
        if fmt == "tflite" and precision == "int8":  # --verify judged it (pyloader's int8 tolerance)
            assert set(got) == set(refs[stem])
            continue
        tol = TOL[fmt if fmt != "tflite" else precision]
        errors[stem] = e = _errors(got, refs[stem], _rows(meta), tol)
        assert max(e.values()) <= tol, (fmt, precision, stem, e)
    if fmt == "tflite":
        assert p.stdout.count("(verified: max rel diff") == len(stems), p.stdout[-2000:]
    print(fmt, precision, {s: f"{max(e.values()):.1e}" for s, e in errors.items()}, "exporter notes:", fallbacks)
    return errors, fallbacks


def _inspect(path) -> dict:
    """`pyloader inspect --json` of an output: its metadata."""
    p = subprocess.run([sys.executable, "-m", "pyloader.cli", "inspect", str(path), "--json"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)["metadata"]


def _reference(path, x):
    """The ultralytics model of the checkpoint in eval mode on NHWC x: its first output (detections or rows, class
    probabilities, logits, depth) and the prototypes of a Segment head, as numpy; and the model."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ref = ckpt["ema"].float().eval()
    with torch.no_grad():
        y = ref(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    y = y[0] if isinstance(y, tuple) and not isinstance(y[0], torch.Tensor) else y  # (eval output, raw preds)
    y = y if isinstance(y, (tuple, list)) else (y,)
    return [t.numpy() for t in y if isinstance(t, torch.Tensor)], ref


@pytest.mark.parametrize("head", ACTIVE)
def test_pyloader_matches_ultralytics(case, head):
    """The decoded model every file here is compared with, against the ultralytics model (1e-4 of its max)."""
    d, refs, metas = case
    x = np.load(d / "x.npy")
    want, model = _reference(d / "src" / f"{head}-a.pt", x)
    got, meta = refs[f"{head}-a"], metas[f"{head}-a"]
    errors = {}
    for (name, g), w in zip(got.items(), want):
        if g.ndim == 4:  # NHWC maps (prototypes, logits, depth) vs NCHW
            g = np.transpose(g, (0, 3, 1, 2))
        if name in _rows(meta):
            g = _paired(g, w, 1e-4 * float(np.abs(w[..., 4]).max()))
        errors[name] = _rel(g, w)
    assert len(errors) == min(len(got), len(want)) >= 1
    assert max(errors.values()) <= 1e-4, errors
    if HEADS[head][2]:
        assert model.model[-1].end2end and _rows(meta) == {"detections"}
    print(head, {k: f"{v:.1e}" for k, v in errors.items()})


@pytest.mark.parametrize("fmt", ["keras", "weights.h5", "savedmodel"])
def test_format_outputs(case, converted, tmp_path, fmt):
    """Every head's two checkpoints (the second from the template) in a fresh process vs pyloader.load."""
    _, fallbacks = _check_format(case, converted, tmp_path, fmt)
    assert not fallbacks, fallbacks


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tflite(case, converted, tmp_path, precision):
    """TFLite float32 / float16 weights, --verify'd by the CLI, run in LiteRT in a fresh process."""
    heads = ACTIVE if FULL else TFLITE_CI[precision]
    errors, fallbacks = _check_format(case, converted, tmp_path, "tflite", precision, heads=heads)
    assert all(TFLITE_NO_TEMPLATE in n for n in fallbacks), fallbacks


def test_tflite_int8_verified(case, converted, tmp_path):
    """int8 (calibration folder): --verify passes (pyloader's int8 tolerance); the file runs in a fresh process."""
    heads = ACTIVE if FULL else TFLITE_CI["int8"]
    _check_format(case, converted, tmp_path, "tflite", "int8", heads=heads)


@pytest.mark.full
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_other_backends(case, converted, tmp_path, backend):
    _full()
    pytest.importorskip(backend)
    _check_format(case, converted, tmp_path, "keras", env={"KERAS_BACKEND": backend})


def _keras_members(path) -> dict:
    """A .keras file's members: config.json without Keras' per-process object ids, metadata.json without the save
    date."""
    def ids(obj):
        if isinstance(obj, dict):
            return {k: ids(v) for k, v in obj.items() if k != "shared_object_id"}
        return [ids(v) for v in obj] if isinstance(obj, list) else obj

    with zipfile.ZipFile(path) as z:
        out = {i.filename: z.read(i) for i in z.infolist()}
    meta = json.loads(out.pop("metadata.json"))
    meta.pop("date_saved")
    config = ids(json.loads(out.pop("config.json")))
    return {**out, "metadata.json": meta, "config.json": config}


TEMPLATE_FORMATS = ["keras", "weights.h5"] + [pytest.param(f, marks=pytest.mark.full) for f in ("savedmodel", "tflite")]


def _full():
    if not FULL:
        pytest.skip("PYLOADER_FULL=1")


@pytest.mark.parametrize("fmt", TEMPLATE_FORMATS)
def test_template_is_the_exporters(case, converted, tmp_path, fmt):
    """The second checkpoint of each head, written from the first's template in the shared run, equals its
    conversion with --no-templates (.keras: every member, the save date aside; SavedModel: the variables)."""
    if fmt in ("savedmodel", "tflite"):
        _full()
    d = case[0]
    out, _ = converted(fmt)
    heads = ACTIVE if FULL or fmt != "tflite" else TFLITE_CI["fp32"]
    p = _cli("convert", *[d / "src" / f"{h}-b.pt" for h in heads], "-o", tmp_path, "--format", fmt, "--decode",
             "--input-size", "x".join(map(str, SIZE)), "--no-templates", "-q")
    assert p.returncode == 0, p.stderr[-3000:]
    for h in heads:
        mine, theirs = _output(out, f"{h}-b", fmt), _output(tmp_path, f"{h}-b", fmt)
        if fmt == "keras":
            assert _keras_members(mine) == _keras_members(theirs), h
        elif fmt == "savedmodel":
            for f in ("variables/variables.data-00000-of-00001", "variables/variables.index"):
                assert (mine / f).read_bytes() == (theirs / f).read_bytes(), (h, f)
        else:
            assert mine.read_bytes() == theirs.read_bytes(), h
        assert read_metadata(mine) == read_metadata(theirs)


def test_template_model_name(converted):
    """The second checkpoint's file, written from the first's template, names nothing of the first checkpoint (the
    model is named after its family; the metadata's source names the checkpoint)."""
    out, _ = converted("keras")
    with zipfile.ZipFile(_output(out, "y26det-b", "keras")) as z:
        config = z.read("config.json").decode()
    assert json.loads(config)["config"]["name"] == "ultralytics" and "y26det-a" not in config


def test_metadata_and_inspect(case, converted):
    """`pyloader inspect --json` of each head's .keras file: task, class names, kpt_shape, strides, outputs (names,
    shapes, layouts, rows) as the ultralytics model and pyloader's model have them; every other format's file
    carries the same metadata."""
    d, refs, _ = case
    out, _ = converted("keras")
    for head in ACTIVE:
        stem = f"{head}-a"
        meta = _inspect(_output(out, stem, "keras"))
        model = torch.load(d / "src" / f"{stem}.pt", map_location="cpu", weights_only=False)["ema"]
        last = model.model[-1]
        assert meta["task"] == TASK[head] and meta["family"] == "ultralytics", (head, meta["task"])
        assert meta["class_names"] == [model.names[i] for i in range(len(model.names))]
        assert meta["input"]["size"] == list(SIZE) and meta["decode"] is True
        assert meta["source"]["name"] == f"{stem}.pt"
        assert [o["name"] for o in meta["outputs"]] == list(refs[stem])
        for o in meta["outputs"]:
            assert o["shape"] == [None, *refs[stem][o["name"]].shape[1:]] and o["layout"], (head, o)
        if TASK[head] == "pose":
            assert meta["kpt_shape"] == list(last.kpt_shape)
        if hasattr(last, "stride") and TASK[head] in ("detect", "segment", "pose", "obb"):
            assert [s[0] for s in meta["strides"]] == [int(s) for s in last.stride]
        if HEADS[head][2]:
            assert meta["end2end"]["branch"] == "one2one"
            box = "xywh" if TASK[head] == "obb" else "xyxy"  # the rotated box's centre, size (and the angle column)
            assert [o["rows"] for o in meta["outputs"] if o.get("rows")] == [f"{box}_score_class"]
        for fmt in ("weights.h5", "savedmodel"):
            assert read_metadata(_output(converted(fmt)[0], stem, fmt)) == read_metadata(_output(out, stem, "keras"))
