"""The `pyloader` command: convert, inspect, bench.

Results and reports go to stdout; progress, warnings and errors to stderr. Exit status: 0 when everything
worked, 1 when a checkpoint failed, 2 for a usage error (an output folder that cannot be written included),
128 + the signal when Ctrl-C (130) or SIGTERM (143) stopped `convert`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

from .convert_report import ProgressBar, cli_reason, summary_table

from .outputs import FORMATS as _FORMATS
from .outputs import output_format, read_metadata

__all__ = ["main", "build_parser", "ProgressBar"]


def _input_size(text: str) -> tuple:
    parts = text.lower().replace(",", "x").split("x")
    try:
        if len(parts) == 1:
            parts = parts * 2
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 416x416) or one number, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return (h, w)


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--jobs must be at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyloader",
        description="Convert YOLO checkpoints (Darknet .cfg + .weights; YOLOv5, YOLOv7 and Ultralytics YOLOv8 / YOLO11 "
                    ".pt, detection and classification) into Keras models and deployable files.",
    )
    from .version import __version__

    parser.add_argument("--version", action="version", version=f"pyloader {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser(
        "convert", help="convert many checkpoints into .keras / .weights.h5 / SavedModel / TFLite files",
        description="Convert checkpoints into deployable files in OUTDIR, named after their source. A bad "
                    "checkpoint does not stop the run; the summary lists it and the exit status is 1. Outputs "
                    "appear only when complete (written under a hidden .pyloader-tmp-* name, then renamed). Ctrl-C "
                    "or SIGTERM stops the run (exit 130 / 143): no partial output stays, and the summary lists the "
                    "outputs finished and the sources not finished.",
        epilog="examples:\n  pyloader convert runs/*.weights --cfg yolov4-tiny.cfg -o out/\n"
               "  pyloader convert checkpoints/ -o out/ --format tflite --tflite-fp16 --jobs 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("sources", nargs="+", metavar="SRC",
                   help="checkpoint files, folders (their .weights/.pt/.pth files) or glob patterns")
    c.add_argument("-o", "--out-dir", "--output", dest="out_dir", required=True, metavar="OUTDIR",
                   help="where the outputs go (created if missing)")
    c.add_argument("--cfg", metavar="CFG",
                   help="darknet .cfg for every .weights source (default: the .cfg of the same stem beside it); "
                        "a model .yaml for plain PyTorch state_dicts")
    c.add_argument("--format", choices=_FORMATS, default="keras",
                   help="keras: <stem>.keras (default); weights.h5: <stem>.weights.h5; savedmodel: "
                        "<stem>_saved_model/ (TF SavedModel); tflite: <stem>.tflite")
    c.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="fold batch norm into the convolutions (default: yes)")
    c.add_argument("--decode", action="store_true",
                   help="one output [batch, boxes, 5 + classes] with decoded boxes instead of the raw heads")
    c.add_argument("--input-size", type=_input_size, metavar="HxW",
                   help="input height x width (default: the cfg's, or 640x640 / 1280x1280 for YOLOv5)")
    c.add_argument("-j", "--jobs", type=_jobs, default=1, metavar="N",
                   help="worker processes (default 1: convert in this process)")
    c.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    c.add_argument("--tflite-fp16", action="store_true", help="with --format tflite: float16 weights")
    c.add_argument("--tflite-writer", choices=("auto", "direct", "converter"), default=None,
                   help="with --format tflite: who writes the file (auto: pyloader's direct writer where it covers "
                        "the model (float32 or --tflite-fp16), else TensorFlow's converter; direct: an error where it "
                        "does not; converter: always TensorFlow's converter)")
    c.add_argument("--names", metavar="FILE",
                   help="darknet .names file (one class name per line) for the .weights sources' metadata "
                        "(default: class0, class1, ...)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="keep TensorFlow's own log lines (silenced by default) and say how each output was "
                        "written where the exporter ran instead of a template")
    c.add_argument("--no-templates", dest="templates", action="store_false",
                   help="run the format's exporter for every checkpoint (default: write the checkpoints of an "
                        "architecture after the first from a template output where that is exact)")
    c.add_argument("--no-source-hash", dest="source_hash", action="store_false",
                   help="leave the source's SHA-256 out of every output's metadata (default: recorded; hashing "
                        "bounds a bulk run's speed, ~0.14 s per 258 MB checkpoint)")
    _add_detect_options(c)
    c.set_defaults(func=_convert_cmd)

    i = sub.add_parser(
        "inspect", help="show a checkpoint's format, header, architecture and tensors (no TensorFlow)",
        description="Print a checkpoint's format, header, architecture summary and tensor table. Reads the "
                    "file with pyloader's own readers: TensorFlow and torch are not imported.",
    )
    i.add_argument("file", metavar="FILE",
                   help=".weights or .pt checkpoint, or an output of pyloader convert (.keras, .weights.h5, "
                        "SavedModel folder, .tflite): its metadata")
    i.add_argument("--cfg", metavar="CFG", help="darknet .cfg (default: the .cfg of the same stem beside FILE); "
                                                "the model .yaml of a plain PyTorch state_dict")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_inspect_cmd)

    sub.add_parser("bench", help="measure conversion throughput against the alternatives (pyloader bench --help for its options)",
                   add_help=False)
    return parser


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def _add_detect_options(c) -> None:
    """End-to-end detection (--nms), int8 TFLite and --verify."""
    g = c.add_argument_group("detection, int8 and verification")
    g.add_argument("--nms", action="store_true",
                   help="decode + non-maximum suppression in the model: outputs boxes [B, max_det, 4] "
                        "(x1, y1, x2, y2 pixels), scores, classes, num_detections")
    g.add_argument("--iou", type=_fraction, metavar="T", help="with --nms: IoU threshold (default 0.45)")
    g.add_argument("--score", type=_fraction, metavar="T", help="with --nms: score threshold (default 0.25)")
    g.add_argument("--max-det", type=_jobs, metavar="N", help="with --nms: detections kept per image (default 300)")
    g.add_argument("--agnostic", action="store_true", help="with --nms: suppress across classes (default: per class)")
    g.add_argument("--int8", action="store_true",
                   help="with --format tflite: int8 weights and activations (needs --calibration)")
    g.add_argument("--int8-io", action="store_true", help="with --int8: int8 input and outputs too (full integer)")
    g.add_argument("--calibration", metavar="DIR",
                   help="with --int8: a folder of images (jpg/png/...) the quantization is calibrated on")
    g.add_argument("--verify", action="store_true",
                   help="run each written output in its own runtime on one image and compare with the model; "
                        "a difference above the format's tolerance fails the source")


def _detect_options(args):
    """(nms options or None, usage error message or None) for the --nms/--int8/--verify flags."""
    from .bulk.jobs import check_detect_options

    extra = {k: v for k, v in (("iou", args.iou), ("score", args.score), ("max_det", args.max_det)) if v is not None}
    if args.agnostic:
        extra["agnostic"] = True
    if extra and not args.nms:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        return None, f"{flags} need --nms"
    nms = {**extra} if args.nms else None
    if args.int8_io and not args.int8:
        return None, "--int8-io needs --int8"
    if args.int8 and args.format != "tflite":
        return None, f"--int8 needs --format tflite (got --format {args.format})"
    if args.int8 and args.calibration is None:
        return None, "--int8 needs --calibration DIR (a folder of images): random data is not calibration"
    if args.calibration is not None and not args.int8:
        return None, "--calibration is only used with --int8"
    if args.nms and args.format == "weights.h5":
        return None, "--nms: a .weights.h5 file holds weights only; use --format keras, savedmodel or tflite"
    if args.int8 and args.tflite_fp16:
        return None, "--int8 and --tflite-fp16 exclude each other"
    try:
        nms = check_detect_options(args.format, True if nms == {} else nms, args.int8, args.int8_io,
                                   args.calibration, args.tflite_fp16)
    except (ValueError, RuntimeError) as e:  # FormatError (a ValueError) names the folder or image
        return None, str(e)
    return nms, None


def main(argv=None) -> int:
    """The `pyloader` command (argv None: this process's command line) or its arguments given from Python."""
    args_from_python = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # names that are not UTF-8 (files, pickled strings) print escaped
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    if argv and argv[0] == "bench":
        return _bench_cmd(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.own_process = not args_from_python  # the command owns the process: it may skip unused imports
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("pyloader: interrupted", file=sys.stderr)
        return 128 + (_SIGNALLED[0] if _SIGNALLED else signal.SIGINT)
    except BrokenPipeError:
        return 1


# ---------------------------------------------------------------------------------------------------------
# convert


def _convert_cmd(args) -> int:
    if args.tflite_fp16 and args.format != "tflite":
        print("pyloader convert: --tflite-fp16 needs --format tflite", file=sys.stderr)
        return 2
    if args.cfg is not None and not os.path.isfile(args.cfg):
        print(f"pyloader convert: --cfg {args.cfg}: no such file", file=sys.stderr)
        return 2
    if args.names is not None and not os.path.isfile(args.names):
        print(f"pyloader convert: --names {args.names}: no such file", file=sys.stderr)
        return 2
    if args.tflite_writer is not None and args.format != "tflite":
        print("pyloader convert: --tflite-writer needs --format tflite", file=sys.stderr)
        return 2
    args.tflite_writer = args.tflite_writer or "auto"
    if args.own_process:
        _skip_unused_imports()
    _catch_interrupts()
    # the bar decides now whether stderr is a terminal (the filter below puts a pipe in its place)
    args.progress_bar = None if args.quiet else ProgressBar()
    if not args.verbose:
        quiet_framework_logs()
        with CppLogFilter():
            return _convert_run(args)
    return _convert_run(args)


# Keras imports these where they are installed, for plot_image_gallery and for pandas inputs to fit / predict: a
# conversion calls neither, and importing them is ~0.5 s of a one-checkpoint run (a quarter of a direct TFLite
# conversion on the JAX backend). The `pyloader convert` command's own process goes without them (not main() called
# from Python, whose process may need them; worker processes it spawns import what they import).
_UNUSED_BY_CONVERT = ("matplotlib", "pandas")


def _skip_unused_imports() -> None:
    for name in _UNUSED_BY_CONVERT:
        sys.modules.setdefault(name, None)  # `import name` raises ImportError, which Keras handles


def _convert_run(args) -> int:
    from .bulk import Interrupted, check_framework, check_out_dir, convert

    try:
        check_framework(args.format, args.format == "tflite" and (args.tflite_writer == "converter" or args.int8))
    except ModuleNotFoundError as e:
        print(f"pyloader convert: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"pyloader convert: --format {args.format}: {e}", file=sys.stderr)
        return 2
    nms, problem = _detect_options(args)
    if problem is None:
        try:
            check_out_dir(args.out_dir)
        except ValueError as e:
            problem = str(e)
    if problem is not None:
        print(f"pyloader convert: {problem}", file=sys.stderr)
        return 2
    list_found(args.sources, sys.stderr)
    progress = args.progress_bar
    stopped = None
    try:
        results = convert(args.sources, args.out_dir, cfg=args.cfg, format=args.format, fold_bn=args.fold_bn,
                          decode=args.decode, input_size=args.input_size, overwrite=args.overwrite,
                          tflite_fp16=args.tflite_fp16, jobs=args.jobs, progress=progress, names=args.names,
                          nms=nms, int8=args.int8, int8_io=args.int8_io, calibration=args.calibration,
                          verify=args.verify, templates=args.templates, tflite_writer=args.tflite_writer,
                          source_hash=args.source_hash)
    except Interrupted as e:
        results, stopped = e.results, (_SIGNALLED[0] if _SIGNALLED else signal.SIGINT)
    except ValueError as e:  # the output folder, when making it or writing in it fails after all
        print(f"pyloader convert: {e}", file=sys.stderr)
        return 2
    if progress is not None:
        progress.end()
    for r in results:
        r.reason = cli_reason(r.reason)
    print(summary_table(results))
    if stopped is not None:
        left = sum(r.status == "interrupted" for r in results)
        print(f"pyloader convert: interrupted ({signal.Signals(stopped).name}): "
              f"{sum(r.status == 'converted' for r in results)} converted (listed above), {left} not finished; "
              "no partial output left", file=sys.stderr)
        return 128 + stopped
    imported = max((r.import_seconds for r in results), default=0.0)
    if imported:
        print(f"framework import: {imported:.1f} s (once per process; not in the times above)")
    runtime = getattr(output_format(args.format), "runtime", None) if args.verify else None
    if runtime is not None:  # formats with a runtime of their own (TFLite: LiteRT or tf.lite)
        print(f"verify: the {args.format} outputs ran in {runtime()}")
    for r in results:
        if args.format == "tflite" and r.status == "converted":
            print(f"tflite writer: {r.output}: {(read_metadata(r.output) or {}).get('tflite_writer', 'unknown')}")
    if args.verbose:
        for r in results:
            if getattr(r, "note", ""):
                print(f"pyloader convert: {r.source}: {r.note}", file=sys.stderr)
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"pyloader convert: failed: {r.source}: {r.reason}", file=sys.stderr)
    return 1 if failed else 0


_CPP_LOG = re.compile(rb"^(?:[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+\] |WARNING: All log messages before "
                      rb"absl::InitializeLog|To enable the following instructions: .* rebuild TensorFlow)")


class CppLogFilter:
    """Drops TensorFlow's C++ log lines (absl/glog format: `I0000 00:00:... port.cc:153] ...`) from this
    process's standard error -- file descriptor 2, so worker processes it starts too; everything else passes.
    TensorFlow 2.21 writes some of them before honouring TF_CPP_MIN_LOG_LEVEL."""

    def __enter__(self):
        import threading

        sys.stderr.flush()
        self.saved = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.closing = False
        self.thread = threading.Thread(target=self._pump, args=(r,), daemon=True)
        self.thread.start()
        return self

    def _pump(self, r):
        import select

        buf = b""
        while True:
            if not select.select([r], [], [], 0.1)[0]:
                if self.closing:  # drained; a process that outlives the block may still hold the pipe open
                    break  # (a process pool's resource tracker, which exits only after this process)
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out = [line + b"\n" for line in lines if not _CPP_LOG.match(line)]
            if buf and not _CPP_LOG.match(buf) and (buf[:1] not in b"IWEFT" or buf.startswith(b"\r")):
                out.append(buf)  # a progress bar redraw (no newline): pass it on now
                buf = b""
            if out:
                os.write(self.saved, b"".join(out))
        if buf and not _CPP_LOG.match(buf):
            os.write(self.saved, buf)
        os.close(r)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes this process's writer; the pump passes on what is left, then ends
        self.closing = True
        self.thread.join(timeout=5)
        os.close(self.saved)


def quiet_framework_logs() -> None:
    """TensorFlow's C++ log lines (oneDNN, CPU features, ...) off unless asked for: set before it loads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def list_found(sources, stream) -> None:
    """What the sources expand to, before converting (folders are searched with their subfolders)."""
    from .bulk import find_checkpoints

    found, _ = find_checkpoints(sources)
    if not found:
        return
    stream.write(f"pyloader convert: found {len(found)} checkpoint{'s' if len(found) != 1 else ''}:\n")
    for path, stem in found:
        stream.write(f"  {path}  ->  {stem}\n")
    stream.flush()


_SIGNALLED = []  # the signals that interrupted this command: the exit status is 128 + the first


def _interrupt(signum, frame):
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


def _catch_interrupts() -> None:
    """Ctrl-C and SIGTERM (what a job scheduler sends) raise KeyboardInterrupt, and are remembered for the exit
    status; a signal this process was started ignoring (nohup, a background job) stays ignored."""
    for s in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(s) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(s, _interrupt)


# ---------------------------------------------------------------------------------------------------------
# inspect


def _inspect_cmd(args) -> int:
    from .errors import FormatError
    from .inspect_checkpoint import format_report, inspect
    from .outputs import format_of_path

    if format_of_path(args.file) is not None:
        return _inspect_output(args)
    try:
        info = inspect(args.file, args.cfg)  # raises only FormatError (pyloader.boundary)
    except FormatError as e:
        print(f"pyloader inspect: {e}", file=sys.stderr)
        return 1
    if args.json:
        import json

        print(json.dumps(info, indent=1, default=str))
    else:
        print(format_report(info))
    return 0


def _inspect_output(args) -> int:
    """The metadata of a file pyloader convert wrote (read without TensorFlow or Keras)."""
    import json

    from .outputs import format_of_path

    kind = format_of_path(args.file)
    try:
        meta = read_metadata(args.file)
    except (OSError, ValueError, KeyError) as e:
        print(f"pyloader inspect: {args.file}: cannot read its metadata: {e}", file=sys.stderr)
        return 1
    if meta is None:
        print(f"pyloader inspect: {args.file}: a {kind} file without pyloader metadata", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"file": args.file, "format": kind, "metadata": meta}, indent=1))
        return 0
    src = meta.get("source") or {}
    names = meta.get("class_names") or []
    lines = [f"file:        {args.file}", f"format:      {kind} (pyloader {meta.get('pyloader_version')})",
             f"source:      {src.get('name')}  sha256 {src.get('sha256')}",
             f"model:       {meta.get('family')} {meta.get('architecture')}, decode={meta.get('decode')}",
             f"input:       {meta['input']['name']} {meta['input']['shape']} {meta['input']['layout']}",
             f"classes:     {len(names)}: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}",
             "outputs:"]
    for o in meta.get("outputs", []):
        extra = "".join(f", {k} {o[k]}" for k in ("shape", "stride", "anchors") if k in o)
        lines.append(f"  {o['name']}{extra}")
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------------------------------------
# bench: the benchmark is the package pyloader_bench (bench/pyloader_bench), imported only when asked for


def _bench_cmd(argv) -> int:
    try:
        from pyloader_bench.cli import main
    except ModuleNotFoundError as e:
        if e.name not in ("pyloader_bench", "pyloader_bench.cli"):
            raise
        print("pyloader bench: not available in this installation (the package pyloader_bench is missing)",
              file=sys.stderr)
        return 2
    return main(argv)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
