"""``adapmtl demo``: until the trainer lands, sparsify a small multitask conv model, train it
briefly on random targets with the target-sparsity controller, and print the sparsity report."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from adapmtl.sparsity import TargetSparsityController, param_groups, report, sparsify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=float, default=0.9, help="target overall sparsity")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)


def _toy_model() -> nn.Module:
    model = nn.Module()
    model.backbone = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()
    )
    model.heads = nn.ModuleDict(
        {"seg": nn.Conv2d(32, 5, 1), "depth": nn.Conv2d(32, 1, 1), "normal": nn.Conv2d(32, 3, 1)}
    )
    return model


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    model = sparsify(_toy_model(), grouping="component", init=-6.0)
    controller = TargetSparsityController(model, args.target)
    optimizer = torch.optim.Adam(
        param_groups(model, lr=1e-3, threshold_lr=2e-2, threshold_weight_decay=1.0)
    )
    x = torch.randn(8, 3, 16, 16)
    targets = {t: torch.randn(8, h.out_channels, 16, 16) for t, h in model.heads.items()}
    for it in range(args.iterations):
        features = model.backbone(x)
        loss = sum(
            nn.functional.l1_loss(head(features), targets[t])
            for t, h in model.heads.items()
            for head in [h]
        )
        optimizer.zero_grad()
        loss.backward()
        controller.step(it)
        optimizer.step()
    print(report(model))
    print(f"\ntarget {args.target:.2%}, froze at iteration {controller.frozen_at}")
    return 0
