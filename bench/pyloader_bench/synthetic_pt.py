"""Synthetic .pt checkpoints: models built by the reference packages (yolov5, ultralytics) from their own yaml,
with well-scaled random weights, saved as their trainers save them. The benchmark and the tests write their
.pt files with these; they need torch and the package concerned (nothing is downloaded).
"""

from __future__ import annotations

import os


def randomize_yolov5(model, seed: int = 0, other=None):
    """Random weights for a torch YOLOv5 model that keep activations at a sane scale through ~100 layers:
    conv kernels ~ N(0, 1/fan_in), BN gamma U(0.5, 1.5), beta N(0, 0.2), mean N(0, 0.5), variance U(0.5, 1.5).
    `other(module, generator)`, if given, is called (in module order, same generator) for every module that is
    neither a Conv2d nor a BatchNorm2d: a family's own parameters (YOLOv7's implicit layers)."""
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            elif other is not None:
                other(m, g)
    return model


def write_yolov5_checkpoint(path, yaml_name: str = "yolov5x.yaml", seed: int = 0) -> int:
    """A YOLOv5 checkpoint saved as YOLOv5's train.py saves (fp16 `model` and `ema`), built by the `yolov5`
    package from its own yaml with random well-scaled weights. Needs torch and yolov5; returns the parameter
    count."""
    import torch
    import yolov5.models.yolo as Y5Y

    model = Y5Y.DetectionModel(os.path.join(os.path.dirname(Y5Y.__file__), yaml_name))
    randomize_yolov5(model, seed)
    model.names = [f"class_{k}" for k in range(model.yaml["nc"])]
    model.eval()
    import copy

    half = copy.deepcopy(model).half()
    torch.save({"epoch": 1, "best_fitness": None, "model": half, "ema": half, "updates": 1, "optimizer": None},
               path)
    return sum(p.numel() for p in model.parameters())


def randomize_ultralytics(model, seed: int = 0):
    """randomize_yolov5's well-scaled random weights for an Ultralytics model, ConvTranspose2d (Segment's Proto,
    YOLOv6's neck) and Linear included (weight ~ N(0, 1/fan_in), bias N(0, 0.5)), LayerNorm as BatchNorm's affine
    part, MultiheadAttention's q, k, v projection N(0, 1/embed_dim) (RT-DETR: its own init zeroes the deformable
    attention's offset and weight projections, which would leave them untested); the DFL's fixed integral weights
    (0..reg_max-1, not trained) are kept. YOLO12's ABlock kernels are N(0, 0.02) as ABlock's own init gives them:
    with 1/fan_in kernels its residual attention grows the maps to hundreds and the attention logits with them, where
    torch's own float32 result departs from float64 by ~2e-4 of the output's range."""
    import torch
    import torch.nn as nn

    def other(m, g):
        if isinstance(m, (nn.ConvTranspose2d, nn.Linear)):  # fan_in: dim 0 of a transposed kernel, 1 of a Linear's
            fan_in = m.weight.shape[0 if isinstance(m, nn.ConvTranspose2d) else 1]
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
        elif isinstance(m, nn.LayerNorm):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
        elif isinstance(m, nn.MultiheadAttention):  # its packed q, k, v projection (out_proj is a Linear)
            m.in_proj_weight.copy_(torch.randn(m.in_proj_weight.shape, generator=g) / m.embed_dim ** 0.5)
            m.in_proj_bias.copy_(torch.randn(m.in_proj_bias.shape, generator=g) * 0.2)
        elif type(m).__name__ in ("ContrastiveHead", "BNContrastiveHead", "MaxSigmoidAttnBlock"):  # YOLO-World,
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)  # YOLOE: their init bias -10 (scores ~0)
            if hasattr(m, "logit_scale"):
                m.logit_scale.add_(torch.randn((), generator=g) * 0.1)

    dfl = [(m.conv, m.conv.weight.detach().clone()) for m in model.modules() if type(m).__name__ == "DFL"]
    randomize_yolov5(model, seed, other=other)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for conv, w in dfl:
            conv.weight.copy_(w)
        for block in (m for m in model.modules() if type(m).__name__ == "ABlock"):
            for conv in (c for c in block.modules() if isinstance(c, torch.nn.Conv2d)):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.02)
    return model


def write_ultralytics_checkpoint(path, yaml_name: str = "yolov8x.yaml", seed: int = 0, stripped=None,
                                 task_model: str = "DetectionModel", classes=None) -> int:
    """An Ultralytics checkpoint written as its trainer's `save_model` writes `last.pt` (fp16 `ema`, `model`
    None, the AdamW optimizer state of `build_optimizer` after one step, the scaler, `train_args`, the
    IterableSimpleNamespace `args` on the model, dates and versions), built by the `ultralytics` package from
    its own yaml (a name shipped inside the package, or a path) with random well-scaled weights. With
    `stripped`, also `strip_optimizer(path, stripped)` (the trainer's final `best.pt`). `task_model`: the
    ultralytics.nn.tasks class that builds the yaml (ClassificationModel for the -cls yamls). `classes`: for
    WorldModel / YOLOEModel / YOLOESegModel, that many class embeddings kept in the model as its `set_classes`
    keeps them (random unit vectors in place of the text encoder's: WorldModel.txt_feats, YOLOE's pe; the head's nc
    and the names follow). Needs torch and ultralytics (nothing is downloaded); returns the parameter count."""
    import copy
    import datetime
    import types

    import torch
    from ultralytics import __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn import tasks
    from ultralytics.utils.torch_utils import convert_optimizer_state_dict_to_fp16, strip_optimizer

    model = getattr(tasks, task_model)(yaml_name, verbose=False)
    randomize_ultralytics(model, seed)
    args = get_cfg()
    model.args = args  # as the trainer sets it (an IterableSimpleNamespace)
    nc = model.yaml["nc"] if classes is None else classes
    if classes is not None:  # set_classes without the text encoder: unit-norm embeddings, as CLIP's encode_text
        g = torch.Generator().manual_seed(seed + 3)
        emb = torch.nn.functional.normalize(torch.randn(1, classes, model.model[-1].cv3[0][-1].out_channels,
                                                        generator=g), dim=-1)
        setattr(model, "txt_feats" if task_model == "WorldModel" else "pe", emb)
        model.model[-1].nc = classes
    model.names = {k: f"class_{k}" for k in range(nc)}
    trainer = types.SimpleNamespace(args=args, data={"nc": nc})
    opt = BaseTrainer.build_optimizer(trainer, model, name="AdamW", lr=0.001)
    g = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opt.step()
    opt.zero_grad()
    randomize_ultralytics(model, seed)  # the step moved the weights; keep them well-scaled
    ema = copy.deepcopy(model).eval().half()
    torch.save({
        "epoch": 4, "best_fitness": 0.25, "stopper": {"best_fitness": 0.25, "best_epoch": 3}, "model": None,
        "ema": ema, "updates": 120, "modelopt": None,
        "optimizer": convert_optimizer_state_dict_to_fp16(copy.deepcopy(opt.state_dict())),
        "scaler": torch.amp.GradScaler("cpu").state_dict(), "train_args": vars(args),
        "train_metrics": {"metrics/mAP50(B)": 0.1, "fitness": 0.25}, "train_results": {"epoch": [1.0, 2.0]},
        "date": datetime.datetime.now().astimezone().isoformat(), "version": __version__,
        "git": {"root": None, "branch": None, "commit": None, "message": None, "origin": None},
        "license": "AGPL-3.0 (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
    }, path)
    if stripped is not None:
        strip_optimizer(path, stripped)
    return sum(p.numel() for p in model.parameters())
