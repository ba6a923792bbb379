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


INTERNAL = re.compile(r"REFERENCE\.md|DESIGN\.md|\.\./shared|/work/shared")


def _project_files():
    for top in ("README.md", "docs", "src", "benchmarks", "configs", "tests"):
        path = ROOT / top
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.suffix in (".md", ".py", ".yaml") and file != Path(__file__):
                yield file


def test_no_page_cites_notes_users_do_not_have():
    citing = {
        str(file.relative_to(ROOT))
        for file in _project_files()
        if INTERNAL.search(file.read_text(encoding="utf-8"))
    }
    assert not citing, sorted(citing)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_to_the_reference_page_point_at_its_sections():
    page = ROOT / "docs" / "reference_implementations.md"
    anchors = {
        _anchor(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")
    }
    links = []
    for file in _project_files():
        links += re.findall(r"reference_implementations\.md#([\w\-]+)", file.read_text())
    assert links, "no page links to a section of the reference page"
    assert {link for link in links if link not in anchors} == set()
