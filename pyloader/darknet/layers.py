"""Darknet layers: each cfg section's options read as darknet reads them, its inputs and its output shape
(docs/FORMATS.md, section 2). pyloader.darknet.cfg runs these builders over a parsed cfg."""

from __future__ import annotations

from dataclasses import dataclass

# Activations pyloader computes exactly as darknet does. 'silu' is not a darknet activation (darknet falls
# back to relu for unknown names); WongKinYiu's yolov7 darknet cfgs use it meaning SiLU (x * sigmoid(x),
# what their PyTorch models were trained with), so pyloader computes it as swish. See docs/FORMATS.md, 2.3.
ACTIVATIONS = {"linear", "leaky", "relu", "logistic", "tanh", "mish", "swish", "silu"}

_YOLO_IGNORED = {
    "beta_nms", "cls_normalizer", "counters_per_class", "delta_normalizer", "dets_for_show", "dets_for_track",
    "embedding_layer", "focal_loss", "ignore_thresh", "iou_loss", "iou_normalizer", "iou_thresh",
    "iou_thresh_kind", "jitter", "label_smooth_eps", "max", "max_delta", "nms_kind", "obj_normalizer",
    "objectness_smooth", "random", "resize", "show_details", "sim_thresh", "track_ciou_norm",
    "track_history_size", "truth_thresh", "uc_normalizer", "beta1",
}
_REGION_IGNORED = {
    "absolute", "bias_match", "class_scale", "classfix", "coord_scale", "focal_loss", "jitter", "mask_scale",
    "max", "noobject_scale", "object_scale", "random", "rescore", "resize", "thresh",
}


@dataclass
class Layer:
    """One darknet layer: its section, inputs (layer indices; -1 is the image), parameters, output shape."""

    index: int
    type: str
    section: object  # its pyloader.darknet.cfg.Section
    inputs: list
    params: dict
    shape: tuple  # (h, w, c) of the output

    @property
    def name(self) -> str:
        return f"{self.type}_{self.index}"

    def where(self) -> str:
        return self.section.where()



def _resolve(sec, layers: list, refs: list, option: str) -> list:
    out = []
    for r in refs:
        i = sec.index + r if r < 0 else r
        if not 0 <= i < sec.index:
            raise sec.error(f"refers to layer {r} (index {i}); expected an earlier layer 0..{sec.index - 1}", option)
        out.append(i)
    return out


def _activation(sec, default: str) -> str:
    act = sec.str("activation", default)
    if act not in ACTIVATIONS:
        raise sec.error(f"unsupported activation '{act}' (supported: {', '.join(sorted(ACTIVATIONS))})",
                        "activation")
    return act


def _positive(sec, **values) -> None:
    for name, v in values.items():
        if v <= 0:
            raise sec.error(f"{name} must be positive, got {v}", name)


def _convolutional(sec, layers, shape):
    h, w, c = shape
    filters = sec.int("filters", 1)
    size = sec.int("size", 1)
    stride = sec.int("stride", 1)
    sx = sec.int("stride_x", -1)
    sy = sec.int("stride_y", -1)
    sx = stride if sx < 1 else sx
    sy = stride if sy < 1 else sy
    dilation = sec.int("dilation", 1)
    if size == 1:
        dilation = 1
    groups = sec.int("groups", 1)
    pad = sec.int("pad", 0)
    padding = sec.int("padding", 0)
    if pad:
        padding = size // 2
    bn = sec.int("batch_normalize", 0) != 0  # darknet: `if (l.batch_normalize)`, any nonzero value
    act = _activation(sec, "logistic")  # darknet's default for a convolutional layer
    # darknet reads `stride` only for the stride_x/stride_y not given (>= 1): stride itself is not checked
    _positive(sec, filters=filters, size=size, stride_x=sx, stride_y=sy, dilation=dilation, groups=groups)
    if padding < 0:
        raise sec.error(f"padding must be >= 0, got {padding}", "padding")
    if c % groups or filters % groups:
        raise sec.error(f"groups={groups} must divide the input channels ({c}) and filters ({filters})", "groups")
    sec.check_all_used(set())
    out_h = (h + 2 * padding - size) // sy + 1
    out_w = (w + 2 * padding - size) // sx + 1
    if dilation > 1:
        # darknet pads by padding*dilation and sizes the output as if undilated; both agree only when
        # 2*padding == size-1.
        if 2 * padding != size - 1:
            raise sec.error(f"dilation={dilation} needs padding=(size-1)/2, got padding={padding} size={size}",
                            "dilation")
        if sx > 1 or sy > 1:
            raise sec.error("dilation together with stride > 1 is not supported", "dilation")
    if h + 2 * padding < size or w + 2 * padding < size:
        raise sec.error(f"kernel {size} larger than the padded input {h + 2 * padding}x{w + 2 * padding}", "size")
    params = dict(filters=filters, size=size, stride=(sy, sx), dilation=dilation, groups=groups, padding=padding,
                  batch_normalize=bn, activation=act)
    return Layer(sec.index, "conv", sec, [sec.index - 1], params, (out_h, out_w, filters))


