"""Mask operations shared by every method: freezing soft thresholds into masks, setting masks,
baking the effective weights, and moving state dicts between dense and sparsified models."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

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
