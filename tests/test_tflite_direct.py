"""The direct TFLite writer (pyloader.outputs.tflite_direct) against TensorFlow's converter and the independent
references: Darknet yolov3-tiny, yolov4-tiny, yolov4 (synthetic weights; OpenCV's Darknet importer) and Ultralytics
yolov8n / yolo11n, yolov8n-pose / -seg and YOLOv5 yolov5n (synthetic checkpoints; the ultralytics / yolov5 PyTorch
modules), raw heads and decoded, float32 and float16
weights (tflite_fp16), batch norm folded by pyloader or left in the model (fold_bn=False: the writer folds it as the
converter does), at small inputs. yolov4 and the repeated layouts run with PYLOADER_FULL=1.

Each case is converted twice (tflite_writer direct / converter; the converter's files are made once per module);
a fresh process loads both files in LiteRT as a user would and reports their operators, input and output shapes
and outputs. The operator lists are compared as multisets: the converter orders independent branches its own way
(its topological order, not Keras'), the operators themselves are the same. A model with a layer the direct writer
does not cover goes to the converter, and the CLI's report line and the file's metadata say so; under Keras'
PyTorch backend (no converter) a covered model is written directly and the converter is refused before any work.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyloader
from conftest import FULL
from pyloader.darknet.synthetic import tiny_cfg, write_weights
from pyloader.outputs import read_metadata
from test_darknet_opencv import DARKNET_EPS, OPENCV_EPS, opencv_cfg, run_opencv
from test_outputs import rel_err, run_py

DARKNET = (64, 96)
ULTRA = (96, 128)
# id: (checkpoint, pyloader.convert options, full sweep only)
CASES = {
    "yolov3-tiny-raw": ("yolov3-tiny", {}, False),
    "yolov3-tiny-raw-bn": ("yolov3-tiny", {"fold_bn": False}, False),
    "yolov4-tiny-decoded": ("yolov4-tiny", {"decode": True}, False),
    "yolo11n-decoded-fp16": ("yolo11n", {"decode": True, "tflite_fp16": True}, False),
    "yolov8n-pose-decoded": ("yolov8n-pose", {"decode": True}, False),
    "yolov5n-decoded": ("yolov5n", {"decode": True}, False),
    "yolov8n-seg-decoded-fp16": ("yolov8n-seg", {"decode": True, "tflite_fp16": True}, True),
    "yolov3-tiny-decoded": ("yolov3-tiny", {"decode": True}, True),
    "yolov4-decoded": ("yolov4", {"decode": True}, True),
    "yolov8n-raw": ("yolov8n", {}, True),
    "yolov8n-decoded": ("yolov8n", {"decode": True}, True),
    "yolov8n-raw-bn-fp16": ("yolov8n", {"fold_bn": False, "tflite_fp16": True}, True),
    "yolo11n-decoded": ("yolo11n", {"decode": True}, True),
    "yolo11n-raw-bn": ("yolo11n", {"fold_bn": False}, True),
}

RUN_LITERT = """
    import json, sys
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    report = {}
    for path in sys.argv[2:]:
        it = Interpreter(model_path=path)
        runner = it.get_signature_runner()
        (name, detail), = runner.get_input_details().items()
        x = np.load(sys.argv[1] + ("/x_ul.npy" if detail["shape"][1] == 96 else "/x_dn.npy"))
        outs = runner(**{name: x})
        np.savez(path + ".npz", **outs)
        report[path] = {"ops": [o["op_name"] for o in it._get_ops_details()],
                        "input": [list(map(int, detail["shape_signature"]))],
                        "outputs": {k: list(map(int, v["shape"])) for k, v in runner.get_output_details().items()}}
    print(json.dumps(report))
