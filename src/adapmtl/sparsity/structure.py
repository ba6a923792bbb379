"""Which prunable layers feed a normalisation layer, read from the model's traced graph.

A layer whose output goes only into a normalisation layer (BatchNorm, GroupNorm, LayerNorm,
InstanceNorm) does not feel a common scale of its weights: the normalisation divides it out. That
is what decides between the two thresholds of ``threshold: auto`` (docs/methods.md, "Soft or
hard threshold"): the soft threshold (paper Eq. 2) shrinks every surviving weight by alpha, which
such a layer does not feel, and a plain layer does.

The graph comes from :func:`torch.fx.symbolic_trace`, which needs no example input; standard
``torch.nn`` modules stay leaves, so each call of a prunable layer is one node whose users are
visible. A layer counts as normalised when every call of it feeds normalisation layers only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

NORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


class UntraceableModelError(ValueError):
    """The model's forward cannot be traced symbolically (e.g. control flow on tensor values)."""


def normalised_layers(model: nn.Module, paths: Iterable[str]) -> set[str]:
    """The module paths among ``paths`` whose every call in ``model.forward`` feeds only
    normalisation layers (:data:`NORM_TYPES`). A path never called in the traced forward is not
    normalised. Raises :class:`UntraceableModelError` with torch.fx's reason when the model
    cannot be traced."""
    wanted = set(paths)
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...) for one cause
        raise UntraceableModelError(
            f"torch.fx.symbolic_trace could not trace {type(model).__name__}: "
            f"{type(err).__name__}: {err}"
        ) from err
    modules = dict(model.named_modules())
    verdicts: dict[str, bool] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in wanted:
            continue
        feeds_norm = bool(node.users) and all(
            user.op == "call_module" and isinstance(modules[str(user.target)], NORM_TYPES)
            for user in node.users
        )
        verdicts[str(node.target)] = verdicts.get(str(node.target), True) and feeds_norm
    return {path for path, normalised in verdicts.items() if normalised}
