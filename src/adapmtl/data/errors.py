"""Errors raised for bad dataset input. Both are :class:`adapmtl.errors.UserError` (the CLI prints
one line and exits 2) and also standard exceptions, so plain Python callers can catch
``ValueError`` / ``FileNotFoundError``. Messages name the file and the problem."""

from __future__ import annotations

from adapmtl.errors import UserError


class DataError(UserError, ValueError):
    """A file or listing exists but its content is not what the layout specifies."""


class MissingDataError(UserError, FileNotFoundError):
    """A root directory, listing or data file does not exist."""
