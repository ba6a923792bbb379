"""``disparse``: DiSparse (Sun et al., CVPR 2022), static and dynamic, as its public code does.

Both modes disentangle the tasks: each task t scores the weights of the backbone and of its own
head with its own loss; a backbone weight survives if **any** task keeps it (the union, "pruned
only if all tasks agree"), and head t keeps exactly task t's choice.

**static** (``disparse_prune_static``): before training, S_t = sum over ``num_batches`` batches of
|dL_t/dm| = |g_t * W|; each task keeps the top floor(keep * N_t) of S_t over its N_t weights
(backbone + own head). One keep ratio for all tasks is solved so that the overall sparsity after
the union meets the target. Since task t keeps a weight of rank r (0-based) iff
(r + 1) / N_t <= keep, a weight survives iff its smallest such value over the tasks that see it
is <= keep, and the overall count is monotone in keep: the smallest keep reaching the target's
count is that count's order statistic, exactly what a bisection on keep converges to. The masks
stay fixed for training.

**dynamic** (``disparse_dynamic_train``): ERK initial densities d_l, random masks (the stem starts
dense); every ``update_every`` iterations until END = ``end_fraction`` of training, with
r_t = r0 (1 + cos(pi t / END)) / 2: drop the smallest-magnitude active weights of each layer down
to d_l (1 - r_t), then per task regrow the d_l r_t N_l inactive weights with the largest |dL_t/dW|
(backbone: union over tasks of the grown sets; head t: task t's); at END a final magnitude trim to
exactly d_l per layer, then the masks are fixed. Gradients for regrowth are taken at the current
sparse weights on a batch of the scoring stream (DiSparse uses the stale dense weights, a bug;
see docs/reference_implementations.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from adapmtl.errors import UserError
from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.methods.masking import (
    Scores,
    accumulate_gradient_scores,
    components_of,
    install_masks,
    magnitude_scores,
    masks_of,
    stored_weights,
    unmasked_forward,
)
from adapmtl.sparsity import set_masks
from adapmtl.sparsity.topk import Masks, keep_count, layer_top_k

BACKBONE = "backbone"
MODES = ("static", "dynamic")
SCORE_ON = ("init", "xavier")
REGROWTH = ("retained", "zero")


def task_layers(owners: Mapping[str, str], task: str) -> list[str]:
    """Layers task ``task`` scores: the backbone's and its own head's."""
    return [path for path, owner in owners.items() if owner in (BACKBONE, task)]


def static_masks(
    scores: Mapping[str, Scores],
    owners: Mapping[str, str],
    target: float | None = None,
    keep_ratio: float | None = None,
) -> tuple[Masks, float]:
    """DiSparse-static masks from per-task scores ``{task: {layer: S_t}}`` (S_t over the backbone
    and task t's head; entries of other heads are ignored).

    Either ``keep_ratio`` is given (DiSparse's hard-coded per-target values) or the smallest
    ratio whose post-union overall sparsity reaches ``target`` is solved for. Returns the masks
    and the keep ratio.
    """
    if (target is None) == (keep_ratio is None):
        raise ValueError("give exactly one of target and keep_ratio")
    # u[w] = min over tasks seeing w of (rank_t(w) + 1) / N_t; task t keeps w iff u_t(w) <= keep
    first_layer = next(iter(owners))
    device = next(iter(scores.values()))[first_layer].device
    u = {
        path: torch.full(scores_shape(scores, path), math.inf, dtype=torch.float64, device=device)
        for path in owners
    }
    for task, task_scores in scores.items():
        layers = task_layers(owners, task)
        flat = torch.cat([task_scores[path].flatten() for path in layers])
        order = torch.argsort(flat, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(flat.numel(), device=flat.device)
        u_task = (ranks + 1).double() / flat.numel()
        start = 0
        for path in layers:
            n = u[path].numel()
            u[path] = torch.minimum(u[path], u_task[start : start + n].view_as(u[path]))
            start += n
    unseen = [path for path, value in u.items() if torch.isinf(value).any()]
    if unseen:
        raise ValueError(f"layer {unseen[0]} belongs to no task and is not in the backbone")
    if keep_ratio is None:
        assert target is not None
        everything = torch.cat([value.flatten() for value in u.values()])
        keep = keep_count(everything.numel(), target)
        keep_ratio = 0.0 if keep == 0 else float(torch.kthvalue(everything.cpu(), keep).values)
    masks = {path: value <= keep_ratio for path, value in u.items()}
    return masks, keep_ratio


def scores_shape(scores: Mapping[str, Scores], path: str) -> torch.Size:
    for task_scores in scores.values():
        if path in task_scores:
            return task_scores[path].shape
    raise KeyError(path)


def erk_densities(
    shapes: Mapping[str, torch.Size], density: float, power: float = 0.9
) -> dict[str, float]:
    """Erdos-Renyi-Kernel densities (RigL; DiSparse with power 0.9): d_l = eps * p_l with
    p_l = (sum of the dims / product of the dims)^power, eps solving sum_l d_l N_l = density *
    sum_l N_l; layers whose d_l would exceed 1 are made dense and eps is solved again."""
    sizes = {path: math.prod(shape) for path, shape in shapes.items()}
    raw = {path: (sum(shape) / sizes[path]) ** power for path, shape in shapes.items()}
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        sparse = [path for path in shapes if path not in dense]
        budget = density * total - sum(sizes[path] for path in dense)
        eps = budget / sum(raw[path] * sizes[path] for path in sparse)
        over = [path for path in sparse if eps * raw[path] > 1.0]
        if not over:
            break
        dense.update(over)
    return {path: 1.0 if path in dense else eps * raw[path] for path in shapes}


def regrow(
    pruned: Masks,
    gradients: Mapping[str, Scores],
    owners: Mapping[str, str],
    counts: Mapping[str, int],
) -> Masks:
    """Weights regrown in each layer: every task t picks, in each layer it sees (backbone and its
    own head), the ``counts[layer]`` inactive weights with the largest |dL_t/dW|; a backbone layer
    grows the union of the tasks' picks, head t only task t's."""
    grown = {path: torch.zeros_like(mask) for path, mask in pruned.items()}
    for task, task_gradients in gradients.items():
        for path in task_layers(owners, task):
            inactive = int((~pruned[path]).sum())
            candidates = task_gradients[path].masked_fill(pruned[path], float("-inf"))
            grown[path] |= layer_top_k(candidates, min(counts[path], inactive))
    return grown


def cosine_rate(iteration: int, end: int, initial: float) -> float:
    """r_t = r0 (1 + cos(pi t / END)) / 2."""
    return 0.5 * initial * (1.0 + math.cos(math.pi * iteration / end))


@METHODS.register("disparse")
class DiSparse(Method):
    name = "disparse"

    @dataclass
    class Options:
        mode: Literal["static", "dynamic"] = "static"
        """``static`` or ``dynamic``."""
        num_batches: int = 50
        """static: scoring batches (DiSparse: 50)."""
        keep_ratio: float | None = None
        """static, faithful: DiSparse's hard-coded per-task keep ratio (NYUv2 90 %: 0.08) instead
        of solving for the target; the final sparsity then need not match the target."""
        score_on: Literal["init", "xavier"] = "init"
        """static: score the model's own initial weights (``init``) or, as DiSparse, a copy
        re-initialised xavier-normal (``xavier``)."""
        update_every: int = 50
        """dynamic: iterations between mask updates (DiSparse NYUv2: 50)."""
        end_fraction: float = 0.75
        """dynamic: END, the last update (then masks are fixed), as a fraction of training."""
        prune_rate: float = 0.5
        """dynamic: r0, the initial drop/regrow rate."""
        erk_power: float = 0.9
        """dynamic: exponent of the ERK layer scores."""
        stem_dense: bool = True
        """dynamic: the first prunable layer starts dense (pruned from the first update)."""
        regrowth: Literal["retained", "zero"] = "retained"
        """dynamic: regrown weights resume their retained values (DiSparse) or start at zero
        (RigL)."""
        exclude: list[str] = field(default_factory=list)

    def __init__(self, target: float | None, options: Options) -> None:
        if target is None:
            raise ValueError("disparse needs a target sparsity (method.target)")
        checks = [
            (options.mode in MODES, f"options.mode must be one of {MODES}, got {options.mode!r}"),
            (
                options.score_on in SCORE_ON,
                f"options.score_on must be one of {SCORE_ON}, got {options.score_on!r}",
            ),
            (
                options.regrowth in REGROWTH,
                f"options.regrowth must be one of {REGROWTH}, got {options.regrowth!r}",
            ),
            (options.num_batches >= 1, f"options.num_batches must be >= 1: {options.num_batches}"),
            (
                options.update_every >= 1,
                f"options.update_every must be >= 1: {options.update_every}",
            ),
            (
                0.0 < options.end_fraction < 1.0,
                f"options.end_fraction must be in (0, 1), got {options.end_fraction}",
            ),
            (
                0.0 < options.prune_rate < 1.0,
                f"options.prune_rate must be in (0, 1), got {options.prune_rate}",
            ),
            (
                options.keep_ratio is None or 0.0 < options.keep_ratio <= 1.0,
                f"options.keep_ratio must be in (0, 1], got {options.keep_ratio}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        super().__init__(target, options)
        self.keep_ratio: float | None = None
        self.densities: dict[str, float] = {}
        self.updates = 0
        self.fixed_at: int | None = None
        self.scoring_batches_used = 0
        self._batches: Iterator[Any] | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        return install_masks(model, self.options.exclude)

    def on_start(self, ctx: TrainingContext) -> None:
        owners = components_of(ctx.model)
        if BACKBONE not in owners.values():
            raise UserError(
                "disparse needs a 'backbone' component and one head component per task; "
                f"the model has components {sorted(set(owners.values()))}"
            )
        if self.options.mode == "static":
            self._prune_static(ctx, owners)
        else:
            self._init_dynamic(ctx)

    # ------------------------------------------------------------------ static
    def _prune_static(self, ctx: TrainingContext, owners: dict[str, str]) -> None:
        weights = stored_weights(ctx.model)
        own_init = {path: w.detach().clone() for path, w in weights.items()}
        if self.options.score_on == "xavier":
            with torch.no_grad():
                for weight in weights.values():
                    nn.init.xavier_normal_(weight)
        tasks = sorted(set(owners.values()) - {BACKBONE})
        scores = accumulate_gradient_scores(
            ctx.model,
            ctx.task_losses,
            itertools.islice(ctx.batches(), self.options.num_batches),
            {task: [task] for task in tasks},
            lambda grad, weight: (grad * weight).abs(),
        )
        with torch.no_grad():
            for path, weight in weights.items():
                weight.copy_(own_init[path])
        masks, self.keep_ratio = static_masks(
            scores,
            owners,
            target=None if self.options.keep_ratio is not None else self.target,
            keep_ratio=self.options.keep_ratio,
        )
        set_masks(ctx.model, masks)

    # ----------------------------------------------------------------- dynamic
    def _end(self, iterations: int) -> int:
        return max(1, round(self.options.end_fraction * iterations))

    def _init_dynamic(self, ctx: TrainingContext) -> None:
        assert self.target is not None
        weights = stored_weights(ctx.model)
        self.densities = erk_densities(
            {path: w.shape for path, w in weights.items()},
            1.0 - self.target,
            self.options.erk_power,
        )
        stem = next(iter(weights)) if self.options.stem_dense else None
        masks = {}
        for path, w in weights.items():
            if path == stem:
                masks[path] = torch.ones_like(w, dtype=torch.bool)
                continue
            keep = round(self.densities[path] * w.numel())
            chosen = torch.randperm(w.numel(), device=w.device)[:keep]
            mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
            mask[chosen] = True
            masks[path] = mask.view_as(w)
        set_masks(ctx.model, masks, zero_pruned=self.options.regrowth == "zero")

    def after_step(self, ctx: TrainingContext, iteration: int) -> None:
        if self.options.mode != "dynamic" or self.fixed_at is not None:
            return
        end = self._end(ctx.iterations)
        if iteration + 1 >= end:
            self._final_trim(ctx)
            self.fixed_at = iteration + 1
        elif iteration % self.options.update_every == 0:
            self._update(ctx, cosine_rate(iteration, end, self.options.prune_rate))

    def _next_batch(self, ctx: TrainingContext) -> Any:
        if self._batches is None:
            # a resumed run continues the scoring stream where the interrupted one stopped
            self._batches = itertools.islice(ctx.batches(), self.scoring_batches_used, None)
        self.scoring_batches_used += 1
        return next(self._batches)

    def _update(self, ctx: TrainingContext, rate: float) -> None:
        model = ctx.model
        owners = components_of(model)
        scores = magnitude_scores(model)
        current = masks_of(model)
        pruned = {
            path: layer_top_k(
                score,
                min(
                    round(self.densities[path] * (1.0 - rate) * score.numel()),
                    int(current[path].sum()),
                ),
            )
            for path, score in scores.items()
        }
        set_masks(model, pruned, zero_pruned=False)
        tasks = sorted(set(owners.values()) - {BACKBONE})
        with unmasked_forward(model):
            gradients = accumulate_gradient_scores(
                model,
                ctx.task_losses,
                [self._next_batch(ctx)],
                {task: [task] for task in tasks},
                lambda grad, weight: grad.abs(),
            )
        # grow back to d_l: round(d_l N_l) - kept, i.e. d_l r_t N_l up to rounding
        counts = {
            path: max(0, round(self.densities[path] * mask.numel()) - int(mask.sum()))
            for path, mask in pruned.items()
        }
        grown = ctx.share(regrow(pruned, gradients, owners, counts))
        new_masks = {path: pruned[path] | grown[path] for path in pruned}
        set_masks(model, new_masks, zero_pruned=False)
        if self.options.regrowth == "zero":
            with torch.no_grad():
                for path, weight in stored_weights(model).items():
                    weight.masked_fill_(grown[path], 0.0)
        self.updates += 1

    def _final_trim(self, ctx: TrainingContext) -> None:
        scores = magnitude_scores(ctx.model)
        current = masks_of(ctx.model)
        masks = {
            path: layer_top_k(
                score, min(round(self.densities[path] * score.numel()), int(current[path].sum()))
            )
            for path, score in scores.items()
        }
        set_masks(ctx.model, masks, zero_pruned=True)

    # ------------------------------------------------------------------- state
    def masks_final(self) -> bool:
        """True once static masks, or dynamic ones after the final trim."""
        return self.at_target()

    def at_target(self) -> bool:
        return self.options.mode == "static" or self.fixed_at is not None

    def summary(self) -> dict[str, Any]:
        if self.options.mode == "static":
            return {"mode": "static", "keep_ratio": self.keep_ratio}
        return {"mode": "dynamic", "updates": self.updates, "fixed_at": self.fixed_at}

    def state_dict(self) -> dict[str, Any]:
        return {
            "keep_ratio": self.keep_ratio,
            "densities": dict(self.densities),
            "updates": self.updates,
            "fixed_at": self.fixed_at,
            "scoring_batches_used": self.scoring_batches_used,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keep_ratio = state["keep_ratio"]
        self.densities = {k: float(v) for k, v in state["densities"].items()}
        self.updates = int(state["updates"])
        self.fixed_at = state["fixed_at"]
        self.scoring_batches_used = int(state["scoring_batches_used"])
        self._batches = None
