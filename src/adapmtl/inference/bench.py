"""End-to-end latency of a dense model against its sparse-kernel copy (and optionally
onnxruntime running the dense graph), measured interleaved."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from adapmtl.errors import UserError
from adapmtl.inference.optimize import flat_outputs, median_ms, relative_error


@dataclass
class EndToEnd:
    """Median latencies (ms) of ``repeats`` interleaved runs and the largest relative error of
    any output of the sparse model against the dense one; ``onnxruntime_ms`` when an
    onnxruntime run was timed beside them."""

    dense_ms: float
    sparse_ms: float
    repeats: int
    max_rel_error: float
    onnxruntime_ms: float | None = None

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}

    def __str__(self) -> str:
        text = (
            f"end to end (median of {self.repeats}): dense {self.dense_ms:.1f} ms, "
            f"sparse {self.sparse_ms:.1f} ms, speedup {self.speedup:.2f}x, "
            f"max relative output error {self.max_rel_error:.1e}"
        )
        if self.onnxruntime_ms is not None:
            text += (
                f"\nonnxruntime running the dense graph (median of {self.repeats}): "
                f"{self.onnxruntime_ms:.1f} ms, sparse speedup over it "
                f"{self.onnxruntime_ms / self.sparse_ms:.2f}x"
            )
        return text


def input_channels(model: nn.Module) -> int:
    """Channels of the images a model takes: the ``in_channels`` of its first convolution."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
    raise UserError("the model has no convolution: cannot tell how many input channels it takes")


@torch.no_grad()
def compare_end_to_end(
    dense: nn.Module,
    sparse: nn.Module,
    example: torch.Tensor,
    *,
    repeats: int = 10,
    onnxruntime: Callable[[], object] | None = None,
) -> EndToEnd:
    """Run both models (and ``onnxruntime``, a call running the dense graph on ``example``, when
    given) ``repeats`` times, alternating, after one warm-up run each."""
    dense.eval()
    sparse.eval()
    expected, got = flat_outputs(dense(example)), flat_outputs(sparse(example))
    error = max((relative_error(g, e) for g, e in zip(got, expected, strict=True)), default=0.0)
    runs = {"dense": lambda: dense(example), "sparse": lambda: sparse(example)}
    if onnxruntime is not None:
        onnxruntime()
        runs["onnxruntime"] = onnxruntime
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(median_ms(run, 1))
    median = {name: statistics.median(values) for name, values in times.items()}
    return EndToEnd(median["dense"], median["sparse"], repeats, error, median.get("onnxruntime"))
