"""A small name -> factory registry shared by models, task sets, datasets, methods and weightings.

Configs refer to components by name; a misspelled name is an error that lists the valid names and
suggests the closest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from adapmtl.usercode import IMPORT_HINT

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry(Generic[T]):
    """Maps names to factories. ``kind`` names what is registered, for error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``; a name can be registered once."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            valid = ", ".join(sorted(self._factories))
            raise KeyError(
                f"unknown {self.kind} {name!r}{closest(name, list(self._factories))}; "
                f"valid: {valid} ({IMPORT_HINT})"
            )
        return self._factories[name]

    def build(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
