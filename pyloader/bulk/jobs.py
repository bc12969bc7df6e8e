"""Conversion jobs: finding the checkpoints a user named, naming their outputs, checking the options (no framework
import)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from ..boundary import check_regular, fs_str, shown
from ..errors import FormatError
from ..outputs import output_format

TMP_PREFIX = ".pyloader-tmp-"
CHECKPOINT_SUFFIXES = (".weights", ".pt", ".pth")


@dataclass
class Result:
    """What happened to one source. `bytes` is the checkpoint's size, `seconds` the time spent on it."""

    source: str
    output: str | None
    status: str  # 'converted', 'skipped' or 'failed'
    reason: str = ""
    seconds: float = 0.0
    bytes: int = 0
    import_seconds: float = 0.0  # the one-time framework import in the worker, not part of `seconds`
    verify: float | None = None  # with verify=True: max relative difference of the written output
    note: str = ""  # how it was written when that is worth saying (`pyloader convert -v`): template fallbacks
    no_space: int = 0  # failed for a full device: the bytes the output needs


@dataclass
class Job:
    """One conversion, as sent to a worker."""

    source: str
    output: str
    cfg: str | None = None
    format: str = "keras"
    fold_bn: bool = True
    decode: bool = False
    input_size: tuple | None = None
    overwrite: bool = False
    tflite_fp16: bool = False
    bytes: int = 0
    names: str | None = None  # darknet .names file (class names)
    nms: dict | None = None  # NMS options (keras_blocks.nms_options): decode + NMS outputs
    int8: bool = False  # tflite: int8 weights and activations, calibrated on `calibration`'s images
    int8_io: bool = False  # with int8: integer input and outputs too
    calibration: str | None = None
    verify: bool = False  # run the written output in its own runtime and compare with the model
    template: bool = True  # write from a per-architecture template output where exact (pyloader.outputs.template)
    verified: float | None = None  # set when a template-written output was verified
    tflite_writer: str = "auto"  # tflite: auto, direct or converter (pyloader.outputs.tflite.writer)
    source_hash: bool = True  # the source's SHA-256 in the metadata (else pyloader.metadata.NOT_HASHED)


# ---------------------------------------------------------------------------------------------------------
# Planning (no TensorFlow)


def output_name(source: str, fmt: str, stem: str | None = None) -> str:
    stem = os.path.splitext(os.path.basename(source))[0] if stem is None else stem
    return output_format(fmt).output_name(stem)


