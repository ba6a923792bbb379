"""``lenet_mtl``: a LeNet-style multitask classifier for small grayscale canvases (the
``fashion_pairs`` dataset's 28 x 56).

Shared trunk: conv 5x5 1 -> 32, ReLU, max-pool 2, conv 5x5 32 -> 64, ReLU, max-pool 2 (no
padding: 28 x 56 -> 24 x 52 -> 12 x 26 -> 8 x 22 -> 4 x 11), flatten, Linear 64 * 4 * 11 = 2816
-> 128, ReLU. Head per task: Linear 128 -> 192, ReLU, Linear 192 -> classes.

Prunable (Conv/Linear) weights with two 10-class heads: trunk 800 + 51,200 + 360,448 = 412,448;
each head 24,576 + 1,920 = 26,496; total 465,440, so the trunk holds 88.6 % and each head 5.7 %.
The head width sets that split, which bounds what a method can do: at 90 % overall sparsity the
trunk can be 88.7 % sparse (heads fully pruned) to 100 % (heads 12.2 %); with 32 hidden units the
trunk would hold 97.9 % and be pinned between 89.8 % and 91.9 %.

``batch_norm=True`` puts a BatchNorm after every hidden conv and Linear (before its ReLU), which
makes each of those layers' output invariant to the scale of its weights, as in the ResNet and
MobileNetV2 models; it adds no prunable weights. It exists to probe how pruning methods depend on
that invariance (docs/results/quality_fashion_bn.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from adapmtl.models.multitask import MultiTaskModel


def _normalised_relu(norm: nn.Module, batch_norm: bool) -> list[nn.Module]:
    """ReLU, preceded by ``norm`` when ``batch_norm``."""
    return [norm, nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]


def conv_output(size: int) -> int:
    """Side length after the trunk's two (5x5 valid conv, 2x2 pool) stages."""
    for _ in range(2):
        size = (size - 4) // 2
    return size


class LeNetTrunk(nn.Module):
    """The shared trunk: two conv/pool stages and a Linear to ``features``; ``[B, features]``."""

    def __init__(
        self,
        in_channels: int,
        input_size: tuple[int, int],
        features: int,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        height, width = (conv_output(s) for s in input_size)
        if height < 1 or width < 1:
            raise ValueError(f"input_size {tuple(input_size)} is too small (at least 16 x 16)")
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5),
            *_normalised_relu(nn.BatchNorm2d(32), batch_norm),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5),
            *_normalised_relu(nn.BatchNorm2d(64), batch_norm),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * height * width, features),
            *_normalised_relu(nn.BatchNorm1d(features), batch_norm),
        )
        self.out_channels = features

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def lenet_mtl(
    tasks: Mapping[str, int],
    *,
    in_channels: int = 1,
    input_size: tuple[int, int] = (28, 56),
    features: int = 128,
    head_hidden: int = 192,
    batch_norm: bool = False,
) -> MultiTaskModel:
    """LeNet trunk shared by every task, an MLP head per task; outputs ``{task: [B, classes]}``."""
    trunk = LeNetTrunk(in_channels, tuple(input_size), features, batch_norm)
    heads = {
        task: nn.Sequential(
            nn.Linear(features, head_hidden),
            *_normalised_relu(nn.BatchNorm1d(head_hidden), batch_norm),
            nn.Linear(head_hidden, classes),
        )
        for task, classes in tasks.items()
    }
    return MultiTaskModel(trunk, heads)
