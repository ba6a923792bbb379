"""The run directory: what a run writes (``config.yaml``, ``meta.json``, ``log.jsonl``,
``results.json``, checkpoints), the refusal to mix two runs in one directory, and whether a run
there has finished. Read by the trainer and by suites (which skip, resume or refuse runs).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from adapmtl import __version__
from adapmtl.atomic import write_text
from adapmtl.checkpoint import check_free_space, remove_partial_writes
from adapmtl.errors import UserError
from adapmtl.structured import read_if_valid

RUN_FILES = ("config.yaml", "meta.json", "log.jsonl", "results.json", "last.pt", "best.pt")


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool, space_needed: int = 0) -> None:
    """Refuse to mix runs: an existing run directory needs ``resume`` or ``overwrite``. A new
    run also needs ``space_needed`` bytes (checked before anything is created)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output directory {run_dir} is a file, not a directory")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise UserError(f"cannot resume: {run_dir / 'last.pt'} does not exist")
        check_writable(run_dir)
        return
    if existing and not overwrite:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
            "it or --overwrite to replace it"
        )
    reclaimed = sum((run_dir / name).stat().st_size for name in existing) if overwrite else 0
    existing_ancestor = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    check_free_space(existing_ancestor, space_needed - reclaimed)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output directory {run_dir}: {err}") from None
    check_writable(run_dir)
    if overwrite:
        for name in existing:
            (run_dir / name).unlink()
        remove_partial_writes(run_dir)
        shutil.rmtree(run_dir / "tb", ignore_errors=True)


def check_writable(run_dir: Path) -> None:
    probe = run_dir / ".write-test"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output directory {run_dir} is not writable: {err}") from None


def truncate_log(path: Path, iteration: int) -> None:
    """Keep the complete records of ``log.jsonl`` up to ``iteration`` (a resumed run re-runs
    the steps after its checkpoint; a killed run may have left half a line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("iteration", 0) <= iteration:
            kept.append(line + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


def final_results(run_dir: Path, iteration: int) -> dict[str, Any] | None:
    """``results.json`` when it holds the metrics of ``iteration`` (the run finished there),
    else None."""
    results = read_if_valid(run_dir / "results.json")
    if not isinstance(results, dict) or results.get("iteration") != iteration:
        return None
    return results if "metrics" in results else None


def run_checkpoint(path: Path) -> Path:
    """The checkpoint a run directory stands for: its ``best.pt``, else its ``last.pt``; any
    other path is returned as it is."""
    if not path.is_dir():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return path / name
    raise UserError(f"{path} is a directory without best.pt or last.pt: not a run directory")


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_run_files(
    run_dir: Path, config_yaml: str, *, seed: int, device: str, world_size: int
) -> None:
    """``config.yaml``, and ``meta.json``: versions, platform, git revision, seed, device,
    command line, number of processes and start time."""
    write_text(run_dir / "config.yaml", config_yaml)
    meta = {
        "adapmtl": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_revision(),
        "seed": seed,
        "device": device,
        "command": sys.argv,
        "world_size": world_size,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text(run_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
