"""BatchNorm folded into the convolution before it (adapmtl.inference.fold), alone and in
``optimize``: the same outputs as conv followed by BN, the same zeros, and no fold where the
conv's output also feeds something else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adapmtl.inference import optimize
from adapmtl.inference.fold import batchnorm_pairs, fold_into
from adapmtl.inference.optimize import relative_error
from adapmtl.inference.pruning import calibrate_batchnorm, magnitude_prune


def _bn(channels: int, affine: bool, seed: int) -> nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, affine=affine, eps=1e-3).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(channels, generator=gen, dtype=torch.float64) + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
            bn.bias.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
    return bn


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_folded_conv_equals_conv_then_batchnorm(bias, affine):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=bias).double()
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) < 0.7] = 0
    zeros = conv.weight == 0
    bn = _bn(6, affine, seed=1)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = bn(conv(x))
        fold_into(conv, bn)
        got = conv(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(conv.weight == 0, zeros | (conv.weight == 0))
    assert bool((conv.weight[zeros] == 0).all())


class _Net(nn.Module):
    """conv, BN, ReLU, conv, BN, and a head; with ``skip``, the first conv's raw output is also
    added to the result, so its BN must not be folded."""

    def __init__(self, skip: bool = False) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv1(x)
        h = torch.relu(self.bn1(y))
        h = torch.relu(self.bn2(self.conv2(h)))
        if self.skip:
            h = h + y
        return {"out": self.head(h)}


def _model(skip: bool = False) -> nn.Module:
    torch.manual_seed(3)
    model = magnitude_prune(_Net(skip).eval(), 0.8)
    return calibrate_batchnorm(model, torch.randn(4, 3, 12, 12))


def test_optimize_folds_each_batchnorm_and_keeps_the_outputs():
    model = _model()
    x = torch.randn(1, 3, 12, 12)
    fast, plan = optimize(model, x, min_speedup=float("inf"), repeats=1)
    assert plan.folded_batchnorm == [("conv1", "bn1"), ("conv2", "bn2")]
    assert isinstance(fast.bn1, nn.Identity) and isinstance(fast.bn2, nn.Identity)
    assert isinstance(model.bn1, nn.BatchNorm2d)  # the model itself is left alone
    assert plan.to_dict()["folded_batchnorm"] == [["conv1", "bn1"], ["conv2", "bn2"]]
    with torch.no_grad():
        assert relative_error(fast(x)["out"], model(x)["out"]) < 1e-5
        # the fold keeps the pruned weights at zero, so the sparse kernels see the same pattern
        assert torch.equal(fast.conv1.weight == 0, model.conv1.weight == 0)


def test_a_conv_output_used_twice_is_not_folded():
    model = _model(skip=True)
    x = torch.randn(1, 3, 12, 12)
    assert ("conv1", "bn1") in batchnorm_pairs(model, x)  # the hooks alone cannot tell
    fast, plan = optimize(model, x, min_speedup=float("inf"), repeats=1)
    assert plan.folded_batchnorm == []
    assert isinstance(fast.bn1, nn.BatchNorm2d)
    with torch.no_grad():
        assert relative_error(fast(x)["out"], model(x)["out"]) < 1e-5


def test_folding_can_be_turned_off_and_skips_training_mode_batchnorm():
    model = _model()
    x = torch.randn(1, 3, 12, 12)
    _, plan = optimize(model, x, min_speedup=float("inf"), repeats=1, fold_bn=False)
    assert plan.folded_batchnorm == []
    assert batchnorm_pairs(model.train(), x) == []
