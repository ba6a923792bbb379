"""keep_freed_memory: memory a step frees is reused by the next one without page faults (glibc),
and the trainer applies it as ``train.keep_freed_memory`` says. The allocator is process-wide, so
each measurement runs in a fresh interpreter."""

from __future__ import annotations

import copy
import ctypes
import os
import subprocess
import sys

import pytest

from adapmtl.config import from_dict
from adapmtl.engine import allocator
from adapmtl.engine import trainer as trainer_module
from adapmtl.engine.trainer import Trainer
from conftest import TINY

STEP_FAULTS = """
import resource, sys, torch
from adapmtl.engine.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():  # like a training step: allocate and fill buffers, then free them all
    buffers = [torch.ones(1 << 20) for _ in range(32)]
    del buffers
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _glibc() -> bool:
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


def _step_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", STEP_FAULTS, mode],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not _glibc(), reason="glibc's allocator only")
def test_a_repeated_step_reuses_the_memory_it_freed_without_page_faults():
    # By default whether glibc hands the freed 128 MiB back (and the next step faults them in
    # again) varies from process to process: it did in about two runs of three here. Kept, no
    # page of it faults again, in every process.
    assert [_step_faults("keep") for _ in range(3)] == [0, 0, 0]


@pytest.mark.parametrize("keep", [True, False])
def test_the_trainer_applies_the_setting_of_its_config(tmp_path, monkeypatch, keep):
    calls: list[bool] = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(True) or True)
    settings = copy.deepcopy(TINY)
    settings["train"]["keep_freed_memory"] = keep
    Trainer(from_dict(settings), tmp_path / "run", verbose=False)
    assert calls == ([True] if keep else [])


class _RecordingLibc:
    gnu_get_libc_version = None

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

        def mallopt(option: int, value: int) -> int:
            self.calls.append((option, value))
            return 1

        self.mallopt = mallopt


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({}, [(allocator._M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD),
              (allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD)]),
        ({"MALLOC_MMAP_THRESHOLD_": "1073741824"},
         [(allocator._M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
         [(allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD)]),
    ],
)  # fmt: skip
def test_a_threshold_the_user_set_in_the_environment_is_left_alone(
    monkeypatch, environment, expected
):
    libc = _RecordingLibc()
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    for variable in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    assert allocator.keep_freed_memory()
    assert libc.calls == expected