def _maxpool(sec, layers, shape):
    h, w, c = shape
    stride = sec.int("stride", 1)
    sx = sec.int("stride_x", stride)
    sy = sec.int("stride_y", stride)
    size = sec.int("size", stride)
    padding = sec.int("padding", size - 1)
    depth = sec.int("maxpool_depth", 0)
    out_channels = sec.int("out_channels", 1)
    if sec.int("antialiasing", 0) or sec.int("maxpool_zero_nonmax", 0):
        raise sec.error("antialiasing and maxpool_zero_nonmax are not supported")
    _positive(sec, stride_x=sx, stride_y=sy, size=size)
    if padding < 0:
        raise sec.error(f"padding must be >= 0, got {padding}", "padding")
    sec.check_all_used(set())
    if depth:
        _positive(sec, out_channels=out_channels)
        params = dict(depth=True, out_channels=out_channels)
        return Layer(sec.index, "maxpool", sec, [sec.index - 1], params, (h, w, out_channels))
    out_h = (h + padding - size) // sy + 1
    out_w = (w + padding - size) // sx + 1
    # darknet: the window starts at -padding/2, cells outside the input are -inf.
    before = padding // 2
    params = dict(depth=False, size=size, stride=(sy, sx),
                  pads=((before, _after(h, out_h, sy, size, before)), (before, _after(w, out_w, sx, size, before))))
    return Layer(sec.index, "maxpool", sec, [sec.index - 1], params, (out_h, out_w, c))


def _after(n: int, out: int, stride: int, size: int, before: int) -> int:
    """Padding after the input so that a 'valid' pool yields exactly `out` windows starting at -before."""
    return max(0, (out - 1) * stride + size - before - n)


def _avgpool(sec, layers, shape):
    sec.check_all_used(set())
    return Layer(sec.index, "avgpool", sec, [sec.index - 1], {}, (1, 1, shape[2]))


def _dropout(sec, layers, shape):
    sec.float("probability", 0.2)
    sec.check_all_used({"dropblock", "dropblock_size_abs", "dropblock_size_rel"})
    return Layer(sec.index, "dropout", sec, [sec.index - 1], {}, shape)


def _route(sec, layers, shape):
    refs = _resolve(sec, layers, sec.ints("layers"), "layers")
    groups = sec.int("groups", 1)
    group_id = sec.int("group_id", 0)
    _positive(sec, groups=groups)
    if not 0 <= group_id < groups:
        raise sec.error(f"group_id must be in 0..{groups - 1}, got {group_id}", "group_id")
    sec.check_all_used(set())
    h, w, _ = layers[refs[0]].shape
    c = 0
    for i in refs:
        hi, wi, ci = layers[i].shape
        if (hi, wi) != (h, w):
            raise sec.error(f"layer {i} is {hi}x{wi} but layer {refs[0]} is {h}x{w}; route needs equal sizes",
                            "layers")
        if ci % groups:
            raise sec.error(f"groups={groups} does not divide the {ci} channels of layer {i}", "groups")
        c += ci // groups
    return Layer(sec.index, "route", sec, refs, dict(groups=groups, group_id=group_id), (h, w, c))


