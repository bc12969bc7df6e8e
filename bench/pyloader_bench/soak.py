"""`python -m pyloader_bench.soak [--count 500] [--format weights.h5] [--no-templates] [--work DIR]`: a soak.

`count` conversions of a tiny Darknet model (synthetic weights, one seed each) through `pyloader.convert` on a
Dask LocalCluster of two worker processes (one thread each). In each worker it counts the open file descriptors
(/proc/self/fd) and the resident memory (/proc/self/statm) before any conversion, after the first tenth
(the warm-up: the framework import and the first model are behind) and at the end, and it counts the
temporary entries left in the output folder and in the workers' TMPDIR (a fresh folder). Prints the numbers as
JSON; exits 1 when an output is missing, a temporary entry is left, a worker holds a file open at the end that
it did not hold after the warm-up (sockets and pipes are Dask's connections: listed, not counted), or its resident memory grew by more than 10% since the warm-up (or a worker died)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from pyloader.darknet.synthetic import tiny_cfg, write_weights

RSS_GROWTH = 0.10


def _probe() -> dict:
    """In a worker: its pid, open descriptors (what each refers to) and resident bytes."""
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return {"pid": os.getpid(), "fds": len(targets), "targets": targets, "rss": rss,
            "tmpdir": tempfile.gettempdir()}


def _kind(target: str) -> str:
    """'socket', 'pipe', 'anon_inode' (Dask's connections, the event loop) or 'file'."""
    kind = target.split(":", 1)[0]
    return kind if kind in ("socket", "pipe", "anon_inode") else "file"


def write_sources(folder: str, count: int) -> list:
    """`count` .weights files of tiny_cfg() (seeds 0..count-1) in `folder`, with the cfg as tiny.cfg."""
    cfg = os.path.join(folder, "tiny.cfg")
    with open(cfg, "w") as f:
        f.write(tiny_cfg())
    paths = [os.path.join(folder, f"m{i:04d}.weights") for i in range(count)]
    for i, p in enumerate(paths):
        write_weights(p, cfg, seed=i)
    return paths


def _opened(before: list, after: list) -> list:
    """The descriptors' targets in `after` beyond those in `before` (socket and pipe numbers reduced to their
    kind: Dask's connections come and go)."""
    left = [t if _kind(t) == "file" else _kind(t) for t in before]
    opened = []
    for t in (t if _kind(t) == "file" else _kind(t) for t in after):
        if t in left:
            left.remove(t)
        else:
            opened.append(t)
    return opened


def soak(count: int, work: str, format: str = "weights.h5", templates: bool = True) -> dict:
    import distributed

    import pyloader
    from pyloader.bulk import TMP_PREFIX

    src, out, tmp = (os.path.join(work, d) for d in ("src", "out", "tmp"))
    for d in (src, out, tmp):
        os.makedirs(d)
    sources = write_sources(src, count)
    warm = max(1, count // 10)  # the workers' TMPDIR is `tmp`: whatever a conversion leaves there is counted
    t0 = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  local_directory=os.path.join(work, "dask"),
                                  env={"TMPDIR": tmp}) as lc, distributed.Client(lc) as client:
        executor = client.get_executor()
        probes = {"before": client.run(_probe)}
        results = []
        for part, stage in ((sources[:warm], "warm"), (sources[warm:], "end")):
            results += pyloader.convert(part, out, cfg=os.path.join(src, "tiny.cfg"), format=format,
                                        templates=templates, executor=executor)
            probes[stage] = client.run(_probe)
    seconds = time.perf_counter() - t0
    failed = [f"{r.source}: {r.reason}" for r in results if r.status != "converted"]
    workers = {}
    for addr in probes["before"]:
        w = {stage: p.get(addr) for stage, p in probes.items()}
        workers[addr] = {"pid": [w[s]["pid"] if w[s] else None for s in probes], "tmpdir": w["end"]["tmpdir"],
                         "fds": {s: w[s]["fds"] if w[s] else None for s in probes},
                         "rss_mb": {s: round(w[s]["rss"] / 2**20, 1) if w[s] else None for s in probes}}
    left_out = sorted(n for n in os.listdir(out) if n.startswith(TMP_PREFIX))
    left_tmp = sorted(os.listdir(tmp))
    outputs = len(os.listdir(out)) - len(left_out)
    problems = failed[:5] + [f"{len(left_out)} temporary entries in the output folder"] * bool(left_out)
    problems += [f"{len(left_tmp)} entries left in TMPDIR: {left_tmp[:5]}"] * bool(left_tmp)
    if outputs != count:
        problems.append(f"{outputs} outputs for {count} sources")
    for addr, w in workers.items():
        if w["tmpdir"] != tmp:
            problems.append(f"worker {addr}: its TMPDIR is {w['tmpdir']}, not {tmp}: its temporaries are not counted")
        if len(set(w["pid"])) != 1:
            problems.append(f"worker {addr} was replaced: pids {w['pid']}")
            continue
        opened = _opened(probes["warm"][addr]["targets"], probes["end"][addr]["targets"])
        w["opened_since_warm_up"] = opened
        if any(_kind(t) == "file" for t in opened):  # pyloader opens no sockets: those are Dask's
            problems.append(f"worker {w['pid'][0]}: {w['fds']['warm']} open descriptors after the warm-up, "
                            f"{w['fds']['end']} at the end: {opened}")
        growth = w["rss_mb"]["end"] / w["rss_mb"]["warm"] - 1
        w["rss_growth"] = round(growth, 4)
        if growth > RSS_GROWTH:
            problems.append(f"worker {w['pid'][0]}: resident memory grew {growth:.1%} after the warm-up")
    return {"conversions": count, "warm_up": warm, "format": format, "templates": templates,
            "seconds": round(seconds, 1), "outputs": outputs, "failed": len(failed),
            "temporary_entries_left": len(left_out) + len(left_tmp), "workers": workers, "problems": problems}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyloader_bench.soak", description=__doc__.split("\n\n")[1])
    ap.add_argument("--count", type=int, default=500, help="conversions (default 500)")
    ap.add_argument("--format", default="weights.h5", help="output format (default weights.h5)")
    ap.add_argument("--no-templates", dest="templates", action="store_false",
                    help="run the format's exporter for every checkpoint")
    ap.add_argument("--work", help="folder for the sources and outputs (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="pyloader-soak-")
    try:
        report = soak(args.count, work, args.format, args.templates)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return print_report(report, "soak")


def print_report(report: dict, tag: str) -> int:
    """Print a soak's JSON report, its problems on stderr; the exit status (1 when it found any)."""
    print(json.dumps(report, indent=1))
    for p in report["problems"]:
        print(f"{tag}: {p}", file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
