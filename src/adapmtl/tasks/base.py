"""The two interfaces every task type implements: :class:`Task` and :class:`Metric`.

Shared conventions (docs/architecture.md, docs/reference_implementations.md):

* predictions come at head resolution ``[B, C, h, w]``; targets at label resolution;
* losses resize the *target* to the prediction by nearest neighbour, metrics resize the
  *prediction* to the target by nearest neighbour (``F.interpolate(mode="nearest")``, as the
  reference implementations do);
* losses average over the valid pixels of the whole batch; a batch without a valid pixel gives a
  zero loss that still has a ``grad_fn``;
* metrics accumulate summable sufficient statistics (``state()``), so states of several processes
  can be added (all-reduced) before ``compute()``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_nearest(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Resize the last two dims of ``x`` (``[B, C, H, W]`` or ``[B, H, W]``) by nearest neighbour.

    Integer tensors (segmentation labels) go through float32, which holds every label exactly.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    squeeze = x.ndim == 3
    y = x.unsqueeze(1) if squeeze else x
    y = F.interpolate(y if y.is_floating_point() else y.float(), size=size, mode="nearest")
    y = y.to(x.dtype)
    return y.squeeze(1) if squeeze else y


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid`` (same shape); 0 with a grad_fn when nothing is valid."""
    count = valid.sum()
    total = (values * valid).sum()
    return total / count.clamp_min(1).to(total.dtype)


def cross_entropy_mean(
    pred: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int = -100
) -> Tensor:
    """Cross-entropy averaged over non-ignored targets (weighted mean when ``weight`` is given),
    as ``F.cross_entropy(reduction="mean")`` but 0 with a ``grad_fn`` when nothing is valid.

    Computed as ``-log_softmax`` picked at the target class with ``gather`` and summed: PyTorch
    has no deterministic CUDA kernel for ``nll_loss`` (``train.deterministic`` would refuse it),
    while ``gather`` and sums are deterministic. Labels outside ``[0, C)`` count as ignored (the
    tasks' ``check`` rejects them first unless the caller asked it not to read values).
    """
    valid = (target != ignore_index) & (target >= 0) & (target < pred.shape[1])
    safe = torch.where(valid, target, 0)
    picked = -pred.log_softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    per_item = valid.to(pred.dtype) if weight is None else weight[safe] * valid
    total = torch.where(valid, picked * per_item, 0.0).sum()
    denom = per_item.sum()
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def shape_str(t: Tensor) -> str:
    """``[2, 3, 4]`` for error messages."""
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


class Task(ABC):
    """One prediction task: output channels, loss, metric and what counts as a valid target.

    Subclasses set ``name``, ``channels`` and ``metric_directions`` (metric name -> True when a
    higher value is better, in the order the paper's tables list them): the metrics the task
    reports and Delta_T scores. Tasks that can compute more metrics than they report by default
    list them all in ``METRICS`` and take a ``metrics`` option (:func:`select_metrics`).
    """

    name: str
    channels: int
    metric_directions: dict[str, bool]
    METRICS: ClassVar[dict[str, bool]] = {}

    @abstractmethod
    def valid_mask(self, target: Tensor) -> Tensor:
        """Boolean mask of valid target elements (``[B, H, W]`` for dense tasks, ``[B]`` else)."""

    @abstractmethod
    def check(self, pred: Tensor, target: Tensor, *, values: bool = True) -> None:
        """Raise ``ValueError`` naming the task and what was expected if the inputs are unusable.
        ``values=False`` checks shapes and dtypes only (nothing read from the device)."""

    @abstractmethod
    def loss(self, pred: Tensor, target: Tensor, *, check_values: bool = True) -> Tensor:
        """Scalar training loss of ``pred`` against ``target``. ``check_values=False`` reads
        nothing on the host (no GPU synchronisation): invalid target values are then left out of
        the loss, and :meth:`target_problem` tells whether there were any."""

    def target_problem(self, target: Tensor) -> Tensor:
        """0-d boolean tensor, on the target's device: True when :meth:`check` would reject the
        target's values. Computed without a host read."""
        return torch.zeros((), dtype=torch.bool, device=target.device)

    @abstractmethod
    def new_metric(self) -> Metric:
        """A fresh, empty metric accumulator for this task."""

    def error(self, message: str) -> ValueError:
        return ValueError(f"task {self.name!r}: {message}")

    def check_finite(self, pred: Tensor) -> None:
        if not pred.is_floating_point():
            raise self.error(f"prediction must be a floating-point tensor, got {pred.dtype}")
        if not bool(torch.isfinite(pred).all()):
            raise self.error("prediction contains NaN or Inf values")

    def check_dense(
        self, pred: Tensor, target: Tensor, target_channels: int | None, *, values: bool = True
    ) -> None:
        """Shape/dtype checks shared by dense tasks, and (``values``) a finite prediction.

        ``target_channels`` is the target's channel count (``[B, C, H, W]``), or ``None`` for a
        label map ``[B, H, W]`` (segmentation).
        """
        if pred.ndim != 4 or pred.shape[1] != self.channels:
            raise self.error(
                f"prediction must have shape [B, {self.channels}, h, w], got {shape_str(pred)}"
            )
        if target_channels is None:
            if target.ndim != 3:
                raise self.error(f"target must have shape [B, H, W], got {shape_str(target)}")
            if target.is_floating_point() or target.dtype == torch.bool:
                raise self.error(f"target must hold integer class ids, got {target.dtype}")
        else:
            if target.ndim != 4 or target.shape[1] != target_channels:
                raise self.error(
                    f"target must have shape [B, {target_channels}, H, W], got {shape_str(target)}"
                )
            if not target.is_floating_point():
                raise self.error(f"target must be a floating-point tensor, got {target.dtype}")
        if pred.shape[0] != target.shape[0]:
            raise self.error(
                f"batch size differs: prediction {shape_str(pred)} vs target {shape_str(target)}"
            )
        if values:
            self.check_finite(pred)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, channels={self.channels})"


