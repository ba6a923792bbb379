"""Magnitude pruning to a chosen sparsity, for measuring kernels and files without training.

Not a training method: it prunes a model once by weight magnitude so that benchmarks can build
sparse models at any sparsity. ``layer`` scope prunes every Conv/Linear weight to the same
sparsity (overall sparsity = target exactly, up to rounding); ``global`` uses one magnitude
threshold for all weights, which prunes layers with small initial weights (the N(0, 0.01)
backbone convs) almost entirely. Both are the top-k of ``adapmtl.sparsity.topk``.
``block_magnitude_prune`` prunes blocks of output channels together instead, to measure what
block-structured masks buy the sparse kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from adapmtl.sparsity import bake, is_sparsified, set_masks, sparse_layers, sparsify
from adapmtl.sparsity.blocks import block_norms, is_blocked
from adapmtl.sparsity.topk import Masks, layer_top_k, magnitude_masks


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float, *, scope: str = "layer") -> nn.Module:
    """Zero the ``round(sparsity * n)`` smallest-magnitude Conv/Linear weights of a plain model
    (``n`` per layer, or of all layers with ``scope="global"``), in place, and return it baked
    (plain layers, exact zeros)."""
    return _prune(model, sparsity, lambda weights: magnitude_masks(weights, sparsity, scope=scope))


@torch.no_grad()
def block_magnitude_prune(model: nn.Module, sparsity: float, *, block: int = 4) -> nn.Module:
    """Like per-layer :func:`magnitude_prune`, but in blocks of ``block`` consecutive output
    channels at one (input channel, kernel position): each layer keeps its largest-L2-norm
    blocks, so the output channels of a block share their nonzero positions (what the
    ``direct-block4`` kernels exploit). Layers whose output count is not a multiple of
    ``block`` are pruned weight by weight."""
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")

    def masks(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for path, weight in weights.items():
            if not is_blocked(weight, block):
                out |= magnitude_masks({path: weight}, sparsity, scope="layer")
                continue
            norms = block_norms(weight.detach(), block)
            keep = layer_top_k(norms, norms.numel() - round(sparsity * norms.numel()))
            out[path] = keep.repeat_interleave(block, 0).reshape(weight.shape)
        return out

    return _prune(model, sparsity, masks)


def _prune(
    model: nn.Module, sparsity: float, masks_of: Callable[[dict[str, torch.Tensor]], Masks]
) -> nn.Module:
    """Sparsify every Conv/Linear layer of a plain model with the masks ``masks_of`` gives for
    its weights (by path), in place, and return it baked."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if is_sparsified(model):
        raise ValueError("pruning expects a plain model; bake(model) first")
    sparsify(model, mode="mask", components={"all": [""]})
    weights = {path: m.parametrizations.weight.original for path, m, _ in sparse_layers(model)}
    set_masks(model, masks_of(weights))
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
