"""The documentation describes the code as it is and stands on its own."""

import inspect
import re
from pathlib import Path

from adapmtl.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _signature_in_docs(text: str, name: str) -> list[list[str]]:
    """Parameter names of every ``name(...)`` written in ``text`` (across line breaks)."""
    found = []
    for match in re.finditer(rf"`(?:\w+\.)?{name}\(([^)]*)\)`", text, flags=re.S):
        params = [p.strip().split("=")[0].strip() for p in match.group(1).split(",")]
        found.append([p for p in params if p and p != "*"])
    return found


def test_architecture_describes_the_trainer_once_with_its_true_signature():
    text = (ROOT / "docs" / "architecture.md").read_text()
    described = _signature_in_docs(text, "Trainer")
    assert len(described) == 1, described
    actual = [p for p in inspect.signature(Trainer).parameters]
    assert described[0] == actual
    defaults = {
        name: p.default
        for name, p in inspect.signature(Trainer).parameters.items()
        if p.default is not p.empty
    }
    for name, default in defaults.items():
        assert re.search(rf"{name}={re.escape(repr(default))}", text), name
