"""Block-structured pruning (adapmtl.sparsity.blocks): the block thresholds against hand-computed
values, finite differences and the unstructured thresholds they generalise; the methods'
``block`` option against the kernels' test for shared positions."""

from __future__ import annotations

import math

import pytest
import torch

from adapmtl.inference.layers import direct_conv_supported, shares_positions
from adapmtl.inference.optimize import candidate_kernels
from adapmtl.inference.threads import numba_available
from adapmtl.methods.masking import install_masks, magnitude_scores, mask_smallest
from adapmtl.options import ConfigError
from adapmtl.sparsity import (
    bake,
    batched_thresholds,
    freeze_masks,
    overall_sparsity,
    sparse_layers,
    sparsify,
)
from adapmtl.sparsity.blocks import block_magnitude, block_threshold, is_blocked, layer_block
from adapmtl.sparsity.level import rescale_thresholds
from adapmtl.sparsity.parametrization import soft_threshold
from adapmtl.sparsity.topk import top_k_masks
from conftest import fit_tiny
from sparsity_toys import conv_mtl, total_loss

BLOCKED = ("backbone.0", "backbone.3", "heads.seg.0", "heads.seg.3")  # 8, 8, 8, 4 outputs


def test_block_magnitude_is_the_root_mean_square_of_each_block_of_output_channels():
    weight = torch.tensor([[3.0, 1.0], [4.0, -1.0], [0.0, 2.0], [0.0, 0.0]])
    expected_pairs = [[2.5 * math.sqrt(2), 1.0], [0.0, math.sqrt(2)]]  # rms of rows 0-1, 2-3
    expected = torch.tensor(expected_pairs).repeat_interleave(2, 0)
    torch.testing.assert_close(block_magnitude(weight, 2), expected, atol=1e-6, rtol=0)
    assert torch.equal(block_magnitude(weight, 1), weight.abs())
    assert torch.equal(block_magnitude(weight, 3), weight.abs())  # 4 outputs: not blocked
    assert is_blocked(weight, 2) and is_blocked(weight, 4)
    assert not is_blocked(weight, 1) and not is_blocked(weight, 3)


def test_layers_are_blocked_only_when_each_conv_group_has_whole_blocks():
    assert layer_block(torch.nn.Conv2d(8, 8, 3), 4) == 4
    assert layer_block(torch.nn.Conv2d(8, 6, 3), 4) == 1
    assert layer_block(torch.nn.Conv2d(8, 8, 3, groups=2), 4) == 4  # 4 outputs per group
    assert layer_block(torch.nn.Conv2d(8, 8, 3, groups=4), 4) == 1  # 2 per group
    assert layer_block(torch.nn.Conv2d(8, 8, 3, groups=8), 4) == 1  # depthwise
    assert layer_block(torch.nn.Linear(3, 12), 4) == 4
    assert layer_block(torch.nn.Linear(3, 13), 4) == 1


def test_a_depthwise_convolution_is_pruned_weight_by_weight():
    class Depthwise(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 3, groups=8)
            )
            self.heads = torch.nn.ModuleDict({"a": torch.nn.Conv2d(8, 4, 1)})

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"a": self.heads["a"](self.backbone(x))}

    model = sparsify(Depthwise(), grouping="global", block=4, init=-9.0)
    blocks = {path: p.block for path, _, p in sparse_layers(model)}
    assert blocks == {"backbone.0": 4, "backbone.1": 1, "heads.a": 4}
    masked = install_masks(Depthwise())
    scores = magnitude_scores(masked, block=4)
    weights = {p: m.parametrizations.weight.original.detach() for p, m, _ in sparse_layers(masked)}
    assert torch.equal(scores["backbone.1"], weights["backbone.1"].abs())
    assert torch.equal(scores["backbone.0"], block_magnitude(weights["backbone.0"], 4))


