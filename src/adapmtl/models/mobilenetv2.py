"""MobileNetV2 feature extractor as the references use it (docs/reference_implementations.md):
the standard inverted-residual table, the final 1x1 conv to 1280 channels, no pooling or
classifier, no dilation (output stride 32), He-normal initialisation, trained from scratch.

``output_stride`` 16 or 8 is the DeepLabv3 way of keeping larger feature maps for dense
prediction on small inputs: the stage strides past that stride become 1 and the later depthwise
convolutions dilate by the stride they gave up. The parameter count does not change.

Activation: plain ReLU. TreeMTL's model description uses ReLU, and whether the official AdapMTL
file uses ReLU6 cannot be checked; ReLU6 only differs by clipping activations at 6, which matters
for fixed-point deployment, not for the float training done here. It changes no parameter count.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s) of Sandler et al. 2018, Table 2.
INVERTED_RESIDUALS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
OUTPUT_STRIDES = (8, 16, 32)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never below ``divisor`` nor 10% below
    ``value`` (the usual MobileNet channel rounding)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
) -> list[nn.Module]:
    return [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride,
            dilation * (kernel // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when t = 1) -> 3x3 depthwise (stride, dilation) -> 1x1 linear
    projection, each followed by BN (ReLU after the first two); identity shortcut when shapes
    allow."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expansion: int,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn_relu(in_channels, hidden, 1)
        layers += _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, dilation=dilation)
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_shortcut else out


class MobileNetV2(nn.Module):
    """MobileNetV2 features. ``width`` scales every channel count, rounded to multiples of 8,
    including the final 1x1 conv (1280 at width 1; the classification network keeps 1280 below
    width 1, but here its output feeds every ASPP head, so it shrinks with the CPU presets).
    Output: ``out_channels`` channels at ``output_stride`` (32: 321x321 -> 11x11)."""

    def __init__(self, width: float = 1.0, output_stride: int = 32) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}"
            )
        in_channels = make_divisible(STEM_CHANNELS * width)
        layers: list[nn.Module] = _conv_bn_relu(3, in_channels, 3, 2)
        stride_so_far, dilation = 2, 1
        for t, c, n, s in INVERTED_RESIDUALS:
            out_channels = make_divisible(c * width)
            if stride_so_far * s > output_stride:
                stage_stride, stage_dilation, dilation = 1, dilation, dilation * s
            else:
                stage_stride, stage_dilation = s, dilation
                stride_so_far *= s
            for i in range(n):
                first = i == 0
                layers.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        stage_stride if first else 1,
                        t,
                        stage_dilation if first else dilation,
                    )
                )
                in_channels = out_channels
        self.out_channels = make_divisible(LAST_CHANNELS * width)
        layers += _conv_bn_relu(in_channels, self.out_channels, 1)
        self.features = nn.Sequential(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """He-normal convs, std sqrt(2 / (k_h * k_w * C_out)) (also for depthwise convs, as the
        reference); BN weight 1, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                k_h, k_w = module.kernel_size
                module.weight.normal_(0.0, math.sqrt(2.0 / (k_h * k_w * module.out_channels)))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
