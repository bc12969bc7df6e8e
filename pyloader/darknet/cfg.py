"""Darknet .cfg parser and shape inference: sections and typed options (here), each layer's options and output shape (layers.py).

Pure Python (no TensorFlow, no numpy). The semantics: docs/FORMATS.md, section 2 (Darknet .cfg).
"""

from __future__ import annotations

import os
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
        raw = self._raw(name, default)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.error(f"expected an integer, got '{raw[:40]}'", name) from None
        return _c_int(self, name, value)

    def float(self, name: str, default=_REQUIRED) -> float:
        raw = self._raw(name, default)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise self.error(f"expected a number, got '{raw}'", name) from None

    def ints(self, name: str, default=_REQUIRED) -> list:
        raw = self._raw(name, default)
        if raw is None:
            return default
        try:
            values = [int(x) for x in raw.split(",") if x != ""]
        except ValueError:
            raise self.error(f"expected a comma-separated list of integers, got '{raw[:60]}'", name) from None
        for v in values:
            _c_int(self, name, v)
        return values

    def floats(self, name: str, default=_REQUIRED) -> list:
        raw = self._raw(name, default)
        if raw is None:
            return default
        try:
            return [float(x) for x in raw.split(",") if x != ""]
        except ValueError:
            raise self.error(f"expected a comma-separated list of numbers, got '{raw}'", name) from None

    def check_all_used(self, ignored: set) -> None:
        for name, (_, line) in self.options.items():
            if name not in self.used and name not in ignored and name not in _COMMON_IGNORED:
                raise self.error(f"unsupported option '{name}'", name)


_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def _c_int(sec: Section, name: str, value: int) -> int:
    """darknet reads every integer option into a C int (atoi): values outside it are not darknet's."""
    if not _INT_MIN <= value <= _INT_MAX:
        raise sec.error(f"{value if abs(value) < 10 ** 30 else 'an integer'} is outside darknet's int range", name)
    return value


def parse_cfg_text(text: str, path: str) -> list:
    """Split cfg text into Sections (the first is [net]). Lines: '[type]', 'key=value', '#' or ';' comments."""
    sections: list = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())  # darknet strips every whitespace character, inside the line too
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
        if "=" not in line:
            raise FormatError(f"{path}: line {lineno}: expected 'key=value' or '[section]', got '{raw.strip()}'")
        if not sections:
            raise FormatError(f"{path}: line {lineno}: option '{raw.strip()}' before the first [section]")
        key, value = line.split("=", 1)
        if "#" in value:  # an inline comment: darknet would keep it in the value; no official cfg relies on that
            value = value.split("#", 1)[0]
        if not key or not value:
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
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not a text cfg (invalid UTF-8 at byte {e.start})") from None
    return parse_cfg_text(text.lstrip("\ufeff"), path)


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
