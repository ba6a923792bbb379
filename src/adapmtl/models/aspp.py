"""The DeepLab-v2 ASPP task head used by the references (Chen et al. 2017).

Four parallel branches with dilation rates (6, 12, 18, 24) whose outputs are **summed** (no
concatenation, image pooling or BN). Each branch: 3x3 conv C_in -> hidden with dilation = padding
= rate, ReLU, Dropout, 1x1 hidden -> hidden, ReLU, Dropout, 1x1 hidden -> C. All convs have a bias
and PyTorch's default initialisation. The head keeps its input's resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_RATES = (6, 12, 18, 24)
DEFAULT_HIDDEN = 1024
DEFAULT_DROPOUT = 0.5


class ASPPBranch(nn.Sequential):
    def __init__(
        self, in_channels: int, out_channels: int, rate: int, hidden: int, dropout: float
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=rate, dilation=rate),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, out_channels, 1),
        )


class ASPPHead(nn.Module):
    """Sum of ``len(rates)`` dilated branches mapping ``in_channels`` to ``out_channels``.

    Prunable weights: ``len(rates) * (9 * in_channels * hidden + hidden**2 + hidden * C)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        rates: Sequence[int] = DEFAULT_RATES,
        hidden: int = DEFAULT_HIDDEN,
        dropout: float = DEFAULT_DROPOUT,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or hidden < 1:
            raise ValueError(
                "ASPP channels must be positive, got "
                f"in={in_channels}, out={out_channels}, hidden={hidden}"
            )
        if not rates or any(int(r) != r or r < 1 for r in rates):
            raise ValueError(f"ASPP rates must be positive integers, got {list(rates)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.out_channels = out_channels
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            ASPPBranch(in_channels, out_channels, r, hidden, dropout) for r in self.rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out
