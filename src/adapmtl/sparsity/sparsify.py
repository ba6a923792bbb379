"""Registering the sparse-weight parametrization on a model (paper Section 3.2).

``sparsify`` finds every prunable weight (Conv2d and Linear weights; never biases or norm
parameters), assigns it to a component (the shared backbone or one task head) and a threshold
group, creates the thresholds once in ``model.sparsity_thresholds`` and registers
:class:`~adapmtl.sparsity.parametrization.SparseWeight` on the weight.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from adapmtl.components import (
    PATTERNS_ATTR,
    as_patterns,
    check_patterns,
    model_components,
    path_matches,
)
from adapmtl.sparsity.blocks import check_block, layer_block
from adapmtl.sparsity.parametrization import SparseWeight
from adapmtl.sparsity.structure import UntraceableModelError, normalised_layers

THRESHOLDS_ATTR = "sparsity_thresholds"
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
GROUPINGS = ("component", "global", "backbone_heads", "layer")
MODES = ("soft", "hard", "auto", "mask")
THRESHOLD_MODES = ("soft", "hard", "auto")


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight: its module path, its component and its threshold group."""

    path: str
    module: nn.Module
    component: str
    group: str | None


def _candidate_weights(model: nn.Module, exclude: Sequence[str]) -> Iterator[tuple[str, nn.Module]]:
    for path, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES) or path == "":
            continue
        if any(path_matches(path, pattern) for pattern in exclude):
            continue
        yield path, module


def _group_key(grouping: str, component: str, path: str) -> str:
    if grouping == "component":
        return component
    if grouping == "global":
        return "all"
    if grouping == "backbone_heads":
        return "backbone" if component == "backbone" else "heads"
    return path.replace(".", "/")


def is_sparsified(model: nn.Module) -> bool:
    return any(isinstance(m, SparseWeight) for m in model.modules())


def thresholds(model: nn.Module) -> nn.ParameterDict:
    """The model's threshold parameters (theta), one per group; empty for mask-only models."""
    found = getattr(model, THRESHOLDS_ATTR, None)
    return found if isinstance(found, nn.ParameterDict) else nn.ParameterDict()


def theta_from_alpha(alpha: float) -> float:
    """Inverse of ``alpha = sigmoid(theta)``."""
    return math.log(alpha) - math.log1p(-alpha)


def sparse_layers(model: nn.Module) -> list[tuple[str, nn.Module, SparseWeight]]:
    """(module path, module, parametrization) for every sparsified weight, in model order."""
    found = []
    for path, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, SparseWeight):
                    found.append((path, module, p))
    return found


def layer_components(model: nn.Module) -> dict[str, str]:
    """Module path -> component name, as recorded by ``sparsify``."""
    return dict(getattr(model, "_adapmtl_components", {}))


