"""A tiny two-task model and a minimal training loop with the trainer's hook order, for testing
methods without datasets: forward, losses, backward, after_backward, optimizer and scheduler
steps, after_step. Expectations in the tests are computed independently of adapmtl.methods."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from adapmtl.methods import Method, TrainingContext, build_method

TASKS = ("a", "b")


class TinyMultiTask(nn.Module):
    """Conv backbone (stem, BN, conv) and one small head per task; about 1,600 weights."""

    def __init__(self, tasks: tuple[str, ...] = TASKS) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict(
            {t: nn.Sequential(nn.Conv2d(8, 12, 1), nn.ReLU(), nn.Conv2d(12, 1, 1)) for t in tasks}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {t: head(features) for t, head in self.heads.items()}


def make_batches(count: int, seed: int, size: int = 4) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        x = torch.randn(size, 3, 6, 6, generator=g)
        targets = {
            "a": x[:, :1] * 2.0 + 0.5 * torch.randn(size, 1, 6, 6, generator=g),
            "b": x[:, 1:2].abs() - x[:, 2:3],
        }
        batches.append((x, targets))
    return batches


def task_losses_of(model: nn.Module) -> Callable[[Any], dict[str, torch.Tensor]]:
    def losses(batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        out = model(images)
        return {
            "a": ((out["a"] - targets["a"]) ** 2).mean(),
            "b": (out["b"] - targets["b"]).abs().mean(),
        }

    return losses


@dataclass
class Run:
    model: nn.Module
    method: Method
    ctx: TrainingContext
    train: list[Any]
    resets: int = 0
    iteration: int = 0
    started: bool = False
    before_after_step: list[Callable[[int], None]] = field(default_factory=list)

    def step(self) -> None:
        batch = self.train[self.iteration % len(self.train)]
        self.model.train()
        total = sum(self.ctx.task_losses(batch).values())
        self.ctx.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.method.after_backward(self.ctx, self.iteration)
        self.ctx.optimizer.step()
        self.ctx.scheduler.step()
        for hook in self.before_after_step:
            hook(self.iteration)
        self.method.after_step(self.ctx, self.iteration)
        self.iteration += 1

    def begin(self) -> None:
        """``on_start``, once (the trainer calls it before the first iteration of a new run)."""
        if not self.started:
            self.method.on_start(self.ctx)
            self.started = True

    def fit(self, until: int | None = None) -> None:
        self.begin()
        while self.iteration < (until or self.ctx.iterations):
            self.step()


def start(
    name: str,
    target: float | None,
    options: dict[str, Any] | None = None,
    *,
    iterations: int = 20,
    seed: int = 0,
    lr: float = 1e-2,
    scoring: list[Any] | None = None,
    threshold_lr: float = 0.1,
) -> Run:
    torch.set_num_threads(1)  # tiny tensors: threads only add contention (conftest restores)
    torch.manual_seed(seed)
    model = TinyMultiTask()
    method = build_method(name, target, options or {})
    method.prepare(model)
    scoring_batches = scoring if scoring is not None else make_batches(6, seed=100)

    def build_optimizer() -> tuple[torch.optim.Optimizer, Any]:
        groups = method.param_groups(
            model, lr=lr, weight_decay=0.0, threshold_lr=threshold_lr, threshold_weight_decay=1.0
        )
        optimizer = torch.optim.Adam(groups, lr=lr)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1000, 0.5)

    optimizer, scheduler = build_optimizer()
    run = Run(model=model, method=method, ctx=None, train=make_batches(8, seed=200))  # type: ignore[arg-type]

    def reset() -> None:
        run.ctx.optimizer, run.ctx.scheduler = build_optimizer()
        run.resets += 1

    run.ctx = TrainingContext(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        iterations=iterations,
        batches=lambda: itertools.cycle(scoring_batches),  # infinite, as the trainer's
        task_losses=task_losses_of(model),
        reset_optimizer=reset,
        device=torch.device("cpu"),
    )
    return run


# ------------------------------------------------------------- independent expectations
def prunable(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv/Linear of the plain tiny model by module path (the prunable set)."""
    return {path: m for path, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def plain_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Effective weights (W * mask) of every prunable layer, as NumPy arrays."""
    return {path: m.weight.detach().numpy().copy() for path, m in prunable(model).items()}


def masks_np(model: nn.Module) -> dict[str, np.ndarray]:
    out = {}
    for path, m in prunable(model).items():
        p = m.parametrizations.weight[0]
        w = m.parametrizations.weight.original
        out[path] = p.mask.numpy().copy() if p.masked else np.ones(tuple(w.shape), dtype=bool)
    return out


def top_k_np(scores: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Global top-k by a NumPy sort (independent of torch.topk)."""
    flat = np.concatenate([s.ravel() for s in scores.values()])
    order = np.argsort(-flat, kind="stable")
    keep = np.zeros(flat.size, dtype=bool)
    keep[order[:k]] = True
    out, start_at = {}, 0
    for path, s in scores.items():
        out[path] = keep[start_at : start_at + s.size].reshape(s.shape)
        start_at += s.size
    return out


def sparsity_np(masks: dict[str, np.ndarray]) -> float:
    total = sum(m.size for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def grad_scores(
    state: dict[str, torch.Tensor], batches: list[Any], tasks: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """sum over batches of |dL/dW * W| for L = sum of ``tasks``' losses, on a plain tiny model
    loaded with ``state``, by torch.autograd.grad (no adapmtl code involved)."""
    model = TinyMultiTask()
    model.load_state_dict(state)
    model.train()
    layers = prunable(model)
    totals = {path: np.zeros(tuple(m.weight.shape)) for path, m in layers.items()}
    for batch in batches:
        losses = task_losses_of(model)(batch)
        loss = sum(losses[t] for t in tasks)
        grads = torch.autograd.grad(loss, [m.weight for m in layers.values()], allow_unused=True)
        for (path, m), g in zip(layers.items(), grads, strict=True):
            if g is not None:
                totals[path] += (g * m.weight).abs().detach().numpy()
    return totals
