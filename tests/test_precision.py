"""Mixed precision (``train.autocast``) on the CPU, where bfloat16 and float16 autocast exist:
the run trains with finite losses, weights and thresholds stay float32 and the thresholds are
applied in float32, float16's loss scale skips an overflowing step and is checkpointed, resume
is exact, and the step still reads the device once."""

from __future__ import annotations

import pytest
import torch

from adapmtl.checkpoint import load_checkpoint
from adapmtl.config import ConfigError, from_dict
from adapmtl.engine.loaders import to_device
from adapmtl.engine.syncs import SyncCounter
from adapmtl.engine.trainer import Trainer
from adapmtl.sparsity import sparse_layers, thresholds
from adapmtl.sparsity.parametrization import threshold_levels_as_tensors


def _settings(tiny_settings, autocast: str, **train) -> dict:
    short = {"iterations": 4, "val_every": 2, "log_every": 2, "checkpoint_every": 2}
    tiny_settings["train"].update({**short, "autocast": autocast, **train})
    return tiny_settings


def test_a_bf16_run_trains_with_float32_weights_and_thresholds(tiny_settings, tmp_path):
    trainer = Trainer(from_dict(_settings(tiny_settings, "bf16")), tmp_path, verbose=False)
    theta_before = {k: v.detach().clone() for k, v in thresholds(trainer.model).items()}
    results = trainer.fit()
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in [results["loss"]])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    moved = [k for k, v in thresholds(trainer.model).items() if not torch.equal(v, theta_before[k])]
    assert moved  # the thresholds trained
    record = (tmp_path / "log.jsonl").read_text().splitlines()[0]
    assert '"loss/total"' in record and "NaN" not in record


def test_the_threshold_is_applied_to_the_float32_weight_under_autocast(tiny_settings, tmp_path):
    trainer = Trainer(from_dict(tiny_settings), tmp_path, verbose=False)
    path, module, _ = next(iter(sparse_layers(trainer.model)))
    expected = module.weight.detach().clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        effective = module.weight
        output = module(torch.randn(1, module.in_channels, 8, 8))
    assert effective.dtype == torch.float32 and torch.equal(effective.detach(), expected), path
    assert output.dtype == torch.bfloat16  # the convolution itself ran in bfloat16
    output.float().sum().backward()
    assert all(
        t.grad is None or t.grad.dtype == torch.float32 for t in thresholds(trainer.model).values()
    )


def test_resume_under_bf16_equals_an_uninterrupted_run(tiny_settings, tmp_path):
    settings = _settings(tiny_settings, "bf16")
    settings["method"] = {"name": "dense"}
    whole = Trainer(from_dict(settings), tmp_path / "whole", verbose=False)
    whole.fit()
    half = from_dict({**settings, "train": {**settings["train"], "iterations": 2}})
    Trainer(half, tmp_path / "split", verbose=False).fit()
    state = load_checkpoint(tmp_path / "split" / "last.pt")
    state["config"] = from_dict(settings).to_dict()  # extended, as --set train.iterations=4
    torch.save(state, tmp_path / "split" / "last.pt")
    Trainer(from_dict(settings), tmp_path / "split", resume=True, verbose=False).fit()
    a = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def _first_batch(trainer: Trainer):
    return to_device(next(trainer._train_batches()), trainer.device)


def test_fp16_skips_an_overflowing_step_with_a_smaller_scale(tiny_settings, tmp_path):
    settings = _settings(tiny_settings, "fp16")
    settings["method"] = {"name": "dense"}
    trainer = Trainer(from_dict(settings), tmp_path, verbose=False)
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    scalars = trainer.train_step(_first_batch(trainer))
    assert scalars == {} and trainer.skipped_steps == 0  # the loss scale's business, not a fault
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.model.parameters(), strict=True))
    assert trainer.precision.scaler.get_scale() == 2.0**119  # GradScaler's backoff factor 0.5
    assert all(p.grad is None for p in trainer.model.parameters())


def test_an_fp16_run_trains_and_checkpoints_its_loss_scale(tiny_settings, tmp_path):
    settings = _settings(tiny_settings, "fp16")
    settings["method"] = {"name": "dense"}
    trainer = Trainer(from_dict(settings), tmp_path / "run", verbose=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    results = trainer.fit()
    assert all(v == v and abs(v) < float("inf") for v in results["loss"].values())
    assert any(
        not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters(), strict=True)
    )
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["scaler"]["scale"] == trainer.precision.scaler.get_scale()
    resumed = Trainer(from_dict(settings), tmp_path / "run", resume=True, verbose=False)
    assert resumed.precision.scaler.get_scale() == state["scaler"]["scale"]


@pytest.mark.parametrize(("autocast", "method"), [("bf16", "adapmtl"), ("fp16", "dense")])
def test_a_mixed_precision_step_reads_the_device_as_often_as_a_float32_step(
    autocast, method, tiny_settings, tmp_path
):
    settings = _settings(tiny_settings, autocast, deterministic=False, iterations=12)
    if method == "dense":
        settings["method"] = {"name": "dense"}
    else:  # starts far below the target: no freeze in these steps
        settings["method"] = {**settings["method"], "options": {"init": -9.0}}
    trainer = Trainer(from_dict(settings), tmp_path, verbose=False)
    trainer.method.on_start(trainer.context)
    batches = trainer._train_batches()
    counts = []
    for _ in range(3):
        batch = to_device(next(batches), trainer.device)
        # the thresholds as on an accelerator (on the CPU they read their level, for free)
        with threshold_levels_as_tensors(), SyncCounter() as syncs:
            trainer.train_step(batch)
        trainer.iteration += 1
        counts.append(syncs.total)
    # the float32 counts of tests/test_gpu_readiness.py: the step's read, plus the controller's;
    # fp16's first steps overflow at GradScaler's initial scale and are skipped without a read
    assert counts == [2 if method == "adapmtl" else 1] * 3


def test_timed_algorithms_cannot_be_deterministic(tiny_settings):
    tiny_settings["train"].update(cudnn_benchmark=True, deterministic=True)
    with pytest.raises(ConfigError, match=r"train\.cudnn_benchmark.*deterministic"):
        from_dict(tiny_settings)
    tiny_settings["train"].update(autocast="fp8", cudnn_benchmark=False)
    with pytest.raises(ConfigError, match=r"train\.autocast.*'fp8'"):
        from_dict(tiny_settings)
