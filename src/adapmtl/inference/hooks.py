"""One forward pass with temporary hooks: what the inference passes read off a model's calls."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def forward_with_hooks(
    model: nn.Module, example: torch.Tensor, handles: Iterable[RemovableHandle]
) -> None:
    """``model(example)`` without gradients, then every hook in ``handles`` removed (also when
    the forward raises), so the model is left as it was."""
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
