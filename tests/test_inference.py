"""Sparse inference kernels against PyTorch's dense layers, and the per-layer optimizer."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adapmtl.inference import bench, compare_end_to_end, optimize
from adapmtl.inference.layers import CSRConv1x1, CSRLinear, DirectSparseConv2d
from adapmtl.inference.optimize import relative_error, rotations
from adapmtl.inference.pruning import calibrate_batchnorm, magnitude_prune
from adapmtl.inference.threads import numba_available

# only the direct convolution runs numba; the CSR kernels and the optimizer's fallback do not
needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def sparse_conv(*args, density=0.3, seed=0, **kwargs) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(*args, **kwargs)
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) >= density] = 0
    return conv


CONVS = [
    # (in, out, kernel, kwargs, input H, W)
    (8, 16, 3, {"padding": 1}, 9, 13),
    (8, 16, 3, {"stride": 2, "dilation": 2, "padding": 2}, 10, 7),
    (6, 6, 3, {"padding": 1, "groups": 6}, 11, 11),  # depthwise
    (8, 12, 3, {"padding": 1, "groups": 2}, 6, 9),
    (3, 8, 7, {"stride": 2, "padding": 3}, 33, 31),  # ResNet stem
    (16, 8, 1, {}, 5, 7),  # 1x1, run as one row of H*W columns
    (16, 8, 1, {"stride": 2}, 9, 9),  # projection shortcut
    (4, 8, 3, {"stride": (1, 2), "dilation": (2, 1), "padding": (2, 0), "bias": False}, 12, 17),
    (16, 24, 3, {"padding": 12, "dilation": 12}, 13, 13),  # ASPP: most taps in the padding
    (4, 4, 5, {"padding": 0}, 40, 70),  # wide rows: several 32-column tiles
]


@pytest.mark.parametrize(("cin", "cout", "k", "kwargs", "h", "w"), CONVS)
@pytest.mark.parametrize("block", [4, 64])
@needs_numba
def test_direct_conv_matches_dense(cin, cout, k, kwargs, h, w, block):
    conv = sparse_conv(cin, cout, k, **kwargs)
    x = torch.randn(2, cin, h, w)
    with torch.no_grad():
        expected = conv(x)
        got = DirectSparseConv2d(conv, block=block)(x)
    assert got.shape == expected.shape
    assert relative_error(got, expected) < 1e-5


@needs_numba
def test_direct_conv_extreme_densities_and_new_input_size():
    empty = sparse_conv(8, 4, 3, padding=1, density=0.0)
    full = sparse_conv(8, 4, 3, padding=1, density=1.0)
    with torch.no_grad():
        x = torch.randn(1, 8, 6, 6)
        bias_only = DirectSparseConv2d(empty)(x)
        assert torch.allclose(bias_only, empty.bias.view(1, 4, 1, 1).expand(1, 4, 6, 6))
        layer = DirectSparseConv2d(full)
        for size in ((6, 6), (3, 19)):  # a second input size builds its own geometry
            x = torch.randn(1, 8, *size)
            assert relative_error(layer(x), full(x)) < 1e-5


@needs_numba
def test_direct_conv_accepts_inputs_that_require_grad():
    conv = sparse_conv(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    got = DirectSparseConv2d(conv)(x)
    assert not got.requires_grad  # inference only
    assert relative_error(got, conv(x).detach()) < 1e-5


def test_direct_conv_rejects_unsupported_layers():
    with pytest.raises(ValueError, match="padding"):
        DirectSparseConv2d(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="float32"):
        DirectSparseConv2d(nn.Conv2d(3, 3, 3).double())


def test_csr_kernels_match_dense():
    conv = sparse_conv(32, 16, 1)
    x = torch.randn(2, 32, 5, 6)
    torch.manual_seed(1)
    linear = nn.Linear(20, 7)
    with torch.no_grad():
        linear.weight[torch.rand_like(linear.weight) > 0.2] = 0
        assert relative_error(CSRConv1x1(conv)(x), conv(x)) < 1e-5
        z = torch.randn(3, 4, 20)
        assert relative_error(CSRLinear(linear)(z), linear(z)) < 1e-5
    with pytest.raises(ValueError, match="1x1"):
        CSRConv1x1(nn.Conv2d(4, 4, 3))


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=2, dilation=2),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict(
            {
                "seg": nn.Sequential(
                    nn.Conv2d(32, 32, 3, padding=6, dilation=6), nn.ReLU(), nn.Conv2d(32, 5, 1)
                ),
                "cls": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4)),
            }
        )

    def forward(self, x):
        f = self.backbone(x)
        return {t: h(f) for t, h in self.heads.items()}


@needs_numba
def test_optimize_forced_sparse_matches_dense_and_leaves_model_alone():
    model = magnitude_prune(Small().eval(), 0.8)
    x = torch.randn(1, 3, 24, 24)
    # min_speedup=0 takes the fastest sparse kernel for every layer that has one, whatever the
    # timings, so the result does not depend on machine load
    fast, plan = optimize(model, x, min_speedup=0.0, repeats=1)
    assert {c.path for c in plan.layers} == {
        "backbone.0", "backbone.3", "heads.seg.0", "heads.seg.2", "heads.cls.2",
    }  # fmt: skip
    assert all(c.kernel != "dense" for c in plan.layers)
    assert isinstance(fast.heads["cls"][2], CSRLinear)
    assert isinstance(fast.backbone[0], (DirectSparseConv2d,))
    assert type(model.backbone[0]) is nn.Conv2d  # the input model is unchanged
    with torch.no_grad():
        expected, got = model(x), fast(x)
    for task in expected:
        assert relative_error(got[task], expected[task]) < 1e-4
    assert "speedup" in str(plan)


def test_optimize_rotates_the_timing_order():
    names = ["dense", "direct", "direct-wide"]
    orders = rotations(names, 4)
    assert all(sorted(order) == sorted(names) for order in orders)
    # over len(names) rounds every runner is timed once in every position
    for position in range(len(names)):
        assert sorted(order[position] for order in orders[:3]) == sorted(names)
    assert orders[3] == orders[0]


def test_optimize_keeps_dense_layers_when_sparse_does_not_pay():
    model = magnitude_prune(Small().eval(), 0.5)
    x = torch.randn(1, 3, 16, 16)
    # unfolded, a model whose layers all stay dense computes exactly what the model does
    fast, plan = optimize(model, x, min_speedup=float("inf"), repeats=1, fold_bn=False)
    assert all(c.kernel == "dense" for c in plan.layers)
    with torch.no_grad():
        assert torch.equal(fast(x)["seg"], model(x)["seg"])
    _, skipped = optimize(model, x, max_density=0.4, repeats=1)
    assert all(c.kernel == "dense" and set(c.times_ms) == {"dense"} for c in skipped.layers)


def test_optimize_accepts_sparsified_model_and_rejects_unknown_kernel():
    from adapmtl.sparsity import set_masks, sparse_layers, sparsify

    model = sparsify(Small().eval(), mode="mask")
    shapes = {p: m.parametrizations.weight.original.shape for p, m, _ in sparse_layers(model)}
    set_masks(model, {p: torch.rand(s) < 0.2 for p, s in shapes.items()})
    x = torch.randn(1, 3, 16, 16)
    fast, _ = optimize(model, x, min_speedup=0.0, repeats=1)
    with torch.no_grad():
        assert relative_error(fast(x)["seg"], model(x)["seg"]) < 1e-4
    with pytest.raises(ValueError, match="unknown kernels"):
        optimize(model, x, kernels=("magic",))


def test_compare_end_to_end_reports_error_and_times():
    model = magnitude_prune(Small().eval(), 0.9)
    x = torch.randn(1, 3, 16, 16)
    fast, _ = optimize(model, x, min_speedup=0.0, repeats=1)
    result = compare_end_to_end(model, fast, x, repeats=3)
    assert result.max_rel_error < 1e-4
    assert result.dense_ms > 0 and result.sparse_ms > 0
    assert result.repeats == 3


def test_compare_end_to_end_takes_medians_of_interleaved_runs(monkeypatch):
    class Scaled(nn.Module):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return {"b": x * self.factor, "a": x}

    # one timing per call, dense and sparse alternating: dense 5, 1, 3 ms, sparse 2, 8, 4 ms
    clock = iter([5.0, 2.0, 1.0, 8.0, 3.0, 4.0])
    calls = []

    def fake_median_ms(fn, repeats):
        assert repeats == 1
        fn()
        calls.append(fn)
        return next(clock)

    monkeypatch.setattr(bench, "median_ms", fake_median_ms)
    x = torch.tensor([[1.0, -4.0]])
    result = compare_end_to_end(Scaled(1.0), Scaled(1.01), x, repeats=3)
    assert (result.dense_ms, result.sparse_ms, result.repeats) == (3.0, 4.0, 3)
    assert result.speedup == 0.75  # 3 ms / 4 ms: the sparse model is slower here
    # output "b" is off by 1 %: max |0.04| / max |4|
    assert result.max_rel_error == pytest.approx(0.01)
    assert result.to_dict()["speedup"] == 0.75
    assert "speedup 0.75x" in str(result)


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("name", ["deeplab_resnet34_cpu", "mobilenetv2_cpu"])
def test_real_models_within_tolerance(name):
    from adapmtl.models import build_model

    torch.manual_seed(0)
    model = magnitude_prune(build_model(name, {"seg": 40, "normal": 3, "depth": 1}).eval(), 0.9)
    calibrate_batchnorm(model, torch.randn(2, 3, 48, 64))  # else no signal reaches the heads
    x = torch.randn(1, 3, 48, 64)
    fast, plan = optimize(model, x, min_speedup=0.0, repeats=1)
    assert sum(c.kernel != "dense" for c in plan.layers) == len(plan.layers)
    with torch.no_grad():
        expected, got = model(x), fast(x)
        assert model.backbone(x).abs().max() > 1e-2  # the check below compares real signal
        assert relative_error(fast.backbone(x), model.backbone(x)) < 1e-4
    for task in expected:
        assert relative_error(got[task], expected[task]) < 1e-4


def test_calibrate_batchnorm_sets_batch_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 5, 5) * 3 + 1
    calibrate_batchnorm(model, x)
    with torch.no_grad():
        y = model[0](x)
    assert not model.training and model[1].momentum == 0.1
    assert torch.allclose(model[1].running_mean, y.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model[1].running_var, y.var((0, 2, 3), unbiased=True), atol=1e-4)


def test_dense_conv_reference_is_independent():
    # guard for the reference itself: our conv test relies on F.conv2d == nn.Conv2d
    conv = sparse_conv(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_without_numba_only_csr_kernels_are_tried(monkeypatch):
    import sys

    optimize_module = sys.modules["adapmtl.inference.optimize"]  # the package exports a function
    monkeypatch.setattr(optimize_module, "numba_available", lambda: False)
    model = magnitude_prune(Small().eval(), 0.8)
    x = torch.randn(1, 3, 16, 16)
    fast, plan = optimize(model, x, min_speedup=0.0, repeats=1)
    kernels = {c.path: c.kernel for c in plan.layers}
    assert kernels == {
        "backbone.0": "dense", "backbone.3": "dense", "heads.seg.0": "dense",
        "heads.seg.2": "csr", "heads.cls.2": "csr",
    }  # fmt: skip
    with torch.no_grad():
        assert relative_error(fast(x)["seg"], model(x)["seg"]) < 1e-4


@needs_numba
def test_optimize_tries_block_kernels_only_on_block_structured_weights():
    from adapmtl.inference.optimize import candidate_kernels
    from adapmtl.inference.pruning import block_magnitude_prune

    blocked = block_magnitude_prune(Small().eval(), 0.8)
    plain = magnitude_prune(Small().eval(), 0.8)
    assert "direct-block4" in candidate_kernels(blocked.backbone[3])
    assert "direct-block4-wide" not in candidate_kernels(blocked.backbone[3])  # 16 inputs
    assert "direct-block4" not in candidate_kernels(plain.backbone[3])
    assert "direct-block4" not in candidate_kernels(blocked.heads["seg"][2])  # 5 outputs
    x = torch.randn(2, 3, 24, 24)
    fast, plan = optimize(blocked, x, kernels=("direct-block4",), min_speedup=0.0, repeats=1)
    kernels = {c.path: c.kernel for c in plan.layers}
    assert kernels["backbone.0"] == kernels["backbone.3"] == "direct-block4"
    assert kernels["heads.seg.0"] == "direct-block4" and kernels["heads.seg.2"] == "dense"
    assert fast.backbone[3].out_group == 4
    with torch.no_grad():
        expected, got = blocked(x), fast(x)
    for task in expected:
        assert relative_error(got[task], expected[task]) < 1e-4
