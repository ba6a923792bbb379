"""Mask operations shared by the mask-based methods (SNIP, LTH, IMP, DiSparse).

Every mask-based method registers the one sparse-weight parametrization in mask mode
(``sparsify(model, mode="mask")``) and installs boolean masks with ``set_masks``; the effective
weight is ``W * M``. This module adds what the methods have in common: magnitude and
connection-sensitivity scores (selected by the top-k of ``adapmtl.sparsity.topk``), weight
snapshots for rewinding, and a dense run's weights loaded under the masks. Counting follows the
references: every Conv/Linear weight of backbone and heads, never biases or norm parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from adapmtl.errors import UserError
from adapmtl.sparsity import (
    dense_state_dict,
    is_sparsified,
    layer_components,
    load_dense_state_dict,
    set_masks,
    sparse_layers,
    sparsify,
)
from adapmtl.sparsity.blocks import block_magnitude, layer_block
from adapmtl.sparsity.topk import Masks, keep_count, top_k_masks

Scores = dict[str, torch.Tensor]


def install_masks(model: nn.Module, exclude: Iterable[str] = ()) -> nn.Module:
    """Register the parametrization in mask mode on every prunable weight (all dense at first)."""
    return sparsify(model, mode="mask", exclude=list(exclude))


def stored_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Module path -> the stored (unmasked) weight parameter of every sparsified layer."""
    return {
        path: module.parametrizations.weight.original for path, module, _ in sparse_layers(model)
    }


def masks_of(model: nn.Module) -> Masks:
    """Module path -> the layer's mask (all-ones when the layer has no mask yet)."""
    out = {}
    for path, module, p in sparse_layers(model):
        weight = module.parametrizations.weight.original
        out[path] = p.mask.clone() if p.masked else torch.ones_like(weight, dtype=torch.bool)
    return out


def components_of(model: nn.Module) -> dict[str, str]:
    """Module path -> component (``backbone`` or a task head) of every sparsified layer."""
    return layer_components(model)


@torch.no_grad()
def magnitude_scores(model: nn.Module, block: int = 1) -> Scores:
    """|W * M| of every layer, or with ``block`` > 1 the magnitude of each weight's block of
    output channels (:func:`~adapmtl.sparsity.blocks.block_magnitude`, on the layers
    :func:`~adapmtl.sparsity.blocks.layer_block` blocks); weights outside the
    current mask score ``-inf`` so a magnitude prune never brings them back (pruned weights stay
    pruned)."""
    scores = {}
    for path, module, p in sparse_layers(model):
        weight = module.parametrizations.weight.original
        score = block_magnitude(weight, layer_block(module, block)).float()
        if p.masked:
            score = score.masked_fill(~p.mask, float("-inf"))
        scores[path] = score
    return scores


def mask_smallest(model: nn.Module, target: float, block: int = 1) -> Masks:
    """Global magnitude pruning to overall sparsity ``target`` among the unpruned weights;
    installs and returns the masks (pruned stored weights are zeroed). With ``block`` > 1,
    whole blocks of output channels are pruned (:mod:`adapmtl.sparsity.blocks`): the sparsity
    lands within a block of ``target``, on the low side."""
    scores = magnitude_scores(model, block)
    total = sum(s.numel() for s in scores.values())
    masks = top_k_masks(scores, keep_count(total, target), whole_ties=block > 1)
    set_masks(model, masks)
    return masks


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Run scoring passes without side effects on the model's buffers (BatchNorm running
    statistics are restored afterwards) and without leaving gradients behind."""
    saved = {
        name: buf.detach().clone()
        for name, buf in model.named_buffers()
        if not name.endswith("mask")
    }
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])
        model.zero_grad(set_to_none=True)


@contextlib.contextmanager
def unmasked_forward(model: nn.Module) -> Iterator[None]:
    """Compute the network of the current masks through plain weights: inside the block the
    stored weights hold ``W * M`` and the masks are lifted, so autograd returns the dense gradient
    dL/d(W * M) at every entry, pruned ones included (as RigL needs for regrowth). Stored weights
    and masks are restored on exit."""
    saved = []
    with torch.no_grad():
        for _, module, p in sparse_layers(model):
            original = module.parametrizations.weight.original
            saved.append((p, original, original.detach().clone(), p.mask))
            if p.masked:
                original.mul_(p.mask)
            p.mask = torch.ones(0, dtype=torch.bool, device=p.mask.device)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, original, value, mask in saved:
                original.copy_(value)
                p.mask = mask


def accumulate_gradient_scores(
    model: nn.Module,
    losses: Callable[[Any], dict[str, torch.Tensor]],
    batches: Iterable[Any],
    groups: Mapping[str, Sequence[str] | None],
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, Scores]:
    """Sum ``score(grad, W)`` over ``batches`` for each group of task losses.

    ``groups`` maps a score name to the task losses it back-propagates (their sum; ``None`` =
    all tasks), e.g. ``{"all": None}`` for SNIP or ``{task: [task]}`` for DiSparse's per-task
    scores;
    ``losses(batch)`` returns the per-task losses of one batch. Buffers are restored and
    gradients cleared afterwards.
    """
    weights = stored_weights(model)
    totals: dict[str, Scores] = {
        name: {path: torch.zeros_like(w, dtype=torch.float32) for path, w in weights.items()}
        for name in groups
    }
    names = list(groups)
    with preserved_buffers(model):
        for batch in batches:
            per_task = losses(batch)
            unknown = sorted({t for ts in groups.values() if ts for t in ts} - set(per_task))
            if unknown:
                raise UserError(
                    f"the model has a head {unknown[0]!r} but no task of that name "
                    f"(tasks: {sorted(per_task)})"
                )
            for i, name in enumerate(names):
                model.zero_grad(set_to_none=True)
                tasks = groups[name]
                loss = sum(per_task[task] for task in (per_task if tasks is None else tasks))
                loss.backward(retain_graph=i < len(names) - 1)
                for path, w in weights.items():
                    if w.grad is not None:
                        totals[name][path] += score(w.grad.detach(), w.detach()).float()
    return totals


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain (never sparsified) state dict of the model's current effective weights and buffers:
    what rewinding restores and what a dense checkpoint holds."""
    if is_sparsified(model):
        return {k: v.detach().clone() for k, v in dense_state_dict(model).items()}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def load_under_masks(model: nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a plain state dict into a mask-mode model, keep the masks and zero the stored weights
    under them (rewinding the survivors only)."""
    try:
        load_dense_state_dict(model, weights)
    except ValueError as err:
        raise UserError(f"{source}: {err}") from None
    for _, module, p in sparse_layers(model):
        if p.masked:
            module.parametrizations.weight.original.mul_(p.mask)
