"""A shared backbone with one head per task (paper Section 4.1.3: every task head branches from the
backbone's last layer)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

_RESERVED = ("backbone",)


def _head_out_channels(task: str, head: nn.Module) -> int:
    """The head's ``out_channels`` attribute, else that of its last Conv/Linear layer."""
    declared = getattr(head, "out_channels", None)
    if isinstance(declared, int):
        return declared
    last = None
    for module in head.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            last = module.out_channels
        elif isinstance(module, nn.Linear):
            last = module.out_features
    if last is None:
        raise ValueError(
            f"cannot tell the output channels of head {task!r}: give it an integer "
            "'out_channels' attribute or a Conv/Linear layer"
        )
    return last


class MultiTaskModel(nn.Module):
    """``backbone(x)`` feeds every head; ``forward`` returns ``{task: [B, C_task, h, w]}``.

    Outputs are at head resolution (output stride 8 for DeepLab-ResNet34, 32 for MobileNetV2), as
    the reference implementations compute their losses (targets are resized, not logits); with
    ``upsample=True`` they are resized bilinearly to the input size instead.
    """

    def __init__(
        self, backbone: nn.Module, heads: Mapping[str, nn.Module], upsample: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if not heads:
            raise ValueError("a multitask model needs at least one head; got no heads")
        for task, head in heads.items():
            if task in _RESERVED:
                raise ValueError(f"task name {task!r} is reserved for the shared backbone")
            if not isinstance(head, nn.Module):
                raise TypeError(f"head {task!r} must be an nn.Module, got {type(head).__name__}")
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        self.upsample = upsample
        self.out_channels: dict[str, int] = {
            task: _head_out_channels(task, head) for task, head in self.heads.items()
        }

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        outputs = {task: head(features) for task, head in self.heads.items()}
        if self.upsample:
            size = x.shape[-2:]
            outputs = {
                task: F.interpolate(out, size=size, mode="bilinear", align_corners=False)
                for task, out in outputs.items()
            }
        return outputs

    def components(self) -> dict[str, list[str]]:
        """Module-path prefixes of each component, for ``sparsify(grouping="component")``: the
        shared backbone and one head per task (paper Section 3.2)."""
        components = {"backbone": ["backbone"]}
        components.update({task: [f"heads.{task}"] for task in self.heads})
        return components

    def extra_repr(self) -> str:
        return f"tasks={self.out_channels}, upsample={self.upsample}"
