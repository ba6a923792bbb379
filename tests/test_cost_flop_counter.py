"""Dense MACs of ``count_cost`` against PyTorch's own ``FlopCounterMode`` (issue 15): overall,
per component and per layer, on the CPU presets at small inputs (and sparsified, where the dense
count must not change and the nonzero count is the dense one scaled by each layer's density)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adapmtl.analysis import count_cost
from adapmtl.models import build_model
from adapmtl.sparsity import rescale_thresholds, sparsify

CASES = [
    ("deeplab_resnet34_cpu", {"seg": 8, "normal": 3, "depth": 1}, (3, 64, 64), {}),
    ("mobilenetv2_cpu", {"seg": 8, "depth": 1}, (3, 48, 80), {"upsample": True}),
    ("lenet_mtl", {"left": 10, "right": 10}, (1, 28, 56), {}),
]


def flop_counts(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """FlopCounterMode's FLOPs per module path ("" = the whole model); 1 MAC = 2 FLOPs."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    root = type(model).__name__
    counts = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        counts[key.removeprefix(root).removeprefix(".")] = sum(ops.values())
    assert counts[""] == counter.get_total_flops()
    return counts


@pytest.mark.parametrize(("name", "tasks", "shape", "options"), CASES, ids=[c[0] for c in CASES])
def test_dense_macs_equal_flop_counter_mode(name, tasks, shape, options):
    torch.manual_seed(0)
    model = build_model(name, tasks=tasks, **options)
    flops = flop_counts(model, shape)
    cost = count_cost(model, shape[1:], in_channels=shape[0])
    assert 2 * cost.overall.macs == flops[""]
    assert 2 * cost.components["backbone"].macs == flops["backbone"]
    for task in tasks:
        assert 2 * cost.components[task].macs == flops[f"heads.{task}"], task
    for layer in cost.layers:
        assert 2 * layer.macs == flops[layer.path], layer.path

    sparse = sparsify(model)
    rescale_thresholds(sparse, 0.6)
    sparse_cost = count_cost(sparse, shape[1:], in_channels=shape[0])
    assert sparse_cost.overall.macs == cost.overall.macs
    assert 2 * sparse_cost.overall.macs == flop_counts(sparse, shape)[""]
    # nonzero MACs: each layer's dense FLOPs / 2 scaled by its density (exact: both are
    # output positions x weights)
    for layer in sparse_cost.layers:
        dense = flops[layer.path] // 2
        assert layer.nonzero_macs * layer.weights == dense * layer.nonzero_weights, layer.path
    assert sparse_cost.overall.sparsity == pytest.approx(0.6, abs=1e-3)
    assert sparse_cost.overall.nonzero_macs < sparse_cost.overall.macs
