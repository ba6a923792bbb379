"""GPU readiness checked on a CPU-only machine.

* Device mixing: training steps run with the model, the batch and every state on the ``meta``
  device (which exists everywhere and refuses to meet CPU tensors), under a two-process
  :class:`Distributed` whose all-reduce is an identity, so the synchronisation code runs too.
  What meta cannot run: reading values. The step's one host read (``Trainer.read``) and the
  controller's sparsity read are replaced by fixed values; scoring at initialisation (SNIP,
  DiSparse), the controller's freeze and validation read values by design and run on the CPU.
* Host synchronisations: counted with :class:`SyncCounter` (the CUDA sync debug mode does not
  exist on the CPU).
* Deterministic CUDA: the cross-entropy uses no ``nll_loss`` kernel, which has no deterministic
  CUDA implementation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import adapmtl.sparsity.controller as controller_module
from adapmtl.config import from_dict
from adapmtl.engine.distributed import Distributed, ParallelModel
from adapmtl.engine.loaders import to_device as _to_device
from adapmtl.engine.syncs import SyncCounter
from adapmtl.engine.trainer import Trainer
from adapmtl.sparsity import report
from adapmtl.sparsity.parametrization import threshold_levels_as_tensors
from adapmtl.sparsity.report import overall_sparsity, overall_sparsity_tensor
from adapmtl.tasks.base import cross_entropy_mean
from adapmtl.weighting import AdaptiveWeighting

META = torch.device("meta")


@pytest.fixture(autouse=True)
def _accelerator_threshold_path():
    """Every layer runs the threshold as on an accelerator, where its level stays a tensor; on
    the CPU the parametrization reads the level as a number (no synchronisation there), which
    the counter would count."""
    with threshold_levels_as_tensors():
        yield


class EchoDistributed(Distributed):
    """Two identical processes as far as the trainer can tell: the all-reduce returns twice
    its input."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.world_size


class UnwrappedParallel(ParallelModel):
    """ParallelModel's per-step code (structure, masks, agreement) without DDP itself, which
    needs a process group."""

    def _wrap(self, *, first: bool) -> torch.nn.Module:
        return self.model


def _settings(tiny_settings, method: str) -> dict:
    settings = dict(tiny_settings)
    if method == "dense":
        settings["method"] = {"name": "dense"}
    elif method != "adapmtl":
        settings["method"] = {"name": method, "target": 0.5}
    settings["train"] = {**settings["train"], "deterministic": False}
    return settings


def _on_meta(trainer: Trainer, monkeypatch) -> None:
    trainer.method.on_start(trainer.context)  # scoring at initialisation reads values: CPU
    trainer.model.to(META)
    trainer.device = trainer.context.device = META
    trainer.dist = EchoDistributed(rank=0, world_size=2)
    trainer.parallel = UnwrappedParallel(trainer.model, trainer.dist, META)
    monkeypatch.setattr(trainer, "read", lambda values: [0.0] * values.numel())
    monkeypatch.setattr(controller_module, "overall_sparsity", lambda model: 0.0)


# LTH's rewind loads its CPU snapshot of the initial weights: a no-op on meta, a copy on CUDA
@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
@pytest.mark.parametrize("method", ["adapmtl", "dense", "snip", "lth"])
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_training_steps_run_with_every_tensor_on_a_non_cpu_device(
    method, mode, tiny_settings, tmp_path, monkeypatch
):
    settings = _settings(tiny_settings, method)
    settings["weighting"] = {
        "name": "adaptive",
        "options": {"mode": mode, "window": 3, "warmup": 2},
    }
    trainer = Trainer(from_dict(settings), tmp_path / "run", verbose=False)
    _on_meta(trainer, monkeypatch)
    batches = trainer._train_batches()
    scalars = None
    for _ in range(6):  # past the weighting's warm-up and window, through a logging step
        scalars = trainer.train_step(_to_device(next(batches), META))
        trainer.iteration += 1
    assert scalars is not None and set(scalars) >= {"loss/total", "weight/seg", "loss/seg"}
    assert trainer.weighting.history.device == META
    assert trainer.weighting.weights.device == META
    assert all(p.device == META for p in trainer.model.parameters())
    assert all(s["exp_avg"].device == META for s in trainer.optimizer.state.values())


def test_metric_statistics_follow_the_data_onto_the_device(tiny_settings, tmp_path):
    trainer = Trainer(from_dict(tiny_settings), tmp_path / "run", verbose=False)
    for task in trainer.tasks.values():
        metric = task.new_metric()  # starts on the CPU
        increments = {k: torch.zeros_like(v, device=META) for k, v in metric.state().items()}
        metric.add(**increments)  # as update() does with a batch on the device
        assert all(v.device == META for v in metric.state().values())
        metric.merge(increments)  # another process's statistics, all-reduced on the device
        metric.load_state(increments)
        assert all(v.device == META for v in metric.state().values())


def _trainer(tiny_settings, tmp_path, method: str, **train) -> Trainer:
    settings = _settings(tiny_settings, method)
    settings["train"] = {**settings["train"], **train}
    if method == "adapmtl":  # starts far below the target: no freeze in these steps
        settings["method"] = {**settings["method"], "options": {"init": -9.0}}
    trainer = Trainer(from_dict(settings), tmp_path / "run", verbose=False)
    trainer.method.on_start(trainer.context)
    return trainer


