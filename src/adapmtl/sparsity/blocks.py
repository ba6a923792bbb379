"""Block-structured pruning: weights pruned and kept in blocks of consecutive output channels.

With unstructured masks a sparse convolution needs one input load per multiply-add, which caps
its speed on a CPU well below the FLOP limit (docs/results/inference.md). When every ``block``
consecutive output channels of a layer share their nonzero positions, each loaded input value
serves all of them: the ``direct-block4`` kernels of :mod:`adapmtl.inference` use such weights.

A block is ``block`` consecutive output channels at one position of the rest of the weight (an
input channel and a kernel tap of a convolution, an input feature of a linear layer), so a
weight ``[out, ...]`` has ``out / block`` blocks per position. Its *magnitude* is the root mean
square of its weights, so that a block of one weight has magnitude ``|W|`` and thresholds keep
the scale of the unstructured case. A layer whose output count per conv group is not a
multiple of ``block`` (a head's last layer with 1 or 3 outputs, a depthwise convolution) is
pruned weight by weight (:func:`layer_block`).

The thresholds generalise paper Eq. 2 to blocks (the proximal operator of the group lasso
penalty): ``S = W * relu(1 - a / m)`` with ``m`` the block's magnitude, which for blocks of one
is ``sign(W) * relu(|W| - a)``; the hard threshold keeps whole blocks, ``W * 1[m > a]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# floor of a block's mean square before the square root: an all-zero block then has a nonzero
# magnitude, so alpha / m and the backward's divisions by m stay finite
_TINY_SQUARE = 1e-30


def check_block(block: object, where: str) -> int:
    """``block`` as a positive int; raises ``ValueError`` naming ``where`` otherwise."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"{where} must be a positive integer (1 = unstructured), got {block!r}")
    return block


def is_blocked(weight: torch.Tensor, block: int) -> bool:
    """True when ``weight`` is pruned in blocks of ``block`` output channels (``block`` > 1 and
    a multiple of it output channels); False when it is pruned weight by weight."""
    return block > 1 and weight.shape[0] % block == 0


def layer_block(module: nn.Module, block: int) -> int:
    """The block size ``module``'s weight is pruned with: ``block`` when each of its conv
    groups has a multiple of ``block`` output channels, else 1. A depthwise convolution (one
    output channel per group) is pruned weight by weight: its output channels share no input,
    so blocks would cost accuracy and buy no inference kernel."""
    outputs = getattr(module, "out_channels", getattr(module, "out_features", 0))
    return block if (outputs // getattr(module, "groups", 1)) % block == 0 else 1


def block_norms(weight: torch.Tensor, block: int) -> torch.Tensor:
    """The L2 norm of every block, shaped ``[out / block, positions]``; ``weight`` must be
    blocked (:func:`is_blocked`)."""
    return _rms(_grouped(weight, block)).squeeze(1) * block**0.5


def block_magnitude(weight: torch.Tensor, block: int) -> torch.Tensor:
    """Per weight, the magnitude of its block (root mean square of its ``block`` weights), shaped
    like ``weight``; ``|W|`` where ``weight`` is not blocked. Differentiable in ``weight``."""
    if not is_blocked(weight, block):
        return weight.abs()
    grouped = _grouped(weight, block)
    return _rms(grouped).expand_as(grouped).reshape(weight.shape)


def _grouped(tensor: torch.Tensor, block: int) -> torch.Tensor:
    """``[out, ...]`` as ``[out / block, block, positions]``."""
    return tensor.reshape(tensor.shape[0] // block, block, -1)


def _rms(grouped: torch.Tensor) -> torch.Tensor:
    """The magnitude of every block of ``grouped`` (:func:`_grouped`), ``[out / block, 1,
    positions]``: the one formula both the thresholds and every comparison with alpha use, so
    they agree to the bit. (``torch.linalg.vector_norm`` over this middle dimension ran about
    75 times slower on the CPU than the square and mean, in a development run.)"""
    return grouped.square().mean(dim=1, keepdim=True).clamp_min(_TINY_SQUARE).sqrt()


def block_threshold(
    weight: torch.Tensor, alpha: torch.Tensor, *, hard: bool, regrow: bool, block: int
) -> torch.Tensor:
    """The effective weight of a blocked layer (:func:`is_blocked`), differentiable in
    ``weight`` and ``alpha``.

    Soft: ``W * relu(1 - a / m)`` (Eq. 2 for blocks, module docstring); its weight gradient is
    the exact one, or with ``regrow`` the straight-through ``dL/dW = dL/dS``. Hard: ``W * B``
    with ``B = 1[m > a]``, the weight gradient ``dL/dS * B`` or, with ``regrow``,
    straight-through; alpha's gradient is the soft threshold's at the same weights (as the
    unstructured hard threshold's, a surrogate).
    """
    return _BlockThreshold.apply(weight, alpha, hard, regrow, block)


class _BlockThreshold(torch.autograd.Function):
    """:func:`block_threshold` with its gradients written out, so that the backward needs only
    the weight (an input, not copied), alpha and one magnitude per block: a composition of
    autograd operations would keep several weight-sized intermediates until the backward.

    With ``f = relu(1 - a / m)`` and ``m = sqrt(mean_block W^2)``, for a kept block (m > a):
    ``dL/dW_j = g_j f + W_j a / (block m^3) * sum_block(g W)`` and
    ``dL/da = -sum_block(g W) / m``; pruned blocks get neither.
    """

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        alpha: torch.Tensor,
        hard: bool,
        regrow: bool,
        block: int,
    ) -> torch.Tensor:
        grouped = _grouped(weight, block)
        magnitude = _rms(grouped)
        factor = (magnitude > alpha).to(weight.dtype) if hard else torch.relu(1 - alpha / magnitude)
        ctx.save_for_backward(weight, alpha, magnitude)
        ctx.hard, ctx.regrow, ctx.block = hard, regrow, block
        return (grouped * factor).reshape(weight.shape)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, alpha, magnitude = ctx.saved_tensors
        need_weight, need_alpha = ctx.needs_input_grad[:2]
        kept = magnitude > alpha
        exact = need_weight and not (ctx.hard or ctx.regrow)
        g, w = _grouped(grad_out, ctx.block), _grouped(weight, ctx.block)
        inner = (g * w).sum(dim=1, keepdim=True) if exact or need_alpha else None
        weight_grad = None
        if need_weight and ctx.regrow:
            weight_grad = grad_out
        elif need_weight and ctx.hard:
            weight_grad = (g * kept).reshape(weight.shape)
        elif need_weight:
            assert inner is not None
            factor = torch.relu(1 - alpha / magnitude)
            coupling = torch.where(kept, alpha * inner / (ctx.block * magnitude.pow(3)), 0.0)
            weight_grad = (g * factor + coupling * w).reshape(weight.shape)
        alpha_grad = None
        if need_alpha:
            assert inner is not None
            alpha_grad = -torch.where(kept, inner / magnitude, 0.0).sum().reshape(alpha.shape)
        return weight_grad, alpha_grad, None, None, None