def _shortcut(sec, layers, shape):
    refs = _resolve(sec, layers, sec.ints("from"), "from")
    act = _activation(sec, "linear")
    wtype = sec.str("weights_type", "none")
    if wtype == "per_layer":
        wtype = "per_feature"
    if wtype not in ("none", "per_feature", "per_channel"):
        raise sec.error(f"weights_type must be none, per_feature or per_channel, got '{wtype}'", "weights_type")
    norm = sec.str("weights_normalization", "none")
    if norm == "avg_relu":
        norm = "relu"
    if norm not in ("none", "relu", "softmax"):
        raise sec.error(f"weights_normalization must be none, relu or softmax, got '{norm}'",
                        "weights_normalization")
    sec.check_all_used(set())
    h, w, c = shape
    for i in refs:
        hi, wi, _ = layers[i].shape
        if (hi, wi) != (h, w):
            raise sec.error(f"layer {i} is {hi}x{wi} but the input is {h}x{w}; shortcut needs equal sizes", "from")
    n = len(refs)
    nweights = {"none": 0, "per_feature": n + 1, "per_channel": (n + 1) * c}[wtype]
    params = dict(activation=act, weights_type=wtype, weights_normalization=norm, nweights=nweights)
    return Layer(sec.index, "shortcut", sec, [sec.index - 1] + refs, params, shape)


