"""The rule that keeps CPU-created tensors away from device tensors on the training path: every
tensor factory call in the packages a training step runs names its device (``device=...``), so
each CPU tensor there is one somebody chose. The meta-device test (``test_gpu_readiness.py``)
then finds the mixing that a choice got wrong."""

from __future__ import annotations

import ast
from pathlib import Path

import adapmtl

FACTORIES = {
    "tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "eye", "linspace",
    "logspace", "rand", "randn", "randint", "randperm",
}  # fmt: skip
# the packages a training step runs; data/ (DataLoader workers), inference/ (the CPU engine),
# commands/ and analysis/ are host code by design
TRAINING_PATH = ("engine", "tasks", "weighting", "methods", "models", "sparsity")
ROOT = Path(adapmtl.__file__).parent


def factory_calls_without_device(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        func = node.func
        if not (isinstance(func.value, ast.Name) and func.value.id == "torch"):
            continue
        if func.attr in FACTORIES and not any(k.arg == "device" for k in node.keywords):
            found.append((node.lineno, ast.get_source_segment(source, node) or func.attr))
    return found


def test_the_scanner_finds_a_factory_without_a_device_and_accepts_one_with_it():
    source = "x = torch.tensor([1.0])\ny = torch.zeros(3, device=z.device)\nw = torch.cat([x])\n"
    assert factory_calls_without_device(source) == [(1, "torch.tensor([1.0])")]


def test_every_tensor_factory_on_the_training_path_names_its_device():
    offenders = []
    for package in TRAINING_PATH:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for line, call in factory_calls_without_device(path.read_text()):
                offenders.append(f"{relative}:{line}: {call}")
    assert not offenders, "tensor factories without device=:\n" + "\n".join(offenders)
