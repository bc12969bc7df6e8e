"""Measures the budgets on the worst inputs of tests/test_hostile_files.py: each file is read by `pyloader.read`
in a fresh interpreter under an address-space cap; prints the outcome, the wall time of the read and the peak
RSS (`getrusage`), next to the peak of an interpreter that only imported pyloader and numpy.

    python fuzz/budgets.py [--cap-gib 3]

A regression shows as a peak far above the baseline, a time far above 0.1 s, or "CAPPED"/"CRASHED".
"""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from test_hostile_files import (EMPTY_LIST, POP, TUPLE2, DUP, get, put, plist, tup, tensor,  # noqa: E402
                                yolov5_model, pdict, _ordered_dict_bomb)
from test_pickle_asm import (EMPTY_DICT, EMPTY_TUPLE, NEWFALSE, PROTO2, REDUCE, SETITEM, STOP, TUPLE1,  # noqa: E402
                             BINPERSID, dict_of, glob, i, s, write_torch_zip)

PROBE = textwrap.dedent("""
    import resource, sys, time
    cap = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import numpy, pyloader
    from pyloader import FormatError
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    try:
        pyloader.read(sys.argv[1]) if sys.argv[1] != "-" else None
        what = "accepted"
    except FormatError as e:
        what = "FormatError: " + str(e).split(": ", 1)[-1][:70]
    except MemoryError:
        what = "CAPPED (MemoryError)"
    dt = time.perf_counter() - t
    print(f"@@{dt:.4f}|{base}|{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}|{what}")
""")


def cases(d: str) -> dict:
    """name -> (path, bytes of the file); the same inputs as the tests of tests/test_hostile_files.py."""
    out = {}

    def pt(name, body, storages=None):
        path = os.path.join(d, name)
        write_torch_zip(path, body, storages)
        out[name] = path

    pt("deep-300k-tuples.pt", dict_of(x=i(0) + TUPLE1 * 300_000))
    pt("deep-dict-key.pt", PROTO2 + EMPTY_DICT + i(0) + TUPLE1 + TUPLE1 + i(1) + SETITEM + STOP)
    graph = i(0) + TUPLE1 + (DUP + TUPLE2) * 80
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    pid = tup(s("storage"), glob("torch", "FloatStorage"), s("0"), s("cpu"), i(1)) + BINPERSID
    pt("shared-graph-size.pt", dict_of(t=glob("torch._utils", "_rebuild_tensor_v2")
                                       + tup(pid, i(0), graph, tup(i(1)), NEWFALSE, hooks) + REDUCE), {"0": bytes(4)})
    path = os.path.join(d, "ordered-dict-bomb.pt")
    _ordered_dict_bomb(path)
    out["ordered-dict-bomb.pt"] = path
    body = s("x" * 1_000_000) + put(0) + POP + glob("_codecs", "encode") + put(1) + POP
    body += (get(1) + tup(get(0), s("latin1")) + REDUCE + POP) * 5000
    pt("bytes-bomb.pt", PROTO2 + body + EMPTY_DICT + STOP)
    head = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    head += pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    main = dict_of(t=tensor("0", 1 << 40, 0, (1 << 20,), (1,)))
    path = os.path.join(d, "legacy-claims-4TB.pt")
    with open(path, "wb") as f:
        f.write(head + main + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + bytes(16))
    out["legacy-claims-4TB.pt"] = path
    pt("overlap-1e6-of-1999.pt", dict_of(t=tensor("0", 1999, 0, (1000, 1000), (1, 1))), {"0": bytes(4 * 1999)})
    row = plist(i(-1), i(100_000_000), s("C3"), EMPTY_LIST)
    pt("yaml-string-multiplier.pt", yolov5_model(pdict(depth_multiple=s("aaaa"), backbone=plist(row),
                                                       head=EMPTY_LIST)))
    cfg = os.path.join(d, "yolo-num-1e9.cfg")
    with open(cfg, "w") as f:
        f.write("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=6\nsize=1\n"
                "[yolo]\nclasses=1\nnum=1000000000\nanchors=1,2\n")
    with open(os.path.join(d, "yolo-num-1e9.weights"), "wb") as f:
        f.write(bytes(20))
    out["yolo-num-1e9.cfg"] = os.path.join(d, "yolo-num-1e9.weights")
    cheap = b"\x80\x02]q\x00(" + b"K\x07" * 2_500_000 + b"h\x00" * 2_500_000 + b"e."
    pt("cheap-opcodes-10MB.pt", cheap)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cap-gib", type=float, default=3.0, help="address-space cap of each read (default 3 GiB)")
    args = ap.parse_args()
    cap = int(args.cap_gib * (1 << 30))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="pyloader-budgets-") as d:
        rows = [("(import pyloader + numpy only)", "-", 0)]
        for name, path in cases(d).items():
            size = os.path.getsize(os.path.join(d, name))
            rows.append((name, path, size))
        print(f"{'input':32} {'file bytes':>11} {'read s':>8} {'peak MiB':>9}  outcome")
        for name, path, size in rows:
            r = subprocess.run([sys.executable, "-c", PROBE, path, str(cap)], capture_output=True, text=True,
                               timeout=600, env=env)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("@@")), None)
            if line is None:
                print(f"{name:32} {size:>11} {'':>8} {'':>9}  CRASHED (exit {r.returncode}) {r.stderr[-200:]!r}")
                continue
            dt, _base, peak, what = line[2:].split("|", 3)
            print(f"{name:32} {size:>11} {float(dt):>8.3f} {int(peak) / 1024:>9.1f}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
