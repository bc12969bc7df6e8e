"""YOLO-World (WorldModel) and YOLOE (YOLOEModel, YOLOESegModel) checkpoints whose class embeddings the model holds
(issue 20 item 4), against the PyPI `ultralytics` package's own PyTorch models.

Each yaml is built by ultralytics itself at scale n with random well-scaled weights; its classes are set as
`set_classes` sets them, without the text encoder (7 random unit embeddings: WorldModel.txt_feats, YOLOE's pe; the
head's nc and the names follow), then saved as the trainer saves `last.pt` and `strip_optimizer`'s `best.pt`
(pyloader_bench.synthetic_pt.write_ultralytics_checkpoint(classes=7)). The reference in eval mode returns (y, preds):
decode=True is y output by output (Segment: detections with mask coefficients, prototypes), the raw heads are
preds' 'boxes' and 'scores'. Per part (boxes, class probabilities, mask coefficients, prototypes), max |keras -
torch| <= 1e-4 * max |torch|; measured below 2e-6.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

from conftest import FULL, close, require

torch = require("torch")
ultralytics = require("ultralytics")
pyyaml = require("yaml")
ul_tasks = require("ultralytics.nn.tasks")

from pyloader_bench.synthetic_pt import randomize_ultralytics, write_ultralytics_checkpoint

RTOL = 1e-4
SIZE = (64, 96)
CLASSES = 7
MODEL_CLASS = {"WorldDetect": "WorldModel", "YOLOEDetect": "YOLOEModel", "YOLOESegment": "YOLOESegModel",
               "YOLOESegment26": "YOLOESegModel"}  # the yaml's head -> the ultralytics.nn.tasks class
SUPPORTED = ["yolov8n-worldv2.yaml", "yolov8n-world.yaml", "yoloe-v8n.yaml", "yoloe-11n-seg.yaml", "yoloe-26n-seg.yaml"]
FULL_ONLY = ["yoloe-11n.yaml", "yoloe-26n.yaml", "yoloe-v8n-seg.yaml"]  # their heads' code is tested above
CASES = [pytest.param(y, id=y[:-5]) for y in SUPPORTED] + [
    pytest.param(y, id=y[:-5], marks=pytest.mark.full) for y in FULL_ONLY + [
        y.replace("n.", f"{c}.").replace("n-", f"{c}-") for y in SUPPORTED + FULL_ONLY for c in "smlx"]]
# shipped yamls with these heads that do not load, and why
NOT_SUPPORTED: dict = {}


@functools.lru_cache(maxsize=None)
def _shipped() -> dict:
    """Every yaml the installed package ships whose head is one of MODEL_CLASS: name -> head."""
    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    found = {}
    for p in sorted(root.rglob("*.yaml")):
        head = (pyyaml.safe_load(p.read_text()).get("head") or [[None] * 3])[-1][2]
        if head in MODEL_CLASS:
            found[p.name] = head
    return found


def _base(name: str) -> str:  # 'yoloe-11s-seg.yaml' -> 'yoloe-11-seg.yaml', 'yolov8n-world.yaml' -> 'yolov8-world.yaml'
    return re.sub(r"^(yolov8|yoloe-v8|yoloe-\d+)[nsmlx]", r"\1", name)


def test_scope_is_enumerated():
    """A World / YOLOE yaml added upstream shows up as a failure: tested here, or listed with its reason."""
    assert set(_shipped()) == {_base(y) for y in SUPPORTED + FULL_ONLY} | set(NOT_SUPPORTED)


def _rel(got, want, what):
    return close(got, want, what, RTOL)


def _reference(path, x):
    ref = ul_tasks.load_checkpoint(str(path))[0].float().eval()
    with torch.no_grad():
        y, preds = ref(torch.from_numpy(x).permute(0, 3, 1, 2))
    return ref, y, preds


def _check_decoded(out, y, nc, what):
    """Boxes, class probabilities (and mask coefficients, prototypes NCHW there) per part."""
    seg = isinstance(y, (list, tuple))
    det, out = (y[0] if seg else y).numpy(), out if isinstance(out, (list, tuple)) else [out]
    errs = [_rel(out[0][:, :4], det[:, :4], what + " boxes"), _rel(out[0][:, 4:4 + nc], det[:, 4:4 + nc], what + " scores")]
    if seg:
        errs += [_rel(out[0][:, 4 + nc:], det[:, 4 + nc:], what + " mask coefficients"),
                 _rel(np.transpose(out[1], (0, 3, 1, 2)), y[1].numpy(), what + " prototypes")]
    return max(errs)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(yaml_name):
        if yaml_name not in made:
            d = tmp_path_factory.mktemp(yaml_name[:-5])
            write_ultralytics_checkpoint(d / "last.pt", yaml_name, seed=5, stripped=d / "best.pt", classes=CLASSES,
                                         task_model=MODEL_CLASS[_shipped()[_base(yaml_name)]])
            made[yaml_name] = (d / "last.pt", d / "best.pt")
        return made[yaml_name]

    return get


@pytest.mark.parametrize("yaml_name", CASES)
def test_matches_ultralytics(checkpoints, yaml_name, request):
    """Raw from the trainer's last.pt (fp16 ema, fold_bn on), decoded from best.pt (fold_bn off; the same weights);
    task, names (the embeddings' rows) and strides in the metadata."""
    if request.node.get_closest_marker("full") and not FULL:
        pytest.skip("set PYLOADER_FULL=1")
    last, best = checkpoints(yaml_name)
    x = np.random.default_rng(1).random((1, *SIZE, 3), dtype=np.float32)
    ref, y, preds = _reference(best, x)
    raw = pyloader.load(last, input_size=SIZE)
    heads = [np.asarray(t) for t in raw(x)[:3]]
    flat = np.concatenate([t.reshape(1, -1, t.shape[-1]) for t in heads], 1).transpose(0, 2, 1)
    preds = preds.get("one2many", preds)
    rm = preds["boxes"].shape[1]
    errs = {"raw boxes": _rel(flat[:, :rm], preds["boxes"].numpy(), "raw boxes"),
            "raw scores": _rel(flat[:, rm:], preds["scores"].numpy(), "raw scores"),
            "decoded fold_bn=False": _check_decoded(pyloader.load(best, decode=True, fold_bn=False, input_size=SIZE)(x),
                                                    y, CLASSES, "decoded")}
    print(yaml_name, {k: f"{v:.1e}" for k, v in errs.items()})
    meta = raw.metadata
    assert meta["task"] == ("segment" if "-seg" in yaml_name else "detect")
    assert meta["class_names"] == [f"class_{i}" for i in range(CLASSES)] == list(ref.names.values())
    assert meta["strides"] == [[8, 8], [16, 16], [32, 32]]


def test_nms_and_keras_file(checkpoints, tmp_path):
    """YOLO-World (its neck's custom layers) with nms=True: the task NMS of the family's output layout, its kept boxes
    Ultralytics' own non_max_suppression of the reference; the .keras file reloads in a fresh process."""
    from ultralytics.utils.nms import non_max_suppression

    _, best = checkpoints("yolov8n-world.yaml")
    x = np.random.default_rng(2).random((1, *SIZE, 3), dtype=np.float32)
    m = pyloader.load(best, nms={"iou": 0.45, "score": 0.1}, input_size=SIZE)
    out = dict(zip(m.output_names, m(x)))
    _, y, _ = _reference(best, x)
    want = non_max_suppression(y, 0.1, 0.45, nc=CLASSES)[0].numpy()
    n = int(np.asarray(out["num_detections"])[0])
    got = np.concatenate([np.asarray(out["boxes"])[0, :n], np.asarray(out["scores"])[0, :n, None],
                          np.asarray(out["classes"])[0, :n, None]], 1)
    assert n == len(want) >= 3, (n, len(want))
    g, w = (r[np.lexsort((r[:, 1], r[:, 0], r[:, 5]))] for r in (got, want))
    np.testing.assert_array_equal(g[:, 5], w[:, 5])
    assert np.abs(g[:, :5] - w[:, :5]).max() <= RTOL * np.abs(w[:, :4]).max()

    d = pyloader.load(best, decode=True, input_size=SIZE)
    d.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", np.asarray(d(x)))
    script = ("import sys, numpy as np, keras, pyloader; m = keras.saving.load_model(sys.argv[1]); "
              "x = np.load(sys.argv[2]); w = np.load(sys.argv[3]); "
              "print(float(np.abs(np.asarray(m(x)) - w).max() / np.abs(w).max()))")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.keras"), str(tmp_path / "x.npy"),
                        str(tmp_path / "want.npy")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert float(r.stdout.strip().splitlines()[-1]) <= 1e-6


def _save(model, path):
    torch.save({"model": copy.deepcopy(model).half(), "ema": None, "train_args": {}}, path)


def test_fused_yoloe_and_refusals(tmp_path):
    """A YOLOE head with its embeddings fused into cv3 (fuse(pe)) matches; a YOLOE model without stored embeddings
    (its classes need the text encoder at run time) and a prompt-free one (LRPCHead) are FormatErrors naming why."""
    model = randomize_ultralytics(ul_tasks.YOLOEModel("yoloe-v8n.yaml", verbose=False)).eval()
    _save(model, tmp_path / "no_pe.pt")
    with pytest.raises(FormatError, match=r"no_pe\.pt: YOLOEModel without stored class embeddings \('pe'\): its "
                                          r"classes need the text encoder at run time"):
        pyloader.load(tmp_path / "no_pe.pt", input_size=SIZE)

    names = [f"c{i}" for i in range(5)]
    pe = torch.nn.functional.normalize(torch.randn(1, 5, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    model.set_classes(names, pe)
    fused = copy.deepcopy(model)
    fused.model[-1].fuse(pe)
    _save(fused, tmp_path / "fused.pt")
    x = np.random.default_rng(3).random((1, *SIZE, 3), dtype=np.float32)
    _, y, _ = _reference(tmp_path / "fused.pt", x)
    for fold in (True, False):
        _check_decoded(pyloader.load(tmp_path / "fused.pt", decode=True, fold_bn=fold, input_size=SIZE)(x), y, 5, "fused")

    model.args = {"imgsz": 64}  # set_vocab's warm-up size
    head = model.model[-1]
    model.set_vocab(torch.nn.ModuleList(torch.nn.Conv2d(cv[-1].in_channels, 5, 1) for cv in head.cv3), names)
    _save(model, tmp_path / "pf.pt")
    with pytest.raises(FormatError, match=r"pf\.pt: module 'model\.22': a prompt-free YOLOE head \(LRPCHead\) is not "
                                          r"supported: its proposal filter keeps a data-dependent set of anchors"):
        pyloader.load(tmp_path / "pf.pt", input_size=SIZE)


@pytest.mark.full
def test_yoloe26_one_to_one_branch(checkpoints, tmp_path):
    """YOLOE-26 with its one-to-one branch selected (_end2end, as the predictor sets it): Detect.postprocess's top-k."""
    if not FULL:
        pytest.skip("set PYLOADER_FULL=1")
    _, best = checkpoints("yoloe-26n-seg.yaml")
    ckpt = torch.load(best, weights_only=False)
    ckpt["model"].model[-1]._end2end = True
    torch.save(ckpt, tmp_path / "e2e.pt")
    x = np.random.default_rng(4).random((2, *SIZE, 3), dtype=np.float32)
    _, y, _ = _reference(tmp_path / "e2e.pt", x)
    out = pyloader.load(tmp_path / "e2e.pt", decode=True, input_size=SIZE)(x)
    _rel(out[0], y[0].numpy(), "top-k rows")
    _rel(np.transpose(out[1], (0, 3, 1, 2)), y[1].numpy(), "prototypes")
