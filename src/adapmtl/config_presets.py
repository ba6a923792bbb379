"""The preset configs shipped with the package (``adapmtl/configs/``), addressable by name.

A preset's name is its path under that folder without ``.yaml``: ``nyuv2/resnet34_adapmtl``,
``scenes/adapmtl_cpu``, ``suites/scenes_cpu``. :func:`preset_path` turns a ``--config`` /
``--suite`` argument into a file: an existing path is used as it is (a path always wins over a
name); otherwise a preset name, written with or without ``.yaml`` and with or without the
``configs/`` of a clone's path, names the packaged file. ``base:`` includes are relative to the
file that names them, so presets include each other from inside the package. A clone's
top-level ``configs`` is a link to the same folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from adapmtl.errors import UserError
from adapmtl.registry import closest

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SUITES = "suites"


@dataclass(frozen=True)
class Preset:
    """One packaged config: its name, file and the first line of its header comment."""

    name: str
    path: Path
    summary: str

    @property
    def is_suite(self) -> bool:
        """A suite for ``adapmtl compare --suite`` rather than a run config."""
        return self.name.startswith(SUITES + "/")


def _summary(path: Path, limit: int = 72) -> str:
    """The first sentence of the file's header comment, cut to ``limit`` characters."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or not text or text.startswith("adapmtl "):
            break
        words.append(text)
    sentence = re.split(r"\.\s+(?!\d)", " ".join(words), maxsplit=1)[0].removesuffix(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


def presets() -> list[Preset]:
    """Every packaged config, sorted by name."""
    return [
        Preset(path.relative_to(CONFIG_DIR).with_suffix("").as_posix(), path, _summary(path))
        for path in sorted(CONFIG_DIR.rglob("*.yaml"))
    ]


def _preset_name(spec: str) -> str:
    name = spec.replace("\\", "/").removesuffix(".yaml")
    return name.removeprefix("./").removeprefix("configs/")


def preset_path(spec: str | Path) -> Path:
    """The config file ``spec`` names: the path itself when it exists, else the packaged preset
    of that name (module docstring). A :class:`UserError` names both readings and the closest
    presets when neither exists."""
    path = Path(spec)
    if path.exists():
        return path
    name = _preset_name(str(spec))
    candidate = CONFIG_DIR / f"{name}.yaml"
    if name and ".." not in Path(name).parts and candidate.is_file():
        return candidate
    hint = closest(name, [p.name for p in presets()])
    raise UserError(
        f"config file {spec} does not exist, and no packaged preset is called {name!r}{hint}; "
        "adapmtl config list shows the presets"
    )
