"""Components of a multitask model (paper Section 3.2): the shared backbone and one head per
task, each named by module paths. Read by ``sparsify`` (one threshold per component), the
weighting's parameter ratio (Eq. 6) and the cost report.

A component is a list of patterns. A plain pattern is a module path and claims that module and
everything under it (``"heads.seg"`` claims ``heads.seg.0``, not ``heads.segment``; ``""``
claims everything). A ``re:`` pattern is a regular expression that must match a *whole* module
path (``re.fullmatch``): ``"re:dec"`` matches the module ``dec`` only, ``r"re:dec_a\\.\\d+"``
matches ``dec_a.0`` and ``dec_a.2``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence

from torch import nn

PATTERNS_ATTR = "_adapmtl_component_patterns"
"""Where ``sparsify`` records the components it was given, so later readers use the same."""


def path_matches(path: str, pattern: str) -> bool:
    """Whether module ``path`` falls under ``pattern``: ``""`` (everything), the path itself or
    a parent of it, or ``re:REGEX`` matching the whole path."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], path) is not None
    return pattern == "" or path == pattern or path.startswith(pattern + ".")


def as_patterns(components: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    """``{"backbone": "backbone", "seg": ["heads.seg"]}`` -> every value a list of patterns."""
    return {
        name: [spec] if isinstance(spec, str) else list(spec) for name, spec in components.items()
    }


def default_components(model: nn.Module) -> dict[str, list[str]]:
    """Components of a multitask model: ``model.components()`` if defined, else ``backbone`` and
    ``heads.<task>`` for each entry of ``model.heads``."""
    if callable(getattr(model, "components", None)):
        return as_patterns(model.components())
    backbone, heads = getattr(model, "backbone", None), getattr(model, "heads", None)
    if isinstance(backbone, nn.Module) and isinstance(heads, nn.ModuleDict):
        components = {"backbone": ["backbone"]}
        components.update({task: [f"heads.{task}"] for task in heads})
        return components
    raise ValueError(
        "cannot find the model's components: give components={'name': ['module.prefix' or "
        "'re:pattern', ...]}, or give the model a 'backbone' module and a 'heads' ModuleDict"
    )


def model_components(model: nn.Module) -> dict[str, list[str]]:
    """The components ``model`` was sparsified with, else :func:`default_components`."""
    recorded = getattr(model, PATTERNS_ATTR, None)
    if isinstance(recorded, dict):
        return as_patterns(recorded)
    return default_components(model)


def component_of(path: str, patterns: Mapping[str, Sequence[str]]) -> str | None:
    """The first component whose patterns claim module ``path``, else None."""
    for name, pats in patterns.items():
        if any(path_matches(path, p) for p in pats):
            return name
    return None


def check_patterns(model: nn.Module, patterns: Mapping[str, Sequence[str]]) -> None:
    """Every pattern claims at least one module of ``model``; a typo is a ``ValueError`` naming
    the pattern (under its key, e.g. ``component 'backbone'``) and the closest module paths."""
    paths = [path for path, _ in model.named_modules() if path]
    for name, pats in patterns.items():
        for pattern in pats:
            if any(path_matches(path, pattern) for path in paths):
                continue
            text = pattern.removeprefix("re:")
            near = difflib.get_close_matches(text, paths, n=3, cutoff=0.5)
            hint = f"; closest module paths: {', '.join(near)}" if near else ""
            rule = (
                "a 're:' pattern must match a whole module path"
                if pattern.startswith("re:")
                else "a plain pattern names a module path: that module and everything under it"
            )
            raise ValueError(f"{name}: {pattern!r} matches no module ({rule}){hint}")


def owner_path(parameter: str) -> str:
    """The module path of a parameter name, a parametrized weight's ``original`` included:
    ``backbone.0.parametrizations.weight.original`` -> ``backbone.0``."""
    owner, _, _ = parameter.partition(".parametrizations.")
    if owner != parameter:
        return owner
    return parameter.rpartition(".")[0]
