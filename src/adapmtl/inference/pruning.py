"""Magnitude pruning to a chosen sparsity, for measuring kernels and files without training.

Not a training method: it prunes a model once by weight magnitude so that benchmarks can build
sparse models at any sparsity. ``layer`` scope prunes every Conv/Linear weight to the same
sparsity (overall sparsity = target exactly, up to rounding); ``global`` uses one magnitude
threshold for all weights, which prunes layers with small initial weights (the N(0, 0.01)
backbone convs) almost entirely. Both are the top-k of ``adapmtl.sparsity.topk``.
"""

from __future__ import annotations

import torch
from torch import nn

from adapmtl.sparsity import bake, is_sparsified, set_masks, sparse_layers, sparsify
from adapmtl.sparsity.topk import magnitude_masks


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float, *, scope: str = "layer") -> nn.Module:
    """Zero the ``round(sparsity * n)`` smallest-magnitude Conv/Linear weights of a plain model
    (``n`` per layer, or of all layers with ``scope="global"``), in place, and return it baked
    (plain layers, exact zeros)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if is_sparsified(model):
        raise ValueError("magnitude_prune expects a plain model; bake(model) first")
    sparsify(model, mode="mask", components={"all": [""]})
    weights = {path: m.parametrizations.weight.original for path, m, _ in sparse_layers(model)}
    masks = magnitude_masks(weights, sparsity, scope=scope)
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
