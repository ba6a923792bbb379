"""Pruning sensitivity of each component (paper Figure 5, supplement C.1 and Figure 1).

Starting from a trained model, one component (the backbone, one task head, or ``heads`` = all
heads together) is magnitude-pruned to each level of a sweep while the others stay as they are
(or at levels fixed beforehand, e.g. the supplement's backbone at 95 %), and every task is
evaluated. Pruning is on the effective weights (a soft-threshold checkpoint is baked first, so
its pruned weights stay pruned and its survivors keep their shrunk values); there is no retraining
unless ``finetune`` iterations are asked for. Delta_T is measured against the model as loaded
(after the fixed levels) or against a dense reference.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adapmtl.analysis.tables import markdown_row
from adapmtl.errors import UserError
from adapmtl.sparsity import (
    bake,
    is_sparsified,
    layer_components,
    report,
    set_masks,
    sparse_layers,
    sparsify,
)
from adapmtl.sparsity.topk import keep_count, top_k_masks

HEADS = "heads"


def prunable_model(model: nn.Module) -> nn.Module:
    """A mask-mode copy of ``model`` whose stored weights are its effective weights."""
    plain = copy.deepcopy(model)
    if is_sparsified(plain):
        bake(plain)
    return sparsify(plain, mode="mask")


def component_layers(model: nn.Module, component: str) -> list[str]:
    """Sparsified layers of ``component`` (``heads`` = every component but the backbone)."""
    owners = layer_components(model)
    valid = [*sorted(set(owners.values())), HEADS]
    if component not in valid:
        raise UserError(f"--component {component!r}: the model's components are {valid}")
    if component == HEADS:
        return [path for path, owner in owners.items() if owner != "backbone"]
    return [path for path, owner in owners.items() if owner == component]


@torch.no_grad()
def prune_component(model: nn.Module, component: str, level: float) -> None:
    """Global magnitude pruning of one component's effective weights to sparsity ``level``
    (one top-k over its layers); weights already zero stay zero, so a level below the
    component's current sparsity leaves it unchanged."""
    paths = set(component_layers(model, component))
    layers = {path: module for path, module, _ in sparse_layers(model) if path in paths}
    scores = {path: module.weight.detach().abs() for path, module in layers.items()}
    total = sum(score.numel() for score in scores.values())
    chosen = top_k_masks(scores, keep_count(total, level))
    masks = {path: chosen[path] & (module.weight != 0) for path, module in layers.items()}
    set_masks(model, masks)


@dataclass
class SensitivityPoint:
    component: str
    level: float | None
    """Requested sparsity of the component (None: the model as loaded, the reference row)."""
    sparsity: dict[str, float]
    """Measured sparsity: ``overall`` and per component (fractions)."""
    metrics: dict[str, dict[str, float]]
    delta_t: dict[str, Any] | None


def measured_sparsity(model: nn.Module) -> dict[str, float]:
    rep = report(model)
    return {"overall": rep.sparsity, **{c: v.sparsity for c, v in rep.components.items()}}


def finetune(
    model: nn.Module,
    tasks: Mapping[str, Any],
    batches: Callable[[], Any],
    iterations: int,
    lr: float,
    device: torch.device,
) -> None:
    """Train the survivors for ``iterations`` steps with the masks fixed (Adam, summed losses)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for images, targets in itertools.islice(batches(), iterations):
        outputs = model(images.to(device))
        loss = sum(
            task.loss(outputs[name], targets[name].to(device)) for name, task in tasks.items()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def sweep(
    model: nn.Module,
    tasks: Mapping[str, Any],
    evaluate: Callable[[nn.Module], dict[str, dict[str, float]]],
    components: Sequence[str],
    levels: Sequence[float],
    *,
    fixed: Mapping[str, float] | None = None,
    score: Callable[[dict[str, dict[str, float]], dict[str, dict[str, float]]], dict[str, Any]],
    reference: dict[str, dict[str, float]] | None = None,
    retrain: Callable[[nn.Module], None] | None = None,
) -> list[SensitivityPoint]:
    """Prune each component over ``levels`` (others fixed) and evaluate every task.

    ``evaluate(model)`` returns the metrics; ``score(metrics, reference)`` the Delta_T dict;
    ``reference`` defaults to the metrics of the model as loaded (after ``fixed`` levels);
    ``retrain`` (optional) fine-tunes each pruned model before it is evaluated.
    """
    for level in levels:
        if not 0.0 <= level < 1.0:
            raise UserError(f"--levels: expected sparsities in [0, 1), got {level}")
    base = prunable_model(model)
    for component, level in (fixed or {}).items():
        if not 0.0 <= level < 1.0:
            raise UserError(f"--fix {component}={level}: expected a sparsity in [0, 1)")
        prune_component(base, component, level)
    for component in components:
        component_layers(base, component)  # names checked before any evaluation
    base_metrics = evaluate(base)
    reference = reference if reference is not None else base_metrics
    points = [
        SensitivityPoint(
            "as loaded", None, measured_sparsity(base), base_metrics, score(base_metrics, reference)
        )
    ]
    for component in components:
        for level in levels:
            pruned = copy.deepcopy(base)
            prune_component(pruned, component, level)
            if retrain is not None:
                retrain(pruned)
            metrics = evaluate(pruned)
            points.append(
                SensitivityPoint(
                    component, level, measured_sparsity(pruned), metrics, score(metrics, reference)
                )
            )
    return points


def points_table(points: list[SensitivityPoint], tasks: list[str]) -> str:
    """Markdown: component, requested level, measured sparsities, metrics and Delta_T."""
    first = points[0]
    metric_keys = [(t, m) for t in tasks for m in first.metrics[t]]
    sparsity_keys = list(first.sparsity)
    header = ["component", "level %", *[f"sparsity {k} %" for k in sparsity_keys]]
    header += [f"{t} {m}" for t, m in metric_keys]
    header += [f"ΔT {t}" for t in tasks] + ["ΔT"]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for point in points:
        cells = [point.component, "-" if point.level is None else f"{100 * point.level:.1f}"]
        cells += [f"{100 * point.sparsity[k]:.2f}" for k in sparsity_keys]
        cells += [f"{point.metrics[t][m]:.4g}" for t, m in metric_keys]
        delta = point.delta_t or {}
        cells += [f"{delta.get('per_task', {}).get(t, float('nan')):+.2f}" for t in tasks]
        cells.append(f"{delta.get('overall', float('nan')):+.2f}")
        lines.append(markdown_row(cells))
    return "\n".join(lines)


def points_csv(points: list[SensitivityPoint], tasks: list[str]) -> str:
    from adapmtl.analysis.tables import csv_text

    first = points[0]
    metric_keys = [(t, m) for t in tasks for m in first.metrics[t]]
    sparsity_keys = list(first.sparsity)
    header = ["component", "level", *[f"sparsity/{k}" for k in sparsity_keys]]
    header += [f"{t}/{m}" for t, m in metric_keys]
    header += [f"delta_t/{t}" for t in tasks] + ["delta_t/overall"]
    rows = []
    for point in points:
        delta = point.delta_t or {}
        rows.append(
            [point.component, "" if point.level is None else point.level]
            + [point.sparsity[k] for k in sparsity_keys]
            + [point.metrics[t][m] for t, m in metric_keys]
            + [delta.get("per_task", {}).get(t, "") for t in tasks]
            + [delta.get("overall", "")]
        )
    return csv_text(header, rows)
