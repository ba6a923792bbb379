"""End-to-end latency of a dense model against its sparse-kernel copy, measured interleaved."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
from torch import nn

from adapmtl.inference.optimize import median_ms, relative_error


@dataclass
class EndToEnd:
    """Median latencies (ms) of ``repeats`` interleaved runs and the largest relative error of
    any output of the sparse model against the dense one."""

    dense_ms: float
    sparse_ms: float
    repeats: int
    max_rel_error: float

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}

    def __str__(self) -> str:
        return (
            f"end to end (median of {self.repeats}): dense {self.dense_ms:.1f} ms, "
            f"sparse {self.sparse_ms:.1f} ms, speedup {self.speedup:.2f}x, "
            f"max relative output error {self.max_rel_error:.1e}"
        )


def _outputs(result: object) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [t for key in sorted(result) for t in _outputs(result[key])]
    if isinstance(result, (list, tuple)):
        return [t for item in result for t in _outputs(item)]
    return []


@torch.no_grad()
def compare_end_to_end(
    dense: nn.Module, sparse: nn.Module, example: torch.Tensor, *, repeats: int = 10
) -> EndToEnd:
    """Run both models ``repeats`` times, alternating, after one warm-up run each."""
    dense.eval()
    sparse.eval()
    expected, got = _outputs(dense(example)), _outputs(sparse(example))
    error = max((relative_error(g, e) for g, e in zip(got, expected, strict=True)), default=0.0)
    dense_times, sparse_times = [], []
    for _ in range(repeats):
        dense_times.append(median_ms(lambda: dense(example), 1))
        sparse_times.append(median_ms(lambda: sparse(example), 1))
    return EndToEnd(statistics.median(dense_times), statistics.median(sparse_times), repeats, error)
