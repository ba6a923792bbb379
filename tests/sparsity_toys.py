"""Small multitask models shared by the sparsity tests (not a test module)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from hypothesis import strategies as st
from torch import nn


class ConvMTL(nn.Module):
    """Backbone (conv, batch norm, conv) and two heads (seg: conv, group norm, conv; depth: conv).

    Prunable weights, in model order: backbone.0, backbone.3, heads.seg.0, heads.seg.3,
    heads.depth.
    """

    PRUNABLE = ("backbone.0", "backbone.3", "heads.seg.0", "heads.seg.3", "heads.depth")

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict(
            {
                "seg": nn.Sequential(
                    nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 4, 1)
                ),
                "depth": nn.Conv2d(8, 1, 1),
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


class LinearMTL(nn.Module):
    """Fully connected backbone and two linear heads; sizes chosen per test."""

    def __init__(self, d_in: int, d_hidden: int, d_a: int, d_b: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_hidden), nn.ReLU()
        )
        self.heads = nn.ModuleDict({"a": nn.Linear(d_hidden, d_a), "b": nn.Linear(d_hidden, d_b)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


def conv_mtl(seed: int = 0) -> ConvMTL:
    torch.manual_seed(seed)
    return ConvMTL()


def logit(alpha: float) -> float:
    """theta with sigmoid(theta) = alpha, written out here independently of the library."""
    return math.log(alpha / (1.0 - alpha))


def total_loss(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum((out**2).mean() for out in outputs.values())


def single_thread() -> Iterator[None]:
    """Fixture body (each test module wraps it with pytest.fixture(autouse=True)): on tensors this
    small, one thread is faster than two and leaves the second core to others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@st.composite
def sparsified_linear_mtls(
    draw,
    sizes: tuple[int, int] = (2, 12),
    groupings: tuple[str, ...] = ("component", "layer", "global", "backbone_heads"),
    alphas: tuple[float, float] = (0.02, 0.3),
) -> nn.Module:
    """A random LinearMTL (four sizes drawn from ``sizes``), sparsified with one of
    ``groupings``, each threshold's alpha drawn from ``alphas``."""
    from adapmtl.sparsity import sparsify, thresholds

    dims = [draw(st.integers(*sizes)) for _ in range(4)]
    grouping = draw(st.sampled_from(groupings))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = sparsify(LinearMTL(*dims), grouping=grouping)
    with torch.no_grad():
        for theta in thresholds(model).values():
            theta.fill_(logit(draw(st.floats(*alphas))))
    return model