def test_the_soft_block_threshold_shrinks_each_block_by_alpha_over_its_magnitude():
    weight = torch.tensor([[3.0, 0.1], [4.0, -0.1]])  # blocks of 2 rows: rms 3.54 and 0.1
    alpha = torch.tensor(1.0)
    shrunk = block_threshold(weight, alpha, hard=False, regrow=False, block=2)
    factor = 1 - 1.0 / (2.5 * math.sqrt(2))
    expected = torch.tensor([[3.0 * factor, 0.0], [4.0 * factor, 0.0]])
    torch.testing.assert_close(shrunk, expected)
    hard = block_threshold(weight, alpha, hard=True, regrow=False, block=2)
    assert torch.equal(hard, torch.tensor([[3.0, 0.0], [4.0, 0.0]]))


def test_blocks_of_equal_magnitudes_give_paper_eq_2():
    # within a block every |W| is the same, so the block's rms is |W| and S = sign(W)(|W| - a)
    magnitudes = torch.rand(3, 1, 5) * 0.2
    signs = torch.randint(0, 2, (3, 4, 5)) * 2.0 - 1
    weight = (magnitudes * signs).reshape(12, 5)
    theta = torch.tensor(-2.5)
    blocked = block_threshold(weight, torch.sigmoid(theta), hard=False, regrow=False, block=4)
    torch.testing.assert_close(blocked, soft_threshold(weight, theta), rtol=1e-6, atol=1e-7)