def _upsample(sec, layers, shape):
    h, w, c = shape
    stride = sec.int("stride", 2)
    scale = sec.float("scale", 1.0)
    sec.check_all_used(set())
    if stride == 0:
        raise sec.error("stride must not be 0", "stride")
    if stride > 0:
        out = (h * stride, w * stride, c)
    else:
        out = (h // -stride, w // -stride, c)
    return Layer(sec.index, "upsample", sec, [sec.index - 1], dict(stride=stride, scale=scale), out)


def _reorg(sec, layers, shape, old: bool):
    h, w, c = shape
    stride = sec.int("stride", 1)
    if sec.int("reverse", 0):
        raise sec.error("reverse=1 is not supported", "reverse")
    _positive(sec, stride=stride)
    sec.check_all_used(set())
    if h % stride or w % stride:
        raise sec.error(f"input {h}x{w} is not divisible by stride {stride}", "stride")
    if old and c % (stride * stride):
        raise sec.error(f"input channels {c} are not divisible by stride^2 = {stride * stride}", "stride")
    kind = "reorg" if old else "reorg3d"
    return Layer(sec.index, kind, sec, [sec.index - 1], dict(stride=stride),
                 (h // stride, w // stride, c * stride * stride))


def _sam(sec, layers, shape):
    (ref,) = _single(sec, layers)
    act = _activation(sec, "linear")
    sec.check_all_used(set())
    if layers[ref].shape != shape:
        raise sec.error(f"layer {ref} has shape {layers[ref].shape}, the input {shape}; sam needs equal shapes",
                        "from")
    return Layer(sec.index, "sam", sec, [sec.index - 1, ref], dict(activation=act), shape)


def _scale_channels(sec, layers, shape):
    (ref,) = _single(sec, layers)
    scale_wh = sec.int("scale_wh", 0)
    act = _activation(sec, "linear")
    sec.check_all_used(set())
    fh, fw, fc = layers[ref].shape
    h, w, c = shape
    if scale_wh:
        if (h, w, c) != (fh, fw, 1):
            raise sec.error(f"scale_wh needs an input of {fh}x{fw}x1, got {h}x{w}x{c}", "scale_wh")
    elif (h, w, c) != (1, 1, fc):
        raise sec.error(f"needs an input of 1x1x{fc} (one scale per channel of layer {ref}), got {h}x{w}x{c}",
                        "from")
    params = dict(scale_wh=bool(scale_wh), activation=act)
    return Layer(sec.index, "scale_channels", sec, [sec.index - 1, ref], params, layers[ref].shape)


def _single(sec, layers):
    # parse_sam / parse_scale_channels: `int index = atoi(l);` ("from=-3,-5" is -3)
    return _resolve(sec, layers, [sec.int("from")], "from")


_MAX_NUM = 1 << 16  # anchors per head: beyond any real cfg; darknet callocs 2*num floats for them


def _anchors(sec, total: int, hash_ends: bool) -> list:
    """The anchor values darknet holds (parse_yolo / parse_region): 2*num floats set to .5 (make_yolo_layer,
    make_region_layer: `l.biases[i] = .5;`), the first min(n, 2*num) overwritten by the listed pieces read with atof
    (n = 1 + the commas): a missing value or comma leaves .5 at the end. darknet ignores values listed beyond
    2*num; pyloader keeps them for mask entries >= num (cspx-p7-mish.cfg: num=16, 20 pairs, masks up to 19, where
    darknet reads past its array), like OpenCV."""
    if total > _MAX_NUM:
        raise sec.error(f"num={total} would need {2 * total} anchor values; at most {2 * _MAX_NUM} are supported",
                        "num")
    listed = sec.floats("anchors", [], hash_ends)
    return listed + [0.5] * (2 * total - len(listed))


def _yolo(sec, layers, shape):
    classes = sec.int("classes", 20)
    total = sec.int("num", 1)
    _positive(sec, classes=classes, num=total)
    anchors = _anchors(sec, total, hash_ends=True)
    mask = sec.ints("mask", None, hash_ends=True)  # parse_yolo_mask; none: 0..num-1
    mask = list(range(total)) if mask is None else mask
    for m in mask:
        if not 0 <= 2 * m + 1 < len(anchors):
            raise sec.error(f"mask entry {m} has no anchor (0..{len(anchors) // 2 - 1} listed)", "mask")
    scale_x_y = sec.float("scale_x_y", 1.0)
    new_coords = sec.int("new_coords", 0)
    if sec.has("map"):
        raise sec.error("class maps (map=) are not supported", "map")
    sec.check_all_used(_YOLO_IGNORED)
    expected = len(mask) * (classes + 5)
    if shape[2] != expected:
        raise sec.error(f"input has {shape[2]} channels; {len(mask)} anchors x (5 + {classes} classes) "
                        f"needs {expected}")
    params = dict(classes=classes, anchors=[(anchors[2 * m], anchors[2 * m + 1]) for m in mask],
                  scale_x_y=scale_x_y, new_coords=bool(new_coords))
    return Layer(sec.index, "yolo", sec, [sec.index - 1], params, shape)


def _region(sec, layers, shape):
    classes = sec.int("classes", 20)
    coords = sec.int("coords", 4)
    total = sec.int("num", 1)
    softmax = sec.int("softmax", 0)
    _positive(sec, classes=classes, num=total)
    if coords != 4:
        raise sec.error(f"only coords=4 is supported, got {coords}", "coords")
    for unsupported in ("tree", "map"):  # file names: darknet reads any value given
        if sec.has(unsupported):
            raise sec.error(f"option '{unsupported}' is not supported", unsupported)
    for unsupported in ("sqrt", "log"):
        if sec.int(unsupported, 0):
            raise sec.error(f"option '{unsupported}' is not supported", unsupported)
    anchors = _anchors(sec, total, hash_ends=False)
    anchors = [(anchors[2 * i], anchors[2 * i + 1]) for i in range(total)]
    sec.check_all_used(_REGION_IGNORED)
    expected = total * (classes + 5)
    if shape[2] != expected:
        raise sec.error(f"input has {shape[2]} channels; {total} anchors x (5 + {classes} classes) needs {expected}")
    params = dict(classes=classes, anchors=anchors, softmax=bool(softmax))
    return Layer(sec.index, "region", sec, [sec.index - 1], params, shape)


LAYER_BUILDERS = {  # section type -> builder(section, earlier layers, input shape) -> Layer
    "convolutional": _convolutional,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "dropout": _dropout,
    "route": _route,
    "shortcut": _shortcut,
    "upsample": _upsample,
    "reorg3d": lambda s, l, sh: _reorg(s, l, sh, old=False),
    "reorg": lambda s, l, sh: _reorg(s, l, sh, old=True),
    "sam": _sam,
    "scale_channels": _scale_channels,
    "yolo": _yolo,
    "region": _region,
}
