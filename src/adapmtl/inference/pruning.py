"""Magnitude pruning to a chosen sparsity, for measuring kernels and files without training.

Not a training method: it prunes a model once by weight magnitude so that benchmarks can build
sparse models at any sparsity. ``layer`` scope prunes every Conv/Linear weight to the same
sparsity (overall sparsity = target exactly, up to rounding); ``global`` uses one magnitude
threshold for all weights, which prunes layers with small initial weights (the N(0, 0.01)
backbone convs) almost entirely.
"""

from __future__ import annotations

import torch
from torch import nn

from adapmtl.sparsity import bake, set_masks, sparse_layers, sparsify
from adapmtl.sparsity.sparsify import is_sparsified

SCOPES = ("layer", "global")


def _keep_mask(weight: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    return weight.abs() > threshold


def _kth_magnitude(values: torch.Tensor, fraction: float) -> torch.Tensor | float:
    k = round(fraction * values.numel())
    if k <= 0:
        return -1.0
    return values.abs().flatten().kthvalue(k).values


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float, *, scope: str = "layer") -> nn.Module:
    """Zero the smallest-magnitude Conv/Linear weights of a plain model, in place, and return it
    baked (plain layers, exact zeros). Ties at the threshold are pruned too."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if is_sparsified(model):
        raise ValueError("magnitude_prune expects a plain model; bake(model) first")
    sparsify(model, mode="mask", components={"all": [""]})
    weights = {path: m.parametrizations.weight.original for path, m, _ in sparse_layers(model)}
    if scope == "global":
        threshold = _kth_magnitude(torch.cat([w.flatten() for w in weights.values()]), sparsity)
        masks = {path: _keep_mask(w, threshold) for path, w in weights.items()}
    else:
        masks = {path: _keep_mask(w, _kth_magnitude(w, sparsity)) for path, w in weights.items()}
    set_masks(model, masks)
    return bake(model)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``model(inputs)`` and return the model
    in eval mode. A randomly initialised model pruned to high sparsity otherwise passes almost no
    signal through its (untrained) BN layers, and comparing outputs would only compare biases."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    try:
        model(inputs)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()
    return model
