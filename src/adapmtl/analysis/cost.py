"""Parameters and multiply-accumulates of a (sparse) model, per component and overall
(paper Table 4, "Params" and "FLOPs").

What is counted:

* **MACs**: multiply-accumulates of every ``Conv1d/2d/3d`` and ``Linear`` call in one forward pass
  of a batch-1 input, measured with forward hooks (so shared or repeated modules count once per
  call, and dilation, stride, groups and depthwise convs come from the real output shapes).
  One multiply-accumulate counts once: a dense conv costs ``output positions x weight.numel()``,
  the sparse model ``output positions x nonzero weights``, since each nonzero weight
  ``w[o, i, ...]`` takes part in exactly one MAC at every output position of channel ``o``.
  Positions whose receptive field falls in the zero padding are counted too (the usual
  convention). Papers that write "FLOPs" mostly mean these MACs; FLOPs in the strict sense
  (a multiply and an add) are 2 x MACs. Bias additions, normalisation, activations, pooling and
  residual additions are not counted: they are a small fraction and BN folds into the conv.
* **Parameters**: every ``nn.Parameter`` of the model except the learnable thresholds (they are a
  training device and disappear when the model is baked). Buffers (BN running statistics, masks)
  are not parameters. For Conv/Linear weights the *effective* weight is used (soft threshold or
  mask applied); "nonzero parameters" counts the nonzero entries of those prunable weights and
  every other parameter (biases, norm affine parameters) in full, since they are stored anyway.
* **Sparsity** is that of the prunable weights (Conv/Linear weights), the set
  ``adapmtl.sparsity.report`` counts.

Components come from ``model.components()``, or ``model.backbone`` / ``model.heads[task]``, or are
given explicitly; anything else is reported under ``other``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from adapmtl.components import as_patterns, component_of, model_components
from adapmtl.sparsity import PRUNABLE_TYPES, THRESHOLDS_ATTR

OTHER = "other"


@dataclass
class Cost:
    """Counts for one component (or the whole model)."""

    params: int = 0
    nonzero_params: int = 0
    prunable: int = 0
    nonzero_prunable: int = 0
    macs: int = 0
    nonzero_macs: int = 0

    @property
    def sparsity(self) -> float:
        """Fraction of zeros among the prunable (Conv/Linear) weights."""
        return 1.0 - self.nonzero_prunable / self.prunable if self.prunable else 0.0

    def add(self, other: Cost) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class LayerCost:
    """One Conv/Linear module: its weight counts and the MACs of all its calls."""

    path: str
    component: str
    weights: int
    nonzero_weights: int
    macs: int = 0
    nonzero_macs: int = 0
    calls: int = 0


@dataclass
class CostReport:
    """What ``count_cost`` returns; ``str()`` is a table in the paper's Table 4 terms."""

    input_shape: tuple[int, ...]
    components: dict[str, Cost] = field(default_factory=dict)
    overall: Cost = field(default_factory=Cost)
    layers: list[LayerCost] = field(default_factory=list)

    def to_dict(self) -> dict:
        def entry(c: Cost) -> dict:
            return {**asdict(c), "sparsity": c.sparsity}

        return {
            "input_shape": list(self.input_shape),
            "mac_convention": "one multiply-accumulate = 1 (FLOPs = 2 x MACs)",
            "overall": entry(self.overall),
            "components": {name: entry(c) for name, c in self.components.items()},
            "layers": [asdict(layer) for layer in self.layers],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        lines = [
            f"Cost at input {shape} (MACs: one multiply-accumulate counted once; FLOPs = 2 x MACs)",
            f"{'component':<16}{'sparsity':>10}{'params':>12}{'nonzero':>12}"
            f"{'MACs':>12}{'nonzero':>12}",
        ]
        rows = [*self.components.items(), ("overall", self.overall)]
        for name, c in rows:
            lines.append(
                f"{name:<16}{100 * c.sparsity:>9.2f}%{_si(c.params):>12}{_si(c.nonzero_params):>12}"
                f"{_si(c.macs):>12}{_si(c.nonzero_macs):>12}"
            )
        return "\n".join(lines)


def _si(value: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _component_of(path: str, patterns: Mapping[str, Sequence[str]]) -> str:
    return component_of(path, patterns) or OTHER


def _resolve_components(
    model: nn.Module, components: Mapping[str, str | Sequence[str]] | None
) -> dict[str, list[str]]:
    if components is None:
        try:
            components = model_components(model)
        except ValueError:
            return {}
    return as_patterns(components)


def _own_parameters(model: nn.Module) -> list[tuple[str, nn.Module, str, torch.Tensor]]:
    """(module path, module, parameter name, effective value) for every parameter, with the
    effective weight in place of a parametrized one; thresholds are left out."""
    found = []
    for path, module in model.named_modules():
        parts = path.split(".")
        if "parametrizations" in parts or THRESHOLDS_ATTR in parts:
            continue
        for name, param in module.named_parameters(recurse=False):
            found.append((path, module, name, param))
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                found.append((path, module, name, getattr(module, name)))
    return found


@torch.no_grad()
def count_cost(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    in_channels: int = 3,
    components: Mapping[str, str | Sequence[str]] | None = None,
    example: torch.Tensor | None = None,
) -> CostReport:
    """Count parameters and MACs of ``model`` (dense and nonzero), per component and overall.

    Args:
        model: any module, sparsified (parametrized), baked (exact zeros) or dense.
        input_size: spatial size of the input, e.g. ``(321, 321)``; the input is a batch-1
            tensor ``[1, in_channels, *input_size]`` (ignored when ``example`` is given).
        components: name -> module-path prefixes or ``re:`` patterns (default: the model's own).
        example: an explicit batch-1 input, for models that do not take images.

    The model runs once in eval mode (and is put back in its previous mode).
    """
    patterns = _resolve_components(model, components)
    if example is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        example = torch.zeros(1, in_channels, *input_size, device=device)
    if example.shape[0] != 1:
        raise ValueError(f"cost is counted on a batch of 1, got input shape {tuple(example.shape)}")

    result = CostReport(input_shape=tuple(example.shape))
    for name in patterns:
        result.components[name] = Cost()
    layers: dict[nn.Module, LayerCost] = {}

    for path, module, name, value in _own_parameters(model):
        component = _component_of(path, patterns)
        cost = result.components.setdefault(component, Cost())
        numel = value.numel()
        cost.params += numel
        if isinstance(module, PRUNABLE_TYPES) and name == "weight":
            nonzero = int(torch.count_nonzero(value))
            cost.prunable += numel
            cost.nonzero_prunable += nonzero
            cost.nonzero_params += nonzero
            layers[module] = LayerCost(path, component, numel, nonzero)
        else:
            cost.nonzero_params += numel

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        layer = layers[module]
        channels = output.shape[-1] if isinstance(module, nn.Linear) else output.shape[1]
        positions = output.numel() // channels
        layer.macs += positions * layer.weights
        layer.nonzero_macs += positions * layer.nonzero_weights
        layer.calls += 1

    handles = [module.register_forward_hook(hook) for module in layers]
    was_training = model.training
    try:
        model.eval()
        model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    for layer in layers.values():
        cost = result.components[layer.component]
        cost.macs += layer.macs
        cost.nonzero_macs += layer.nonzero_macs
    result.layers = list(layers.values())
    if not result.components.get(OTHER, Cost()).params:
        result.components.pop(OTHER, None)
    for cost in result.components.values():
        result.overall.add(cost)
    return result
