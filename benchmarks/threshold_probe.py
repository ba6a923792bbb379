"""A probe of where the soft threshold's gain comes from: soft on some layers, hard on the rest.

On both BatchNorm suites (synthetic scenes on ResNet and MobileNetV2) the soft threshold with
exact landing beat the recommended hard recipe on every seed, and on the plain Fashion model it
lost (docs/methods.md). One reading is that a layer followed by a normalisation layer does not
feel the soft threshold's shrinkage of its survivors. But on those models only the backbone's
convolutions feed BatchNorm: the ASPP heads, which hold most of the weights, are plain
convolutions followed by ReLU. This method (user code, through a suite's ``imports:``) trains the
soft row of the suites with some layers switched to the recommended hard threshold with regrowth:

* ``soft_on: normalised``: soft where the layer's output feeds only normalisation layers
  (:func:`adapmtl.sparsity.structure.normalised_layers`), hard elsewhere;
* ``soft_on: heads``: soft on the task heads, hard on the backbone.

If the gain follows normalisation, ``normalised`` keeps it and ``heads`` loses it; if it follows
the heads, the reverse. Used by benchmarks/threshold_probe_*.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adapmtl.methods.adapmtl import AdapMTL
from adapmtl.methods.base import METHODS
from adapmtl.sparsity import sparse_layers
from adapmtl.sparsity.sparsify import PRUNABLE_TYPES, layer_components
from adapmtl.sparsity.structure import normalised_layers

SOFT_ON = ("normalised", "heads")


@METHODS.register("adapmtl_split_threshold")
class SplitThreshold(AdapMTL):
    name = "adapmtl_split_threshold"

    @dataclass
    class Options(AdapMTL.Options):
        soft_on: str = "normalised"
        """``normalised`` or ``heads``: the layers that keep the soft threshold."""

    def __init__(self, target: float | None, options: Options) -> None:
        if options.soft_on not in SOFT_ON:
            raise ValueError(f"soft_on must be one of {SOFT_ON}, got {options.soft_on!r}")
        super().__init__(target, options)

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.options.soft_on == "normalised":  # traced before the parametrizations
            prunable = [p for p, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
            soft = normalised_layers(model, prunable)
        layers = sparse_layers(super().prepare(model))
        if self.options.soft_on == "heads":
            components = layer_components(model)
            soft = {path for path, _, _ in layers if components[path] != "backbone"}
        for path, _, parametrization in layers:
            if path not in soft:
                parametrization.hard = True
                parametrization.regrow = True
        return model
