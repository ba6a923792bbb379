"""Prunable-parameter counts per component, computed without allocating the weights.

``python -m adapmtl.models.counts`` prints the Markdown table of docs/models.md: component,
prunable (Conv/Linear weight) parameters and share of the total, for both backbones on NYUv2 and
Taskonomy, full size and CPU presets. Models are built on the ``meta`` device, so even the
259 M-parameter model costs no memory.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from adapmtl.models.multitask import MultiTaskModel
from adapmtl.models.presets import build_model

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
DATASET_TASKS: dict[str, dict[str, int]] = {
    "NYUv2": {"seg": 40, "normal": 3, "depth": 1},
    "Taskonomy": {"seg": 17, "normal": 3, "depth": 1, "keypoint": 1, "edge": 1},
}


def prunable_count(module: nn.Module) -> int:
    """Number of Conv/Linear weights in ``module`` (what sparsity is measured over; biases and
    norm parameters excluded). Works on ``meta`` modules."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, PRUNABLE))


def component_counts(model: MultiTaskModel) -> dict[str, int]:
    """Prunable weights of the backbone and of each head, keyed like ``model.components()``."""
    counts = {"backbone": prunable_count(model.backbone)}
    counts.update({task: prunable_count(head) for task, head in model.heads.items()})
    return counts


def meta_model(name: str, tasks: Mapping[str, int], **kwargs: object) -> MultiTaskModel:
    """``build_model`` on the ``meta`` device: shapes and counts only, no storage."""
    with torch.device("meta"):
        return build_model(name, tasks, **kwargs)


def markdown_table(names: tuple[str, ...] = ("deeplab_resnet34", "mobilenetv2")) -> str:
    lines = [
        "| model | dataset | component | prunable parameters | share of total |",
        "|---|---|---|---:|---:|",
    ]
    for name in names:
        for dataset, tasks in DATASET_TASKS.items():
            counts = component_counts(meta_model(name, tasks))
            total = sum(counts.values())
            for component, count in counts.items():
                share = 100 * count / total
                lines.append(f"| {name} | {dataset} | {component} | {count:,} | {share:.2f} % |")
            heads = total - counts["backbone"]
            lines.append(
                f"| {name} | {dataset} | **total** (backbone / heads = "
                f"{counts['backbone'] / heads:.4f}) | **{total:,}** | 100 % |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
    print()
    print(markdown_table(("deeplab_resnet34_cpu", "mobilenetv2_cpu")))