def _syncs_per_step(trainer: Trainer, steps: int) -> list[int]:
    batches = trainer._train_batches()
    counts = []
    for _ in range(steps):
        batch = _to_device(next(batches), trainer.device)
        with SyncCounter() as syncs:
            trainer.train_step(batch)
        trainer.iteration += 1
        counts.append(syncs.total)
    return counts


def test_a_dense_training_step_reads_the_device_once_logging_steps_included(
    tiny_settings, tmp_path
):
    trainer = _trainer(tiny_settings, tmp_path, "dense", log_every=2)
    assert _syncs_per_step(trainer, 6) == [1] * 6  # steps 2, 4 and 6 log


def test_an_adapmtl_step_adds_only_the_controllers_one_sparsity_read(tiny_settings, tmp_path):
    trainer = _trainer(tiny_settings, tmp_path, "adapmtl")
    # the model has dozens of sparsified layers; the controller reads their sum once
    assert len(report(trainer.model).layers) > 20
    assert _syncs_per_step(trainer, 6) == [2] * 6


def test_a_two_process_step_folds_the_structure_check_into_its_one_read(tiny_settings, tmp_path):
    trainer = _trainer(tiny_settings, tmp_path, "snip")  # masks from the first step on
    trainer.dist = EchoDistributed(rank=0, world_size=2)
    trainer.parallel = UnwrappedParallel(trainer.model, trainer.dist, trainer.device)
    # the first step wraps the model: it reads the agreement before the backward pass
    assert _syncs_per_step(trainer, 4) == [2, 1, 1, 1]
    assert trainer.parallel.wraps == 1


def test_the_sync_counter_counts_host_reads_and_not_the_optimizers_host_step_counts():
    x = torch.randn(4, requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=0.1)
    with SyncCounter() as syncs:
        (x * 2).sum().backward()
        optimizer.step()  # Adam reads its CPU step counts: not a device sync
        _ = x[0].item(), bool(x.sum() > 0), x.tolist(), x.detach().cpu(), x[x > 0]
    assert syncs.counts == {
        "value read (item/bool/int/float)": 2,
        "tolist": 1,
        "cpu": 1,
        "boolean-mask indexing": 1,
    }


def test_the_sparsity_report_reads_once_and_the_tensor_form_not_at_all(tiny_settings, tmp_path):
    trainer = _trainer(tiny_settings, tmp_path, "adapmtl")
    model = trainer.model
    with SyncCounter() as tensor_syncs:
        value = overall_sparsity_tensor(model)
    with SyncCounter() as float_syncs:
        overall_sparsity(model)
    with SyncCounter() as report_syncs:
        rep = report(model)
    assert (tensor_syncs.total, float_syncs.total, report_syncs.total) == (0, 1, 1)
    # independent count: exact zeros of every effective weight
    zeros = total = 0
    for layer in rep.layers:
        module = model.get_submodule(layer.path)
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    assert float(value) == pytest.approx(zeros / total, rel=1e-12)
    assert rep.overall.nonzero == total - zeros


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_the_weighting_makes_no_host_read_and_gives_the_checked_weights(mode):
    generator = torch.Generator().manual_seed(0)
    losses = [torch.rand(3, generator=generator) + 0.5 for _ in range(8)]
    checked = AdaptiveWeighting(["a", "b", "c"], mode=mode, window=4, warmup=2)
    unchecked = AdaptiveWeighting(["a", "b", "c"], mode=mode, window=4, warmup=2)
    for row in losses:
        expected = checked.update(row)
        with SyncCounter() as syncs:
            weights = unchecked.update(row, validate=False)
        assert syncs.total == 0
        assert torch.equal(weights, expected)


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch_without_the_nll_loss_kernel(weighted):
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 5, 6, 7, generator=generator, requires_grad=True)
    target = torch.randint(0, 5, (2, 6, 7), generator=generator)
    target[0, :2] = 255
    weight = torch.rand(5, generator=generator) + 0.1 if weighted else None
    seen = []

    class Ops(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Ops():
        ours = cross_entropy_mean(pred, target, weight, ignore_index=255)
        ours.backward()
    expected = F.cross_entropy(pred, target, weight=weight, ignore_index=255)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(expected, pred)
    torch.testing.assert_close(pred.grad, grad)
    # no deterministic CUDA kernel exists for nll_loss: train.deterministic would refuse it
    assert not [op for op in seen if "nll_loss" in op]


def test_a_rejected_target_in_a_training_step_raises_the_tasks_message_before_the_update(
    tiny_settings, tmp_path
):
    trainer = _trainer(tiny_settings, tmp_path, "dense")
    images, targets = _to_device(next(trainer._train_batches()), trainer.device)
    targets["seg"][0, 0, 0] = 200  # the scenes have 8 classes
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with SyncCounter() as syncs, pytest.raises(ValueError, match=r"task 'seg'.*found 200"):
        trainer.train_step((images, targets))
    assert syncs.total > 1  # the step's read, then the task's own check for the message
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.model.parameters(), strict=True))
