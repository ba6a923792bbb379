"""The thresholds of a model's layers in one autograd node per training forward.

Each threshold layer (paper Eq. 2, or the hard threshold) costs a forward call and a backward
call of its own autograd function per training step. On a small weight that fixed cost of Python
and dispatch outweighs the arithmetic, and it grows inside a step, where the convolutions run
between two calls and evict the caches: in development runs on ``mobilenetv2_cpu`` its 76 layers
below 1 MB, 8 % of its weights, spent 22-28 ms per step in their own calls, 130-200 µs per call
against about 20 µs for a forward call alone.

:func:`batched_thresholds` computes, on entering, the effective weights of every threshold layer
in one :class:`_BatchedThreshold` node and hands each layer its own
(:attr:`~adapmtl.sparsity.parametrization.SparseWeight.prepared`); the node's one backward gives
every weight's gradient (Eq. 4, or the straight-through one with ``regrow``) and every threshold's
(Eq. 5), the same values as the per-layer functions, the thresholds' up to the order of their
sums. Weights that carry a recycled buffer between steps (CPU weights of 32 MB or more,
:mod:`adapmtl.sparsity.recycle`) keep their own calls: the node holds every output until the end
of backward, which would defeat the recycling, and their cost is their arithmetic anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adapmtl.sparsity.parametrization import (
    SparseWeight,
    autocast_off,
    threshold_forward,
    threshold_gradients,
    threshold_level,
)
from adapmtl.sparsity.recycle import carries_buffer
from adapmtl.sparsity.sparsify import sparse_layers


@dataclass(frozen=True)
class _Layer:
    """How one batched layer applies its threshold: its group's index among the node's levels,
    the hard threshold or Eq. 2, and the straight-through weight gradient (``regrow``)."""

    group: int
    hard: bool
    straight_through: bool


class _BatchedThreshold(torch.autograd.Function):
    """Inputs: the layers (:class:`_Layer`), the number of groups, one level ``a`` per group,
    then one weight per layer; outputs: each layer's S(W, a) or H(W, a)."""

    @staticmethod
    def forward(
        ctx: Any, layers: tuple[_Layer, ...], groups: int, *tensors: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)  # an unused layer gets no gradient, as on its own
        alphas, weights = tensors[:groups], tensors[groups:]
        levels = [threshold_level(a) for a in alphas]
        outs = tuple(
            threshold_forward(weight, levels[layer.group], layer.hard, None)
            for layer, weight in zip(layers, weights, strict=True)
        )
        ctx.save_for_backward(*outs)
        ctx.layers, ctx.alphas = layers, [(a.shape, a.dtype) for a in alphas]
        return outs

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        outs = ctx.saved_tensors
        groups = len(ctx.alphas)
        need_alpha = ctx.needs_input_grad[2 : 2 + groups]
        need_weight = ctx.needs_input_grad[2 + groups :]
        partial: list[list[torch.Tensor]] = [[] for _ in range(groups)]
        weight_grads: list[torch.Tensor | None] = []
        for layer, grad, out, weight_needed in zip(
            ctx.layers, grads, outs, need_weight, strict=True
        ):
            if grad is None:
                weight_grads.append(None)
                continue
            weight_grad, alpha_grad = threshold_gradients(
                grad,
                out,
                need_weight=weight_needed,
                need_alpha=need_alpha[layer.group],
                straight_through=layer.straight_through,
            )
            weight_grads.append(weight_grad)
            if alpha_grad is not None:
                partial[layer.group].append(alpha_grad)
        alpha_grads = [
            sum(parts).to(dtype).reshape(shape) if parts else None
            for parts, (shape, dtype) in zip(partial, ctx.alphas, strict=True)
        ]
        return None, None, *alpha_grads, *weight_grads


def _batched_layers(model: nn.Module) -> list[tuple[SparseWeight, torch.Tensor]]:
    """(parametrization, stored weight) of every layer applying a threshold weight by weight
    (blocked layers compute their own: :mod:`adapmtl.sparsity.blocks`) to a weight that carries
    no recycled buffer."""
    found = []
    for _, module, weight_param in sparse_layers(model):
        weight = module.parametrizations.weight.original
        if (
            weight_param.group is not None
            and not weight_param.masked
            and not weight_param.blocked(weight)
            and not carries_buffer(weight)
        ):
            found.append((weight_param, weight))
    return found


@contextlib.contextmanager
def batched_thresholds(model: nn.Module) -> Iterator[int]:
    """Within the block, every threshold layer of ``model`` returns an effective weight computed
    on entering, for all of them in one autograd node (module docstring); yields how many layers
    that is.

    Only with gradients enabled and at least two such layers; elsewhere (evaluation, masks,
    weights that carry a recycled buffer) each layer computes its own. The layers are read on
    every entry, so a method that changes them between steps (a frozen mask, a new
    parametrization) is followed. Meant around one training forward: the effective weights are
    computed once, so a weight changed inside the block is not seen until the next.
    """
    layers = _batched_layers(model) if torch.is_grad_enabled() else []
    if len(layers) < 2:
        yield 0
        return
    thetas: dict[int, tuple[int, torch.Tensor]] = {}  # id -> (index, the group's threshold)
    specs = []
    for weight_param, _ in layers:
        theta = weight_param.theta
        assert theta is not None  # _batched_layers keeps threshold layers only
        index, _ = thetas.setdefault(id(theta), (len(thetas), theta))
        specs.append(_Layer(index, weight_param.hard, weight_param.regrow))
    with autocast_off(layers[0][1].device):
        alphas = [torch.sigmoid(theta) for _, theta in thetas.values()]
        weights = (weight for _, weight in layers)
        outs = _BatchedThreshold.apply(tuple(specs), len(alphas), *alphas, *weights)
    try:
        for (weight_param, _), out in zip(layers, outs, strict=True):
            weight_param.prepared = out
        yield len(layers)
    finally:
        for weight_param, _ in layers:
            weight_param.prepared = None
