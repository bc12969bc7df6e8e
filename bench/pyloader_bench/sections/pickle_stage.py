"""The pickle section: the pickle stage alone, native opcode machine vs the Python reference interpreter."""

from __future__ import annotations

import os
import statistics
import time

from pyloader import _core
from pyloader.torch_reader import unpickle as PR
from pyloader.torch_reader.checkpoint import ZipStorages, read_bytes

from ..driver import log, ratio


def pickle_inputs(pt_paths, small: bool) -> dict:
    """Pickles for the pickle section: cheap opcodes (a list of small ints and repeated BINGETs) and each .pt's
    data.pkl read as load_torch_checkpoint reads it (from the file's bytes, its storages made by
    checkpoint.ZipStorages: zero-copy views of the records). Each value: (buffer, start, end, (path, zip index)
    of the checkpoint or None)."""
    import pickle

    n = 250_000 if small else 2_500_000
    cheap = b"\x80\x02]q\x00(" + b"K\x07" * n + b"h\x00" * n + b"e."
    dumped = pickle.dumps(list(range(200)) * (n // 100), protocol=2)
    out = {f"cheap opcodes ({len(cheap) / 1e6:.0f} MB: BININT1, BINGET)": (cheap, 0, len(cheap), None),
           "pickle.dumps(list of small ints)": (dumped, 0, len(dumped), None)}
    for path in pt_paths:
        buf = read_bytes(path)
        index = _core.torch_zip_index(buf)
        off, size = index["pickle"]
        out[f"{os.path.basename(path)} data.pkl ({size / 1e6:.2f} MB)"] = (buf, off, off + size, (path, index))
    return out


def bench_pickle(pt_paths, repeat: int, small: bool) -> dict:
    """The pickle stage alone: load_pickle (native opcode machine, with its fast paths) against
    load_pickle_reference (the Python interpreter), in MB/s of pickle. A checkpoint's storages are made as
    load_torch_checkpoint makes them (checkpoint.ZipStorages over the file's bytes), fresh for every run."""
    sec = {}
    for name, (data, start, end, ckpt) in pickle_inputs(pt_paths, small).items():
        log(f"pickle/{name}")
        row = {"bytes": end - start}
        for meth, fn in (("python", PR.load_pickle_reference), ("native", PR.load_pickle)):
            times = []
            for _ in range(repeat + 1):
                storages = None
                if ckpt:
                    path, index = ckpt
                    storages = ZipStorages(path, data, index["prefix"], index["records"])
                t0 = time.perf_counter()
                fn(data, start=start, end=end, persistent_load=storages)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times[1:])
            row[meth] = {"median_s": med, "mb_per_s": row["bytes"] / 1e6 / med}
        row["speedup"] = ratio(row["python"]["median_s"], row["native"]["median_s"])
        sec[name] = row
    return sec
