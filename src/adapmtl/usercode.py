"""User code: the modules that register a user's own models, datasets, task sets, task types,
methods and weightings (``MODELS.register("tiny_user")`` and its siblings) are imported by name
before anything looks a component up.

A config lists them under ``imports:`` (recorded in the run directory's ``config.yaml`` and in
every checkpoint, so ``eval``, ``report``, ``export``, ``bench``, ``sensitivity`` and ``compare``
on the run import them too); every command also takes ``--import MODULE``. A module is found
like any import: installed, on ``PYTHONPATH``, or in the current directory.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

from adapmtl.errors import UserError

IMPORT_HINT = (
    "if your own code registers it, list that module under 'imports:' in the config or pass "
    "--import MODULE"
)


def import_modules(modules: Iterable[str], where: str = "imports") -> None:
    """Import each module of ``modules`` (once; Python caches them). A module that cannot be
    found, or that fails to import one of its own dependencies, is a :class:`UserError` naming
    it and ``where`` it was asked for; any other error inside the module is the module's own and
    propagates with its traceback."""
    for name in modules:
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{where}: expected module names, got {name!r}")
        if name in sys.modules:
            continue
        if os.getcwd() not in sys.path and "" not in sys.path:
            # console scripts do not put the current directory on sys.path, ``python -m`` does
            sys.path.append(os.getcwd())
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing = getattr(err, "name", None)
            if missing == name or (missing is not None and name.startswith(missing + ".")):
                raise UserError(
                    f"{where}: no module named {name!r} (install it, put its directory on "
                    "PYTHONPATH, or run from the directory that holds it)"
                ) from None
            raise UserError(f"{where}: importing {name!r} failed: {err}") from err
