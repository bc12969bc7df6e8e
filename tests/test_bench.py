"""`pyloader bench --small --repeat 1` runs end to end and writes its JSON (numbers are never asserted on)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("keras")


def _command(out):
    if importlib.util.find_spec("pyloader.cli") is not None and importlib.util.find_spec("pyloader.__main__"):
        head = [sys.executable, "-m", "pyloader", "bench"]
    else:  # the CLI is not installed in this tree: the module itself
        head = [sys.executable, "-m", "pyloader_bench"]
    return head + ["--small", "--repeat", "1", "--out", str(out)]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0


def test_bench_small(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run(_command(out), capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("Run ")
    assert res["repeat"] == 1
    assert res["machine"]["cores"] >= 1 and res["machine"]["cpu"]
    assert list(res["models"]) == ["small"]
    assert _positive(res["models"]["small"]["param_bytes"])

    w = res["weights"]["small"]
    assert _positive(w["file_bytes"])
    for meth in ("memcpy", "memcpy_fresh", "pyloader_read", "numpy"):
        r = w["methods"][meth]
        assert "error" not in r, r
        assert len(r["warm_s"]) == 1 and _positive(r["warm_median_s"]) and _positive(r["warm_gb_per_s"])
        if res["cold"]:
            assert _positive(r["cold_median_s"])
        assert r["peak_above_baseline_bytes"] >= 0
    opencv = w["methods"]["opencv"]
    if importlib.util.find_spec("cv2") is not None:
        assert _positive(opencv["warm_median_s"]), opencv
    else:
        assert "not available" in opencv["error"]
    assert _positive(w["ratios"]["warm"]["pyloader_over_memcpy"])
    side = w["side_by_side"]["fold_bn=True"]
    assert _positive(side["pyloader_over_memcpy_output"]) and _positive(side["output_bytes"])

    m = res["model"]["small"]
    for meth in ("pyloader_load", "keras_load_weights"):
        assert _positive(m["methods"][meth]["warm_median_s"]), m["methods"][meth]
        assert _positive(m["methods"][meth]["peak_above_baseline_bytes"])
    assert _positive(m["speedup_pyloader_vs_keras"]) and _positive(m["h5_bytes"])

    assert "skipped" in res["pt"]["error"]  # --small leaves the .pt section out
    assert "skipped" in res["ultralytics"]["error"]  # and the Ultralytics one

    assert len(res["pickle"]) == 2  # cheap opcodes and pickle.dumps of ints (no .pt with --small)
    for name, row in res["pickle"].items():
        assert _positive(row["python"]["mb_per_s"]) and _positive(row["native"]["mb_per_s"]), name

    b = res["bulk"]
    assert b["checkpoints"] == 2 and b["model"] == "small"
    sep = b["methods"]["bulk_separate"]
    assert len(sep["per_checkpoint_s"]) == 2 and all(map(_positive, sep["per_checkpoint_s"]))
    assert _positive(sep["output_bytes"]) and _positive(sep["median_save_s"])
    conv = b["methods"]["bulk_convert"]
    if importlib.util.find_spec("pyloader.bulk") is not None:
        assert len(conv["per_checkpoint_s"]) == 2 and _positive(conv["total_s"]), conv
        assert _positive(conv["output_bytes"])
    else:
        assert "not available" in conv["error"]

    formats = b.get("formats") or {}
    assert sorted(formats) == ["keras", "weights.h5"]  # --small: the cheap formats
    for f in formats.values():
        assert "error" not in f, f
        assert len(f["per_checkpoint_s"]) == 2 and _positive(f["after_first_over_floor"]), f

    names = [t["target"] for t in res["targets"]]
    assert len(names) == 11 + 2 * len(formats) and all(t["met"] in (True, False, None) for t in res["targets"])  # 9 + 2 pickle + 2 per bulk format (time, peak)
