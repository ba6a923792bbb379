"""DiSparse's mask rules as properties over random per-task scores: the backbone keeps the union
of the tasks' choices, each head its own task's choice, a larger keep ratio keeps a superset, and
the solved ratio is the smallest one that reaches the target's count. Expectations by NumPy."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adapmtl.methods.disparse import regrow, static_masks

SETTINGS = settings(max_examples=60, deadline=None)
OWNERS = {"backbone.0": "backbone", "backbone.1": "backbone", "heads.a": "a", "heads.b": "b"}


@st.composite
def task_scores(draw):
    sizes = {path: draw(st.integers(1, 12)) for path in OWNERS}
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scores = {
        task: {
            path: torch.rand(sizes[path], generator=g)
            for path, owner in OWNERS.items()
            if owner in ("backbone", task)
        }
        for task in ("a", "b")
    }
    return scores


def numpy_choice(scores, task: str, keep: float) -> dict[str, np.ndarray]:
    """Task ``task`` keeps its top floor(keep * N_t) scores over the backbone and its head."""
    layers = list(scores[task])
    flat = np.concatenate([scores[task][p].numpy() for p in layers])
    count = math.floor(keep * flat.size + 1e-9)
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[np.argsort(-flat, kind="stable")[:count]] = True
    out, at = {}, 0
    for p in layers:
        n = scores[task][p].numel()
        out[p] = chosen[at : at + n]
        at += n
    return out


@SETTINGS
@given(scores=task_scores(), keep=st.floats(0.0, 1.0))
def test_backbone_is_the_union_and_each_head_its_own_tasks_choice(scores, keep):
    masks, ratio = static_masks(scores, OWNERS, keep_ratio=keep)
    assert ratio == keep
    a, b = numpy_choice(scores, "a", keep), numpy_choice(scores, "b", keep)
    for path in ("backbone.0", "backbone.1"):
        assert np.array_equal(masks[path].numpy(), a[path] | b[path]), path
    assert np.array_equal(masks["heads.a"].numpy(), a["heads.a"])
    assert np.array_equal(masks["heads.b"].numpy(), b["heads.b"])


@SETTINGS
@given(scores=task_scores(), low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0))
def test_a_larger_keep_ratio_keeps_a_superset(scores, low, high):
    low, high = min(low, high), max(low, high)
    small, _ = static_masks(scores, OWNERS, keep_ratio=low)
    large, _ = static_masks(scores, OWNERS, keep_ratio=high)
    for path in OWNERS:
        assert torch.all(small[path] <= large[path]), path


@SETTINGS
@given(scores=task_scores(), target=st.floats(0.05, 0.95))
def test_solved_ratio_is_the_smallest_reaching_the_target_count(scores, target):
    masks, ratio = static_masks(scores, OWNERS, target=target)
    total = sum(m.numel() for m in masks.values())
    wanted = round((1 - target) * total)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept >= wanted
    if wanted > 0:
        smaller, _ = static_masks(scores, OWNERS, keep_ratio=math.nextafter(ratio, 0.0))
        assert sum(int(m.sum()) for m in smaller.values()) < wanted


@SETTINGS
@given(scores=task_scores(), counts=st.lists(st.integers(0, 5), min_size=4, max_size=4))
def test_regrowth_only_adds_inactive_weights_and_the_backbone_takes_the_union(scores, counts):
    g = torch.Generator().manual_seed(len(counts))
    sizes = {
        path: scores["a" if owner != "b" else "b"][path].numel() for path, owner in OWNERS.items()
    }
    pruned = {path: torch.rand(n, generator=g) < 0.5 for path, n in sizes.items()}
    wanted = dict(zip(OWNERS, counts, strict=True))
    grown = regrow(pruned, scores, OWNERS, wanted)
    for path, mask in grown.items():
        assert not torch.any(mask & pruned[path]), path
        inactive = int((~pruned[path]).sum())
        per_task = min(wanted[path], inactive)
        if OWNERS[path] == "backbone":
            assert per_task <= int(mask.sum()) <= min(2 * per_task, inactive), path
        else:
            assert int(mask.sum()) == per_task, path
