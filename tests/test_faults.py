"""Faults during training (docs/reliability.md): SIGKILL at arbitrary moments (also in the middle
of a checkpoint write) and resume, SIGINT/SIGTERM, NaN/Inf losses and weights, a full disk, an
output directory that cannot be written.

The reference is one uninterrupted run with deterministic CPU settings (train.deterministic,
one thread); "equal" means bit-for-bit equal weights, optimizer/weighting/controller state and
log records.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from adapmtl import checkpoint as checkpoint_module
from adapmtl.checkpoint import load_checkpoint, save_checkpoint
from adapmtl.cli import main
from adapmtl.config import from_dict
from adapmtl.engine.interrupt import StopRequest, catch
from adapmtl.engine.trainer import NonFiniteLossError, Trainer
from adapmtl.errors import UserError

pytestmark = pytest.mark.slow


def fault_settings() -> dict:
    from conftest import TINY

    settings = copy.deepcopy(TINY)
    settings["train"].update(iterations=6, checkpoint_every=2, val_every=3, log_every=1)
    return settings


def write_config(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    Trainer(from_dict(fault_settings()), run, verbose=False).fit()
    return run


def assert_same_run(run: Path, reference: Path) -> None:
    ours, theirs = load_checkpoint(run / "last.pt"), load_checkpoint(reference / "last.pt")
    assert ours["iteration"] == theirs["iteration"] == 6
    assert ours["model"].keys() == theirs["model"].keys()
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    for name in ("weighting", "optimizer"):
        assert repr(ours[name]) == repr(theirs[name]), name
    assert ours["method"] == theirs["method"]
    assert (run / "log.jsonl").read_text() == (reference / "log.jsonl").read_text()
    assert not list(run.glob(".*.tmp"))  # partial writes were cleaned up


def train_arguments(config: Path, run: Path) -> list[str]:
    return ["train", "--config", str(config), "--out", str(run), "--quiet"]


def start_training(config: Path, run: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "adapmtl", *train_arguments(config, run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def wait_for_iteration(process: subprocess.Popen, log: Path, iteration: int) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training did not progress"
        if log.is_file():
            lines = [line for line in log.read_text().splitlines() if line.endswith("}")]
            if lines and json.loads(lines[-1])["iteration"] >= iteration:
                return
        time.sleep(0.02)


# A training process whose n-th checkpoint write dies half-way: half the bytes reach the
# temporary file, then the process SIGKILLs itself.
DIE_IN_WRITE = """
import io, os, signal, sys
import torch
real_save, calls = torch.save, [0]
def save(obj, handle, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, handle, *args, **kwargs)
torch.save = save
from adapmtl.cli import main
sys.exit(main(sys.argv[2:]))
"""


def die_in_write(config: Path, run: Path, write: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DIE_IN_WRITE, str(write), *train_arguments(config, run)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_sigkill_during_a_checkpoint_write_then_resume_equals_uninterrupted(tmp_path, reference):
    settings = fault_settings()
    config, run = write_config(tmp_path, settings), tmp_path / "run"
    killed = die_in_write(config, run, write=3)  # last.pt at 2, best.pt at 3 (frozen), last.pt
    assert killed.returncode == -signal.SIGKILL
    partial = list(run.glob(".*.pt.*.tmp"))
    assert partial, "the process did not die inside a write"
    stopped_at = load_checkpoint(run / "last.pt")["iteration"]  # complete, not the partial one
    assert stopped_at in (2, 4)
    Trainer(from_dict(settings), run, resume=True, verbose=False).fit()
    assert_same_run(run, reference)


def test_sigkill_at_an_arbitrary_moment_then_resume_equals_uninterrupted(tmp_path, reference):
    settings = fault_settings()
    config, run = write_config(tmp_path, settings), tmp_path / "run"
    process = start_training(config, run)
    try:
        wait_for_iteration(process, run / "log.jsonl", 3)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert load_checkpoint(run / "last.pt")["iteration"] >= 2
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert_same_run(run, reference)


def test_sigkill_in_the_first_checkpoint_write_leaves_a_run_that_cannot_resume(tmp_path, capsys):
    settings = fault_settings()
    config, run = write_config(tmp_path, settings), tmp_path / "run"
    killed = die_in_write(config, run, write=1)
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "last.pt").exists()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    assert "cannot resume: " in capsys.readouterr().err


def test_sigint_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(
    tmp_path, reference, capsys
):
    settings = fault_settings()
    config, run = write_config(tmp_path, settings), tmp_path / "run"

    def interrupt_after_the_first_step() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if (run / "log.jsonl").is_file() and (run / "log.jsonl").read_text():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    interrupter = threading.Thread(target=interrupt_after_the_first_step, daemon=True)
    interrupter.start()
    code = main(train_arguments(config, run))
    interrupter.join()
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGINT
    stopped = load_checkpoint(run / "last.pt")["iteration"]
    assert 1 <= stopped < 6
    assert err == (
        f"adapmtl train: stopped by SIGINT after iteration {stopped} of 6; checkpoint written "
        f"to {run / 'last.pt'}. Resume with: adapmtl train --out {run} --resume\n"
    )
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert_same_run(run, reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_are_recorded_not_fatal(signum):
    previous = signal.getsignal(signum)
    with catch() as request:
        os.kill(os.getpid(), signum)
        time.sleep(0.01)
        assert StopRequest.signal_of(request.vector()) == signum
    assert signal.getsignal(signum) is previous


def test_a_second_sigint_aborts_at_once():
    with pytest.raises(KeyboardInterrupt), catch():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)


class FaultyTrainer(Trainer):
    """Makes the depth loss NaN, a gradient or a weight Inf, at chosen (0-based) steps."""

    nan_at: tuple[int, ...] = ()
    inf_gradient_at: int | None = None
    inf_weight_at: int | None = None

    def _task_losses(self, batch, forward=None, **options):
        losses = super()._task_losses(batch, forward, **options)
        if forward is not None and self.iteration in self.nan_at:
            losses["depth"] = losses["depth"] * float("nan")
        if forward is not None and self.iteration == self.inf_gradient_at:
            losses["depth"].register_hook(lambda grad: grad * float("inf"))
        return losses

    def train_step(self, batch):
        scalars = super().train_step(batch)
        if self.iteration == self.inf_weight_at:
            with torch.no_grad():
                next(self.model.heads["edge"].parameters()).fill_(float("inf"))
        return scalars


def test_nan_loss_stops_with_task_and_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    trainer = FaultyTrainer(from_dict(fault_settings()), run, verbose=False)
    trainer.nan_at = (5,)
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "loss of task 'depth' is nan at iteration 6" in message
    assert f"The last good checkpoint, {run / 'last.pt'}, is kept" in message
    state = load_checkpoint(run / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / "results.json").exists()


def test_nan_loss_with_on_nonfinite_skip_skips_and_counts(tmp_path):
    settings = fault_settings()
    settings["train"]["on_nonfinite"] = "skip"
    trainer = FaultyTrainer(from_dict(settings), tmp_path / "run", verbose=False)
    trainer.nan_at = (2, 4)
    results = trainer.fit()
    assert results["skipped_steps"] == 2
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["skipped_steps"] == 2 and state["iteration"] == 6
    assert state["weighting"]["step"] == 6 - 2  # skipped steps do not reach the weighting
    records = [json.loads(line) for line in (tmp_path / "run/log.jsonl").open()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 4, 6]


def test_an_overflowing_gradient_stops_before_the_optimizer_step(tmp_path):
    run = tmp_path / "run"
    trainer = FaultyTrainer(from_dict(fault_settings()), run, verbose=False)
    trainer.inf_gradient_at = 2
    with pytest.raises(NonFiniteLossError, match=r"gradient of '.+' is not finite at iteration 3"):
        trainer.fit()
    assert load_checkpoint(run / "last.pt")["iteration"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_inf_weight_is_never_saved(tmp_path):
    trainer = FaultyTrainer(from_dict(fault_settings()), tmp_path / "run", verbose=False)
    trainer.inf_weight_at = 3
    with pytest.raises(NonFiniteLossError, match="became NaN or Inf by iteration 4"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 2


def test_too_little_free_space_is_an_error_before_training(tmp_path, monkeypatch, capsys):
    config, run = write_config(tmp_path, fault_settings()), tmp_path / "run"

    class Usage:
        free = 2**20

    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda _: Usage)
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"not enough free space in {tmp_path}:" in err and err.count("\n") == 1
    assert not run.exists()


def test_a_full_disk_during_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "iteration": 1}, path)
    before = path.read_bytes()

    def full_disk(obj, handle, *args, **kwargs):
        handle.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(
        UserError, match=r"No space left on device; the previous last\.pt is intact"
    ):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "iteration": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_output_directory_that_cannot_be_created_is_an_error_before_training(
    tmp_path, capsys, where
):
    config = write_config(tmp_path, fault_settings())
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    run = blocker if where == "file" else blocker / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and err.count("\n") == 1
    assert "is a file" in err or "cannot create output directory" in err
    assert blocker.read_text() == "keep me"
