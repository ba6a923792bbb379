"""Atomic file writes: every file a run or a comparison writes (checkpoints, ``results.json``,
tables, plots) goes to a temporary sibling, is flushed to disk and renamed over the target, so a
crash or a full disk leaves the old file or the new one, never a truncated or half-new one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from adapmtl.errors import UserError

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], what: str = "") -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it and rename it over
    ``path``. A failure removes the temporary file, leaves any previous ``path`` intact and
    raises a :class:`UserError` naming ``what`` (e.g. ``"checkpoint"``) and the file."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        # O_EXCL: never write through a file someone else created; mode 0o666 minus the umask,
        # as for any other file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
        name = f"{what} {path}" if what else str(path)
        raise UserError(f"could not write {name}: {err}; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode()))
