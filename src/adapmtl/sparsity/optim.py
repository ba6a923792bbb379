"""Optimizer parameter groups: weights and thresholds separately."""

from __future__ import annotations

from typing import Any

from torch import nn

from adapmtl.sparsity.sparsify import THRESHOLDS_ATTR


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    threshold_lr: float | None = None,
    threshold_weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Two optimizer groups: ``weights`` (everything but thresholds) and ``thresholds``.

    Weight decay on the thresholds is what drives sparsity in the reference implementations (not
    stated in the paper): theta is negative, so the L2 term ``wd * theta`` that Adam adds to its
    gradient pushes theta, hence alpha = sigmoid(theta), up. Weight decay on the weights shrinks
    |W| under alpha as well. Use a coupled-L2 optimizer (``torch.optim.Adam``, as the references)
    for this behaviour; ``AdamW``'s decoupled decay would shrink theta towards 0 instead, which
    also raises alpha, but at a rate that does not depend on the gradient scale.
    """
    weights, thetas = [], []
    for name, param in model.named_parameters():
        (thetas if name.startswith(THRESHOLDS_ATTR + ".") else weights).append(param)
    groups: list[dict[str, Any]] = [
        {"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}
    ]
    if thetas:
        groups.append(
            {
                "params": thetas,
                "lr": lr if threshold_lr is None else threshold_lr,
                "weight_decay": threshold_weight_decay,
                "name": "thresholds",
            }
        )
    return groups
