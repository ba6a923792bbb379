"""Whether a run is at its target sparsity: one tolerance, read by the methods (AdapMTL's
``at_target``), the trainer (``results.json``, the warning at the end of ``train``), the tables
and the plots.

A run is *on target* when its measured overall sparsity (pruned prunable weights over all
prunable weights) is within :data:`TOLERANCE` of the method's ``target``, above or below: a
comparison at 90 % is only fair between models that are all at 90 %. Runs without a target
(dense) are never off target.
"""

from __future__ import annotations

from typing import Any

TOLERANCE = 0.005
"""Half a percentage point of overall sparsity."""


def target_fields(target: float | None, sparsity: float | None) -> dict[str, Any]:
    """The ``results.json`` fields: ``target``, ``final_sparsity`` (overall, a fraction) and
    ``target_reached`` (None without a target)."""
    hit = None if target is None else on_target(target, sparsity)
    return {"target": target, "final_sparsity": sparsity, "target_reached": hit}


def reached(target: float, sparsity: float) -> bool:
    """At or above ``target`` up to :data:`TOLERANCE` (a method that may still be pruning)."""
    return sparsity >= target - TOLERANCE


def on_target(target: float | None, sparsity: float | None) -> bool:
    """Within :data:`TOLERANCE` of ``target``, above or below (always, without a target)."""
    if target is None:
        return True
    return sparsity is not None and abs(sparsity - target) <= TOLERANCE


def result_target(results: dict[str, Any]) -> tuple[float | None, float | None]:
    """(target, overall sparsity) of a ``results.json``; results written before the target
    fields existed give the method summary's target and the sparsity report's overall value."""
    target = results.get("target", (results.get("method") or {}).get("target"))
    sparsity = results.get("final_sparsity")
    if sparsity is None and "sparsity" in results:
        sparsity = results["sparsity"]["overall"]["sparsity"]
    return target, sparsity


def miss_text(target: float, sparsity: float | None) -> str:
    """``"reached 54.02 % overall sparsity, requested 90 %"``."""
    reached = "no" if sparsity is None else f"{100 * sparsity:.2f} %"
    return f"reached {reached} overall sparsity, requested {100 * target:g} %"
