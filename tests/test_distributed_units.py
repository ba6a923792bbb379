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
from adapmtl.engine.distributed import Distributed, ParallelModel, from_environment, structure
from adapmtl.engine.interrupt import StopRequest, TrainingInterruptedError
from adapmtl.engine.sampling import ShardedEvalSampler
from adapmtl.errors import UserError
from adapmtl.rundir import truncate_log
from adapmtl.sparsity import freeze_masks, set_masks, sparsify


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


class Unwrapped(ParallelModel):
    """The structure and agreement bookkeeping of ParallelModel, without DDP (no process group
    in one process)."""

    def _wrap(self, *, first: bool) -> nn.Module:
        self.first_flags = [*getattr(self, "first_flags", []), first]
        return self.model


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).relu())


def _toy() -> nn.Module:
    model = Toy()
    sparsify(model, components={"all": ["a", "b"]}, init=-3.0)
    return model


def test_freezing_the_masks_changes_the_structure_ddp_captured_and_a_mask_change_does_not():
    model = _toy()
    before = structure(model)
    assert structure(model) == before  # stable while nothing changes
    freeze_masks(model)
    after = structure(model)
    assert set(before) - set(after) == {"sparsity_thresholds.all"}
    set_masks(model, {"a": torch.rand(4, 3, 3, 3) > 0.5})
    assert structure(model) == after


def test_the_model_is_rewrapped_only_when_the_trainable_parameters_change():
    model = _toy()
    parallel = Unwrapped(model, Distributed(rank=0, world_size=2), torch.device("cpu"))
    images = torch.randn(1, 3, 5, 5)
    parallel(images)
    assert (parallel.wraps, parallel.rewrapped) == (1, True)
    parallel(images)
    assert (parallel.wraps, parallel.rewrapped) == (1, False)
    freeze_masks(model)
    parallel(images)
    assert (parallel.wraps, parallel.rewrapped, parallel.mask_changes) == (2, True, 1)
    set_masks(model, {"b": torch.zeros(2, 4, 1, 1, dtype=torch.bool)})
    parallel(images)
    assert (parallel.wraps, parallel.rewrapped, parallel.mask_changes) == (2, False, 2)
    # the first wrap broadcasts rank 0's parameters and buffers, later ones nothing
    assert parallel.first_flags == [True, False]


def test_the_agreement_vector_is_zero_exactly_when_the_processes_send_the_same():
    dist = Distributed(rank=0, world_size=2)
    images = torch.randn(1, 3, 5, 5)
    models = []
    for _ in range(2):  # the same model on both processes
        torch.manual_seed(0)
        models.append(_toy())
        freeze_masks(models[-1])
    parallels = [Unwrapped(m, dist, torch.device("cpu")) for m in models]
    vectors = [p(images) is not None and p.agreement() for p in parallels]
    same = parallels[0].disagreement(vectors[0] + vectors[1])
    assert same.item() == 0.0
    # one weight pruned more on the second process only: a mask change there
    mask = models[1].b.parametrizations.weight[0].mask.clone()
    mask.view(-1)[mask.view(-1).nonzero()[0]] = False
    set_masks(models[1], {"b": mask})
    parallels[1](images)
    changed = parallels[1].agreement()
    assert parallels[0].disagreement(vectors[0] + changed).item() > 0
    # kept counts above 2**16 are compared exactly too (three 16-bit chunks)
    kept = sum(int(m.parametrizations.weight[0].mask.sum()) for m in (models[0].a, models[0].b))
    values = vectors[0][: len(vectors[0]) // 2]
    assert values[-3:].tolist() == [kept % 2**16, kept // 2**16, 0]


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
