"""Strict options: dataclasses and keyword parameters filled from plain mappings (YAML).

Unknown keys (with a "did you mean"), wrong types and values a type hint cannot hold are
:class:`ConfigError` s that name the dotted key. The run config (:mod:`adapmtl.config`) is built
with these, and so are the options of methods and of every component a config names.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from adapmtl.errors import UserError
from adapmtl.registry import closest


class ConfigError(UserError):
    """A config error about one dotted key, so that the caller can say where that key was set
    (the file or a ``--set``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


SEQUENCES = (list, tuple, collections.abc.Sequence)
MAPPINGS = (dict, collections.abc.Mapping)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the type hint ``tp`` (lists for tuples and sequences; strings for
    paths). Raises :class:`ConfigError` naming ``key``, or ``TypeError`` for a hint this does
    not understand."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            key,
            errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}",
        )
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"{key}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin in SEQUENCES:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"{key}: expected a list, got {value!r}")
        items = typing.get_args(tp)
        if origin is tuple and items and items[-1] is not Ellipsis:
            if len(value) != len(items):
                raise ConfigError(key, f"{key}: expected {len(items)} values, got {value!r}")
        else:
            items = items[:1] * len(value) if items else (Any,) * len(value)
        return [
            coerce(v, item, f"{key}[{i}]")
            for i, (v, item) in enumerate(zip(value, items, strict=True))
        ]
    if origin in MAPPINGS or tp in MAPPINGS:
        if not isinstance(value, dict):
            raise ConfigError(key, f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp in (str, Path, os.PathLike):
        if not isinstance(value, str):
            raise ConfigError(key, f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def build_dataclass(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(dotted, f"unknown config key {dotted!r}{closest(str(key), names)}")
        kwargs[key] = coerce(value, hints[key], dotted)
    return cls(**kwargs)


def check_options(
    factory: Callable[..., Any],
    options: dict[str, Any],
    prefix: str,
    skip: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """Check ``options`` (the config mapping at ``prefix``) against the keyword parameters of
    ``factory``: each name must be a parameter (a typo gets a "did you mean"), each value must fit
    the parameter's type hint. ``skip`` are parameters the config does not set; ``extra`` are
    further accepted options with their types."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if inspect.isclass(target):
        target = target.__init__
    parameters = inspect.signature(factory).parameters
    accepted = [
        name
        for name, p in parameters.items()
        if name not in skip and name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    try:
        hints = {**typing.get_type_hints(target), **(extra or {})}
    except (NameError, TypeError):  # hints naming types only imported for type checking
        hints = dict(extra or {})
    accepted += [name for name in extra or {} if name not in accepted]
    for name, value in options.items():
        dotted = f"{prefix}.{name}"
        if name not in accepted:
            raise ConfigError(
                dotted,
                f"unknown option {dotted!r}{closest(str(name), accepted)}; "
                f"valid: {', '.join(accepted) or 'none'}",
            )
        try:
            coerce(value, hints.get(name, Any), dotted)
        except TypeError:
            continue  # a hint that is not a config type (e.g. a callable): the factory checks
