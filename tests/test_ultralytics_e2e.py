"""End-to-end (NMS-free) Ultralytics heads against the PyPI `ultralytics` package (8.4.190): YOLO26's Detect
(`end2end: True` in its yaml, reg_max 1: no DFL) and YOLOv10's v10Detect (with SCDown, PSA, C2fCIB / CIB /
RepVGGDW in its backbone), each holding a one-to-many branch (cv2, cv3) and a one-to-one branch (one2one_cv2,
one2one_cv3).

In ultralytics 8.4.190 the head's `end2end` is `one2one_cv2 is not None and (_end2end or cv2 is None)`: a freshly
built or trained model has it off (the validator sets `end2end = nms is False`), a checkpoint saved with it on
(`model.end2end = True`, as training with nms=False leaves it) or whose one-to-many branch Detect.fuse() removed has
it on. Each yaml is built by ultralytics, given random well-scaled weights and saved as its trainer saves
(`last.pt`, then `strip_optimizer`'s `best.pt`), once as saved and once with `end2end` set. The reference is the
checkpoint's model in eval mode: end2end off, (y [B, 4 + nc, anchors], preds) as a plain Detect; on,
y = [B, min(max_det, anchors), 6] rows (x1, y1, x2, y2, score, class) after Detect.postprocess's top-k. Raw
outputs are the heads of the branch the model decodes. Tolerance: max |keras - torch| <= 1e-4 * max |torch|; top-k
rows element by element, except rows whose scores tie within that tolerance (either order, and at the k-th place
either may be selected). nms=True: Ultralytics' own `nms=True` export (one-to-many branch + NMS), checked against
its non_max_suppression.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

sys.path.insert(0, os.path.dirname(__file__))
# skips this module without torch / ultralytics (fails in CI), as the detection reference tests
from test_ultralytics_reference import FULL, P5_SIZE as P5, P6_SIZE as P6, RTOL, _flat, _rel  # noqa: E402

import torch  # noqa: E402
import ultralytics  # noqa: E402
import yaml as pyyaml  # noqa: E402
from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint  # noqa: E402
from ultralytics.utils.torch_utils import strip_optimizer  # noqa: E402

CASES = [pytest.param(y, s, False, id=y[:-5]) for y, s in
         (("yolo26n.yaml", P5), ("yolo26n-p2.yaml", P5), ("yolo26n-p6.yaml", P6), ("yolov10n.yaml", P5))] + [
    pytest.param(y, s, True, id=y[:-5], marks=pytest.mark.full) for y, s in
    [(f"yolo26{c}{p}.yaml", P6 if p == "-p6" else P5) for p in ("", "-p2", "-p6") for c in "smlx"]
    + [(f"yolov10{c}.yaml", P5) for c in "smblx"]]
# The end-to-end detection yamls shipped in ultralytics/cfg/models that do not load yet, with the reason.
NOT_SUPPORTED: dict = {}


def _e2e_yamls() -> list:
    """Every yaml the package ships whose head is an end-to-end Detect or a v10Detect (base names, no scale)."""
    root = os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "models")
    found = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            d = pyyaml.safe_load(f)
        head = (d.get("head") or [[None, None, None]])[-1][2]
        if head == "v10Detect" or (head == "Detect" and d.get("end2end")):
            found.append(os.path.basename(path))
    return found


def _base(yaml_name):  # 'yolo26n-p2.yaml' -> 'yolo26-p2.yaml' (the scale letter after the version)
    stem = yaml_name[:-5]
    return stem if stem.startswith("yolov10") else stem.replace("yolo26" + stem[6], "yolo26", 1)


def test_every_end_to_end_yaml_is_covered():
    """A yaml added upstream shows up here: each is tested (CASES) or listed with its reason."""
    covered = {_base(p.values[0]) + ".yaml" for p in CASES} | set(NOT_SUPPORTED)
    shipped = _e2e_yamls()
    assert {"yolo26.yaml", "yolov10n.yaml"} <= set(shipped)
    assert not set(shipped) - covered, sorted(set(shipped) - covered)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """yaml -> {end2end: (last.pt, best.pt)}: as the trainer saves it (end2end off) and with end2end set."""
    d = tmp_path_factory.mktemp("e2e")
    made = {}

    def get(yaml_name):
        if yaml_name not in made:
            stem = yaml_name[:-5]
            last = d / f"{stem}-last.pt"
            write_ultralytics_checkpoint(last, yaml_name, seed=len(made))
            ckpt = torch.load(last, map_location="cpu", weights_only=False)
            ckpt["ema"].end2end = True
            last_e2e = d / f"{stem}-e2e-last.pt"
            torch.save(ckpt, last_e2e)
            made[yaml_name] = {}
            for e2e, path in ((False, last), (True, last_e2e)):
                best = d / path.name.replace("-last", "-best")
                strip_optimizer(str(path), str(best))
                made[yaml_name][e2e] = (str(path), str(best))
        return made[yaml_name]

    return get


def _model(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return (ckpt.get("ema") or ckpt["model"]).float().eval()


def _reference(model, x):
    """(y, raw) of the model in eval mode on NHWC x; raw: the decoded branch's [B, anchors, 4 * reg_max + nc]."""
    with torch.no_grad():
        y, preds = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    if "one2one" in preds:
        preds = preds["one2one" if model.end2end else "one2many"]
    return y.numpy(), torch.cat([preds["boxes"], preds["scores"]], 1).permute(0, 2, 1).numpy()


