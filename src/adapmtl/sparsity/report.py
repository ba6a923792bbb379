"""Sparsity report: overall, per component and per layer, measured on the effective weights.

Sparsity is the fraction of exact zeros in S(W, a) (or W * mask), never in the stored dense W,
whose entries are almost never zero. Counts cover every sparsified weight, all heads included.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from adapmtl.sparsity.parametrization import SparseWeight
from adapmtl.sparsity.sparsify import layer_components, sparse_layers


@dataclass
class LayerSparsity:
    path: str
    component: str
    group: str | None
    mode: str
    nonzero: int
    total: int
    theta: float | None
    alpha: float | None

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.total


@dataclass
class Counts:
    nonzero: int = 0
    total: int = 0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.total if self.total else 0.0


@dataclass
class SparsityReport:
    """What ``report(model)`` returns: ``str()`` is a readable table, ``to_dict()`` JSON-ready."""

    layers: list[LayerSparsity]
    components: dict[str, Counts] = field(default_factory=dict)
    overall: Counts = field(default_factory=Counts)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return self.overall.sparsity

    def to_dict(self) -> dict:
        return {
            "overall": {**asdict(self.overall), "sparsity": self.overall.sparsity},
            "components": {
                name: {**asdict(c), "sparsity": c.sparsity} for name, c in self.components.items()
            },
            "thresholds": self.thresholds,
            "layers": [{**asdict(layer), "sparsity": layer.sparsity} for layer in self.layers],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        lines = [f"{'component':<24}{'nonzero':>14}{'total':>14}{'sparsity':>10}"]
        for name, c in self.components.items():
            lines.append(f"{name:<24}{c.nonzero:>14,}{c.total:>14,}{100 * c.sparsity:>9.2f}%")
        o = self.overall
        lines.append(f"{'overall':<24}{o.nonzero:>14,}{o.total:>14,}{100 * o.sparsity:>9.2f}%")
        if self.thresholds:
            lines.append("")
            lines.append(f"{'threshold group':<40}{'theta':>12}{'alpha':>14}")
            for group, t in self.thresholds.items():
                lines.append(f"{group:<40}{t['theta']:>12.4f}{t['alpha']:>14.4e}")
        return "\n".join(lines)

    def layer_table(self) -> str:
        lines = [f"{'layer':<48}{'component':<16}{'mode':<6}{'total':>12}{'sparsity':>10}"]
        for layer in self.layers:
            lines.append(
                f"{layer.path:<48}{layer.component:<16}{layer.mode:<6}"
                f"{layer.total:>12,}{100 * layer.sparsity:>9.2f}%"
            )
        return "\n".join(lines)


def _mode(p: SparseWeight) -> str:
    if p.masked:
        return "mask"
    if p.theta is None:
        return "dense"
    return "hard" if p.hard else "soft"


@torch.no_grad()
def report(model: nn.Module) -> SparsityReport:
    """Sparsity of a sparsified model: overall, per component, per layer, and its thresholds.
    Every count and threshold is read from the device in one transfer."""
    owners = layer_components(model)
    entries = sparse_layers(model)
    values = torch.stack([_layer_values(m, p) for _, m, p in entries]).tolist() if entries else []
    layers = []
    for (path, module, p), (nonzero, theta, alpha) in zip(entries, values, strict=True):
        soft = p.theta is not None
        layers.append(
            LayerSparsity(
                path=path,
                component=owners.get(path, "?"),
                group=p.group,
                mode=_mode(p),
                nonzero=int(nonzero),
                total=module.parametrizations.weight.original.numel(),
                theta=theta if soft else None,
                alpha=alpha if soft else None,
            )
        )
    result = SparsityReport(layers=layers)
    for layer in layers:
        counts = result.components.setdefault(layer.component, Counts())
        counts.nonzero += layer.nonzero
        counts.total += layer.total
        result.overall.nonzero += layer.nonzero
        result.overall.total += layer.total
        if layer.group is not None and layer.theta is not None:
            result.thresholds[layer.group] = {"theta": layer.theta, "alpha": layer.alpha}
    return result


def _layer_values(module: nn.Module, p: SparseWeight) -> torch.Tensor:
    """(nonzero count, theta, alpha) of one layer on its device, in float64 (exact for counts
    below 2**53 and for float32 thresholds); theta and alpha are 0 without a threshold."""
    weight = module.parametrizations.weight.original
    nonzero = p.active(weight).sum(dtype=torch.float64)
    if p.theta is None:
        return torch.stack([nonzero, *torch.zeros(2, dtype=torch.float64, device=weight.device)])
    theta = p.theta.detach()
    return torch.stack([nonzero, theta.double(), torch.sigmoid(theta).double()])


@torch.no_grad()
def overall_sparsity_tensor(model: nn.Module) -> torch.Tensor:
    """Overall sparsity as a 0-d float64 tensor on the model's device, without reading anything
    on the host: one reduction over every layer's active count. Read it (``float(...)``) only on
    the steps that need the value; 0 when nothing is sparsified."""
    entries = sparse_layers(model)
    if not entries:
        return torch.zeros((), dtype=torch.float64, device="cpu")
    total = sum(module.parametrizations.weight.original.numel() for _, module, _ in entries)
    nonzero = torch.stack(
        [p.active(module.parametrizations.weight.original).sum() for _, module, p in entries]
    ).sum(dtype=torch.float64)
    return 1.0 - nonzero / total


def overall_sparsity(model: nn.Module) -> float:
    """Overall sparsity only: the cheap form of ``report(model).sparsity`` for the training loop
    (one host read; :func:`overall_sparsity_tensor` makes none)."""
    return float(overall_sparsity_tensor(model))
