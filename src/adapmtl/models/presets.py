"""Models by name: the paper's two architectures at full size and CPU-sized presets of each.

``build_model(name, tasks, **overrides)`` returns a :class:`MultiTaskModel` with one ASPP head per
task; ``tasks`` maps task name -> output channels, in order (e.g. ``{"seg": 40, "normal": 3,
"depth": 1}``). Overrides: ``width`` (backbone channel multiplier), ``head_channels`` (ASPP hidden
size), ``rates`` (ASPP dilation rates), ``dropout`` (ASPP dropout), ``upsample`` (outputs at input
size instead of head resolution), for the ResNet models ``init_std`` (backbone conv init) and for
the MobileNetV2 models ``output_stride`` (32, or 16 / 8 with dilated later stages).
``lenet_mtl`` (image classification, :mod:`adapmtl.models.lenet`) has an MLP head per task instead
and its own overrides: ``in_channels``, ``input_size``, ``features``, ``head_hidden``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from torch import nn

from adapmtl.errors import UserError
from adapmtl.models.aspp import DEFAULT_DROPOUT, DEFAULT_HIDDEN, DEFAULT_RATES, ASPPHead
from adapmtl.models.lenet import lenet_mtl
from adapmtl.models.mobilenetv2 import MobileNetV2
from adapmtl.models.multitask import MultiTaskModel
from adapmtl.models.resnet import DeepLabResNet
from adapmtl.registry import Registry

MODELS: Registry[MultiTaskModel] = Registry("model")


def _multitask(
    backbone: nn.Module,
    tasks: Mapping[str, int],
    head_channels: int,
    rates: Sequence[int],
    dropout: float,
    upsample: bool,
) -> MultiTaskModel:
    heads = {
        task: ASPPHead(
            backbone.out_channels, channels, rates=rates, hidden=head_channels, dropout=dropout
        )
        for task, channels in tasks.items()
    }
    return MultiTaskModel(backbone, heads, upsample=upsample)


def deeplab_resnet34(
    tasks: Mapping[str, int],
    *,
    width: float = 1.0,
    head_channels: int = DEFAULT_HIDDEN,
    rates: Sequence[int] = DEFAULT_RATES,
    dropout: float = DEFAULT_DROPOUT,
    upsample: bool = False,
    init_std: float | None = None,
) -> MultiTaskModel:
    """DeepLab-ResNet34 backbone (output stride 8) with one ASPP head per task.

    ``init_std`` defaults to 0.01 at full width, scaled by 1/sqrt(width) for thinner models
    (:func:`~adapmtl.models.resnet.width_consistent_init_std`).
    """
    backbone = DeepLabResNet(width, init_std=init_std)
    return _multitask(backbone, tasks, head_channels, rates, dropout, upsample)


def mobilenetv2(
    tasks: Mapping[str, int],
    *,
    width: float = 1.0,
    head_channels: int = DEFAULT_HIDDEN,
    rates: Sequence[int] = DEFAULT_RATES,
    dropout: float = DEFAULT_DROPOUT,
    upsample: bool = False,
    output_stride: int = 32,
) -> MultiTaskModel:
    """MobileNetV2 backbone (output stride 32 as in the paper, or 16 / 8 dilated) with one ASPP
    head per task."""
    backbone = MobileNetV2(width, output_stride=output_stride)
    return _multitask(backbone, tasks, head_channels, rates, dropout, upsample)


PRESETS: dict[str, Callable[..., MultiTaskModel]] = {
    "deeplab_resnet34": deeplab_resnet34,
    "mobilenetv2": mobilenetv2,
    # CPU presets: the same architectures, thinner, for training on a laptop at 64-128 px.
    # ResNet: width 0.25 with 256-channel heads keeps the full-size backbone/heads weight ratio
    # (0.31 on NYUv2), which decides how sparse the heads must be for a given overall sparsity.
    # MobileNetV2's backbone cannot stay as small relative to its heads at CPU cost; width 0.5
    # with 128-channel heads keeps it at 6 % of the prunable weights (1.4 % at full size).
    "deeplab_resnet34_cpu": partial(deeplab_resnet34, width=0.25, head_channels=256),
    "mobilenetv2_cpu": partial(mobilenetv2, width=0.5, head_channels=128),
    # Classification on small grayscale canvases (fashion_pairs); models/lenet.py.
    "lenet_mtl": lenet_mtl,
}
for _name, _factory in PRESETS.items():
    MODELS.register(_name)(_factory)


def _check_tasks(tasks: Mapping[str, int]) -> None:
    if not isinstance(tasks, Mapping) or not tasks:
        raise UserError(f"model tasks must map task name -> output channels, got {tasks!r}")
    for task, channels in tasks.items():
        if not isinstance(task, str) or not task or "." in task:
            raise UserError(f"task name {task!r} must be a non-empty string without '.'")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise UserError(
                f"task {task!r}: output channels must be a positive integer, got {channels!r}"
            )


def build_model(name: str, tasks: Mapping[str, int], **kwargs: Any) -> MultiTaskModel:
    """Build the registered model ``name`` with one head per entry of ``tasks`` (in order).

    Raises :class:`~adapmtl.errors.UserError` for an unknown name (listing the valid ones), an
    unknown override, or bad task channels.
    """
    try:
        factory = MODELS.get(name)
    except KeyError as err:
        raise UserError(err.args[0]) from None
    valid = [p for p in inspect.signature(factory).parameters if p != "tasks"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise UserError(f"model {name!r}: unknown option {unknown[0]!r}; valid: {', '.join(valid)}")
    _check_tasks(tasks)
    try:
        return factory(tasks=tasks, **kwargs)
    except ValueError as err:
        raise UserError(f"model {name!r}: {err}") from None
