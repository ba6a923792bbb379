"""Block-structured pruning: weights pruned and kept in blocks of consecutive output channels.

With unstructured masks a sparse convolution needs one input load per multiply-add, which caps
its speed on a CPU well below the FLOP limit (docs/results/inference.md). When every ``block``
consecutive output channels of a layer share their nonzero positions, each loaded input value
serves all of them: the ``direct-block4`` kernels of :mod:`adapmtl.inference` use such weights.

A block is ``block`` consecutive output channels at one position of the rest of the weight (an
input channel and a kernel tap of a convolution, an input feature of a linear layer), so a
weight ``[out, ...]`` has ``out / block`` blocks per position. Its *magnitude* is the root mean
square of its weights, so that a block of one weight has magnitude ``|W|`` and thresholds keep
the scale of the unstructured case. A layer whose output count is not a multiple of ``block``
(a head's last layer with 1, 3 or 13 outputs) is pruned weight by weight.

The thresholds generalise paper Eq. 2 to blocks (the proximal operator of the group lasso
penalty): ``S = W * relu(1 - a / m)`` with ``m`` the block's magnitude, which for blocks of one
is ``sign(W) * relu(|W| - a)``; the hard threshold keeps whole blocks, ``W * 1[m > a]``.
"""

from __future__ import annotations

import torch

# floor of a block's mean square before the square root: an all-zero block then has a finite
# magnitude and the root's gradient stays finite
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


def block_norms(weight: torch.Tensor, block: int) -> torch.Tensor:
    """The L2 norm of every block, shaped ``[out / block, positions]``; ``weight`` must be
    blocked (:func:`is_blocked`)."""
    return weight.reshape(weight.shape[0] // block, block, -1).norm(dim=1)


def block_magnitude(weight: torch.Tensor, block: int) -> torch.Tensor:
    """Per weight, the magnitude of its block (root mean square of its ``block`` weights), shaped
    like ``weight``; ``|W|`` where ``weight`` is not blocked. Differentiable in ``weight``."""
    if not is_blocked(weight, block):
        return weight.abs()
    grouped = weight.reshape(weight.shape[0] // block, block, -1)
    rms = grouped.square().mean(dim=1, keepdim=True).clamp_min(_TINY_SQUARE).sqrt()
    return rms.expand_as(grouped).reshape(weight.shape)


def block_threshold(
    weight: torch.Tensor, alpha: torch.Tensor, *, hard: bool, regrow: bool, block: int
) -> torch.Tensor:
    """The effective weight of a blocked layer, differentiable in ``weight`` and ``alpha``.

    Soft: ``W * relu(1 - a / m)`` (Eq. 2 for blocks, module docstring); its weight gradient is
    the exact one, or with ``regrow`` the straight-through ``dL/dW = dL/dS``. Hard: ``W * B``
    with ``B = 1[m > a]``, the weight gradient ``dL/dS * B`` or, with ``regrow``,
    straight-through; alpha's gradient is the soft threshold's at the same weights (as the
    unstructured hard threshold's, a surrogate).
    """
    magnitude = block_magnitude(weight, block)
    if not hard and not regrow:
        return weight * torch.relu(1 - alpha / magnitude)
    fixed = weight.detach()
    soft_of_alpha = fixed * torch.relu(1 - alpha / magnitude.detach())
    if not hard:
        return soft_of_alpha + (weight - fixed)
    kept = magnitude.detach() > alpha.detach()
    survivors = weight if regrow else weight * kept
    return (
        torch.where(kept, fixed, 0.0)
        + (survivors - survivors.detach())
        + (soft_of_alpha - soft_of_alpha.detach())
    )
