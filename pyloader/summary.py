"""Architecture summaries for `pyloader inspect` that several families share (a family's `summary` calls them)."""

from __future__ import annotations

from collections import Counter

__all__ = ["plan_summary", "anchor_heads", "anchor_plan_summary"]


def plan_summary(plan, nodes, heads: list, input_hw) -> dict:
    """The architecture entry of a .pt family's plan: its model class, default input, node kinds, heads, classes."""
    h, w = input_hw
    return {
        "model": plan.model_class,
        "input": (h, w, 3),
        "layers": len(nodes),
        "by_type": dict(Counter(n.kind for n in nodes).most_common()),
        "heads": heads,
        "classes": plan.nc,
        "names": ", ".join(plan.names[:8]) + (" ..." if len(plan.names) > 8 else ""),
    }


def anchor_plan_summary(plan, nodes, label: str, content) -> tuple:
    """A family's `summary` for an anchor-based .pt plan (YOLOv5-style Detect; default input 640, or 1280 with a
    stride-64 level): (format label, header fields, architecture)."""
    from .torch_reader.state_dict import is_state_dict

    s = 1280 if plan.max_stride >= 64 else 640
    kind = "state_dict with the given yaml" if is_state_dict(content) else "checkpoint"
    return f"{label} PyTorch {kind}", {}, plan_summary(plan, nodes, anchor_heads(plan), (s, s))


def anchor_heads(plan) -> list:
    """The heads of an anchor-based plan (YOLOv5-style Detect): level, kind, stride, classes, anchors per cell."""
    return [{"layer": f"level {i}", "type": plan.nodes[-1].kind, "stride": int(st), "classes": plan.nc,
             "anchors": int(len(plan.anchors[i]))} for i, st in enumerate(plan.strides)]
