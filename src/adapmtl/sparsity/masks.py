"""Mask operations shared by every method: freezing soft thresholds into masks, setting masks,
keeping final masks in the weights, baking the effective weights, and moving state dicts between
dense and sparsified models."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from adapmtl.sparsity.recycle import carries_buffer
from adapmtl.sparsity.sparsify import THRESHOLDS_ATTR, sparse_layers, thresholds

_ORIGINAL = ".parametrizations.weight.original"
_MASK = ".parametrizations.weight.0.mask"


@torch.no_grad()
def freeze_masks(model: nn.Module) -> None:
    """Fix the active set at the current thresholds (paper Sec. 5: the mask is fixed once the
    target sparsity is reached).

    Each soft-thresholded weight is replaced by its effective value S(W, a) and the layer switches
    to mask mode with mask = (S(W, a) != 0); the survivors keep training, pruned weights stay at
    zero, and the thresholds stop receiving gradients.
    """
    for _, module, p in sparse_layers(model):
        if p.masked or p.theta is None:
            continue
        original = module.parametrizations.weight.original
        effective = p(original)
        original.copy_(effective)
        p.set_mask(effective != 0)
    for theta in thresholds(model).values():
        theta.requires_grad_(False)
        theta.grad = None


@torch.no_grad()
def set_masks(
    model: nn.Module, masks: Mapping[str, torch.Tensor], *, zero_pruned: bool = True
) -> None:
    """Install boolean masks keyed by module path (mask-based methods). With ``zero_pruned`` the
    stored weights under the mask are set to zero too, so regrown weights start from zero."""
    layers = {path: (module, p) for path, module, p in sparse_layers(model)}
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise KeyError(f"no sparsified layer named {unknown[0]!r} (known: {len(layers)} layers)")
    for path, mask in masks.items():
        module, p = layers[path]
        original = module.parametrizations.weight.original
        if mask.shape != original.shape:
            raise ValueError(
                f"mask for {path} has shape {tuple(mask.shape)}, weight has {tuple(original.shape)}"
            )
        p.set_mask(mask)
        if zero_pruned:
            original.mul_(p.mask)


@torch.no_grad()
def keep_masks_in_weights(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Keep every mask-mode layer's pruned weights at zero in the stored weight, so that its
    forward uses the weight as it is and only the gradient is masked; returns how many layers
    switched.

    For masks that no longer change (after AdapMTL's freeze, paper Sec. 5; SNIP, LTH, IMP and
    DiSparse once their last mask is set). Training is the same as with ``W * M`` in every
    forward, value for value: the stored weights and their gradient are zeroed under the mask,
    and so is every weight-shaped state ``optimizer`` keeps for them (Adam's moments, SGD's
    momentum), so an update, whose size such state sets for an entry with no gradient, cannot
    move a pruned weight off zero. Any later mask or state-dict load returns a layer to
    ``W * M``. Raises ``ValueError`` for optimizer state it cannot mask (neither weight-shaped
    nor a scalar), as an update from it could regrow pruned weights.

    Weights of :data:`~adapmtl.sparsity.recycle.RECYCLE_BYTES` or more keep ``W * M`` on the
    CPU: its buffers are reused from step to step there, while the masked gradient would be a
    fresh weight-sized ``mmap``, page-faulted every step (a MobileNetV2 head's 47 MB weight:
    measured slower than the pass it saves).
    """
    switched = 0
    for path, module, p in sparse_layers(model):
        if not p.masked or p.in_place:
            continue
        original = module.parametrizations.weight.original
        if carries_buffer(original):
            continue
        state = optimizer.state.get(original, {}) if optimizer is not None else {}
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape != original.shape and value.numel() > 1:
                raise ValueError(
                    f"{path}: optimizer state {key!r} has shape {tuple(value.shape)}, not the "
                    f"weight's {tuple(original.shape)}; the mask cannot be kept in the weights"
                )
        mask = p.mask.to(original.dtype)
        original.mul_(mask)
        if original.grad is not None:
            original.grad.mul_(mask)
        for value in state.values():
            if torch.is_tensor(value) and value.shape == original.shape:
                value.mul_(mask.to(value.dtype))
        p.in_place = True
        switched += 1
    return switched


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean map of nonzero effective weights, per sparsified layer."""
    return {
        path: p.active(module.parametrizations.weight.original)
        for path, module, p in sparse_layers(model)
    }


def bake(model: nn.Module) -> nn.Module:
    """Replace every parametrization by its effective weight, in place (exact zeros; survivors
    shrunk by the threshold, sign(W)(|W| - a), not W * mask). Afterwards the model is a plain
    PyTorch model with plain ``state_dict`` keys and no thresholds."""
    for _, module, _ in sparse_layers(model):
        # copy.deepcopy shares parametrize's generated class between a model and its copy, and
        # removing a parametrization deletes the property from that class: give this module a
        # class of its own first, so baking a copy leaves the original intact.
        shared = type(module)
        module.__class__ = type(shared.__name__, shared.__bases__, dict(shared.__dict__))
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    if hasattr(model, THRESHOLDS_ATTR):
        delattr(model, THRESHOLDS_ATTR)
    if hasattr(model, "_adapmtl_components"):
        del model._adapmtl_components
    return model


@torch.no_grad()
def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a plain (never sparsified) copy of the model would have, holding the
    effective weights; the model itself is not changed. Load it with ``load_state_dict``."""
    effective = {path: module.weight.detach().clone() for path, module, _ in sparse_layers(model)}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith(THRESHOLDS_ATTR + ".") or key.endswith(_MASK):
            continue
        if key.endswith(_ORIGINAL):
            path = key[: -len(_ORIGINAL)]
            out[f"{path}.weight"] = effective[path]
        else:
            out[key] = value
    return out


def _dense_key(key: str) -> str:
    return key[: -len(_ORIGINAL)] + ".weight" if key.endswith(_ORIGINAL) else key


def load_dense_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a plain (dense) state dict into a sparsified model: ``<layer>.weight`` goes to the
    layer's stored weight; thresholds and masks keep their current values. Raises ``ValueError``
    listing the keys that do not match."""
    parametrized = {path for path, _, _ in sparse_layers(model)}
    remapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        path = key[: -len(".weight")] if key.endswith(".weight") else None
        remapped[f"{path}{_ORIGINAL}" if path in parametrized else key] = value
    expected = model.state_dict()
    optional = {k for k in expected if k.startswith(THRESHOLDS_ATTR + ".") or k.endswith(_MASK)}
    # Errors name keys as the dense state dict spells them.
    missing = sorted(_dense_key(k) for k in set(expected) - set(remapped) - optional)
    unexpected = sorted(_dense_key(k) for k in set(remapped) - set(expected))
    if missing or unexpected:
        raise ValueError(
            "state dict does not fit the model: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, value in remapped.items():
        if expected[key].shape != value.shape:
            raise ValueError(
                f"state dict entry {_dense_key(key)} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(remapped, strict=False)
