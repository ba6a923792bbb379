"""Masks from scores: the one top-k selection behind every magnitude or sensitivity prune.

A *score* is a tensor shaped like a layer's weight; the masks keep the largest scores, either
over all layers together (one global top-k: :func:`top_k_masks`) or within each layer
(:func:`layer_top_k`). :func:`magnitude_masks` scores by |W|. Used by the mask-based methods
(``adapmtl.methods``), the sensitivity sweep (``adapmtl.analysis.sensitivity``) and the pruned
models of the benchmarks (``adapmtl.inference.pruning``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

SCOPES = ("layer", "global")
Masks = dict[str, torch.Tensor]


def keep_count(total: int, sparsity: float) -> int:
    """Number of weights that ``total`` prunable weights keep at ``sparsity``."""
    return round((1.0 - sparsity) * total)


def top_k_masks(scores: Mapping[str, torch.Tensor], k: int, *, whole_ties: bool = False) -> Masks:
    """Keep exactly the ``k`` largest scores over all layers together (one global top-k).

    Entries scored ``-inf`` are kept only when fewer than ``k`` entries have a finite score.
    With ``whole_ties`` every entry scoring at least the ``k``-th largest score is kept, so
    entries that share one score (the weights of a block, :mod:`adapmtl.sparsity.blocks`) are
    kept or pruned together, and more than ``k`` may be kept."""
    flat = torch.cat([s.detach().flatten().float() for s in scores.values()])
    if not 0 <= k <= flat.numel():
        raise ValueError(f"cannot keep {k} of {flat.numel()} weights")
    if whole_ties and k > 0:
        keep = flat >= torch.topk(flat, k, sorted=False).values.min()
    else:
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[torch.topk(flat, k, sorted=False).indices] = True
    out, start = {}, 0
    for path, s in scores.items():
        out[path] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out


def layer_top_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of one tensor (all of them when ``k`` is more)."""
    return top_k_masks({"": score}, min(k, score.numel()))[""]


def magnitude_masks(
    weights: Mapping[str, torch.Tensor], pruned: float, *, scope: str = "global"
) -> Masks:
    """Masks that prune the ``round(pruned * n)`` smallest |W|: of all ``n`` weights together
    (``scope="global"``) or of each layer's ``n`` (``"layer"``)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    scores = {path: w.detach().abs() for path, w in weights.items()}
    if scope == "global":
        total = sum(s.numel() for s in scores.values())
        return top_k_masks(scores, total - round(pruned * total))
    return {
        path: layer_top_k(s, s.numel() - round(pruned * s.numel())) for path, s in scores.items()
    }
