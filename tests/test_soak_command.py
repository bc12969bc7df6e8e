"""The soak command (issue 19 item 6) at a small scale: 20 conversions through a Dask LocalCluster of two worker
processes; the full run (`python -m pyloader_bench.soak`, 500 conversions) is run by hand."""

import json
import os
import subprocess
import sys

from conftest import require


def test_soak_command_runs_and_reports(tmp_path):
    require("distributed")
    p = subprocess.run([sys.executable, "-m", "pyloader_bench.soak", "--count", "20", "--work", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert report["outputs"] == 20 and report["failed"] == 0 and report["temporary_entries_left"] == 0, report
    assert report["problems"] == [] and len(report["workers"]) == 2, report
    for w in report["workers"].values():
        assert not [t for t in w["opened_since_warm_up"] if t not in ("socket", "pipe")], w
        assert w["rss_growth"] <= 0.10, w
    out = tmp_path / "w" / "out"
    assert sorted(os.listdir(out)) == [f"m{i:04d}.weights.h5" for i in range(20)]