class Metric(ABC):
    """Accumulates summable sufficient statistics over an evaluation set.

    ``state()`` returns copies of the statistics (a dict of tensors: counts as int64, sums as
    float64); adding the states of several processes element-wise and loading the sum with
    ``load_state`` gives the metric over all their data. ``compute()`` turns the statistics into
    the reported numbers (``dict[str, float]``, keys as the task's ``metric_directions``).
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self._state = self._zero_state()

    @abstractmethod
    def _zero_state(self) -> dict[str, Tensor]:
        """The statistics of an empty evaluation set (on the CPU)."""

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch (prediction at head resolution, target at label resolution)."""

    @abstractmethod
    def _compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        """Metrics from ``state`` (CPU tensors)."""

    def compute(self) -> dict[str, float]:
        return self._compute({k: v.detach().cpu() for k, v in self._state.items()})

    def state(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self._state.items()}

    def merge(self, other_state: Mapping[str, Tensor]) -> None:
        """Add another metric's ``state()`` (e.g. from another process or data shard)."""
        self._check_state(other_state)
        for key, value in other_state.items():
            own = self._state[key]
            self._state[key] = own + value.to(device=own.device, dtype=own.dtype)

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Replace the statistics, e.g. with the all-reduced sum of every process's ``state()``."""
        self._check_state(state)
        self._state = {
            k: state[k].detach().to(device=v.device, dtype=v.dtype).clone()
            for k, v in self._state.items()
        }

    def reset(self) -> None:
        self._state = self._zero_state()

    def add(self, **increments: Tensor) -> None:
        """Add per-batch increments to the statistics, following the data's device."""
        for key, value in increments.items():
            own = self._state[key]
            if own.device != value.device:
                own = own.to(value.device)
            self._state[key] = own + value.to(own.dtype)

    def _check_state(self, state: Mapping[str, Tensor]) -> None:
        expected = self._zero_state()
        if set(state) != set(expected):
            raise ValueError(
                f"task {self.task.name!r}: metric state must have keys {sorted(expected)}, "
                f"got {sorted(state)}"
            )
        for key, zero in expected.items():
            if tuple(state[key].shape) != tuple(zero.shape):
                raise ValueError(
                    f"task {self.task.name!r}: metric state {key!r} must have shape "
                    f"{shape_str(zero)}, got {shape_str(state[key])}"
                )

    def no_data_error(self) -> ValueError:
        return self.task.error("the metric has seen no valid pixel/sample; nothing to compute")


def batch_weighted(mean: Tensor, batch_size: int) -> dict[str, Tensor]:
    """Increments for the references' per-batch averaging: batch mean x batch size, and B.

    Used by the ``"batch"`` averaging options (the references' per-batch means): the result is
    sum_b(mean_b * B_b) / sum_b(B_b). A batch with no valid pixel contributes nothing.
    """
    return {
        "batch_sum": mean.detach().double() * batch_size,
        "batch_samples": torch.tensor(batch_size, dtype=torch.int64, device=mean.device),
    }


AVERAGES = ("pooled", "batch")


def select_metrics(
    task: str, available: Mapping[str, bool], chosen: Sequence[str] | None, default: Sequence[str]
) -> dict[str, bool]:
    """``metric_directions`` of a task reporting ``chosen`` (``default`` when ``None``) out of
    ``available`` (metric -> higher is better), in the order of ``available``."""
    names = list(default if chosen is None else chosen)
    if isinstance(chosen, str) or not names:
        raise ValueError(
            f"task {task!r}: metrics must be a non-empty list of metric names (of "
            f"{list(available)}), got {chosen!r}"
        )
    unknown = [m for m in names if m not in available]
    if unknown:
        raise ValueError(
            f"task {task!r}: unknown metric {unknown[0]!r}; available: {', '.join(available)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"task {task!r}: metrics lists a metric twice: {names}")
    return {m: higher for m, higher in available.items() if m in names}


def check_choice(task: str, option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"task {task!r}: {option} must be one of {list(choices)}, got {value!r}")
