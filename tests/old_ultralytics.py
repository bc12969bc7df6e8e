"""Checkpoints written by an earlier ultralytics release, with that release's own code: run with the release alone on
PYTHONPATH (torch and numpy of the current environment), e.g.
`PYTHONPATH=/cache/ul8.1.0 python tests/old_ultralytics.py OUT yolov8n.yaml:DetectionModel yolov8n-seg.yaml:...`.

Each model is built by the release's `ultralytics.nn.tasks` class from its own yaml, given the well-scaled random
weights of pyloader_bench.synthetic_pt, and saved by the release's own `BaseTrainer.save_model` (on a trainer object
holding what that method reads: the model, its ModelEMA, the optimizer of the release's `build_optimizer` after one
step, the release's default arguments, metrics and results.csv) as OUT/<yaml>/last.pt (and best.pt), then the
release's own `strip_optimizer` turns best.pt into the final checkpoint, as its trainer's final_eval does. The
reference is best.pt loaded back (torch.load) and run in float32 eval mode by the release on a fixed input (96x128; 128x192 for the P6 forms), saved as
OUT/<yaml>/ref.npz: the input (NHWC) and the outputs, normalised across releases: 'det' (decoded [B, C, anchors]),
'boxes' / 'scores' (the raw head levels flattened), 'extra' (raw mask coefficients / keypoints / angle), 'proto'
(Segment's prototypes, NCHW), 'topk' (v10Detect's eval output in 8.2-8.3, whose class attribute end2end is True: the
one-to-one branch's top-k rows; 'det' and the raw parts are then its one-to-many branch); for Classify 'logits' (the
Linear's output) and 'probabilities' (the model's output where it is the softmax (8.0.x returns the logits), else the
softmax of the logits).
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

torch.load = functools.partial(torch.load, weights_only=False)  # the releases' own torch.load calls predate torch 2.6
if importlib.util.find_spec("IPython") is None:  # 8.0.x's hub module imports IPython.display for notebooks only
    sys.modules["IPython"] = SimpleNamespace(display=SimpleNamespace())

import ultralytics  # noqa: E402  (the release on PYTHONPATH)
from ultralytics.nn import tasks  # noqa: E402

from pyloader_bench.synthetic_pt import randomize_ultralytics  # noqa: E402

SIZE, P6_SIZE = (96, 128), (128, 192)  # small, not square; P6 models (stride 64) take the second


def _size(yaml_name: str) -> tuple:
    """The input size for `yaml_name`: P6_SIZE for the P6 forms (yolov8n-p6.yaml, 8.0.x's yolov8x6.yaml)."""
    return P6_SIZE if "-p6" in yaml_name or yaml_name.removesuffix(".yaml").endswith("6") else SIZE


def _first(*names):
    """The first of `module:attribute` names that this release has (its modules moved between releases)."""
    for name in names:
        mod, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"ultralytics {ultralytics.__version__} has none of {names}")


BaseTrainer = _first("ultralytics.engine.trainer:BaseTrainer", "ultralytics.yolo.engine.trainer:BaseTrainer")
ModelEMA = _first("ultralytics.utils.torch_utils:ModelEMA", "ultralytics.yolo.utils.torch_utils:ModelEMA")
strip_optimizer = _first("ultralytics.utils.torch_utils:strip_optimizer",
                         "ultralytics.yolo.utils.torch_utils:strip_optimizer")


def _default_args():
    """The release's default training arguments, as its trainer holds them (an IterableSimpleNamespace; 8.0.0-8.0.6:
    an OmegaConf DictConfig)."""
    try:
        return _first("ultralytics.cfg:get_cfg", "ultralytics.yolo.cfg:get_cfg")()
    except ImportError:
        from ultralytics.yolo.configs import get_config
        from ultralytics.yolo.utils import DEFAULT_CONFIG
        return get_config(DEFAULT_CONFIG)


def _trainer(model, args, out: Path, seed: int):
    """A BaseTrainer of this release holding what its save_model reads (nothing of __init__ runs: no dataset)."""
    t = object.__new__(BaseTrainer)
    t.args, t.model, t.epoch, t.best_fitness, t.fitness, t.save_period = args, model, 4, 0.25, 0.25, -1
    t.wdir, t.last, t.best, t.csv = out, out / "last.pt", out / "best.pt", out / "results.csv"
    t.metrics = {"metrics/mAP50(B)": 0.1, "val/box_loss": 1.5}
    t.csv.write_text("                  epoch,     metrics/mAP50(B)\n                      1,          0.1\n")
    t.data = {"nc": model.yaml["nc"]}
    t.optimizer = t.build_optimizer(model, name="AdamW", lr=0.001)
    g = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    t.optimizer.step()
    t.optimizer.zero_grad()
    randomize_ultralytics(model, seed)  # the step moved the weights; keep them well-scaled
    t.ema = ModelEMA(model)
    t.ema.updates = 120
    return t


def _reference(model, task, x):
    """The model's own float32 eval outputs on x (NHWC), normalised across releases (see the module docstring)."""
    head = model.model[-1]
    logits = []
    if task == "classify":
        head.linear.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    if task == "classify":
        probs = out[0] if isinstance(out, (tuple, list)) else out
        soft = logits[0].softmax(1)
        return {"logits": logits[0], "probabilities": probs if torch.allclose(probs, soft, atol=1e-6) else soft}
    det, raw = out
    topk = None
    if isinstance(raw, dict):  # v10Detect (8.2-8.3: end2end, a class attribute): the one-to-one branch's top-k
        topk, raw = det, raw["one2many"]  # and the one-to-many branch, decoded by the release's own _inference
        with torch.no_grad():
            det = head._inference(raw)  # boxes x1, y1, x2, y2 (decode_bboxes' xywh=not end2end): as x, y, w, h
        det = torch.cat([(det[:, :2] + det[:, 2:4]) / 2, det[:, 2:4] - det[:, :2], det[:, 4:]], 1)
    levels = raw if task == "detect" else raw[0]
    flat = torch.cat([t.flatten(2) for t in levels], 2)
    rm = 4 * head.reg_max
    ref = {"det": det, "boxes": flat[:, :rm], "scores": flat[:, rm:]}
    if topk is not None:
        ref["topk"] = topk
    if task != "detect":
        ref["extra"] = raw[1]
    if task == "segment":
        ref["proto"] = raw[2]
    return ref


TASKS = {"DetectionModel": "detect", "SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb",
         "ClassificationModel": "classify"}


def generate(out: Path, yaml_name: str, model_class: str, seed: int = 5):
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(tasks, model_class)(cfg=yaml_name, verbose=False)
    randomize_ultralytics(model, seed)
    args = _default_args()
    model.args = args  # as the trainer's set_model_attributes
    model.names = {k: f"class_{k}" for k in range(model.yaml["nc"])}
    trainer = _trainer(model, args, out, seed)
    trainer.save_model()
    strip_optimizer(str(trainer.best))  # the trainer's final_eval
    ref_model = torch.load(str(trainer.best), map_location="cpu")["model"].float().eval()
    x = np.random.default_rng(seed).uniform(0, 1, (2, *_size(yaml_name), 3)).astype(np.float32)
    ref = {k: v.numpy() for k, v in _reference(ref_model, TASKS[model_class], x).items()}
    np.savez(out / "ref.npz", x=x, version=ultralytics.__version__, task=TASKS[model_class], **ref)
    return out


def main(argv):
    root = Path(argv[0])
    for spec in argv[1:]:
        yaml_name, _, model_class = spec.partition(":")
        print(generate(root / yaml_name.removesuffix(".yaml"), yaml_name, model_class), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
