"""Two processes under ``torchrun --standalone --nproc_per_node=2`` (CPU, gloo) on the tiny scenes
preset: every synchronisation point against a single-process computation, identical replicas
after training, agreement with a one-process run, a NaN on one process, a SIGTERM to one process,
and resuming with a different number of processes.

Agreement with one process on the same global batches is tested on the tiny preset made
independent of how a batch is split (tests/distributed_worker.py ``SplitInvariantTrainer``: no
dropout, BatchNorm on its running statistics). Then one process and two compute the same run and
differ only by float32 rounding (the all-reduce sums in another order): sparsity, controller
decision and masks equal; losses and metrics within 1e-4 relative (measured: 1e-7); weights
within 1e-4 absolute + 1e-3 relative, a tenth of one Adam step at lr 1e-3 (measured: 1.5e-5).
On the preset as is, processes normalise BatchNorm over their own 2 of the 4 images and draw
other dropout masks; after 12 iterations of a near-random model that moves losses and metrics
by up to 20 % (benchmarks/ddp_agreement.py, docs/results/ddp_agreement.md), so that run is only
checked for identical replicas and the controller's sparsity.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from adapmtl.checkpoint import load_checkpoint
from adapmtl.config import apply_overrides, from_dict
from adapmtl.engine.trainer import Trainer

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def tiny() -> dict:
    from conftest import TINY

    return copy.deepcopy(TINY)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The split-invariant tiny preset trained by one process."""
    from distributed_worker import SPLIT_INVARIANT, SplitInvariantTrainer

    settings = apply_overrides(tiny(), SPLIT_INVARIANT)
    trainer = SplitInvariantTrainer(
        from_dict(settings), tmp_path_factory.mktemp("one"), verbose=False
    )
    results = trainer.fit()
    return results, trainer.model.state_dict()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """tests/distributed_worker.py under torchrun (see its docstring)."""
    out = tmp_path_factory.mktemp("two")
    config = out / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny()))
    done = torchrun(str(HERE / "distributed_worker.py"), str(config), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def load_ranks(directory: Path) -> tuple[dict, dict]:
    return tuple(torch.load(directory / f"rank{r}.pt", weights_only=True) for r in (0, 1))


def test_each_synchronisation_point_matches_one_process(two_processes):
    seen = [torch.load(two_processes / f"checks{r}.pt", weights_only=False) for r in (0, 1)]
    for rank, checks in enumerate(seen):
        # rank 0's error reaches rank 1 as one it must not print again
        expected = "UserError" if rank == 0 else "MainRankError"
        assert checks["on_main"] == (expected, "output directory is not writable (seen by rank 0)")
        assert "the rank number differs between processes" in checks["check_same"]
        # a file every rank reads: rank 1's failure stops both, rank 0 names the rank
        message = "checkpoint /not/shared/last.pt does not exist"
        if rank == 0:
            expected = ("UserError", f"process 1 of 2: {message} (a hint)")
        else:
            expected = ("MainRankError", message)
        assert checks["each"] == expected
        assert checks["each_ok"] == 10 + rank
        # sharded evaluation with summed statistics = one process over the whole split
        sharded, single = checks["eval_sharded"], checks["eval_single"]
        assert sharded["loss"] == pytest.approx(single["loss"], rel=1e-12)
        for task, metrics in single["metrics"].items():
            assert sharded["metrics"][task] == pytest.approx(metrics, rel=1e-12, abs=1e-12)
        # DDP's gradients (thresholds included) = the mean of the two halves' gradients
        reference, ddp = checks["grad_reference"], checks["grad_ddp"]
        assert set(ddp) == set(reference)
        assert set(checks["threshold_names"]) <= set(ddp)
        for name, grad in reference.items():
            torch.testing.assert_close(ddp[name], grad, rtol=1e-6, atol=1e-9)
        # after freezing, the thresholds get no gradient, DDP was re-wrapped and still works
        assert not set(checks["threshold_names"]) & set(checks["grad_after_freeze"])
        assert checks["wraps"] == 2
        # no buffer broadcast before a forward pass; sync_buffers gives rank 0's statistics
        assert torch.equal(
            checks["running_mean_after_forward"],
            torch.full_like(checks["running_mean_after_forward"], float(rank)),
        )
        assert not checks["running_mean_after_sync"].any()
        # a mask change is no re-wrap; the agreement vector tells equal masks from diverged ones
        assert checks["wraps_after_mask_change"] == 2
        assert checks["agreement_same"] == 0.0
        assert checks["agreement_diverged"] > 0.0
        # rank 0's tensors everywhere, sent as tensors (nothing pickled holds one)
        assert checks["shared_mask"].all() and checks["shared_mask"].dtype == torch.bool
        shared = checks["shared_state"]
        assert torch.equal(shared["w"][0], torch.zeros(2, 3)) and shared["w"][1] == 4
        assert shared["t"] == (0,)
        assert not checks["pickled_tensors"]


def test_two_processes_end_identical(two_processes):
    run = two_processes / "run"
    rank0, rank1 = load_ranks(run)
    # identical replicas: weights, thresholds, BatchNorm statistics, masks
    assert rank0["model"].keys() == rank1["model"].keys()
    assert any(k.startswith("sparsity_thresholds.") for k in rank0["model"])
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key
    # identical task weights (losses all-reduced before the weighting) and decisions
    assert torch.equal(rank0["task_weights"], rank1["task_weights"])
    assert not torch.equal(rank0["task_weights"], torch.ones(5))  # the weighting did act
    assert torch.equal(rank0["weighting"]["history"], rank1["weighting"]["history"])
    assert rank0["method"] == rank1["method"]
    assert rank0["method"]["controller"]["frozen_at"] is not None
    # the default recipe moves its thresholds without gradients: freezing the masks leaves the
    # trainable parameters as they were, so the model is wrapped once (the paper recipe's
    # re-wrap is checked above)
    assert rank0["wraps"] == rank1["wraps"] == 1
    # no buffer broadcast and no structure all-gather per step: the first step's wrap sends
    # rank 0's parameters and buffers once, then the steps make all-reduces only
    for rank in (rank0, rank1):
        assert rank["collectives"][0] == ["_broadcast_coalesced"]
        assert rank["collectives"][1:] == [[]] * 5, rank["collectives"]
    assert abs(rank0["results"]["sparsity"]["overall"]["sparsity"] - 0.5) <= 0.005
    # only rank 0 wrote the run, and its checkpoint holds the replicas' weights
    state = load_checkpoint(run / "last.pt")
    for key, value in rank0["model"].items():
        assert torch.equal(value, state["model"][key]), key
    assert json.loads((run / "meta.json").read_text())["world_size"] == 2


def test_two_processes_compute_the_one_process_run(two_processes, one_process):
    reference, reference_model = one_process
    rank0, rank1 = load_ranks(two_processes / "split_invariant")
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key
    results = rank0["results"]
    assert results["sparsity"]["overall"] == reference["sparsity"]["overall"]
    assert results["method"] == reference["method"]
    assert results["loss"] == pytest.approx(reference["loss"], rel=1e-4)
    for task, metrics in reference["metrics"].items():
        assert results["metrics"][task] == pytest.approx(metrics, rel=1e-4, abs=1e-9), task
    for key, value in reference_model.items():
        if value.is_floating_point():
            torch.testing.assert_close(rank0["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)
        else:
            assert torch.equal(rank0["model"][key], value), key  # masks


def test_two_processes_resume_each_reading_the_checkpoint(two_processes):
    rank0, rank1 = load_ranks(two_processes / "resumed")
    assert rank0["start"] == rank1["start"] == 6
    assert not rank0["pickled_tensors"] and not rank1["pickled_tensors"]
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key
    assert load_checkpoint(two_processes / "resumed" / "last.pt")["iteration"] == 8


def test_dynamic_sparse_training_keeps_the_replicas_identical_without_rewrapping(two_processes):
    rank0, rank1 = load_ranks(two_processes / "disparse")
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key
    summary = rank0["results"]["method"]
    assert summary["updates"] >= 3 and summary["fixed_at"] is not None
    assert rank0["wraps"] == rank1["wraps"] == 1
    # each update sends rank 0's regrowth once (one broadcast per dtype: the boolean masks)
    broadcasts = [steps.count("broadcast") for steps in rank0["collectives"]]
    assert sum(broadcasts) == summary["updates"], broadcasts
    allowed = {"broadcast", "_broadcast_coalesced"}  # the latter: the first wrap's only
    assert all(set(steps) <= allowed for steps in rank0["collectives"])


def test_the_paper_recipe_is_rewrapped_at_the_freeze_and_stays_identical(two_processes):
    rank0, rank1 = load_ranks(two_processes / "paper")
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key
    assert rank0["method"]["controller"]["frozen_at"] is not None
    assert rank0["wraps"] == rank1["wraps"] == 2
    # the re-wrap sends nothing: only the first step's wrap broadcasts
    assert rank0["collectives"][0] == ["_broadcast_coalesced"]
    assert not any(rank0["collectives"][1:])


def test_a_mask_changed_on_one_process_stops_both(two_processes):
    seen = [torch.load(two_processes / "diverge" / f"rank{r}.pt") for r in (0, 1)]
    for iteration, message in seen:
        assert iteration == 2  # the third step, the first after the change, did not complete
        assert "disagree on the trainable parameters or masks" in message


def test_a_nan_on_one_process_is_skipped_by_all(two_processes):
    rank0, rank1 = load_ranks(two_processes / "skip")
    assert rank0["skipped_steps"] == rank1["skipped_steps"] == 1
    assert rank0["weighting_steps"] == rank1["weighting_steps"] == 2
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key


def _worker_of_rank(agent: int, rank: int) -> int:
    for _ in range(200):
        children = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
        for pid in children:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} under torchrun {agent}")


def test_sigterm_to_one_process_stops_all_and_resumes_with_one(tmp_path):
    settings = tiny()
    # room for the signal to land before the end on a loaded machine (12 iterations of the tiny
    # run can all pass between the first log line and the SIGTERM)
    iterations = settings["train"]["iterations"] = 60
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(settings))
    run = tmp_path / "run"
    log = run / "log.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN, "-m", "adapmtl", "train", "--config", str(config), "--out", str(run)]
    command.append("--quiet")
    agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        rank1 = _worker_of_rank(agent.pid, 1)
        deadline = time.monotonic() + 180
        while not (log.is_file() and log.read_text().strip()):  # iteration 3 was logged
            assert agent.poll() is None and time.monotonic() < deadline, "run did not start"
            time.sleep(0.05)
        os.kill(rank1, signal.SIGTERM)
        _, err = agent.communicate(timeout=180)
    finally:
        if agent.poll() is None:
            agent.kill()
    err = err.decode()
    stopped = load_checkpoint(run / "last.pt")["iteration"]
    assert 3 <= stopped < iterations
    # rank 0 reports where both processes stopped and how to resume
    assert f"stopped by SIGTERM after iteration {stopped} of {iterations}" in err
    assert "--resume" in err
    assert max(json.loads(line)["iteration"] for line in log.read_text().splitlines()) <= stopped
    # resume the two-process run with one process
    resumed = Trainer(from_dict(settings), run, resume=True, verbose=False).fit()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    train_iterations = [r["iteration"] for r in records if r["kind"] == "train"]
    assert train_iterations == sorted(set(train_iterations))  # nothing logged twice
    assert load_checkpoint(run / "last.pt")["iteration"] == iterations
    assert abs(resumed["sparsity"]["overall"]["sparsity"] - 0.5) <= 0.005
