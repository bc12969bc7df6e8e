"""The standard TFLite metadata (issue 22 item 3) read back by its own reader: tflite-support's MetadataDisplayer
(the schema's JSON, the packed labels file) and MetadataPopulator's checks (the metadata buffer against the model's
tensors), and GetMinimumMetadataParserVersion, in a fresh process; pyloader's JSON still beside it.

tflite-support 0.4.4 pins protobuf < 4 (which breaks TensorFlow 2.21): tests/install-references.sh installs it
with --no-deps; its extensions need libusb-1.0, which the `libusb-package` wheel ships (loaded here first).
Checkpoints: two yolov3-tiny .weights of random values (the second written from the first's template, so its
metadata is patched in) and one converted by the CLI with --nms --verify (the runtime named in its report: LiteRT
where ai-edge-litert is installed, as CI has it; tests/test_tflite_dynamic.py runs LiteRT itself).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import pyloader
from pyloader.darknet.synthetic import write_weights
from pyloader.outputs import read_metadata
from pyloader.outputs.runtime import tflite_runtime
from test_outputs import run_py

SMALL = (64, 96)
NAMES = [f"thing {i}" for i in range(80)]

READER = """
    import ctypes, json, sys
    try:  # tflite-support's extensions link libusb-1.0: the libusb-package wheel's copy when the system has none
        import libusb_package
        ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
    except ImportError:
        pass
    # tflite_support.metadata itself (`import tflite_support` also loads the Task Library, which needs protobuf < 4)
    from tensorflow_lite_support.metadata.python import metadata
    from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version as version
    report = {}
    for path in sys.argv[1:]:
        shown = metadata.MetadataDisplayer.with_model_file(path)
        buf = shown.get_metadata_buffer()
        with open(path, "rb") as f:
            model = f.read()
        populator = metadata.MetadataPopulator.with_model_buffer(model)
        populator.load_metadata_buffer(buf)  # validates: one subgraph, as many tensor entries as the model's
        report[path] = {"json": json.loads(shown.get_metadata_json()),
                        "packed": shown.get_packed_associated_file_list(),
                        "recorded": sorted(set(populator.get_recorded_associated_file_list())),
                        "labels": shown.get_associated_file_buffer("labels.txt").decode(),
                        "min_version": version.GetMinimumMetadataParserVersion(bytes(buf))}
    print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def tflite_support():
    import importlib.util

    if importlib.util.find_spec("tflite_support") is None:  # imported in the reader's process (libusb first)
        if os.environ.get("CI") == "true":
            pytest.fail("tflite-support must be installed in CI (tests/install-references.sh)")
        pytest.skip("tflite-support is not installed (tests/install-references.sh)")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, cfg_dir):
    d = tmp_path_factory.mktemp("tflite_meta")
    for stem, seed in (("a", 1), ("b_longer_name", 2)):
        write_weights(d / f"{stem}.weights", cfg_dir / "yolov3-tiny.cfg", seed=seed)
        shutil.copy(cfg_dir / "yolov3-tiny.cfg", d / f"{stem}.cfg")
    (d / "things.names").write_text("\n".join(NAMES) + "\n")
    sources = [d / "a.weights", d / "b_longer_name.weights"]
    results = pyloader.convert(sources, d / "heads", format="tflite", input_size=SMALL, names=d / "things.names")
    assert [r.status for r in results] == ["converted"] * 2, results  # the direct writer (templates: test_templates)
    cli = subprocess.run([sys.executable, "-m", "pyloader", "convert", str(sources[0]), "-o", str(d / "nms"),
                          "--format", "tflite", "--input-size", "64,96", "--names", str(d / "things.names"),
                          "--nms", "--verify"], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stdout + cli.stderr[-3000:]
    return d, [r.output for r in results] + [str(d / "nms" / "a.tflite")], cli.stdout


def test_standard_metadata_read_by_tflite_support(tflite_support, converted):
    d, paths, cli_out = converted
    assert f"verify: the tflite outputs ran in {tflite_runtime()}" in cli_out, cli_out  # item 7: the runtime named
    p = run_py(READER, *paths)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    for path in paths:
        got, meta = report[path], read_metadata(path)  # pyloader's JSON, beside the standard metadata
        model = got["json"]
        assert meta["class_names"] == NAMES
        assert model["name"] == meta["architecture"] and model["author"] == f"pyloader {pyloader.__version__}"
        assert model["version"] == "sha256:" + meta["source"]["sha256"][:16]
        assert meta["source"]["name"] in model["description"] and "80 classes" in model["description"]
        assert model["min_parser_version"] == got["min_version"]  # what tflite-support computes for it
        (sub,) = model["subgraph_metadata"]
        (image,) = sub["input_tensor_metadata"]
        assert image["content"] == {"content_properties_type": "ImageProperties",
                                    "content_properties": {"color_space": "RGB"}}
        (unit,) = image["process_units"]
        assert unit == {"options_type": "NormalizationOptions", "options": {"mean": [0.0], "std": [255.0]}}
        assert image["stats"] == {"max": [1.0], "min": [0.0]}
        outputs = sub["output_tensor_metadata"]
        assert [o["name"] for o in outputs] == [o["name"] for o in meta["outputs"]]
        for o, m in zip(outputs, meta["outputs"]):
            assert m["layout"] in o["description"]
        labelled = {o["name"]: [f["type"] for f in o.get("associated_files", []) if f["name"] == "labels.txt"]
                    for o in outputs}
        if meta.get("nms"):
            assert labelled == {"boxes": [], "scores": [], "classes": ["TENSOR_VALUE_LABELS"], "num_detections": []}
        else:
            assert labelled == {"head_0": ["TENSOR_AXIS_LABELS"], "head_1": ["TENSOR_AXIS_LABELS"]}
        assert got["packed"] == ["labels.txt"] and got["recorded"] == ["labels.txt"]
        assert got["labels"].splitlines() == NAMES
    # the second checkpoint was written from the first's template: its own metadata patched in, same length
    a, b = (report[p]["json"] for p in paths[:2])
    assert "b_longer_name.weights" in b["description"] and b["version"] != a["version"]
    assert os.path.getsize(paths[0]) == os.path.getsize(paths[1])