def sparsify(
    model: nn.Module,
    *,
    grouping: str = "component",
    components: Mapping[str, str | Sequence[str]] | None = None,
    init: float | Mapping[str, float] = -6.0,
    exclude: Sequence[str] = (),
    mode: str = "soft",
    regrow: bool = False,
    block: int = 1,
) -> nn.Module:
    """Register a soft-threshold (or mask) parametrization on every prunable weight, in place.

    Args:
        model: any module; components default to ``model.backbone`` and ``model.heads[task]``.
        grouping: ``component`` (AdapMTL: one theta for the backbone and one per head),
            ``global`` (one theta: the paper's "w/o adaptive thresholds"), ``backbone_heads``
            (two: "only 2 adaptive thresholds"), ``layer`` (one per layer, STR-style).
        components: name -> module paths or ``re:`` patterns (:mod:`adapmtl.components`: a
            path claims its module and everything under it, a ``re:`` pattern must match a
            whole module path). Every prunable weight must match exactly one component, and
            every pattern some module (a typo names the closest module paths). Not needed
            with ``grouping="global"`` or ``"layer"``: a model without components is then one
            component, ``all``.
        init: initial theta (paper's theta_init; alpha = sigmoid(theta)), one value or one per
            group key. The default -6 gives alpha = 2.5e-3, below the bulk of |W| for the
            initialisations used here; the paper's supplement uses -20 with N(0, 0.01) weights.
        exclude: module paths or ``re:`` patterns never to prune.
        mode: ``soft`` (learnable thresholds, paper Eq. 2), ``hard`` (the same learnable
            thresholds applied as a hard mask, survivors unshrunk), ``auto`` (soft on the layers
            whose output feeds only normalisation layers, hard on the others; read from the
            traced graph by :func:`~adapmtl.sparsity.structure.normalised_layers`) or ``mask``
            (all-ones masks for mask-based methods, no thresholds).
        regrow: with a threshold mode, pruned weights keep receiving the straight-through
            gradient and come back when they grow above the threshold; with ``auto``, only on
            the hard layers (the soft ones keep Eq. 2's gradient).
        block: with a threshold mode, prune in blocks of this many consecutive output channels
            (:mod:`adapmtl.sparsity.blocks`): every layer whose output count per conv group is
            a multiple of it (:func:`~adapmtl.sparsity.blocks.layer_block`); 1 (the default,
            the paper's) prunes weight by weight.

    Returns the same model. Raises ``ValueError`` naming the weight when a weight matches no
    component or several, and when the model is already sparsified;
    :class:`~adapmtl.sparsity.structure.UntraceableModelError` (a ``ValueError``) when ``auto``
    cannot trace the model.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if regrow and mode == "mask":
        raise ValueError("regrow needs a threshold mode ('soft' or 'hard'), got mode 'mask'")
    check_block(block, "block")
    if block > 1 and mode == "mask":
        raise ValueError("block needs a threshold mode; mask-based methods choose their own masks")
    if is_sparsified(model):
        raise ValueError("model is already sparsified; bake(model) first to start over")
    if components is None:
        components = _components_for(model, grouping)
    patterns = as_patterns(components)
    check_patterns(model, {f"component {name!r}": pats for name, pats in patterns.items()})
    check_patterns(model, {"exclude": list(exclude)})
    if grouping == "backbone_heads" and "backbone" not in patterns:
        raise ValueError("grouping 'backbone_heads' needs a component named 'backbone'")

    layers: list[PrunableLayer] = []
    for path, module in _candidate_weights(model, exclude):
        owners = [
            name for name, pats in patterns.items() if any(path_matches(path, p) for p in pats)
        ]
        if not owners:
            raise ValueError(
                f"prunable weight {path}.weight matches no component "
                f"{sorted(patterns)}; add it to a component or to exclude"
            )
        if len(owners) > 1:
            raise ValueError(f"prunable weight {path}.weight matches several components {owners}")
        group = _group_key(grouping, owners[0], path) if mode in THRESHOLD_MODES else None
        layers.append(PrunableLayer(path, module, owners[0], group))
    if not layers:
        raise ValueError("model has no prunable Conv/Linear weights outside 'exclude'")
    soft = _soft_layers(model, mode, [layer.path for layer in layers])  # may raise: model intact

    table: nn.ParameterDict | None = None
    if mode in THRESHOLD_MODES:
        groups = sorted({str(layer.group) for layer in layers})
        missing = [g for g in groups if g not in init] if isinstance(init, Mapping) else []
        if missing:
            raise ValueError(f"init has no value for threshold groups {missing} (groups: {groups})")
        table = nn.ParameterDict()
        for layer in layers:
            assert layer.group is not None
            if layer.group not in table:
                value = init[layer.group] if isinstance(init, Mapping) else init
                table[layer.group] = nn.Parameter(torch.tensor(float(value), device="cpu"))
        setattr(model, THRESHOLDS_ATTR, table)
    for layer in layers:
        hard = mode != "mask" and layer.path not in soft
        parametrize.register_parametrization(
            layer.module,
            "weight",
            SparseWeight(
                table,
                layer.group,
                hard=hard,
                regrow=regrow and (hard or mode == "soft"),
                block=layer_block(layer.module, block),
            ),
            unsafe=True,
        )
    model._adapmtl_components = {layer.path: layer.component for layer in layers}
    setattr(model, PATTERNS_ATTR, patterns)
    if mode in THRESHOLD_MODES:
        _warn_if_mostly_pruned(model)
    return model


def _soft_layers(model: nn.Module, mode: str, paths: list[str]) -> set[str]:
    """The paths that get the soft threshold under ``mode`` (traced before any parametrization)."""
    if mode == "soft":
        return set(paths)
    if mode == "auto":
        try:
            return normalised_layers(model, paths)
        except UntraceableModelError as err:
            raise UntraceableModelError(
                f"mode 'auto' reads the model's graph to choose soft or hard per layer: {err}; "
                "use mode 'soft' or 'hard'"
            ) from err
    return set()


def _components_for(model: nn.Module, grouping: str) -> dict[str, list[str]]:
    """The model's own components (those it was last sparsified with, else its defaults);
    groupings that do not follow components (one threshold for all, or one per layer) accept a
    model without any, as the single component ``all``."""
    try:
        return model_components(model)
    except ValueError:
        if grouping in ("global", "layer"):
            return {"all": [""]}
        raise


def _warn_if_mostly_pruned(model: nn.Module) -> None:
    zero = total = 0
    for _, module, p in sparse_layers(model):
        weight = module.parametrizations.weight.original
        zero += int((~p.active(weight)).sum())
        total += weight.numel()
    if total and zero / total > 0.5:
        warnings.warn(
            f"the initial thresholds already zero {100 * zero / total:.1f}% of the weights: "
            "theta init is too high for this weight scale (alpha = sigmoid(theta)); "
            "a lower init lets training choose what to prune",
            stacklevel=3,
        )
