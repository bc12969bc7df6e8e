"""Ctrl-C and SIGTERM during a real bulk run of `pyloader convert` (four yolov3-tiny checkpoints, .keras).

The command runs in its own process group (start_new_session) and the signal goes to the whole group, as a
terminal sends Ctrl-C. It lands at observed events, never after a fixed sleep: while the workers import the
framework (a worker process exists), during the first template export (its `.pyloader-tmp-*-template` folder
exists) and after the first output appeared. For the last two the group is stopped (SIGSTOP) at the event, the
signal sent, and the group continued: the signal is pending when the run resumes, whatever the machine's load.
Each time: exit 130 (SIGINT) or 143 (SIGTERM) within a bound, every process of the group gone (no worker goes
on writing), no temporary entry left, every output present listed as converted in the summary and complete (a
readable zip), every source either converted or 'interrupted'.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from pyloader.darknet.synthetic import write_weights
from pyloader.bulk import TMP_PREFIX

WAIT = 300  # seconds for an event of a run on a loaded machine (a framework import, an export)
STOPS_WITHIN = 30  # seconds from the signal to the exit ("a few seconds"; generous for a loaded 2-core machine)


@pytest.fixture(scope="module")
def four(tmp_path_factory, cfg_dir):
    d = tmp_path_factory.mktemp("four")
    write_weights(d / "a.weights", cfg_dir / "yolov3-tiny.cfg", seed=1)
    write_weights(d / "b.weights", cfg_dir / "yolov3-tiny.cfg", seed=2)
    for i in range(4):
        shutil.copy(d / ("a.weights" if i % 2 else "b.weights"), d / f"k{i}.weights")
    shutil.copy(cfg_dir / "yolov3-tiny.cfg", d / "k.cfg")
    yield [d / f"k{i}.weights" for i in range(4)], d / "k.cfg"
    shutil.rmtree(d, ignore_errors=True)


def _group(pgid) -> list:
    """The live (not zombie) processes of process group pgid, from /proc."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def _workers(pgid) -> list:
    """The pool's worker processes in the group (multiprocessing's spawn_main; not its resource tracker)."""
    found = []
    for pid in _group(pgid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _until(what, cond, proc):
    deadline = time.monotonic() + WAIT
    while not cond():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT} s"
        time.sleep(0.01)


def _listing(out):
    return sorted(os.listdir(out)) if os.path.isdir(out) else []


def _signal_at(proc, out, event, sig):
    """Send `sig` to proc's group at `event`: 'import' (a worker process runs), 'template' (a template export
    is under way), 'output' (an output is there). The last two stop the group first (see the module doc)."""
    if event == "import":
        _until("worker process", lambda: _workers(proc.pid), proc)
        os.killpg(proc.pid, sig)
        return
    if event == "template":
        seen = lambda: any(n.startswith(TMP_PREFIX) and n.endswith("-template") for n in _listing(out))  # noqa: E731
    else:
        seen = lambda: any(not n.startswith(TMP_PREFIX) for n in _listing(out))  # noqa: E731
    while True:
        _until(event, seen, proc)
        os.killpg(proc.pid, signal.SIGSTOP)
        if seen():  # still there while stopped: the signal lands at this point
            break
        os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, sig)
    os.killpg(proc.pid, signal.SIGCONT)


def _check_stopped(proc, out, sig, sources, log):
    t0 = time.monotonic()
    try:
        proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    took = time.monotonic() - t0
    stdout, stderr = (log / "out").read_text(), (log / "err").read_text()
    assert proc.returncode == 128 + sig, stdout + stderr
    assert took < STOPS_WITHIN, f"exit {took:.1f} s after the signal"
    deadline = time.monotonic() + STOPS_WITHIN
    while _group(proc.pid):  # workers killed: nothing of the run goes on (a resource tracker ends on its own)
        assert time.monotonic() < deadline, f"processes of the run still alive: {_group(proc.pid)}"
        time.sleep(0.05)
    names = _listing(out)
    assert [n for n in names if n.startswith(TMP_PREFIX)] == [], names
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("converted", "interrupted"):
            rows[parts[1]] = (parts[0], parts[-1])
    assert sorted(rows) == sorted(map(str, sources)), stdout
    reported = sorted(os.path.basename(o) for status, o in rows.values() if status == "converted")
    assert reported == names, (stdout, names)  # present <=> reported, with where it is
    for status, o in rows.values():
        if status == "converted":
            assert os.path.dirname(o) == str(out)
            with zipfile.ZipFile(o) as z:  # complete: a .keras file is a zip archive
                assert z.testzip() is None
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    return names


def _start(argv, log):
    log.mkdir()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(log / "out", "w") as o, open(log / "err", "w") as e:  # files: a full pipe would stall the run
        return subprocess.Popen(argv, stdout=o, stderr=e, env=env, start_new_session=True)


@pytest.mark.parametrize("jobs, event, sig", [
    (2, "import", signal.SIGINT),
    (2, "template", signal.SIGINT),
    (2, "output", signal.SIGTERM),
    (1, "output", signal.SIGINT),
])
def test_cli_signal(four, tmp_path, jobs, event, sig):
    sources, cfg = four
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pyloader", "convert", *map(str, sources), "--cfg", str(cfg), "-o", str(out),
            "--input-size", "64x64", "--jobs", str(jobs), "-q"]
    proc = _start(argv, tmp_path / "log")
    try:
        _signal_at(proc, out, event, sig)
    finally:
        names = _check_stopped(proc, out, sig, sources, tmp_path / "log")
    if event == "output":
        assert names, "the output seen before the signal is reported"
    if event == "import":
        assert names == []


DASK = """
import sys
import distributed
import pyloader
from pyloader.bulk import Interrupted

if __name__ == "__main__":
    *sources, cfg, out = sys.argv[1:]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as lc:
        with distributed.Client(lc) as client:
            try:
                pyloader.convert(sources, out, cfg=cfg, input_size=(64, 64), executor=client.get_executor())
            except Interrupted as e:
                for r in e.results:
                    print(r.status, r.source, r.output)
                print("interrupted", file=sys.stderr)
                sys.exit(130)
"""


def test_dask_executor_interrupted(four, tmp_path):
    """The Dask executor's tasks run on until their rename, which the closed run refuses: nothing appears
    after the interrupt, nothing temporary stays."""
    pytest.importorskip("distributed")
    sources, cfg = four
    out = tmp_path / "out"
    proc = _start([sys.executable, "-c", DASK, *map(str, sources), str(cfg), str(out)], tmp_path / "log")
    try:
        _signal_at(proc, out, "output", signal.SIGINT)
    finally:
        names = _check_stopped(proc, out, signal.SIGINT, sources, tmp_path / "log")
    assert names