def test_the_soft_block_thresholds_gradients_match_finite_differences():
    torch.manual_seed(0)
    weight = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)

    def function(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return block_threshold(w, a, hard=False, regrow=False, block=4)

    magnitude = block_magnitude(weight.detach(), 4)
    assert ((magnitude - alpha.detach()).abs() > 1e-3).all()  # no block at the kink
    assert torch.autograd.gradcheck(function, (weight, alpha))


@pytest.mark.parametrize(("hard", "regrow"), [(True, False), (True, True), (False, True)])
def test_hard_and_regrow_gradients_are_the_masked_or_straight_through_ones(hard, regrow):
    torch.manual_seed(1)
    weight = torch.randn(8, 6, requires_grad=True)
    alpha = torch.tensor(0.7, requires_grad=True)
    upstream = torch.randn(8, 6)
    out = block_threshold(weight, alpha, hard=hard, regrow=regrow, block=4)
    out.backward(upstream)
    magnitude = block_magnitude(weight.detach(), 4)
    kept = magnitude > 0.7
    assert 0 < int(kept.sum()) < kept.numel()
    expected_weight_grad = upstream if regrow else upstream * kept
    torch.testing.assert_close(weight.grad, expected_weight_grad)
    # alpha's gradient is the soft block threshold's: d/da of W (1 - a / m) on kept blocks
    expected_alpha_grad = -(upstream * weight.detach() / magnitude * kept).sum()
    torch.testing.assert_close(alpha.grad, expected_alpha_grad)


def test_top_k_with_whole_ties_keeps_or_prunes_equal_scores_together():
    scores = {"a": torch.tensor([5.0, 5.0, 1.0, 1.0]), "b": torch.tensor([3.0, 3.0])}
    assert top_k_masks(scores, 3)["b"].sum() == 1  # exactly 3: the tie is split
    masks = top_k_masks(scores, 3, whole_ties=True)
    assert masks["a"].tolist() == [True, True, False, False]
    assert masks["b"].tolist() == [True, True]
    assert not any(m.any() for m in top_k_masks(scores, 0, whole_ties=True).values())


def _blocked_model(mode: str, regrow: bool = False) -> torch.nn.Module:
    return sparsify(conv_mtl(), grouping="global", mode=mode, regrow=regrow, block=4, init=-9.0)


@pytest.mark.parametrize("mode", ["soft", "hard", "auto"])
def test_a_blocked_model_reaches_the_level_in_whole_blocks_and_freezes_block_masks(mode):
    model = _blocked_model(mode, regrow=mode != "soft")
    rescale_thresholds(model, 0.75)
    total = sum(m.weight.numel() for _, m, _ in sparse_layers(model))
    assert abs(overall_sparsity(model) - 0.75) <= 4 / total + 1e-9
    freeze_masks(model)
    for path, module, _ in sparse_layers(model):
        if path in BLOCKED:
            assert shares_positions(module.weight, 4), path


def test_blocked_layers_compute_their_own_threshold_outside_the_batched_node():
    model = _blocked_model("soft")
    torch.manual_seed(0)
    with batched_thresholds(model) as batched:
        loss = total_loss(model(torch.randn(2, 3, 8, 8)))
    assert batched == 0  # one unblocked layer left: nothing to batch
    loss.backward()
    for _, module, _ in sparse_layers(model):
        assert torch.isfinite(module.parametrizations.weight.original.grad).all()


def test_block_magnitude_pruning_keeps_the_largest_blocks_over_all_layers():
    model = install_masks(conv_mtl())
    weights = {
        p: m.parametrizations.weight.original.detach().clone() for p, m, _ in sparse_layers(model)
    }
    mask_smallest(model, 0.8, block=4)
    total = sum(w.numel() for w in weights.values())
    sparsity = overall_sparsity(model)
    assert 0.8 - 4 / total <= sparsity <= 0.8 + 1e-9  # within a block, on the low side
    kept, pruned = [], []
    for path, module, p in sparse_layers(model):
        magnitude = block_magnitude(weights[path], 4)
        kept.append(magnitude[p.mask])
        pruned.append(magnitude[~p.mask])
        if path in BLOCKED:
            assert shares_positions(module.weight, 4), path
    assert torch.cat(kept).min() >= torch.cat(pruned).max()
    # a second, higher level prunes among the survivors only, still in whole blocks
    mask_smallest(model, 0.9, block=4)
    assert all(shares_positions(model.get_submodule(p).weight, 4) for p in BLOCKED)


def test_bad_block_values_are_refused_with_the_option_named(tiny_settings, tmp_path):
    with pytest.raises(ValueError, match="block"):
        sparsify(conv_mtl(), mode="soft", block=0)
    with pytest.raises(ValueError, match="threshold mode"):
        sparsify(conv_mtl(), mode="mask", block=4)
    for method in ("adapmtl", "imp"):
        settings = {"name": method, "target": 0.5, "options": {"block": 0}}
        with pytest.raises(ConfigError, match=r"method\.options\.block: expected a positive"):
            fit_tiny(tiny_settings, tmp_path / method, method=settings, iterations=2)


@pytest.mark.parametrize(
    "method",
    [
        {"name": "adapmtl", "target": 0.75, "options": {"block": 4, "init": -9.0}},
        {"name": "imp", "target": 0.75, "options": {"block": 4, "steps": 2, "end_fraction": 0.5}},
    ],
    ids=["adapmtl", "imp"],
)
def test_a_blocked_training_run_ends_with_block_kernels_at_inference(
    method, tiny_settings, tmp_path
):
    trainer = fit_tiny(tiny_settings, tmp_path / "run", method=method, iterations=8)
    assert abs(overall_sparsity(trainer.model) - 0.75) < 0.02
    plain = bake(trainer.model).eval()
    convs = [
        m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels % 4 == 0
    ]
    assert convs and all(shares_positions(m.weight, 4) for m in convs)
    offered = 0
    for conv in convs:
        kernel = candidate_kernels(conv, ("direct-block4",)).get("direct-block4")
        if kernel is None:
            assert direct_conv_supported(conv) is not None or not numba_available()
            continue
        offered += 1
        image = torch.randn(1, conv.in_channels, 9, 9)
        with torch.no_grad():
            torch.testing.assert_close(kernel(image), conv(image), rtol=1e-4, atol=1e-5)
    assert offered > 0 or not numba_available()
