"""scripts/gpu_check.py in its CPU mode, with the CPU-sized model: every check that can run on
the CPU passes, the CUDA-only ones are skipped, and the table says so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def load_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_cpu_mode_passes_and_skips_what_needs_cuda(tmp_path, capsys, monkeypatch):
    gpu_check = load_script(monkeypatch)
    argv = ["--tiny", "--device", "cpu", "--iterations", "8", "--batch", "4", "--images", "8"]
    assert gpu_check.main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    for check in ("dense", "adapmtl", "snip", "deterministic"):
        assert " PASS " in rows[check], out
    assert "1 syncs/step" in rows["dense"] and "2 syncs/step" in rows["adapmtl"]
    assert " SKIP " in rows["torchrun"]
    assert " PASS " in rows["autocast"] and "bf16" in rows["autocast"], out
    assert "2 syncs/step" in rows["autocast"]
    assert "weights identical" in rows["deterministic"]
    assert (tmp_path / "adapmtl" / "last.pt").is_file()