def find_checkpoints(sources) -> tuple[list, list]:
    """([(checkpoint path, output stem)], failed Results for sources that name nothing), in order, without
    duplicates. Folders are searched with their subfolders (hidden ones aside); a checkpoint found below a
    folder is named after its path relative to it (`train/exp3/weights/best.pt` -> `train-exp3-best`)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found, missing, seen = [], [], set()

    def add(p, stem=None):
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            found.append((p, os.path.splitext(os.path.basename(p))[0] if stem is None else stem))

    def refuse_special(p) -> bool:
        """A FIFO, device or socket is refused with a message (never opened: opening a FIFO blocks)."""
        try:
            check_regular(p)
        except FormatError as e:
            if os.path.exists(p) and not os.path.isdir(p):
                missing.append(Result(p, None, "failed", str(e).removeprefix(shown(p) + ": ")))
                return True
        return False

    for s in sources:
        s = fs_str(s)
        if os.path.isdir(s):
            hits = _walk_checkpoints(s, refuse_special)
            if not hits:
                missing.append(Result(s, None, "failed", "no checkpoint found: looked for "
                                      f"{', '.join('*' + x for x in CHECKPOINT_SUFFIXES)} files in this folder "
                                      "and its subfolders"))
            for p, stem in hits:
                add(p, stem)
        elif os.path.isfile(s):
            add(s)
        elif refuse_special(s):
            pass
        elif glob.has_magic(s):
            hits = sorted(p for p in glob.glob(s) if refuse_special(p) is False and os.path.isfile(p))
            if not hits:
                missing.append(Result(s, None, "failed", "the pattern matches no file"))
            for p in hits:
                add(p)
        else:
            missing.append(Result(s, None, "failed", "no such file or folder"))
    return found, missing


def _walk_checkpoints(folder: str, refuse_special) -> list:
    """[(path, stem)] of the checkpoints in `folder` and its subfolders, sorted by relative path;
    `refuse_special(path)` reports (and skips) FIFOs, devices and sockets."""
    hits = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = os.path.join(root, name)
            if (name.lower().endswith(CHECKPOINT_SUFFIXES) and not name.startswith(".") and not refuse_special(p)
                    and os.path.isfile(p)):
                rel = os.path.relpath(p, folder).split(os.sep)
                parts = [d for d in rel[:-1] if d != "weights"] + [os.path.splitext(rel[-1])[0]]
                hits.append((p, "-".join(parts)))
    return hits


def plan_jobs(sources, out_dir, *, cfg=None, format="keras", fold_bn=True, decode=False, input_size=None,
              overwrite=False, tflite_fp16=False, names=None, nms=None, int8=False, int8_io=False,
              calibration=None, verify=False, tflite_writer="auto") -> tuple[list, list]:
    """(jobs to run, Results decided without running: missing sources, name clashes, existing outputs)."""
    output_format(format)  # ValueError naming the formats
    check_tflite_writer(format, tflite_writer)
    nms = check_detect_options(format, nms, int8, int8_io, calibration, tflite_fp16)
    if input_size is not None:
        input_size = tuple(int(v) for v in input_size)
    paths, done = find_checkpoints(sources)
    darknet = {src for src, _ in paths if names is not None and _is_darknet(src)}
    if names is not None and paths and not darknet:
        raise ValueError(f"names {shown(os.fspath(names))}: class names are for Darknet .weights sources; none "
                         "of the sources is one (a .pt carries its class names)")
    jobs, taken = [], {}
    for src, stem in paths:
        out = os.path.join(os.fspath(out_dir), output_name(src, format, stem))
        if out in taken:
            done.append(Result(src, None, "failed", f"output name {os.path.basename(out)} is taken by {taken[out]}"))
            continue
        taken[out] = src
        size = os.path.getsize(src)
        if os.path.lexists(out) and not overwrite:
            done.append(Result(src, out, "skipped", "output exists (use overwrite)", 0.0, size))
            continue
        jobs.append(Job(src, out, None if cfg is None else os.fspath(cfg), format, bool(fold_bn), bool(decode),
                        input_size, bool(overwrite), bool(tflite_fp16), size,
                        os.fspath(names) if src in darknet else None, nms, bool(int8), bool(int8_io),
                        None if calibration is None else os.fspath(calibration), bool(verify),
                        tflite_writer=tflite_writer))
    return jobs, done


def check_tflite_writer(format, tflite_writer) -> None:
    """ValueError for a TFLite writer that is not one of pyloader.outputs.tflite.WRITERS, or one chosen for
    another format."""
    from ..outputs.tflite import WRITERS

    if tflite_writer not in WRITERS:
        raise ValueError(f"tflite_writer must be one of {', '.join(WRITERS)}; got {tflite_writer!r}")
    if tflite_writer != "auto" and format != "tflite":
        raise ValueError(f"tflite_writer {tflite_writer!r} needs format tflite (got {format})")


def _is_darknet(src: str) -> bool:
    """Whether `src` is a Darknet source (names / --names apply to it, a .pt carries its own); a file that is
    no checkpoint counts as one, its job then fails saying what it is."""
    from ..registry import container_of

    try:
        return container_of(src) != "torch"
    except (FormatError, OSError):
        return True


def check_detect_options(format, nms, int8, int8_io, calibration, tflite_fp16):
    """Validate the NMS / int8 options before anything runs (ValueError, or FormatError for the calibration
    folder and its images); returns the normalised NMS options. No TensorFlow import."""
    from ..keras_blocks.nms_options import nms_options

    nms = nms_options(nms)
    if nms is not None and format == "weights.h5":
        raise ValueError("nms: a .weights.h5 file holds weights only; use format keras, savedmodel or tflite")
    if int8_io and not int8:
        raise ValueError("int8_io needs int8")
    if int8:
        if format != "tflite":
            raise ValueError(f"int8 needs format tflite (got {format})")
        if tflite_fp16:
            raise ValueError("int8 and tflite_fp16 exclude each other")
        if nms is not None and int8_io:  # NMS outputs (classes, counts) are not int8 tensors
            raise ValueError("int8_io with nms is not supported: NMS outputs boxes, scores, classes and counts; use "
                             "int8 without int8_io (the network int8, NMS in float)")
        if calibration is None:
            raise ValueError("int8 needs calibration images (a folder of image files): random data is not "
                             "calibration")
        from ..calibration import check_images, list_images

        check_images(list_images(calibration))
    elif calibration is not None:
        raise ValueError("calibration is only used with int8")
    return nms

