"""normalised_layers: which prunable layers feed only normalisation layers, on hand-built graphs
whose answer is known by construction, and on the presets against their documented layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adapmtl.models.presets import build_model
from adapmtl.sparsity.sparsify import PRUNABLE_TYPES
from adapmtl.sparsity.structure import UntraceableModelError, normalised_layers


def prunable_paths(model: nn.Module) -> list[str]:
    return [path for path, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


class Graphs(nn.Module):
    """One layer per case: the comment says whether it feeds only normalisation layers."""

    def __init__(self) -> None:
        super().__init__()
        self.to_bn = nn.Conv2d(3, 4, 3, padding=1)  # -> BatchNorm2d: yes
        self.bn = nn.BatchNorm2d(4)
        self.to_relu = nn.Conv2d(4, 4, 1)  # -> ReLU: no
        self.to_bn_and_add = nn.Conv2d(4, 4, 1)  # -> BatchNorm2d and a residual sum: no
        self.bn2 = nn.BatchNorm2d(4)
        self.to_group_norm = nn.Conv2d(4, 4, 1)  # -> GroupNorm: yes
        self.gn = nn.GroupNorm(2, 4)
        self.shared = nn.Conv2d(4, 4, 1)  # called twice: -> ReLU, then -> InstanceNorm2d: no
        self.inorm = nn.InstanceNorm2d(4)
        self.to_layer_norm = nn.Linear(4, 6)  # -> LayerNorm: yes
        self.ln = nn.LayerNorm(6)
        self.unused = nn.Linear(6, 6)  # never called: no

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.to_bn(x))
        x = torch.relu(self.to_relu(x))
        y = self.to_bn_and_add(x)
        x = self.bn2(y) + y
        x = self.gn(self.to_group_norm(x))
        x = torch.relu(self.shared(x)) + self.inorm(self.shared(x))
        return self.ln(self.to_layer_norm(x.mean(dim=(2, 3))))


def test_each_case_of_the_hand_built_graph() -> None:
    model = Graphs()
    model(torch.randn(2, 3, 5, 5))  # the graph is a valid model
    assert normalised_layers(model, prunable_paths(model)) == {
        "to_bn",
        "to_group_norm",
        "to_layer_norm",
    }


def test_only_the_asked_paths_are_answered() -> None:
    model = Graphs()
    assert normalised_layers(model, ["to_bn", "to_relu"]) == {"to_bn"}


def test_an_untraceable_forward_is_one_clear_error() -> None:
    class ValueDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(UntraceableModelError, match="ValueDependent"):
        normalised_layers(ValueDependent(), ["conv"])


@pytest.mark.parametrize("name", ["deeplab_resnet34_cpu", "mobilenetv2_cpu"])
def test_preset_backbones_feed_batchnorm_and_their_aspp_heads_do_not(name: str) -> None:
    """models/resnet.py and models/mobilenetv2.py put a BatchNorm after every backbone conv;
    models/aspp.py's branches are conv -> ReLU -> Dropout with no normalisation."""
    model = build_model(name, {"seg": 5, "depth": 1})
    paths = prunable_paths(model)
    assert normalised_layers(model, paths) == {p for p in paths if p.startswith("backbone.")}


@pytest.mark.parametrize("batch_norm", [False, True])
def test_lenet_hidden_layers_follow_its_batch_norm_option(batch_norm: bool) -> None:
    model = build_model("lenet_mtl", {"left": 10, "right": 10}, batch_norm=batch_norm)
    paths = prunable_paths(model)
    last_layers = {p for p in paths if p.startswith("heads.")} - {
        p for p in paths if p.startswith("heads.") and p.endswith(".0")
    }
    expected = set(paths) - last_layers if batch_norm else set()
    assert normalised_layers(model, paths) == expected
