"""Reading the structured files of a run (YAML and JSON): one place for the error convention.

:func:`read_structured` raises a :class:`~adapmtl.errors.UserError` that names the file and says
what is wrong (missing, unreadable, not valid YAML/JSON, not a mapping); :func:`read_if_valid`
is the lenient form for files whose absence or damage only means "not there" (a run's
``results.json`` while it trains). A ``.json`` file is parsed as JSON, anything else as YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from adapmtl.errors import UserError


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: what went wrong and where (PyYAML's own text spans lines)."""
    mark = getattr(err, "problem_mark", None)
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    text = ", ".join(part for part in parts if part) or " ".join(str(err).split())
    return f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark else text


def format_of(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def parse(text: str, path: Path) -> Any:
    """``text`` as JSON or YAML by ``path``'s suffix; the parser's own errors propagate."""
    return json.loads(text) if format_of(path) == "JSON" else yaml.safe_load(text)


def read_structured(
    path: str | Path, what: str, *, missing: str | None = None, mapping: bool = True
) -> Any:
    """The content of a YAML or JSON file; ``what`` names the file in errors (``"config
    file"``), ``missing`` replaces the message for a file that does not exist, and ``mapping``
    asks for a mapping at the top level (an empty YAML file reads as ``{}``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing or f"{what} {path} does not exist")
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"{what} {path}: cannot read it ({err.strerror})") from None
    try:
        data = parse(text, path)
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {path} is not valid JSON: {err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{what} {path} is not valid YAML: {yaml_problem(err)}") from None
    if data is None and mapping:
        return {}
    if mapping and not isinstance(data, dict):
        raise UserError(
            f"{what} {path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    return data


def read_if_valid(path: str | Path) -> Any | None:
    """The content of a YAML or JSON file, or None when it is missing, unreadable or invalid."""
    path = Path(path)
    try:
        return parse(path.read_text(), path)
    except (OSError, json.JSONDecodeError, yaml.YAMLError):
        return None
