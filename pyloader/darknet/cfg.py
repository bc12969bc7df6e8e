"""Darknet .cfg parser and shape inference: sections and typed options (here), each layer's options and output shape (layers.py).

Pure Python (no TensorFlow, no numpy). The semantics: docs/FORMATS.md, section 2 (Darknet .cfg).
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field

from ..boundary import fs_str, open_regular
from ..errors import FormatError
from .layers import LAYER_BUILDERS


_REQUIRED = object()

# Options darknet reads that only matter for training or data augmentation; they are accepted and ignored.
_NET_IGNORED = {
    "B1", "B2", "adam", "adversarial_lr", "angle", "aspect", "attention", "augment_speed",
    "badlabels_rejection_percentage", "batch", "blur", "burn_in", "contrastive", "contrastive_color",
    "contrastive_jit_flip", "cutmix", "decay", "dynamic_minibatch", "ema_alpha", "eps", "equidistant_point",
    "exposure", "flip", "gamma", "gaussian_noise", "hue", "label_smooth_eps", "learning_rate",
    "learning_rate_min", "letter_box", "loss_scale", "max_batches", "max_chart_loss", "max_crop", "min_crop",
    "mixup", "momentum", "mosaic", "mosaic_bound", "num_sigmas_reject_badlabels", "optimized_memory", "policy",
    "power", "resize_step", "saturation", "scale", "scales", "seq_scales", "sequential_subdivisions",
    "sgdr_cycle", "sgdr_mult", "step", "steps", "subdivisions", "time_steps", "track", "try_fix_nan",
    "unsupervised", "use_cuda_graph", "weights_reject_freq", "workspace_size_limit_MB", "inputs",
}
_COMMON_IGNORED = {"stopbackward", "stream", "wait_stream", "train_only_bn", "dontupdate"}

SECTION_TYPES = {
    "convolutional", "maxpool", "avgpool", "dropout", "route", "shortcut", "upsample", "reorg3d", "reorg",
    "sam", "scale_channels", "yolo", "region",
}
_ALIASES = {"conv": "convolutional", "max": "maxpool", "avg": "avgpool", "network": "net"}


@dataclass
class Section:
    """One [section] of a cfg file with its options and where they came from."""

    type: str
    line: int
    path: str
    index: int  # darknet layer index; -1 for [net]
    options: dict = field(default_factory=dict)  # name -> (value string, line)
    used: set = field(default_factory=set)

    def where(self) -> str:
        name = os.path.basename(self.path)
        if self.index < 0:
            return f"[{self.type}] ({name} line {self.line})"
        return f"layer {self.index} [{self.type}] ({name} line {self.line})"

    def error(self, message: str, option: str | None = None) -> FormatError:
        at = self.where()
        if option is not None and option in self.options:
            at += f", option '{option}' on line {self.options[option][1]}"
        return FormatError(f"{self.path}: {at}: {message}")

    def has(self, name: str) -> bool:
        return name in self.options

    def _raw(self, name, default):
        self.used.add(name)
        if name in self.options:
            return self.options[name][0]
        if default is _REQUIRED:
            raise self.error(f"option '{name}' is required")
        return None

    def str(self, name: str, default=_REQUIRED) -> str:
        raw = self._raw(name, default)
        return default if raw is None else raw

    def int(self, name: str, default=_REQUIRED) -> int:
        """option_find_int: atoi of the value."""
        raw = self._raw(name, default)
        return default if raw is None else _atoi(self, name, raw)

    def float(self, name: str, default=_REQUIRED) -> float:
        """option_find_float: atof of the value, returned as a C float."""
        raw = self._raw(name, default)
        return default if raw is None else _atof(raw)

    def ints(self, name: str, default=_REQUIRED, hash_ends: bool = False) -> list:
        """A darknet list read with atoi, one value per comma-separated piece (see _pieces)."""
        raw = self._raw(name, default)
        return default if raw is None else [_atoi(self, name, p) for p in _pieces(raw, hash_ends)]

    def floats(self, name: str, default=_REQUIRED, hash_ends: bool = False) -> list:
        """A darknet list read with atof, one value per comma-separated piece (see _pieces)."""
        raw = self._raw(name, default)
        return default if raw is None else [_atof(p) for p in _pieces(raw, hash_ends)]

    def check_all_used(self, ignored: set) -> None:
        for name, (_, line) in self.options.items():
            if name not in self.used and name not in ignored and name not in _COMMON_IGNORED:
                raise self.error(f"unsupported option '{name}'", name)


_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_C_SPACE = "[ \t\n\v\f\r]*"  # isspace() in the C locale: atoi and atof skip these first
_ATOI = re.compile(_C_SPACE + r"([+-]?[0-9]+)", re.ASCII)
_ATOF = re.compile(_C_SPACE + r"""([+-]?) (?:  # strtod's longest valid prefix
    (?P<hex> 0x (?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+) (?:p[+-]?[0-9]+)? )
  | (?P<dec> (?:[0-9]+\.?[0-9]*|\.[0-9]+) (?:e[+-]?[0-9]+)? )
  | (?P<inf> inf(?:inity)? ) | (?P<nan> nan(?:\([0-9a-z_]*\))? ) )""", re.ASCII | re.IGNORECASE | re.VERBOSE)


def _atoi(sec: Section, name: str, raw: str) -> int:
    """C atoi: leading spaces, a sign, the digits up to the first other character ("255abc" is 255); no digits
    is 0. darknet keeps the result in a C int: values outside it (where glibc's atoi wraps) are refused."""
    m = _ATOI.match(raw)
    value = int(m.group(1)) if m else 0
    if not _INT_MIN <= value <= _INT_MAX:
        raise sec.error(f"{value if abs(value) < 10 ** 30 else 'an integer'} is outside darknet's int range", name)
    return value


def _atof(raw: str) -> float:
    """C atof (strtod's longest valid prefix: decimal, hex, inf, nan; none is 0.0), rounded to the C float
    option_find_float returns and darknet stores."""
    m = _ATOF.match(raw)
    if not m:
        return 0.0
    if m["hex"]:
        value = float.fromhex(m["hex"])
    else:
        value = float(m["dec"] or ("nan" if m["nan"] else "inf"))
    value = -value if m.group(1) == "-" else value
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond FLT_MAX: the C conversion gives infinity
        return math.copysign(math.inf, value)


def _pieces(raw: str, hash_ends: bool) -> list:
    """darknet's list parsing (parse_route, parse_yolo ...): n = 1 + the number of commas, counted up to the first
    '#' where hash_ends (parse_yolo_mask, parse_yolo's anchors) else in the whole value; piece i starts after comma
    i and is read with atoi/atof up to its first invalid character. "1,,2" has 3 pieces, "1,2," too (the last is
    empty: 0), "1,2#,3" 2 with hash_ends."""
    counted = raw.split("#", 1)[0] if hash_ends else raw
    return raw.split(",")[: counted.count(",") + 1]


_STRIP = str.maketrans("", "", " \t\r\n")  # AlexeyAB's strip(): these four, everywhere in the line


def parse_cfg_text(text: str, path: str) -> list:
    """Split cfg text into Sections (the first is [net]) as darknet's read_cfg does: lines end at '\n' only (fgetl),
    each loses every space, tab and CR (strip), then '[type]', '#' or ';' comments, or 'key=value' split at the
    first '='; the value is kept whole ('#' inside it is not a comment: atoi/atof stop before it)."""
    if "\0" in text:  # C strings end there: darknet truncates the line and joins the next one to it
        line = text.count("\n", 0, text.index("\0")) + 1
        raise FormatError(f"{path}: not a text cfg (a NUL byte on line {line})")
    sections: list = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.translate(_STRIP)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if line[-1] != "]" or len(line) < 3:
                raise FormatError(f"{path}: line {lineno}: malformed section header '{raw.strip()}'")
            kind = line[1:-1]
            kind = _ALIASES.get(kind, kind)
            index = len(sections) - 1
            sections.append(Section(kind, lineno, path, index))
            continue
        if "=" not in line:  # darknet keeps it as an option without value (its default is used): an error here
            raise FormatError(f"{path}: line {lineno}: expected 'key=value' or '[section]', got '{raw.strip()}'")
        if not sections:
            raise FormatError(f"{path}: line {lineno}: option '{raw.strip()}' before the first [section]")
        key, value = line.split("=", 1)
        if not key or not value:  # darknet: "Config file error" ('key=') or a nameless option ('=value')
            raise FormatError(f"{path}: line {lineno}: malformed option '{raw.strip()}'")
        sec = sections[-1]
        if key in sec.options:  # darknet's option_find returns the first occurrence: later ones are unused
            continue
        sec.options[key] = (value, lineno)
    if not sections or sections[0].type != "net":
        raise FormatError(f"{path}: the first section must be [net] (or [network])")
    for sec in sections[1:]:
        if sec.type == "net":
            raise sec.error("a second [net] section")
        if sec.type not in SECTION_TYPES:
            raise sec.error(f"unsupported section type [{sec.type}]")
    if len(sections) == 1:
        raise FormatError(f"{path}: the cfg has no layers after [net]")
    return sections


@dataclass
class Network:
    path: str
    height: int
    width: int
    channels: int
    layers: list

    @property
    def heads(self) -> list:
        return [l for l in self.layers if l.type in ("yolo", "region")]

    @property
    def outputs(self) -> list:
        """The layers whose output the model returns: the heads, or the last layer if there is none."""
        return self.heads or [self.layers[-1]]


def read_cfg(path) -> list:
    path = fs_str(path)
    try:
        with open_regular(path) as f:  # a FIFO named like the cfg is refused, not waited on
            data = f.read()
    except OSError as e:
        raise FormatError(f"{path}: cannot read cfg: {e.strerror or e}") from None
    return parse_cfg_bytes(data, path)


def parse_cfg_bytes(data: bytes, path) -> list:
    # darknet reads bytes: a byte that is not UTF-8 (a Latin-1 comment) is no error; shown escaped in messages
    text = data.decode("utf-8", errors="backslashreplace")
    return parse_cfg_text(text.removeprefix("\ufeff"), fs_str(path))


def build_network(sections: list, input_size=None) -> Network:
    """Shape inference over the parsed sections. input_size=(h, w) overrides [net] height/width."""
    net = sections[0]
    height = net.int("height", 0)
    width = net.int("width", 0)
    channels = net.int("channels", 0)
    net.check_all_used(_NET_IGNORED)
    if input_size is not None:
        try:
            height, width = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise FormatError(f"input_size must be (height, width), got {input_size!r}") from None
    if height <= 0 or width <= 0 or channels <= 0:
        raise net.error(f"height, width and channels must be positive, got {height}x{width}x{channels}")
    layers: list = []
    shape = (height, width, channels)
    for sec in sections[1:]:
        layer = LAYER_BUILDERS[sec.type](sec, layers, shape)
        h, w, c = layer.shape
        if h <= 0 or w <= 0 or c <= 0:
            raise sec.error(f"output would be {h}x{w}x{c} for input {shape[0]}x{shape[1]}x{shape[2]}")
        layers.append(layer)
        shape = layer.shape
    return Network(sections[0].path, height, width, channels, layers)


def parse_network(cfg_path, input_size=None) -> Network:
    return build_network(read_cfg(cfg_path), input_size)
