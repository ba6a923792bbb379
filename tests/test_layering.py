"""The dependency direction of docs/architecture.md, read from the source: every import of an
adapmtl module (lazy ones inside functions included) goes to its own layer or a lower one, and
the packages of an independent layer do not import one another."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "adapmtl"

# lowest first: (units, independent); a unit is a top-level module or package of adapmtl, and
# "adapmtl" is the package itself (its lazy face and __version__)
LAYERS: list[tuple[set[str], bool]] = [
    (
        {
            "adapmtl",
            "errors",
            "registry",
            "atomic",
            "structured",
            "options",
            "components",
            "usercode",
        },
        False,
    ),
    ({"sparsity", "weighting", "models", "tasks", "data"}, True),
    ({"checkpoint", "rundir"}, False),
    ({"methods"}, False),
    ({"config", "config_presets"}, False),
    ({"build"}, False),
    ({"analysis", "inference", "loading"}, True),
    ({"engine"}, False),
    ({"runs"}, False),
    ({"commands", "cli", "__main__"}, False),
]


def unit_of(module: str) -> str | None:
    """``adapmtl.engine.trainer`` -> ``engine``; None outside adapmtl."""
    parts = module.split(".")
    if parts[0] != "adapmtl":
        return None
    return parts[1] if len(parts) > 1 else "adapmtl"


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth, relative ones resolved;
    ``from adapmtl import x`` names ``adapmtl.x`` when ``x`` is a module."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "adapmtl":
                found += [
                    (node.lineno, f"adapmtl.{alias.name}" if _is_module(root, alias.name) else base)
                    for alias in node.names
                ]
            else:
                found.append((node.lineno, base))
    return sorted(found)


def _is_module(root: Path, name: str) -> bool:
    return (root / f"{name}.py").is_file() or (root / name).is_dir()


def layer_of(unit: str) -> int:
    for index, (units, _) in enumerate(LAYERS):
        if unit in units:
            return index
    raise KeyError(unit)


def violations(root: Path) -> list[str]:
    """Every import that runs against the layering, as ``file:line: a -> b (why)``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = unit_of(module_name(path, root))
        assert source is not None
        for line, target in imported_modules(path, root):
            unit = unit_of(target)
            if unit is None or unit == source:
                continue
            where = f"{path.relative_to(root.parent)}:{line}: {source} -> {unit}"
            low, high = layer_of(unit), layer_of(source)
            if low > high:
                problems.append(f"{where} (a lower layer imports a higher one)")
            elif low == high and LAYERS[low][1]:
                problems.append(f"{where} (packages of one independent layer)")
    return problems


def test_every_package_has_a_layer():
    units = {unit_of(module_name(path, SOURCE)) for path in SOURCE.rglob("*.py")}
    placed = set().union(*(layer for layer, _ in LAYERS))
    assert units == placed


def test_imports_follow_the_layers():
    assert violations(SOURCE) == []


def test_the_check_sees_lazy_and_package_imports(tmp_path):
    root = tmp_path / "adapmtl"
    (root / "sparsity").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sparsity" / "__init__.py").write_text("from . import level\n")
    (root / "sparsity" / "level.py").write_text(
        "def f():\n    from adapmtl.tasks import score\n\n\nfrom adapmtl import engine\n"
    )
    (root / "tasks.py").write_text("import adapmtl.errors\n")
    (root / "engine.py").write_text("from adapmtl.sparsity import level\n")
    assert violations(root) == [
        "adapmtl/sparsity/level.py:2: sparsity -> tasks (packages of one independent layer)",
        "adapmtl/sparsity/level.py:5: sparsity -> engine (a lower layer imports a higher one)",
    ]
