"""The pruned models the inference benchmarks time: a randomly initialised preset (NYUv2 tasks),
magnitude-pruned per layer, or in blocks of output channels by L2 norm, with BatchNorm statistics
set from one random batch so that signal reaches the heads. The kernels only see where the zeros
are, so no training is needed."""

from __future__ import annotations

import torch
from torch import nn

from adapmtl.inference.pruning import block_magnitude_prune, calibrate_batchnorm, magnitude_prune
from adapmtl.models import build_model

TASKS = {"seg": 40, "normal": 3, "depth": 1}
INPUT_SIZES = {
    "deeplab_resnet34_cpu": (128, 128),
    "mobilenetv2_cpu": (128, 128),
    "deeplab_resnet34": (321, 321),
    "mobilenetv2": (321, 321),
}


def pruned_model(name: str, sparsity: float, blocks: int = 1) -> nn.Module:
    """Preset ``name`` (seed 0, eval mode) pruned to ``sparsity``: weight by weight, or in blocks
    of ``blocks`` output channels when ``blocks > 1``."""
    torch.manual_seed(0)
    height, width = INPUT_SIZES[name]
    model = build_model(name, TASKS).eval()
    if blocks > 1:
        model = block_magnitude_prune(model, sparsity, block=blocks)
    else:
        model = magnitude_prune(model, sparsity)
    calibrate_batchnorm(model, torch.randn(2, 3, height, width))
    return model
