"""YOLOv7 plain state_dicts (`torch.save(model.state_dict())`): the model yaml gives the modules, the state_dict their
tensors; the plan is then read as a pickled model's (pyloader.yolov7.weights)."""

from __future__ import annotations

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError
from ..torch_reader import state_dict as sd
from ..torch_reader.modules import Ctx
from ..torch_reader.records import MethodRef, Record
from .weights import HEADS, YAML_KIND, YoloV7Plan, plan_from_model, yaml_anchors

_BN_EPS = 1e-3  # YOLOv7's initialize_weights sets every BatchNorm2d's eps to 1e-3


def _sd_conv(t, k, s, p, g, act, path) -> Record:
    """models.common.Conv from its tensors (after YOLOv7's fuse() the state_dict has no bn)."""
    return sd.common_conv(t, k, s, p, g, act, path, _BN_EPS)


def _sd_inner_conv(t, name, path, s=1) -> Record:
    """A Conv inside a composite module: its kernel size from its tensor, 'same' padding, SiLU."""
    k = int(t.sub(name).sub("conv").tensor("weight").shape[-1])
    return _sd_conv(t.sub(name), k, s, None, 1, True, path)


def _sd_row(t, i, row, cfg, path, fused) -> Record:
    f, _, mname, args = row
    kind = YAML_KIND.get(mname)
    a = lambda j, d: args[j] if len(args) > j and args[j] not in (None, "None") else d  # noqa: E731
    common = "models.common"
    if kind == "Conv":
        return _sd_conv(t, a(1, 1), a(2, 1), a(3, None), a(4, 1), a(5, True), path)
    if kind == "RepConv":
        k, s, p, g = a(1, 3), a(2, 1), a(3, None), a(4, 1)
        kids = {"act": sd.activation(a(5, True), "nn.SiLU()", path)}
        if t.has("rbr_reparam"):
            kids["rbr_reparam"] = sd.conv2d(t.sub("rbr_reparam"), s, sd.autopad(k, p), g)
        else:
            for b, pad in (("rbr_dense", sd.autopad(k, p)), ("rbr_1x1", sd.autopad(k, p) - k // 2)):
                kids[b] = sd.sequential([sd.conv2d(t.sub(b).sub("0"), s, pad, g), sd.batchnorm(t.sub(b).sub("1"), _BN_EPS)])
            kids["rbr_identity"] = sd.batchnorm(t.sub("rbr_identity"), _BN_EPS) if t.has("rbr_identity") else None
        return sd.record(common, "RepConv", kids)
    if kind == "SPPCSPC":
        ks = a(4, (5, 9, 13))
        kids = {f"cv{j}": _sd_inner_conv(t, f"cv{j}", path) for j in range(1, 8)}
        kids["m"] = sd.sequential([sd.maxpool(k, 1, k // 2) for k in ks], "ModuleList")
        return sd.record(common, "SPPCSPC", kids)
    if kind == "DownC":
        k = a(1, 2)
        kids = {"cv1": _sd_inner_conv(t, "cv1", path), "cv2": _sd_inner_conv(t, "cv2", path, s=k),
                "cv3": _sd_inner_conv(t, "cv3", path), "mp": sd.maxpool(k, k, 0)}
        return sd.record(common, "DownC", kids)
    if kind == "MP":
        k = a(0, 2)
        return sd.record(common, "MP", {"m": sd.maxpool(k, k, 0)})
    if kind == "SP":
        k = a(0, 3)
        return sd.record(common, "SP", {"m": sd.maxpool(k, a(1, 1), k // 2)})
    if kind in ("Concat", "Shortcut"):
        return sd.record(common, kind, d=a(0, 1 if kind == "Concat" else 0))
    if kind == "ReOrg":
        return sd.record(common, "ReOrg")
    if kind == "Upsample":
        return sd.record("torch.nn.modules.upsampling", "Upsample", size=a(0, None), scale_factor=a(1, None),
                         mode=a(2, "nearest"))
    if kind in HEADS:
        nl, na = yaml_anchors(Ctx(path), f"model.{i}", cfg)
        nc = cfg.get("nc")
        anchors, grid = t.tensor("anchors"), t.tensor("anchor_grid")
        if anchors.shape != (nl, na, 2) or grid.shape != (nl, 1, na, 1, 1, 2):
            raise FormatError(f"{path}: module 'model.{i}': anchors {anchors.shape} / anchor_grid {grid.shape}, "
                              f"the yaml gives ({nl}, {na}, 2) / ({nl}, 1, {na}, 1, 1, 2)")
        # The strides are not in a state_dict: anchor_grid (pixels) / anchors (grid units) gives them.
        ratio = np.asarray(grid, np.float64).reshape(nl, na, 2) / np.asarray(anchors, np.float64)
        stride = np.round(ratio.reshape(nl, -1).mean(1))
        if not np.allclose(ratio, stride[:, None, None], rtol=1e-2) or np.any(stride < 1):
            raise FormatError(f"{path}: module 'model.{i}': anchor_grid / anchors is not one stride per level")
        n_m = len([k for k in t.sub("m").tree])
        kids = {"m": sd.sequential([sd.conv2d(t.sub("m").sub(str(j)), 1, 0) for j in range(n_m)], "ModuleList")}
        if kind != "Detect" and t.has("ia"):
            for key, cls in (("ia", "ImplicitA"), ("im", "ImplicitM")):
                n = len(t.sub(key).tree)
                kids[key] = sd.sequential([sd.record(common, cls, params={"implicit": t.sub(key).sub(str(j)).tensor("implicit")})
                                           for j in range(n)], "ModuleList")
        return sd.record("models.yolo", kind, kids, buffers={"anchors": anchors, "anchor_grid": grid},
                         nl=nl, na=na, nc=nc, no=nc + 5 if isinstance(nc, int) else None,
                         stride=stride.astype(np.float32),
                         forward=MethodRef(None, "fuseforward") if fused and kind != "Detect" else None)
    raise FormatError(f"{path}: module 'model.{i}': yaml module {short_repr(mname)} is not supported")


def plan_from_state_dict(state: dict, cfg: dict, path: str) -> YoloV7Plan:
    """The plan of a YOLOv7 state_dict (`torch.save(model.state_dict())`) with the model's yaml dict."""
    tree = sd.Tensors(sd.module_tree(state), "", path)
    model_t = tree.sub("model")
    # After YOLOv7's fuse() no batch norm is left, and the heads' convolutions already hold ImplicitA/M
    # (which fuse() keeps as modules, so their tensors are still in the state_dict).
    fused = not any(".bn." in k or ".rbr_dense." in k for k in state)
    layers = []
    for i, row in enumerate(sd.yaml_rows(cfg)):
        if not (isinstance(row, (list, tuple)) and len(row) == 4 and isinstance(row[3], list)):
            raise FormatError(f"{path}: module 'model.{i}': yaml row {short_repr(row)}: expected [from, number, module, args]")
        t = model_t.sub(str(i)) if model_t.has(str(i)) else sd.Tensors({}, f"model.{i}", path)
        layers.append(_sd_row(t, i, row, cfg, path, fused))
    names = cfg.get("names")
    model = sd.record("models.yolo", "Model", {"model": sd.sequential(layers)}, yaml=cfg,
                      names=list(names) if isinstance(names, (list, tuple)) else names)
    return plan_from_model(model, path)
