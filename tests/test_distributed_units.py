"""The distributed helpers in one process: job layout from the environment, device rules, the
sharded evaluation batches, what counts as a change of the model's structure, the stop
request, the log truncation of a resumed run and the checkpoint helpers."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from torch import nn

from adapmtl.checkpoint import describe_mismatch, remove_partial_writes
from adapmtl.engine.distributed import Distributed, from_environment, structure
from adapmtl.engine.interrupt import StopRequest, TrainingInterruptedError
from adapmtl.engine.sampling import ShardedEvalSampler
from adapmtl.errors import UserError
from adapmtl.rundir import truncate_log
from adapmtl.sparsity import freeze_masks, sparsify


@pytest.mark.parametrize(
    ("size", "batch", "max_batches", "world"),
    [(10, 3, None, 1), (10, 3, None, 2), (10, 3, None, 3), (7, 2, 3, 2), (2, 4, None, 3)],
)
def test_sharded_eval_batches_are_the_single_process_batches_dealt_out(
    size, batch, max_batches, world
):
    single = [list(range(i, min(i + batch, size))) for i in range(0, size, batch)]
    single = single[:max_batches]
    shards = [
        list(ShardedEvalSampler(size, batch, max_batches=max_batches, rank=r, world_size=world))
        for r in range(world)
    ]
    dealt = [shards[i % world][i // world] for i in range(len(single))]
    assert dealt == single
    assert sum(len(s) for s in shards) == len(single)


def test_layout_from_the_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert from_environment() == Distributed()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert from_environment() == Distributed(rank=3, world_size=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match=r"RANK=4 is not in \[0, WORLD_SIZE=4\)"):
        from_environment()
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(UserError, match="must be integers"):
        from_environment()


def test_one_process_needs_no_collectives():
    dist = Distributed()
    value = torch.tensor([1.0, 2.0])
    summed = dist.sum(value)
    assert torch.equal(summed, value) and summed is not value
    assert dist.on_main(lambda: 7) == 7
    assert dist.broadcast({"a": 1}) == {"a": 1}
    assert dist.gather("x") == ["x"]
    assert dist.gather_rows(torch.arange(3)).tolist() == [[0, 1, 2]]
    dist.check_same(object(), "anything")


def test_device_per_process():
    worker = Distributed(rank=1, world_size=2, local_rank=1)
    assert worker.device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="pins every process to one GPU"):
        worker.device("cuda:0")


def test_freezing_the_masks_changes_the_structure_ddp_captured():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    sparsify(model, components={"all": ["0", "2"]}, init=-3.0)
    before = structure(model)
    assert structure(model) == before  # stable while nothing changes
    freeze_masks(model)
    after = structure(model)
    trainable_before, buffers_before = before
    trainable_after, buffers_after = after
    assert set(trainable_before) - set(trainable_after) == {"sparsity_thresholds.all"}
    assert [n for n, _ in buffers_before] == [n for n, _ in buffers_after]
    assert buffers_before != buffers_after  # the mask buffers were replaced


def test_stop_request_vector_and_signal():
    request = StopRequest()
    assert StopRequest.signal_of(request.vector()) is None
    assert StopRequest.signal_of([0.0, 3.0]) == signal.SIGTERM
    assert StopRequest.signal_of([1.0, 1.0]) == signal.SIGINT
    assert TrainingInterruptedError(signal.SIGTERM, "stopped").exit_code == 143


def test_truncate_log_keeps_complete_records_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"kind": "train", "iteration": i} for i in (1, 2, 3, 4)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tra')
    truncate_log(log, 2)
    assert [json.loads(line) for line in log.read_text().splitlines()] == records[:2]


def test_partial_checkpoint_writes_are_removed_and_nothing_else(tmp_path):
    keep = [tmp_path / "last.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    drop = [tmp_path / ".last.pt.123.ab12cd34.tmp", tmp_path / ".best.pt.9.00ff00ff.tmp"]
    for path in keep + drop:
        path.write_bytes(b"x")
    assert sorted(remove_partial_writes(tmp_path)) == sorted(drop)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_describe_mismatch_names_missing_unexpected_and_reshaped_keys():
    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "mask": torch.zeros(0)}
    assert describe_mismatch(expected, {**expected, "a": torch.ones(2)}) is None
    assert describe_mismatch(expected, {**expected, "mask": torch.ones(4, 4)}) is None
    given = {"a": torch.ones(5), "c": torch.ones(1), "mask": torch.ones(7)}
    text = describe_mismatch(expected, given)
    assert text == (
        "1 missing (e.g. 'b'); 1 unexpected (e.g. 'c'); 1 of another shape "
        "(e.g. 'a': [5] in the checkpoint, [2] in the model)"
    )
