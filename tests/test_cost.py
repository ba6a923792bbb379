"""Cost counts on small models, against counts worked out by hand."""

import pytest
import torch
from torch import nn

from adapmtl.analysis import count_cost
from adapmtl.sparsity import set_masks, sparsify


class Tiny(nn.Module):
    """backbone: conv 3->4 3x3 (no bias) + BN + conv 4->8 3x3 stride 2 dilation 2;
    head a: 1x1 conv 8->2; head b: depthwise 3x3 conv + global pool + Linear 8->5."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2),
        )
        self.heads = nn.ModuleDict(
            {
                "a": nn.Conv2d(8, 2, 1),
                "b": nn.Sequential(
                    nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                    nn.Linear(8, 5),
                ),
            }
        )

    def forward(self, x):
        f = self.backbone(x)
        return {t: h(f) for t, h in self.heads.items()}


# By hand, input 1x3x8x8. conv1: 8x8 output, 3*4*9 = 108 weights -> 64 * 108 MACs.
# conv2: output (8 + 4 - 4 - 1)//2 + 1 = 4 -> 4x4, 8*4*9 = 288 weights (+8 bias) -> 16 * 288.
# head a: 4x4 output, 16 weights (+2 bias) -> 16 * 16. head b: depthwise 8*9 = 72 weights at 4x4
# -> 16 * 72; Linear 40 weights (+5 bias) at one position -> 40.
BACKBONE_MACS = 64 * 108 + 16 * 288
BACKBONE_PARAMS = 108 + 8 + 288 + 8  # BN gamma/beta: 8


def test_dense_counts_by_hand():
    report = count_cost(Tiny(), (8, 8))
    bb, a, b = (report.components[k] for k in ("backbone", "a", "b"))
    assert (bb.params, bb.prunable, bb.macs) == (BACKBONE_PARAMS, 108 + 288, BACKBONE_MACS)
    assert (a.params, a.prunable, a.macs) == (18, 16, 16 * 16)
    assert (b.params, b.prunable, b.macs) == (72 + 45, 72 + 40, 16 * 72 + 40)
    assert report.overall.macs == BACKBONE_MACS + 256 + 1192
    assert report.overall.params == sum(p.numel() for p in Tiny().parameters())
    assert report.overall.nonzero_params == report.overall.params  # random init: no zeros
    assert report.overall.nonzero_macs == report.overall.macs
    assert report.overall.sparsity == 0.0
    assert set(report.components) == {"backbone", "a", "b"}


def _keep_first(weight: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[:n] = True
    return mask.reshape(weight.shape)


def test_sparse_counts_by_hand_and_thresholds_excluded():
    model = sparsify(Tiny(), mode="soft", init=-30.0)  # alpha ~ 0: nothing pruned yet
    keep = {"backbone.0": 27, "backbone.3": 100, "heads.a": 4, "heads.b.0": 9, "heads.b.3": 10}
    shapes = {path: m.weight.shape for path, m in model.named_modules() if path in keep}
    set_masks(model, {p: _keep_first(torch.empty(shapes[p]), n) for p, n in keep.items()})
    report = count_cost(model, (8, 8))
    bb, a, b = (report.components[k] for k in ("backbone", "a", "b"))
    assert bb.nonzero_macs == 64 * 27 + 16 * 100
    assert bb.nonzero_params == 27 + 100 + 8 + 8  # biases and BN count in full
    assert bb.params == BACKBONE_PARAMS  # thresholds are not parameters of the deployed model
    assert a.nonzero_macs == 16 * 4 and a.nonzero_params == 4 + 2
    assert b.nonzero_macs == 16 * 9 + 10 and b.nonzero_params == 9 + 10 + 5
    assert bb.sparsity == pytest.approx(1 - 127 / 396)
    assert report.overall.sparsity == pytest.approx(1 - 150 / 524)
    # the baked model (exact zeros, no parametrizations) gives the same counts
    from adapmtl.sparsity import bake

    assert count_cost(bake(model), (8, 8)).to_dict()["components"] == report.to_dict()["components"]


def test_repeated_module_counts_every_call_and_linear_positions():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 3)

        def forward(self, x):  # x: [1, 4, 6] -> 4 positions, applied twice
            return self.proj(x) + self.proj(x)

    report = count_cost(Twice(), (), example=torch.zeros(1, 4, 6), components={"all": [""]})
    assert report.overall.macs == 2 * 4 * 18
    assert report.layers[0].calls == 2


def test_table_mentions_convention_and_rows():
    text = str(count_cost(Tiny(), (8, 8)))
    assert "multiply-accumulate counted once" in text
    for row in ("backbone", "a", "b", "overall"):
        assert any(line.startswith(row) for line in text.splitlines())


def test_model_mode_restored_and_batch_checked():
    model = Tiny().train()
    count_cost(model, (8, 8))
    assert model.training
    with pytest.raises(ValueError, match="batch of 1"):
        count_cost(model, (8, 8), example=torch.zeros(2, 3, 8, 8))
