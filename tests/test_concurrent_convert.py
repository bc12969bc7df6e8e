"""Two `pyloader convert` runs of the same sources into one folder behave as if run one after the other (issue 19
item 2): an output another run put in place meanwhile is reported as skipped, the exit status is 0, nothing is
replaced and nothing temporary is left."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from pyloader.bulk import TMP_PREFIX, convert
from pyloader.bulk.atomic import OutputAppeared, write_atomically
from pyloader.darknet.synthetic import write_weights


@pytest.mark.parametrize("folder", [False, True])
def test_an_output_that_appears_meanwhile_is_left_alone(tmp_path, folder):
    final = tmp_path / ("out_saved_model" if folder else "out.keras")

    def produce(tmp):  # while this run writes, another one puts the same output in place
        if folder:
            os.makedirs(os.path.join(tmp, "variables"))
            final.mkdir()
            (final / "saved_model.pb").write_bytes(b"theirs")
        else:
            with open(tmp, "wb") as f:
                f.write(b"ours")
            final.write_bytes(b"theirs")

    with pytest.raises(OutputAppeared):
        write_atomically(str(final), False, produce)
    assert (final / "saved_model.pb" if folder else final).read_bytes() == b"theirs"
    assert [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)] == []


def test_two_runs_into_one_folder(tmp_path, cfg_dir):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        write_weights(src / f"m{i}.weights", cfg_dir / "yolov3-tiny.cfg", seed=i)
        shutil.copy(cfg_dir / "yolov3-tiny.cfg", src / f"m{i}.cfg")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "pyloader", "convert", str(src), "-o", str(out), "--input-size", "96x128"]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    done = [p.communicate(timeout=900) for p in runs]
    for p, (stdout, stderr) in zip(runs, done):
        assert p.returncode == 0, stdout + stderr
        assert re.search(r"^\d+ converted, \d+ skipped, 0 failed$", stdout, re.M), stdout
    assert sorted(os.listdir(out)) == [f"m{i}.keras" for i in range(3)]
    lines = [line for stdout, _ in done for line in stdout.splitlines() if ".weights" in line]
    for i in range(3):  # each source converted by exactly one run, skipped by the other
        mine = [line.split()[0] for line in lines if f"m{i}.weights" in line]
        assert sorted(mine) == ["converted", "skipped"], lines


def test_the_api_reports_it_as_skipped(tmp_path, cfg_dir, monkeypatch):
    """In one process: the output appears between planning and renaming; the Result says skipped, by whom."""
    write_weights(tmp_path / "a.weights", cfg_dir / "yolov3-tiny.cfg", seed=1)
    shutil.copy(cfg_dir / "yolov3-tiny.cfg", tmp_path / "a.cfg")
    out = tmp_path / "out"
    from pyloader.bulk import worker

    real = worker.write_output

    def write_then_someone_else(model, tmp, job, *args):
        real(model, tmp, job, *args)
        (out / "a.keras").write_bytes(b"theirs")

    monkeypatch.setattr(worker, "write_output", write_then_someone_else)
    (res,) = convert([tmp_path / "a.weights"], out, input_size=(96, 128), templates=False)
    assert res.status == "skipped" and "another run" in res.reason, res
    assert (out / "a.keras").read_bytes() == b"theirs"
