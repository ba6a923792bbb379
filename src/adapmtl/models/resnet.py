"""DeepLab-ResNet34, the dilated ResNet34 backbone of AdaShare, DiSparse, TreeMTL and the official
AdapMTL code (docs/reference_implementations.md): output stride 8, no classifier, trained from
scratch.

It differs from the classification ResNet34 in its ceil-mode max-pool, the strides [1, 2, 1, 1]
with dilations [1, 1, 2, 4] of the four stages, and the N(0, 0.01) initialisation of every conv
(at full width; thinner models scale it, see :func:`width_consistent_init_std`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 1, 1)
STAGE_DILATIONS = (1, 1, 2, 4)
REFERENCE_INIT_STD = 0.01


def width_consistent_init_std(width: float) -> float:
    """The conv init std that keeps the full-size model's init scale relative to its heads.

    The references initialise every backbone conv N(0, 0.01) at full width, while the ASPP heads
    keep PyTorch's default U(+-1/sqrt(fan_in)). Thinning backbone and heads by ``width`` multiplies
    every fan-in by ``width``, so the heads start 1/sqrt(width) times larger while a fixed 0.01
    would not: at width 0.125 the heads' weights start 2.8x larger relative to the backbone's than
    at full size, and any magnitude criterion (soft thresholds, IMP, LTH) then prunes the backbone
    first (docs/results/quality.md). ``0.01 / sqrt(width)`` keeps the full-size ratio; at width 1
    it is the reference's 0.01.
    """
    return REFERENCE_INIT_STD / math.sqrt(width)


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, round(channels * width))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the (projected) input, then ReLU. Both convs use the
    stage's dilation with padding = dilation; the first carries the stride."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, 1, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _stage(
    in_channels: int, channels: int, blocks: int, stride: int, dilation: int
) -> nn.Sequential:
    # As the references: the first block projects its input with a 1x1 conv + BN whenever the
    # stride or the channel count changes, or the stage is dilated (2 or 4).
    downsample = None
    if stride != 1 or in_channels != channels or dilation in (2, 4):
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
        )
    layers = [BasicBlock(in_channels, channels, stride, dilation, downsample)]
    layers += [BasicBlock(channels, channels, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DeepLabResNet(nn.Module):
    """Dilated ResNet with BasicBlocks (ResNet34 with the default ``blocks``).

    Stem conv 7x7/2 (no bias) -> BN -> ReLU -> max-pool 3x3/2, padding 1, ceil mode; then four
    stages. ``width`` multiplies every channel count (1.0 = the reference; 0.25 for CPU presets).
    ``init_std`` is the std of every conv's normal init (default: the width-consistent one).
    Output: ``out_channels`` (512 * width) channels at stride 8 (321x321 -> 41x41).
    """

    def __init__(
        self,
        width: float = 1.0,
        blocks: Sequence[int] = STAGE_BLOCKS,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        if init_std is not None and not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std!r}")
        self.init_std = width_consistent_init_std(width) if init_std is None else init_std
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ValueError(f"blocks must be four positive counts, got {list(blocks)}")
        channels = [scaled_channels(c, width) for c in STAGE_CHANNELS]
        self.conv1 = nn.Conv2d(3, channels[0], 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        stages = []
        in_channels = channels[0]
        for c, n, s, d in zip(channels, blocks, STAGE_STRIDES, STAGE_DILATIONS, strict=True):
            stages.append(_stage(in_channels, c, n, s, d))
            in_channels = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = in_channels
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Every conv N(0, init_std), every BN weight 1 and bias 0 (as the references)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, self.init_std)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
