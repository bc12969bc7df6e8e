"""What `pyloader convert` prints, run as a command (issue 24 item 6): no TensorFlow C++ log lines, a failure's reason
once on stderr (and in the summary table on stdout), the framework import timed apart, and a skipped source never
counted in the rate (it converts nothing)."""

import os
import re
import shutil
import subprocess
import sys

from pyloader.darknet.synthetic import write_weights


def test_convert_output_is_quiet_and_says_each_thing_once(tmp_path, cfg_dir):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    write_weights(src / "a.weights", cfg_dir / "yolov3-tiny.cfg", seed=1)
    shutil.copy(cfg_dir / "yolov3-tiny.cfg", src / "a.cfg")
    whole = (src / "a.weights").read_bytes()
    (src / "cut.weights").write_bytes(whole[: len(whole) // 2])
    shutil.copy(cfg_dir / "yolov3-tiny.cfg", src / "cut.cfg")
    write_weights(src / "done.weights", cfg_dir / "yolov3-tiny.cfg", seed=2)
    shutil.copy(cfg_dir / "yolov3-tiny.cfg", src / "done.cfg")
    (out / "done.keras").write_bytes(b"already there")  # skipped: its 35 MB must not count as converted

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", str(src), "-o", str(out)], capture_output=True,
                       text=True, timeout=900, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuInit", r.stderr, re.M), r.stderr
    reason = next(line for line in r.stderr.splitlines() if "cut.weights" in line and "failed:" in line)
    reason = reason.split("cut.weights: ", 1)[1]
    assert "bytes" in reason, reason
    assert r.stderr.count(reason) == 1, r.stderr  # once on stderr
    assert r.stdout.count(reason) == 1, r.stdout  # once in the summary table
    assert re.search(r"^framework import: [\d.]+ s", r.stdout, re.M), r.stdout
    skipped = next(line for line in r.stderr.splitlines() if "skipped" in line and "done.weights" in line)
    assert "-- MB/s" in skipped, skipped  # nothing converted yet when the skip is reported: no rate from it
