"""Hostile and odd files (issue 10): each is refused fast, in bounded memory, as a FormatError naming the file.

One adversarial file per test, with the reason it exists (as gguf-py's adversarial tests do). Cases that
would take gigabytes if their check regressed run in a subprocess under an address-space limit
(RLIMIT_AS), so a regression fails the test instead of exhausting the machine; cases that would hang run
under a subprocess timeout (a hang guard, not a timing assertion). Files are a few hundred bytes to a few MB.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import pyloader
from pyloader import _core
from pyloader.boundary import MAX_NESTING, short_repr
from pyloader.errors import FormatError
from pyloader.darknet.cfg import parse_cfg_text, build_network

from pyloader.darknet.synthetic import write_weights
from test_pickle_asm import (BUILD, EMPTY_DICT, EMPTY_TUPLE, MARK, NEWOBJ, REDUCE, SETITEM, STOP, TUPLE, TUPLE1,
                             PROTO2, BINPERSID, NEWFALSE, dict_of, glob, i, s, write_torch_zip)

EMPTY_LIST = b"]"
APPENDS = b"e"
POP = b"0"
DUP = b"2"
TUPLE2 = b"\x86"
SETITEMS = b"u"


def put(k: int) -> bytes:
    return b"r" + struct.pack("<I", k)  # LONG_BINPUT


def get(k: int) -> bytes:
    return b"j" + struct.pack("<I", k)  # LONG_BINGET


def big(v: int) -> bytes:
    """LONG1: any int, however large."""
    n = (v.bit_length() + 8) // 8 or 1
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def tup(*fragments: bytes) -> bytes:
    return MARK + b"".join(fragments) + TUPLE


def tensor(key, numel, offset, size, stride, storage="FloatStorage") -> bytes:
    """_rebuild_tensor_v2 with ints of any size (LONG1)."""
    pid = tup(s("storage"), glob("torch", storage), s(key), s("cpu"), big(numel)) + BINPERSID
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    return (glob("torch._utils", "_rebuild_tensor_v2")
            + tup(pid, big(offset), tup(*map(big, size)), tup(*map(big, stride)), NEWFALSE, hooks) + REDUCE)


def record(module: str, name: str, state: bytes) -> bytes:
    """An object pickled as NEWOBJ + BUILD (a model module), with `state` as its __dict__."""
    return glob(module, name) + EMPTY_TUPLE + NEWOBJ + state + BUILD


def pdict(**items: bytes) -> bytes:
    return EMPTY_DICT + b"".join(s(k) + v + SETITEM for k, v in items.items())


def plist(*items: bytes) -> bytes:
    return EMPTY_LIST + MARK + b"".join(items) + APPENDS


def yolov5_model(yaml: bytes) -> bytes:
    """{'model': DetectionModel record whose yaml is `yaml`} (no layers: the yaml is checked first)."""
    model = record("models.yolo", "DetectionModel", pdict(yaml=yaml, _modules=EMPTY_DICT))
    return PROTO2 + pdict(model=model) + STOP


def refused(path, match, fn=pyloader.read):
    with pytest.raises(FormatError, match=match) as e:
        fn(path)
    assert os.fsdecode(os.fspath(path)) in str(e.value) or os.path.basename(os.fspath(path)) in str(e.value)
    return str(e.value)


LIMIT = 1 << 31  # address space of a subprocess running a case that must stay in bounded memory


def run_limited(code: str, limit: int = LIMIT) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose address space is capped; prints peak RSS (KiB) last."""
    prog = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        import pyloader
        from pyloader import FormatError
        try:
        {body}
            print("ACCEPTED")
        except FormatError as e:
            print("REFUSED", e)
        print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """).format(limit=limit, body=textwrap.indent(textwrap.dedent(code), "    "))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=600, env=env)


def assert_refused_in_bounds(code: str, match: str):
    r = run_limited(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "REFUSED" in r.stdout and match in r.stdout, r.stdout[-3000:]
    return r


# ---------------------------------------------------------------------------------------------------------
# Pickle: nesting


def test_deep_nesting_refused(tmp_path):
    # 200,000 nested 1-tuples (2 bytes each): CPython's C recursion (hashing, repr) crashed the interpreter on
    # values like this; the reader stops at MAX_NESTING levels.
    path = tmp_path / "deep.pt"
    write_torch_zip(path, dict_of(x=i(0) + TUPLE1 * 200_000))
    refused(path, f"nested more than {MAX_NESTING} deep")


def test_nested_tuple_as_dict_key_refused(tmp_path):
    # A nested tuple as a dict key: hashing it recurses in C without a recursion check (a segfault at ~10^5
    # levels, exponential time for a shared-reference graph). Keys nest at most one level.
    path = tmp_path / "deepkey.pt"
    write_torch_zip(path, PROTO2 + EMPTY_DICT + i(0) + TUPLE1 + TUPLE1 + i(1) + SETITEM + STOP)
    refused(path, "keys nest at most one level")


def test_colliding_int_keys_refused(tmp_path):
    # Ints k and k + (2^61 - 1) hash alike: a dict of such keys is quadratic to build. Keys stay below 2^61.
    path = tmp_path / "collide.pt"
    write_torch_zip(path, PROTO2 + EMPTY_DICT + big((1 << 61) - 1 + 5) + i(1) + SETITEM + STOP)
    refused(path, "beyond 2.61 integer hashes collide")


def test_shared_reference_graph_quoted_in_bounded_time(tmp_path):
    # t = (t', t') 80 times over: 160 bytes whose full repr has 2^80 parts. Used as a tensor size, the error
    # message quotes it; messages quote through short_repr (bounded), never `{x!r:.80}` (builds the whole repr).
    graph = i(0) + TUPLE1 + (DUP + TUPLE2) * 80
    path = tmp_path / "graph.pt"
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    pid = tup(s("storage"), glob("torch", "FloatStorage"), s("0"), s("cpu"), i(1)) + BINPERSID
    t = glob("torch._utils", "_rebuild_tensor_v2") + tup(pid, i(0), graph, tup(i(1)), NEWFALSE, hooks) + REDUCE
    write_torch_zip(path, dict_of(t=t), {"0": bytes(4)})
    msg = refused(path, "must be tuples of ints")
    assert len(msg) < 1000


def test_short_repr_of_deep_and_huge_values():
    # The bounded repr itself: a 10^5-deep list (repr raises RecursionError), a 10^5-digit int (repr raises
    # ValueError past 4300 digits), a shared graph (exponential) all give a short string.
    deep = []
    for _ in range(100_000):
        deep = [deep]
    g = (0,)
    for _ in range(80):
        g = (g, g)
    for v in (deep, 10 ** 100_000, g, "x" * 10 ** 6):
        assert len(short_repr(v)) <= 80


# ---------------------------------------------------------------------------------------------------------
# Pickle: memory amplification (bounded work per pickle byte)


def _ordered_dict_bomb(path, pairs=2000, calls=30_000):
    items = plist(*(tup(s(f"k{j}"), i(j)) for j in range(pairs)))
    body = items + put(0) + POP + glob("collections", "OrderedDict") + put(1) + POP
    body += (get(1) + get(0) + TUPLE1 + REDUCE + POP) * calls
    write_torch_zip(path, PROTO2 + body + EMPTY_DICT + STOP)


def test_ordered_dict_called_on_one_memo_entry_refused(tmp_path):
    # OrderedDict(<one memo'd list of 2000 pairs>) called 30,000 times: 400 KB of pickle building 60 million
    # dict entries (GBs). Allow-listed callables charge what they copy against the pickle's budget.
    path = tmp_path / "odict_bomb.pt"
    _ordered_dict_bomb(path)
    assert_refused_in_bounds(f"pyloader.read({str(path)!r})", "memory amplification")


def test_bytes_of_one_memo_string_refused(tmp_path):
    # _codecs.encode(<one memo'd 1 MB string>, 'latin1') called 5,000 times: 1 MB of pickle, 5 GB of bytes.
    path = tmp_path / "bytes_bomb.pt"
    body = s("x" * 1_000_000) + put(0) + POP + glob("_codecs", "encode") + put(1) + POP
    body += (get(1) + tup(get(0), s("latin1")) + REDUCE + POP) * 5000
    write_torch_zip(path, PROTO2 + body + EMPTY_DICT + STOP)
    assert_refused_in_bounds(f"pyloader.read({str(path)!r})", "memory amplification")


def test_legacy_format_claims_huge_storage(tmp_path):
    # Legacy (pre-1.6) torch file whose pickle claims a storage of 2^40 floats: the reader allocated the
    # claimed element count before checking it against the file (4 TB). Storages must fit in the file.
    path = tmp_path / "legacy_huge.pt"
    import pickle

    head = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    head += pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    main = dict_of(t=tensor("0", 1 << 40, 0, (1 << 20,), (1,)))
    path.write_bytes(head + main + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + bytes(16))
    assert_refused_in_bounds(f"pyloader.read({str(path)!r})", "more than the file")


def test_yaml_multiplier_string_refused(tmp_path):
    # YOLOv5 yaml with depth_multiple 'aaaa' and a row number of 10^8: `n * gd` was string repetition
    # (400 MB from a 300-byte file) before a TypeError. Types are checked before use.
    path = tmp_path / "yaml_str.pt"
    row = plist(i(-1), i(100_000_000), s("C3"), EMPTY_LIST)
    yaml = pdict(depth_multiple=s("aaaa"), backbone=plist(row), head=EMPTY_LIST)
    write_torch_zip(path, yolov5_model(yaml))
    assert_refused_in_bounds(f"pyloader.read({str(path)!r})", "depth_multiple")


def test_yolo_huge_num_without_mask(tmp_path):
    # A [yolo] with num=10^9 and no mask: a 120-byte cfg made a mask list of 10^9 ints (4.6 GB). num is
    # checked against the anchors listed before any list of that size exists.
    cfg = tmp_path / "yolo_num.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=6\nsize=1\n"
                   "[yolo]\nclasses=1\nnum=1000000000\nanchors=1,2\n")
    (tmp_path / "yolo_num.weights").write_bytes(bytes(20))
    assert_refused_in_bounds(f"pyloader.read({str(tmp_path / 'yolo_num.weights')!r})", "anchor values")


# ---------------------------------------------------------------------------------------------------------
# Tensors


def test_broadcast_tensor_as_parameter_refused(tmp_path):
    # A conv weight of size (10^4, 10^4) with stride (0, 0) over one float: a 400 MB broadcast view of 4 bytes,
    # which the transforms would materialise. The reader keeps such views (checkpoints hold some: YOLOv5's
    # Detect.anchor_grid after a validation run); a family refuses one as a parameter.
    from pyloader.yolov5.weights import _Ctx, _param

    path = tmp_path / "stride0.pt"
    weight = tensor("0", 1, 0, (10_000, 10_000), (0, 0))
    conv = record("torch.nn.modules.conv", "Conv2d", pdict(_parameters=pdict(weight=weight)))
    write_torch_zip(path, PROTO2 + pdict(m=conv) + STOP, {"0": bytes(4)})
    rec = pyloader.torch_reader.checkpoint.load_torch_checkpoint(path)["m"]
    with pytest.raises(FormatError, match="a broadcast tensor"):
        _param(_Ctx(str(path)), rec, "model.0.conv", "weight")


def test_broadcast_tensor_in_checkpoint_read():
    # Not over-rejecting: torch.save keeps an expanded tensor's zero strides (YOLOv5 saves Detect.anchor_grid
    # that way after validating); the reader gives the same values as a zero-copy view.
    torch = pytest.importorskip("torch")
    import io

    t = (torch.arange(6, dtype=torch.float32).view(1, 3, 1, 1, 2)).expand(1, 3, 80, 80, 2)
    buf = io.BytesIO()
    torch.save({"anchor_grid": [t]}, buf)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "grid.pt")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        got = pyloader.torch_reader.checkpoint.load_torch_checkpoint(path)["anchor_grid"][0]
        np.testing.assert_array_equal(got, t.numpy())


def test_overlapping_strides_beyond_storage_refused(tmp_path):
    # size (1000, 1000) with strides (1, 1) stays inside a 1999-element storage but views 10^6 elements:
    # a tensor's element count must fit in its storage.
    path = tmp_path / "overlap.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 1999, 0, (1000, 1000), (1, 1))), {"0": bytes(4 * 1999)})
    refused(path, "has 1000000 elements")


def test_size_beyond_int64_refused(tmp_path):
    # A size of 2^64 (OverflowError in numpy before): sizes, strides and offsets are int64, checked in Python.
    path = tmp_path / "size64.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 4, 0, (1 << 64,), (1,))), {"0": bytes(16)})
    refused(path, r"outside \[0, 2\^63\)")


def test_stride_beyond_int64_refused(tmp_path):
    # A stride of 2^70 on a dimension of size 1 (no element reached with it): still not an int64.
    path = tmp_path / "stride70.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 4, 0, (1,), (1 << 70,))), {"0": bytes(16)})
    refused(path, r"outside \[0, 2\^63\)")


def test_misaligned_storage_transposed_exactly():
    # Legacy-format storages start at any byte offset: the transforms load floats through memcpy (a plain
    # float load there is undefined behaviour). An odd-offset float32 and float16 kernel give numpy's result.
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float16):
        k = rng.normal(size=(5, 3, 3, 3)).astype(dt)
        raw = bytearray(1 + k.nbytes)
        raw[1:] = k.tobytes()
        view = np.frombuffer(bytes(raw), dt, offset=1).reshape(k.shape)
        assert not view.flags.aligned
        got = _core.oihw_to_hwio(view)
        np.testing.assert_array_equal(got, k.astype(np.float32).transpose(2, 3, 1, 0))


# ---------------------------------------------------------------------------------------------------------
# Names and files


def _patch_name(path, old: bytes, new: bytes):
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 2  # local header and central directory
    path.write_bytes(data.replace(old, new))


def test_non_utf8_zip_entry_name(tmp_path):
    # An entry named with the byte 0xff (not UTF-8), referred to by no storage: indexing the archive raised
    # UnicodeDecodeError. Names are decoded without loss (surrogateescape).
    path = tmp_path / "name.pt"
    write_torch_zip(path, dict_of(x=i(1)), {"Q": b"1234"})
    _patch_name(path, b"archive/data/Q", b"archive/data/\xff")
    assert pyloader.torch_reader.checkpoint.load_torch_checkpoint(path) == {"x": 1}


def test_non_utf8_name_in_native_message(tmp_path):
    # A compressed entry with a non-UTF-8 name: the native core's message quotes the name, which became a
    # UnicodeDecodeError instead of the FormatError. Messages are decoded without loss too.
    path = tmp_path / "cname.pt"
    write_torch_zip(path, dict_of(x=i(1)), {"Q": b"1234" * 100}, compress_records=True)
    _patch_name(path, b"archive/data/Q", b"archive/data/\xff")
    msg = refused(path, "compressed")
    assert "\udcff" in msg


def test_non_utf8_file_name_reads(tmp_path):
    # A valid checkpoint whose file name is not UTF-8 (any Linux name is valid): a TypeError from the native
    # core's str argument. Paths reach the core as bytes; str, bytes and Path all work.
    d = os.fsencode(tmp_path)
    cfg = d + b"/net\xff.cfg"
    with open(cfg, "w") as f:
        f.write("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=2\nsize=1\nactivation=linear\n")
    write_weights(os.fsdecode(d + b"/net\xff.weights"), os.fsdecode(cfg))
    for p in (d + b"/net\xff.weights", os.fsdecode(d + b"/net\xff.weights")):
        arrays = pyloader.read(p)
        assert arrays["conv_0/kernel"].shape == (1, 1, 3, 2)


def test_fifo_named_like_a_checkpoint(tmp_path):
    # A FIFO named x.pt: open() blocked forever waiting for a writer. Files are checked with stat and opened
    # with O_NONBLOCK; only regular files are read. (Subprocess: a regression hangs the guard, not pytest.)
    fifo = tmp_path / "x.pt"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "pyloader", "inspect", str(fifo)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1, r.stderr
    assert "not a regular file (a FIFO)" in r.stderr and "Traceback" not in r.stderr


def test_fifo_in_a_folder_given_to_convert(tmp_path):
    # The same FIFO among a folder's checkpoints: convert listed it and hung on it. It is a failed source with
    # the reason, and the run goes on.
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe.weights")
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", str(src), "-o", str(tmp_path / "out"), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    assert "pipe.weights" in r.stderr and "FIFO" in r.stderr and "Traceback" not in r.stderr


def test_device_refused():
    # A character device (/dev/zero reads forever): refused by its type, never opened.
    with pytest.raises(FormatError, match="character device"):
        pyloader.read("/dev/zero")


def test_inspect_prints_no_traceback(tmp_path):
    # `pyloader inspect` printed a traceback for every exception that was not a FormatError (here the yaml's
    # string multiplier: a TypeError before). The CLI prints the FormatError's message and exits 1.
    path = tmp_path / "bad.pt"
    yaml = pdict(depth_multiple=s("x"), backbone=EMPTY_LIST, head=EMPTY_LIST)
    write_torch_zip(path, yolov5_model(yaml))
    r = subprocess.run([sys.executable, "-m", "pyloader", "inspect", str(path)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "depth_multiple" in r.stderr and str(path) in r.stderr


def test_any_exception_becomes_format_error(tmp_path, monkeypatch):
    # The boundary by construction: a failure nobody foresaw (simulated: the YOLOv5 reader raising KeyError,
    # RecursionError, MemoryError) leaves read and inspect as a FormatError naming the file and the type.
    import pyloader.api as api
    import pyloader.inspect_checkpoint as ic
    import pyloader.yolov5.weights as y5
    from pyloader.inspect_checkpoint import inspect

    path = tmp_path / "odd.pt"
    write_torch_zip(path, dict_of(x=i(1)))
    for exc in (KeyError("k" * 10 ** 6), RecursionError(), MemoryError()):
        def boom(*a, **k):
            raise exc
        monkeypatch.setattr(y5, "plan_from_model", boom)
        monkeypatch.setattr(y5, "read_plan", boom)
        monkeypatch.setattr(api, "open_checkpoint", boom)  # the dispatch, before any family reader
        monkeypatch.setattr(ic, "open_checkpoint", boom)
        for fn in (pyloader.read, inspect):
            msg = refused(path, type(exc).__name__, fn)
            assert len(msg) < 1000


# ---------------------------------------------------------------------------------------------------------
# Darknet cfgs


def _cfg_weights(tmp_path, text, name="net"):
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(text)
    (tmp_path / f"{name}.weights").write_bytes(bytes(20))
    return tmp_path / f"{name}.weights"


def test_cfg_integer_beyond_uint64(tmp_path):
    # filters=2^64: passed to the native core it was a pybind11 cast error (RuntimeError). darknet reads ints
    # into a C int: anything outside it is refused while parsing.
    w = _cfg_weights(tmp_path, "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=18446744073709551616\n"
                               "size=1\n")
    with pytest.raises(FormatError, match="net.cfg.*outside darknet's int range"):  # names the cfg at fault
        pyloader.read(w)


# ---------------------------------------------------------------------------------------------------------
# Not over-rejecting: what darknet accepts loads


NET = "[net]\nwidth=8\nheight=8\nchannels=3\n"


def test_repeated_net_training_option_accepted():
    # AlexeyAB's published cfgs repeat training options in [net] (batch=1 for testing, then batch=64 for
    # training): darknet's option_find takes the first occurrence. Refused before as "option 'batch' repeated".
    text = "[net]\nbatch=1\nsubdivisions=1\nbatch=64\nsubdivisions=16\nwidth=8\nheight=8\nchannels=3\n" \
           "[convolutional]\nfilters=2\nsize=1\n"
    net = build_network(parse_cfg_text(text, "repeat.cfg"))
    assert net.layers[0].shape == (8, 8, 2)


def test_repeated_layer_option_uses_the_first():
    # A layer option given twice: darknet computes with the first value (option_find walks the list from its
    # front), so pyloader does too.
    text = NET + "[convolutional]\nfilters=2\nsize=1\nfilters=4\n"
    net = build_network(parse_cfg_text(text, "repeat.cfg"))
    assert net.layers[0].params["filters"] == 2


def test_repeated_unknown_option_still_refused():
    # Accepting repeats must not let an option that changes the computation through: an unknown option is
    # refused whether or not it is repeated.
    text = NET + "[convolutional]\nfilters=2\nsize=1\nflipped=1\nflipped=0\n"
    with pytest.raises(FormatError, match="unsupported option 'flipped'"):
        build_network(parse_cfg_text(text, "repeat.cfg"))


def test_budgets_script_runs_every_worst_input():
    # fuzz/budgets.py (the measurement quoted in the README) as a command: each worst input is refused with a
    # FormatError in its fresh capped process, none crashes or hits the cap, and the 10 MB pickle is read.
    script = os.path.join(os.path.dirname(__file__), "..", "fuzz", "budgets.py")
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [ln for ln in r.stdout.splitlines()[1:] if ln.strip()]
    assert len(rows) == 11, r.stdout
    assert all("CRASHED" not in ln and "CAPPED" not in ln for ln in rows), r.stdout
    assert sum("FormatError" in ln for ln in rows) == 10, r.stdout  # all but the import-only baseline
