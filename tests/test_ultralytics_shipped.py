"""Every model yaml the installed `ultralytics` package ships (66 in 8.4.190), whatever its folder or name, is
read by pyloader: its head is one whose task model pyloader reads and every module of its rows is one the reader
reads. The per-scope tests (test_ultralytics_reference / _modules / _e2e / _tasks / _tasks26 / _classify /
_rtdetr / _world) compare each with Ultralytics' own model; this one makes a yaml added upstream, with a new head
or module or in a new folder, a failure instead of silence. With PYLOADER_FULL=1 every shipped yaml is also built
by ultralytics, saved as its trainer saves and loaded by pyloader (decoded), its outputs matching the metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import FULL, require

ultralytics = require("ultralytics")
yaml = require("yaml")

from pyloader.ultralytics.weights import MODEL_CLASSES, YAML_MODULES  # noqa: E402

# the last row's module -> the ultralytics.nn.tasks class that builds the yaml
HEAD_MODEL = {"Detect": "DetectionModel", "v10Detect": "DetectionModel", "Segment": "SegmentationModel",
              "Segment26": "SegmentationModel", "Pose": "PoseModel", "Pose26": "PoseModel", "OBB": "OBBModel",
              "OBB26": "OBBModel", "Classify": "ClassificationModel", "SemanticSegment": "SemanticSegmentationModel",
              "Depth": "DepthModel", "RTDETRDecoder": "RTDETRDetectionModel", "WorldDetect": "WorldModel",
              "YOLOEDetect": "YOLOEModel", "YOLOESegment": "YOLOESegModel", "YOLOESegment26": "YOLOESegModel"}
EMBEDDINGS = {"WorldModel", "YOLOEModel", "YOLOESegModel"}  # checkpoints hold their class embeddings (README)


def _shipped() -> dict:
    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    out = {}
    for p in sorted(root.rglob("*.yaml")):
        d = yaml.safe_load(p.read_text())
        out[str(p.relative_to(root))] = d
    return out


SHIPPED = _shipped()


def _rows(d) -> list:
    return list(d.get("backbone") or []) + list(d.get("head") or [])


def test_every_shipped_yaml_is_read():
    assert len(SHIPPED) >= 66, sorted(SHIPPED)  # 8.4.190 ships 66 model yamls
    problems = {}
    for name, d in SHIPPED.items():
        head = _rows(d)[-1][2]
        if HEAD_MODEL.get(head) not in MODEL_CLASSES:
            problems[name] = f"head {head}: no task model pyloader reads"
        unread = sorted({r[2] for r in _rows(d)} - YAML_MODULES)
        if unread:
            problems[name] = f"modules pyloader does not read: {unread}"
    assert not problems, problems


def _cases():
    return [pytest.param(name, id=name.replace("/", "-")[:-5], marks=pytest.mark.full) for name in SHIPPED]


@pytest.mark.parametrize("name", _cases())
def test_every_shipped_yaml_loads(name, tmp_path):
    if not FULL:
        pytest.skip("PYLOADER_FULL=1 builds and loads every shipped yaml")
    import pyloader
    from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

    d = SHIPPED[name]
    task_model = HEAD_MODEL[_rows(d)[-1][2]]
    path, source = tmp_path / "best.pt", os.path.basename(name)
    text = (Path(ultralytics.__file__).parent / "cfg" / "models" / name).read_text()
    if ", DEFAULT," in text:  # a TorchVision row asking for pretrained weights: a download; built without them
        source = tmp_path / source
        source.write_text(text.replace(", DEFAULT,", ", null,"))
    write_ultralytics_checkpoint(path, str(source), seed=1, task_model=task_model,
                                 classes=7 if task_model in EMBEDDINGS else None)
    size = (224, 224) if task_model == "ClassificationModel" else (64, 64)
    model = pyloader.load(path, decode=True, input_size=size)
    outs = model(np.random.default_rng(0).uniform(0, 1, (1, *size, 3)).astype(np.float32))
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    assert [o["name"] for o in model.metadata["outputs"]] == list(model.output_names)
    assert all(np.isfinite(np.asarray(o)).all() for o in outs), name
