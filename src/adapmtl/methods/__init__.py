"""Pruning methods on one training loop (one module per method, one interface)."""

from __future__ import annotations

from typing import Any

from adapmtl.errors import UserError
from adapmtl.methods import adapmtl as _adapmtl  # noqa: F401  (registers the method)
from adapmtl.methods import dense as _dense  # noqa: F401
from adapmtl.methods import disparse as _disparse  # noqa: F401
from adapmtl.methods import imp as _imp  # noqa: F401
from adapmtl.methods import lth as _lth  # noqa: F401
from adapmtl.methods import snip as _snip  # noqa: F401
from adapmtl.methods.base import METHODS, Method, TrainingContext
from adapmtl.options import build_dataclass


def build_method(name: str, target: float | None, options: dict[str, Any]) -> Method:
    """Build a registered method; its options are checked strictly against ``Method.Options``."""
    try:
        cls = METHODS.get(name)
    except KeyError as err:
        raise UserError(f"method.name: {err.args[0]}") from None
    parsed = build_dataclass(cls.Options, options, "method.options")
    try:
        return cls(target, parsed)
    except ValueError as err:
        raise UserError(f"method {name!r}: {err}") from None


__all__ = ["METHODS", "Method", "TrainingContext", "build_method"]
