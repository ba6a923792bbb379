"""Folding eval-mode BatchNorm into the convolution before it, for inference.

With s = gamma / sqrt(running_var + eps), ``BN(conv(x)) = conv'(x)`` for the convolution with
weight ``W * s`` (one factor per output channel) and bias ``(b - running_mean) * s + beta``. The
scaling keeps every zero of W, so a sparse convolution stays exactly as sparse, and the BN pass
over the feature map disappears.

Which BN follows which convolution is read from one forward pass on an example input: a
``BatchNorm2d`` whose input is the very tensor a ``Conv2d`` (with as many output channels)
returned. Whether that tensor fed anything else cannot be seen from hooks, so
:func:`~adapmtl.inference.optimize.optimize` compares the folded copy's outputs with the
model's on the example and keeps the model unfolded if they differ.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from adapmtl.inference.hooks import forward_with_hooks


def batchnorm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv path, BN path) for every foldable BN called on a conv's output during
    ``model(example)``; a BN or conv called more than once is left out."""
    outputs: list[tuple[weakref.ref, str]] = []
    pairs: list[tuple[str, str]] = []
    handles = []
    for path, module in model.named_modules():
        if type(module) is nn.Conv2d:

            def after(_m, _i, out, path=path):
                outputs.append((weakref.ref(out), path))

            handles.append(module.register_forward_hook(after))
        elif type(module) is nn.BatchNorm2d:

            def before(m, inputs, path=path):
                conv = next((p for ref, p in reversed(outputs) if ref() is inputs[0]), None)
                if conv is not None and foldable(model.get_submodule(conv), m):
                    pairs.append((conv, path))

            handles.append(module.register_forward_pre_hook(before))
    forward_with_hooks(model, example, handles)
    return [
        (conv, bn)
        for conv, bn in pairs
        if sum(c == conv for c, _ in pairs) == 1 and sum(b == bn for _, b in pairs) == 1
    ]


def foldable(conv: nn.Conv2d, bn: nn.Module) -> bool:
    """An eval-mode BatchNorm2d with running statistics, over the conv's output channels."""
    return (
        isinstance(bn, nn.BatchNorm2d)
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


@torch.no_grad()
def fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Give ``conv`` the weight and bias of ``bn(conv(x))`` (computed in float64)."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight.copy_((conv.weight.double() * scale.view(shape)).to(conv.weight.dtype))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype))


def fold_batchnorm(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """A copy of ``model`` with each (conv, BN) of ``pairs`` folded: the BN becomes
    ``nn.Identity``. The caller checks the copy's outputs (see the module docstring)."""
    folded = copy.deepcopy(model)
    for conv_path, bn_path in pairs:
        fold_into(folded.get_submodule(conv_path), folded.get_submodule(bn_path))
        parent, _, name = bn_path.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, name, nn.Identity())
    return folded