def _rows_rel(got, want):
    """The relative error of top-k rows [B, k, 6], element by element, except that rows whose scores tie within
    RTOL may come in either order and, tying with the last row's score, either may have been selected."""
    got = np.asarray(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    box_tol = RTOL * np.abs(want[..., :4]).max()
    worst = 0.0
    for g, w in zip(got, want):
        assert np.abs(g[:, 4] - w[:, 4]).max() <= RTOL, "scores differ"
        free = list(range(len(w)))
        for i, row in enumerate(g):
            ties = sorted((j for j in free if abs(w[j, 4] - row[4]) <= RTOL), key=lambda j: abs(j - i))
            j = next((j for j in ties if w[j, 5] == row[5] and np.abs(w[j, :4] - row[:4]).max() <= box_tol), None)
            if j is None:
                assert abs(row[4] - w[-1, 4]) <= RTOL, f"row {i} {row} has no counterpart in the reference"
                continue
            free.remove(j)
            worst = max(worst, float(np.abs(w[j, :4] - row[:4]).max() / np.abs(want[..., :4]).max()))
    return worst


@pytest.mark.parametrize("end2end", [False, True], ids=["as-trained", "end2end"])
@pytest.mark.parametrize("yaml_name,size,big", CASES)
def test_matches_ultralytics(checkpoints, yaml_name, size, big, end2end):
    if (big or (not end2end and yaml_name in ("yolo26n-p2.yaml", "yolo26n-p6.yaml"))) and not FULL:
        pytest.skip("every scale, and P2 / P6 as trained (a plain Detect with reg_max 1): set PYLOADER_FULL=1")
    last, best = checkpoints(yaml_name)[end2end]
    ref = _model(best)
    assert ref.end2end is end2end
    x = np.random.default_rng(1).random((2, *size, 3), dtype=np.float32)
    want_y, want_raw = _reference(ref, x)
    compare = _rows_rel if end2end else _rel
    errors = {}
    for fold in (True, False):
        m = pyloader.load(best, fold_bn=fold, decode=True, input_size=size)
        errors[f"decoded fold={fold}"] = compare(m(x), want_y)
        heads = keras.Model(m.input, m.get_layer("decode").input)  # the raw heads, before the decoding
        errors[f"raw fold={fold}"] = _rel(_flat(heads(x)), want_raw)
    errors["decoded last.pt"] = compare(pyloader.load(last, decode=True, input_size=size)(x), _reference(_model(last), x)[0])
    print(yaml_name, "end2end" if end2end else "as trained", {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(v <= RTOL for v in errors.values()), errors


def _resave(src, dst, change):
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    change(ckpt["model"].model[-1])
    torch.save(ckpt, dst)
    return str(dst)


@pytest.mark.parametrize("max_det,agnostic", [(20, False), (20, True)], ids=["k20", "k20-agnostic"])
def test_top_k_options(checkpoints, tmp_path, max_det, agnostic):
    """max_det and agnostic_nms as the trainer / predictor set them on the head (set_head_attr), saved with it."""
    _, best = checkpoints("yolo26n.yaml")[True]

    def change(head):
        head.max_det, head.agnostic_nms = max_det, agnostic

    path = _resave(best, tmp_path / "opts.pt", change)
    x = np.random.default_rng(2).random((2, *P5, 3), dtype=np.float32)
    want, _ = _reference(_model(path), x)
    assert want.shape == (2, min(max_det, 252), 6)
    m = pyloader.load(path, decode=True, input_size=P5)
    assert _rows_rel(m(x), want) <= RTOL
    assert m.metadata["end2end"] == {"branch": "one2one", "max_det": max_det, "agnostic": agnostic}


def test_fused_one_to_one_head(checkpoints, tmp_path):
    """Detect.fuse() on an end2end head drops the one-to-many branch: the model still decodes the one-to-one one, and
    nms=True is refused (its output is already the top-k selection, as Ultralytics' exporter keeps it)."""
    _, best = checkpoints("yolo26n.yaml")[True]
    path = _resave(best, tmp_path / "fused.pt", lambda head: head.fuse())
    ref = _model(path)
    assert ref.model[-1].cv2 is None and ref.end2end
    x = np.random.default_rng(3).random((1, *P5, 3), dtype=np.float32)
    want_y, want_raw = _reference(ref, x)
    assert _rel(_flat(pyloader.load(path, input_size=P5)(x)), want_raw) <= RTOL
    assert _rows_rel(pyloader.load(path, decode=True, input_size=P5)(x), want_y) <= RTOL
    keys = pyloader.read(path)
    assert "model_23_one2one_cv2_0_2/bias" in keys and not any(k.startswith("model_23_cv2_") for k in keys)
    with pytest.raises(FormatError, match=r"fused\.pt: module 'model\.23': nms needs the one-to-many branch"):
        pyloader.load(path, nms=True, input_size=P5)


@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_is_ultralytics_nms_export(checkpoints, tmp_path, agnostic):
    """nms=True on an end2end checkpoint: the one-to-many branch through NMS, as Ultralytics' nms=True export
    (end2end off), checked against ultralytics' non_max_suppression and torchvision."""
    import test_nms
    from ultralytics.utils.nms import non_max_suppression

    _, best = checkpoints("yolo26n.yaml")[True]

    def change(head):  # lower the class logits: 80 classes put every anchor over the threshold
        with torch.no_grad():
            for seq in head.cv3:
                seq[-1].bias -= 2.5

    path = _resave(best, tmp_path / "nms.pt", change)
    ref = _model(path)
    ref.end2end = False  # what the exporter does for nms=True
    images = test_nms._images(3, P5, seed=4)
    with torch.no_grad():
        pred = ref(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))[0]

    def tv_inputs(p):
        p = p.T
        conf, cls = p[:, 4:].max(1)
        return p[:, :4], conf, cls

    test_nms._check_family(path, pred, P5, images, agnostic,
                           lambda p: non_max_suppression(p.clone(), test_nms.SCORE, test_nms.IOU, agnostic=agnostic,
                                                         max_det=300), tv_inputs, "ultralytics yolo26n end2end")


def test_metadata_and_read(checkpoints):
    """The raw heads are the decoded branch's (read returns that branch's arrays); the metadata names it."""
    for end2end, branch, other in ((True, "one2one_cv2", "cv2"), (False, "cv2", "one2one_cv2")):
        _, best = checkpoints("yolo26n.yaml")[end2end]
        keys = pyloader.read(best)
        assert keys[f"model_23_{branch}_0_2/kernel"].shape == (1, 1, 16, 4)  # reg_max 1: four distances
        assert not any(k.startswith(f"model_23_{other}_") for k in keys)
        raw = pyloader.load(best, input_size=P5).metadata
        assert raw["end2end"]["branch"] == ("one2one" if end2end else "one2many")
        assert [o["shape"] for o in raw["outputs"]] == [[None, 12, 16, 84], [None, 6, 8, 84], [None, 3, 4, 84]]
        assert "reg_max 1, no DFL" in raw["outputs"][0]["layout"]
    dec = pyloader.load(best, decode=True, input_size=P5).metadata
    assert dec["end2end"] == {"branch": "one2many", "max_det": 300, "agnostic": False}
    assert dec["outputs"][0]["layout"].startswith("[batch, 4 + classes, anchors]")
    _, best = checkpoints("yolo26n.yaml")[True]
    dec = pyloader.load(best, decode=True, input_size=P5).metadata
    assert dec["outputs"][0]["shape"] == [None, 252, 6] and "top-k of the one-to-one branch" in dec["outputs"][0]["layout"]


@pytest.mark.parametrize("fmt", ["keras", "tflite"])
def test_convert_verify_and_inspect(checkpoints, tmp_path, fmt):
    """`convert --decode --verify` of an end2end checkpoint: the .keras file reloaded in a fresh process
    (EndToEndTopK registered), the TFLite file (TOPK_V2) in its interpreter, each compared with the model (rows of
    near-equal score paired: pyloader.verify.compare_rows); `inspect` names the head."""
    from pyloader.inspect_checkpoint import format_report, inspect

    _, best = checkpoints("yolo26n.yaml")[True]
    if fmt == "keras":
        report = format_report(inspect(best))
        assert "end-to-end, one-to-one branch + top-k" in report and "no DFL" in report and "C2PSA 1" in report
        v10 = format_report(inspect(checkpoints("yolov10n.yaml")[False][1]))
        assert "SCDown 3, Upsample 2, SPPF 1, PSA 1, C2fCIB 1, Detect 1" in v10
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", best, "-o", str(tmp_path), "--decode", "--format",
                        fmt, "--input-size", "96x128", "--verify"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0 and "verified: max rel diff" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]


def test_int8_refuses_selected_rows(checkpoints, tmp_path):
    """int8 of the top-k rows (--decode of an end2end checkpoint) is refused before calibration: the class-index
    column does not survive quantization; nothing is written."""
    from PIL import Image

    _, best = checkpoints("yolo26n.yaml")[True]
    cal = tmp_path / "cal"
    cal.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(cal / "a.png")
    (res,) = pyloader.convert([best], tmp_path / "out", format="tflite", decode=True, int8=True, calibration=cal,
                              input_size=(96, 128))
    assert res.status == "failed" and res.output is None, res
    assert "int8 cannot hold the output 'detections' (rows xyxy_score_class" in res.reason, res.reason
    assert not list((tmp_path / "out").glob("*.tflite"))


def test_compare_rows():
    """--verify's comparison of detection rows: near-tied rows in the other order pair up; a moved box does not."""
    from pyloader.verify import compare_rows

    want = np.array([[[0, 0, 10, 10, 0.9, 1], [5, 5, 20, 20, 0.8, 2], [1, 1, 9, 9, 0.8, 2]]], np.float32)
    assert compare_rows(want, want[:, [0, 2, 1]]) == 0.0
    moved = want.copy()
    moved[0, 1, :4] += 2.0
    assert compare_rows(want, moved) == pytest.approx(0.1)
    assert compare_rows(want, want[:, :2]) == float("inf")


@pytest.mark.parametrize("change,message", [
    (lambda h: setattr(h, "_end2end", "yes"), r"module 'model\.23': _end2end 'yes', agnostic_nms False: expected bools"),
    (lambda h: setattr(h, "max_det", 0), r"module 'model\.23': max_det 0: expected a positive int"),
    (lambda h: h.one2one_cv2.__delitem__(2), r"module 'model\.23\.one2one_cv2': 2 levels, expected nl=3"),
    (lambda h: setattr(h, "dfl", torch.nn.Conv2d(1, 1, 1)), r"module 'model\.23\.dfl': expected an Identity \(reg_max 1\)"),
    (lambda h: setattr(h, "xyxy", True), r"module 'model\.23': xyxy True: only xywh decoding \(False\) is supported"),
], ids=["end2end-flag", "max_det", "one2one-levels", "dfl", "xyxy"])
def test_bad_head(checkpoints, tmp_path, change, message):
    """A head that disagrees with what an end-to-end Detect holds: a FormatError naming the module, nothing built."""
    _, best = checkpoints("yolo26n.yaml")[True]
    path = _resave(best, tmp_path / "bad.pt", change)
    with pytest.raises(FormatError, match=message):
        pyloader.load(path, input_size=P5)


def test_bad_yolov10_block(checkpoints, tmp_path):
    """C2fCIB's large-kernel flag checked against its CIBs (RepVGGDW third or not)."""
    _, best = checkpoints("yolov10n.yaml")[False]
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    cib = ckpt["model"].model[22].m[0]
    cib.cv1[2] = cib.cv1[2].conv1  # a 3x3 depthwise Conv in place of the RepVGGDW
    torch.save(ckpt, tmp_path / "v10.pt")
    with pytest.raises(FormatError, match=r"module 'model\.22\.m\.0': shortcut, large kernel: the yaml row gives "
                                          r"\(True, True\), the checkpoint has \(True, False\)"):
        pyloader.read(tmp_path / "v10.pt")
