"""The CPU presets train under every sparsity grouping: thresholds get gradients, the loss falls,
and every prunable weight belongs to exactly the component ``components()`` names."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adapmtl.models import MultiTaskModel, build_model
from adapmtl.models.counts import prunable_count
from adapmtl.sparsity import param_groups, report, sparse_layers, sparsify, thresholds

TASKS = {"seg": 5, "normal": 3, "depth": 1}
GROUPINGS = ("component", "global", "backbone_heads", "layer")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two OpenMP threads competing with other
    processes make these small steps several times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loss(model: MultiTaskModel, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(x)
    seg = F.cross_entropy(out["seg"], targets["seg"])
    normal = 1 - F.cosine_similarity(out["normal"], targets["normal"], dim=1).mean()
    depth = F.l1_loss(out["depth"], targets["depth"])
    return seg + normal + depth


def _targets(model: MultiTaskModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        shape = model(x)["seg"].shape
    b, _, h, w = shape
    gen = torch.Generator().manual_seed(1)
    return {
        "seg": torch.randint(0, TASKS["seg"], (b, h, w), generator=gen),
        "normal": F.normalize(torch.randn(b, 3, h, w, generator=gen), dim=1),
        "depth": torch.rand(b, 1, h, w, generator=gen) + 0.5,
    }


def _seeded_loss(model: MultiTaskModel, x: torch.Tensor, targets: dict) -> float:
    """Loss in training mode with a fixed dropout draw, so two evaluations are comparable."""
    torch.manual_seed(123)
    with torch.no_grad():
        return float(_loss(model, x, targets))


def _expected_thresholds(grouping: str, model: MultiTaskModel) -> int:
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    return {"component": 1 + len(TASKS), "global": 1, "backbone_heads": 2, "layer": convs}[grouping]


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("name", ["deeplab_resnet34_cpu", "mobilenetv2_cpu"])
def test_cpu_preset_trains_sparsified(name: str, grouping: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, TASKS)
    n_thresholds = _expected_thresholds(grouping, model)
    sparsify(model, grouping=grouping, init=-8.0)
    assert len(thresholds(model)) == n_thresholds
    optimizer = torch.optim.Adam(param_groups(model, lr=1e-3, threshold_lr=1e-2))
    x = torch.randn(4, 3, 64, 64)
    targets = _targets(model, x)
    theta_before = {k: v.detach().clone() for k, v in thresholds(model).items()}
    loss_before = _seeded_loss(model, x, targets)
    for step in range(4):
        loss = _loss(model, x, targets)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for key, theta in thresholds(model).items():
                assert theta.grad is not None and torch.isfinite(theta.grad), key
                assert theta.grad.abs() > 0, f"threshold {key} received a zero gradient"
        optimizer.step()
    assert _seeded_loss(model, x, targets) < loss_before
    for key, theta in thresholds(model).items():
        assert not torch.equal(theta.detach(), theta_before[key]), key


@pytest.mark.parametrize("name", ["deeplab_resnet34_cpu", "mobilenetv2_cpu"])
def test_components_assign_every_weight_to_its_owner(name: str) -> None:
    model = build_model(name, TASKS)
    expected = {"backbone": prunable_count(model.backbone)}
    expected.update({task: prunable_count(head) for task, head in model.heads.items()})
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    sparsify(model, grouping="component")
    assert len(sparse_layers(model)) == n_convs
    totals = {name: counts.total for name, counts in report(model).components.items()}
    assert totals == expected
