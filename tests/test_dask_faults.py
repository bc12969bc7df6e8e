"""A Dask worker killed with SIGKILL in the middle of a conversion (issue 19 item 4): its source is retried on
another worker (or reported failed with the reason), nothing partial stays, the other sources finish.

The conversion of `slow.weights` writes part of its output, then waits for a file this test never makes (a
worker preload module wraps pyloader's writer, the first time only); the test kills that worker, whose pid is in
the temporary name it left."""

import ast
import os
import re
import signal
import subprocess
import sys
import textwrap
import time


from pyloader.bulk import TMP_PREFIX
from pyloader.darknet.synthetic import tiny_cfg, write_weights
from conftest import require

PRELOAD = textwrap.dedent("""
    import os, time
    from pyloader.bulk import worker

    CONTROL = os.environ["FAULTS_CONTROL"]
    real = getattr(worker.write_output, "real", worker.write_output)  # Dask may run a preload twice

    def write_output(model, tmp, job, *args):
        first = False
        if "slow" in job.source:
            try:
                os.close(os.open(os.path.join(CONTROL, "started"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                first = True
            except FileExistsError:
                pass
        if first:  # a partial output, then wait for a file nobody makes
            with open(tmp, "wb") as f:
                f.write(b"partial")
            with open(os.path.join(CONTROL, f"pid-{os.getpid()}"), "w"):
                pass
            while not os.path.exists(os.path.join(CONTROL, "go")):
                time.sleep(0.1)
        return real(model, tmp, job, *args)

    write_output.real = real
    worker.write_output = write_output
""")

DRIVER = textwrap.dedent("""
    import os
    import sys
    import distributed
    import pyloader

    if __name__ == "__main__":
        preload, out, *sources = sys.argv[1:]
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      preload=[preload]) as lc, distributed.Client(lc) as client:
            print("WORKERS", sorted(client.run(os.getpid).values()), flush=True)
            results = pyloader.convert(sources, out, format="keras", templates=False,
                                       executor=client.get_executor())
        for r in results:
            print("RESULT", r.status, r.source, r.output, r.reason, flush=True)
""")


def test_a_killed_worker_loses_nothing(tmp_path):
    require("distributed")
    src, out, control = tmp_path / "src", tmp_path / "out", tmp_path / "control"
    for d in (src, control):
        d.mkdir()
    (src / "tiny.cfg").write_text(tiny_cfg())
    names = ["a", "b", "slow", "c", "d"]
    for i, n in enumerate(names):
        write_weights(src / f"{n}.weights", src / "tiny.cfg", seed=i)
        (src / f"{n}.cfg").write_text(tiny_cfg())
    (tmp_path / "preload.py").write_text(PRELOAD)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", FAULTS_CONTROL=str(control))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "preload.py"), str(out),
                             *(str(src / f"{n}.weights") for n in names)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not [n for n in os.listdir(control) if n.startswith("pid-")]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        (marker,) = [n for n in os.listdir(control) if n.startswith("pid-")]
        pid = int(marker[4:])
        partial = [n for n in os.listdir(out) if n.startswith(f"{TMP_PREFIX}{pid}-")]
        assert partial, os.listdir(out)  # the worker is in the middle of writing slow.keras
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    workers = ast.literal_eval(re.search(r"^WORKERS (.*)$", stdout, re.M).group(1))
    assert pid in workers, (pid, workers)  # a Dask worker was killed, not the driver
    results = {os.path.basename(line.split()[2]): line.split()[1] for line in stdout.splitlines()
               if line.startswith("RESULT")}
    assert results == {f"{n}.weights": "converted" for n in names}, stdout  # slow.weights: retried elsewhere
    assert sorted(os.listdir(out)) == sorted(f"{n}.keras" for n in names), os.listdir(out)
    import zipfile

    for n in names:  # complete .keras files, the retried one too
        with zipfile.ZipFile(out / f"{n}.keras") as z:
            assert z.testzip() is None and "model.weights.h5" in z.namelist()