"""


def _ultralytics(name: str) -> bool:
    return name.startswith(("yolov8", "yolo1"))


def _torch(name: str) -> bool:
    return _ultralytics(name) or name.startswith("yolov5")


_TASK_MODELS = {"seg": "SegmentationModel", "pose": "PoseModel"}  # yolov8n-seg, yolov8n-pose


def _task(name: str) -> str | None:
    return next((t for t in _TASK_MODELS if _ultralytics(name) and name.endswith("-" + t)), None)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, cfg_dir):
    """The checkpoints (written on first use) and the inputs: get(name) -> path."""
    pytest.importorskip("ai_edge_litert")
    d = tmp_path_factory.mktemp("direct")
    rng = np.random.default_rng(0)
    np.save(d / "x_dn.npy", rng.uniform(0, 1, (1, *DARKNET, 3)).astype(np.float32))
    np.save(d / "x_ul.npy", rng.uniform(0, 1, (1, *ULTRA, 3)).astype(np.float32))
    made = {}

    def get(name):
        if name not in made:
            from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint, write_yolov5_checkpoint

            if name.startswith("yolov5"):
                write_yolov5_checkpoint(d / f"{name}.pt", f"{name}.yaml")
                made[name] = d / f"{name}.pt"
            elif _task(name):
                write_ultralytics_checkpoint(d / f"{name}.pt", f"{name}.yaml", task_model=_TASK_MODELS[_task(name)])
                made[name] = d / f"{name}.pt"
            elif _ultralytics(name):
                write_ultralytics_checkpoint(d / f"{name}.last.pt", f"{name}.yaml", stripped=d / f"{name}.pt")
                made[name] = d / f"{name}.pt"
            else:
                write_weights(d / f"{name}.weights", cfg_dir / f"{name}.cfg", seed=7)
                write_weights(d / f"{name}.opencv.weights", cfg_dir / f"{name}.cfg", seed=7,
                              variance_offset=DARKNET_EPS - OPENCV_EPS)
                shutil.copy(cfg_dir / f"{name}.cfg", d / f"{name}.cfg")
                made[name] = d / f"{name}.weights"
        return made[name]

    get.dir = d
    return get


@pytest.fixture(scope="module")
def converted(sources):
    """case id -> (direct file, converter file, LiteRT report of both); each case converted once per module."""
    done = {}

    def get(case):
        if case not in done:
            name, options, _ = CASES[case]
            size = ULTRA if _torch(name) else DARKNET
            out = []
            for writer in ("direct", "converter"):  # templates off: one checkpoint per architecture anyway
                (r,) = pyloader.convert([sources(name)], sources.dir / case / writer, format="tflite",
                                        input_size=size, templates=False, tflite_writer=writer, **options)
                assert r.status == "converted", r
                out.append(r.output)
            p = run_py(RUN_LITERT, sources.dir, *out)
            assert p.returncode == 0, p.stderr[-3000:]
            done[case] = (*out, json.loads(p.stdout.strip().splitlines()[-1]))
        return done[case]

    return get


def _reference(d, name, decode):
    """The independent reference's outputs: OpenCV's raw heads or decoded boxes (x, y, w, h, objectness), the
    ultralytics model's decoded output / raw heads, or the decoded outputs {name: array} of a task model (segment:
    with the prototypes, NHWC) or a YOLOv5 model (its PyTorch module)."""
    if _task(name) or name.startswith("yolov5"):
        import torch

        ckpt = torch.load(d / f"{name}.pt", map_location="cpu", weights_only=False)
        model = (ckpt.get("ema") or ckpt["model"]).float().eval()
        with torch.no_grad():
            y = model(torch.from_numpy(np.load(d / "x_ul.npy")).permute(0, 3, 1, 2).contiguous())[0]
        if name.endswith("-seg"):
            return {"detections": y[0].numpy(), "prototypes": y[1].permute(0, 2, 3, 1).numpy()}
        return {"detections": y.numpy()}
    if _ultralytics(name):
        from test_ultralytics_reference import _reference as ultralytics

        y, raw = ultralytics(d / f"{name}.pt", np.load(d / "x_ul.npy"))
        return y if decode else raw
    from pyloader.darknet.cfg import parse_network

    network = parse_network(str(d / f"{name}.cfg"), DARKNET)
    raw, decoded = run_opencv(opencv_cfg(str(d / f"{name}.cfg"), d, DARKNET), str(d / f"{name}.opencv.weights"),
                              np.load(d / "x_dn.npy"), network.heads, network)
    return np.concatenate(decoded)[None, :, :5] if decode else raw


@pytest.mark.parametrize("case", list(CASES))
def test_direct_matches_converter_and_reference(sources, converted, case):
    name, options, full = CASES[case]
    if full and not FULL:
        pytest.skip("the full sweep: set PYLOADER_FULL=1")
    decode, fp16 = options.get("decode", False), options.get("tflite_fp16", False)
    direct, conv, report = converted(case)
    a, b = report[direct], report[conv]
    assert collections.Counter(a["ops"]) == collections.Counter(b["ops"]), (a["ops"], b["ops"])
    assert ("DEQUANTIZE" in a["ops"]) == fp16
    assert a["input"] == b["input"] and a["input"][0][0] == -1  # the batch dynamic in both
    assert list(a["outputs"].items()) == list(b["outputs"].items())  # names, order and shapes
    assert read_metadata(direct)["tflite_writer"] == "direct"
    assert read_metadata(conv)["tflite_writer"] == "converter: forced"
    got, want = np.load(direct + ".npz"), np.load(conv + ".npz")
    errs = {k: rel_err(got[k], want[k]) for k in want}
    assert max(errs.values()) <= 1e-5, errs
    ref = _reference(sources.dir, name, decode)
    if isinstance(ref, dict):
        ref_err = max(rel_err(got[k], ref[k]) for k in ref)
    elif _ultralytics(name):
        mine = got["detections"] if decode else np.concatenate(
            [got[k].reshape(1, -1, got[k].shape[-1]) for k in got], axis=1)
        ref_err = rel_err(mine, ref)
    else:  # OpenCV: its own epsilon and kernels, compared as test_darknet_opencv does (1e-4 of the range)
        mine = [got["detections"][..., :5]] if decode else [got[k] for k in got]
        ref_err = max(rel_err(m, r) for m, r in zip(mine, ref if not decode else [ref]))
    assert ref_err <= (1e-2 if fp16 else 1e-5 if _torch(name) else 1e-4), ref_err  # float16 weights: 1e-2
    print(case, len(a["ops"]), "ops; vs converter", errs, "vs reference", ref_err)


def test_template_of_direct_files(sources, tmp_path):
    """Two checkpoints of one architecture: the direct writer writes the template, the second file is the template
    with its weights put in (a 258 MB yolov4 checkpoint: 0.15 s instead of the writer's 1.1 s), byte for byte what
    the direct writer gives it without templates."""
    src = sources("yolov3-tiny")
    other = tmp_path / "b.weights"
    shutil.copy(src, other)
    shutil.copy(sources.dir / "yolov3-tiny.cfg", tmp_path / "b.cfg")
    got = pyloader.convert([src, other], tmp_path / "o", format="tflite", input_size=DARKNET)
    assert [r.status for r in got] == ["converted"] * 2, got
    assert [r.note for r in got] == ["", ""], [r.note for r in got]  # a note says why the exporter wrote one
    assert all(read_metadata(r.output)["tflite_writer"] == "direct" for r in got)
    plain = pyloader.convert([src, other], tmp_path / "p", format="tflite", input_size=DARKNET, templates=False)
    assert [r.note for r in plain] == ["exporter (templates off)"] * 2, [r.note for r in plain]
    for a, b in zip(got, plain):
        assert open(a.output, "rb").read() == open(b.output, "rb").read(), a.output
    with pytest.raises(ValueError, match="tflite_writer must be one of auto, direct, converter"):
        pyloader.convert([src], tmp_path / "x", format="tflite", tflite_writer="fast")
    with pytest.raises(ValueError, match="tflite_writer 'direct' needs format tflite"):
        pyloader.convert([src], tmp_path / "x", format="keras", tflite_writer="direct")


def test_uncovered_layer_goes_to_the_converter(tmp_path):
    """[reorg3d] (pyloader's SpaceToDepth, no emitter): the converter writes the file, the CLI's report line and
    the metadata say why; forcing the direct writer is an error naming the layer."""
    cfg = tiny_cfg().replace("[convolutional]\nsize=1", "[reorg3d]\nstride=2\n\n[convolutional]\nsize=1", 1)
    (tmp_path / "r.cfg").write_text(cfg)
    write_weights(tmp_path / "r.weights", tmp_path / "r.cfg")
    cmd = [sys.executable, "-m", "pyloader.cli", "convert", str(tmp_path / "r.weights"), "-o", str(tmp_path / "o"),
           "--format", "tflite"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    why = "converter: layer reorg3d_2 (SpaceToDepth) has no direct emitter"
    assert f"tflite writer: {tmp_path / 'o' / 'r.tflite'}: {why}" in p.stdout, p.stdout
    assert read_metadata(tmp_path / "o" / "r.tflite")["tflite_writer"] == why
    p = subprocess.run(cmd + ["--tflite-writer", "direct", "--overwrite"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 1 and "does not write this model: layer reorg3d_2 (SpaceToDepth)" in p.stderr, p.stderr


def test_torch_backend(tmp_path):
    """Keras' PyTorch backend has no converter (no SavedModel export): a covered model is written directly (the
    same bytes as on this process's backend), an uncovered one fails before any export saying why, and a forced
    converter is refused before any work."""
    (tmp_path / "t.cfg").write_text(tiny_cfg())
    write_weights(tmp_path / "t.weights", tmp_path / "t.cfg")
    cfg = tiny_cfg().replace("[convolutional]\nsize=1", "[reorg3d]\nstride=2\n\n[convolutional]\nsize=1", 1)
    (tmp_path / "r.cfg").write_text(cfg)
    write_weights(tmp_path / "r.weights", tmp_path / "r.cfg")
    env = dict(os.environ, KERAS_BACKEND="torch")
    cmd = [sys.executable, "-m", "pyloader.cli", "convert", "-o", str(tmp_path / "o"), "--format", "tflite", "-q"]
    p = subprocess.run(cmd + [str(tmp_path / "t.weights"), "--tflite-writer", "converter"], capture_output=True,
                       text=True, env=env, timeout=600)
    assert p.returncode == 2 and "needs Keras' TensorFlow or JAX backend" in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()
    p = subprocess.run(cmd + [str(tmp_path / "t.weights"), str(tmp_path / "r.weights")], capture_output=True,
                       text=True, env=env, timeout=600)
    assert p.returncode == 1, p.stderr[-3000:]
    assert (f"failed: {tmp_path / 'r.weights'}: ValueError: format 'tflite' needs Keras' TensorFlow or JAX backend for this "
            "model (the direct writer does not write it: layer reorg3d_2 (SpaceToDepth) has no direct emitter") \
        in p.stderr, p.stderr
    assert read_metadata(tmp_path / "o" / "t.tflite")["tflite_writer"] == "direct"
    assert not (tmp_path / "o" / "r.tflite").exists()
    (r,) = pyloader.convert([tmp_path / "t.weights"], tmp_path / "here", format="tflite")
    assert (tmp_path / "o" / "t.tflite").read_bytes() == open(r.output, "rb").read()


def test_schema_numbers_are_tensorflows():
    """Every operator code, options union type and tensor type of tflite_schema is TensorFlow's."""
    pytest.importorskip("tensorflow")
    from tensorflow.lite.python import schema_py_generated as s

    from pyloader.outputs import tflite_schema as mine

    assert {k: getattr(s.BuiltinOperator, k) for k in mine.OPS} == mine.OPS
    assert {k: getattr(s.BuiltinOptions, k) for k in mine.OPTIONS} == {k: v[0] for k, v in mine.OPTIONS.items()}
    assert (s.TensorType.FLOAT32, s.TensorType.FLOAT16, s.TensorType.INT32) == (mine.FLOAT32, mine.FLOAT16, mine.INT32)
    assert (s.Padding.SAME, s.Padding.VALID) == (mine.PADDING["same"], mine.PADDING["valid"])
