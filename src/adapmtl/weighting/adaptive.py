"""Adaptive task weighting from loss stability (paper Section 3.3, Eq. 6).

For task t, with ``r_t = dL_t / L_t`` the deviation of its loss over a sliding window relative to
the current loss,

    beta_t = (r_t / ((1/T) sum_k r_k))^-1 * lambda * |W_B| / sum_k |W_k|

where |W_B| and |W_k| are the parameter counts of the backbone and of head k. A task whose loss
is stable (small r_t) gets a larger weight, so its head is pruned more aggressively (the paper's
argument). During a warm-up all weights are 1. By default the common factor lambda * |W_B| /
sum_k |W_k| is left out (see ``lam`` below for why); giving ``lam`` restores Eq. 6 as written.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from adapmtl.components import component_of, model_components, owner_path
from adapmtl.weighting.base import WEIGHTINGS, Weighting

MODES = ("paper", "official")
DEVIATIONS = ("window", "adjacent")
# lam * |W_B| / sum |W_t| outside this range gets a warning when a run builds the weighting
LOSS_SCALE_RANGE = (0.5, 2.0)


def param_ratio(model: nn.Module, backbone: str = "backbone") -> float:
    """|W_B| / sum_t |W_t| of Eq. 6: the parameters of the shared component ``backbone`` over
    those of every other component (the heads).

    The components are the model's (:func:`adapmtl.components.model_components`): those it was
    sparsified with (``sparsify(components=...)``), else ``model.components()``, else
    ``model.backbone`` and ``model.heads``. A parameter counts for the component that claims its
    module (a sparsified weight as its stored original); thresholds belong to no component."""
    patterns = model_components(model)
    if backbone not in patterns:
        raise ValueError(
            f"param_ratio: the model has no component {backbone!r} (components: "
            f"{', '.join(patterns)}); pass backbone=<the shared component's name>"
        )
    counts = dict.fromkeys(patterns, 0)
    for name, parameter in model.named_parameters():
        owner = component_of(owner_path(name), patterns)
        if owner is not None:
            counts[owner] += parameter.numel()
    heads = sum(count for name, count in counts.items() if name != backbone)
    if heads == 0:
        raise ValueError(f"param_ratio: the components besides {backbone!r} hold no parameters")
    return counts[backbone] / heads


@WEIGHTINGS.register("adaptive")
class AdaptiveWeighting(Weighting):
    """Loss-stability weighting (paper Eq. 6), or the variant the official code runs.

    Args:
        tasks: task names, in the order of the loss vectors given to :meth:`update`.
        mode: ``paper`` — Eq. 6 as above. ``official`` — the official code:
            d_t = |L_t^{i-1} - L_t^i| / L_t^i is recorded from the end of the warm-up, D_t is its
            mean over the window, and beta_t = T * D_t / sum_k D_k: a *direct* relation (a loss
            that fluctuates more gets a larger weight), weights summing to T.
        window: sliding-window length in iterations (paper: 400; official code: 500).
        warmup: iterations with all weights 1 (supplement Fig. 2: 5000 at full scale).
        lam: the scaling factor lambda of Eq. 6. ``None`` (the default, not the paper's form):
            no common factor, beta_t = (r_t / mean_k r_k)^-1, whose harmonic mean is 1, so the
            total loss keeps about the scale it had in the warm-up. Given: Eq. 6 as written,
            beta_t times ``lam * param_ratio``. That product is the same for every task: it
            rescales the whole task loss from the end of the warm-up on, and on the CPU suites
            such a step change decided comparisons more than the task weights did (lambda 3 is
            0.92 on the NYUv2 ResNet34 split, 0.21 on a MobileNetV2 whose heads hold 94 % of
            the weights, 23 on a small-heads model; docs/methods.md, "The adaptive weighting's
            scale"). The paper presets give lambda explicitly.
        param_ratio: |W_B| / sum_t |W_t| (see :func:`adapmtl.weighting.param_ratio`), used only
            with ``lam``; ``None`` drops the factor lambda * ratio (Table 5's "w/o lambda"
            ablation).
        deviation: ``window`` — the mean absolute deviation of the losses in the window around
            their mean; ``adjacent`` — the mean absolute change between adjacent iterations
            (Table 5's "w/o sliding window": the window is not used to smooth the estimate, only
            the last two losses count).

    Example::

        weighting = AdaptiveWeighting(["seg", "depth", "normal"], window=400, warmup=5000)
        # the paper's form, Eq. 6's factor included:
        # AdaptiveWeighting(..., lam=3.0, param_ratio=param_ratio(model))
        for batch in loader:
            losses = torch.stack([task_loss[t](out[t], y[t]) for t in tasks])
            beta = weighting.update(losses.detach())
            (beta.to(losses) * losses).sum().backward()
    """

    MODEL_DERIVED: ClassVar[tuple[str, ...]] = ("param_ratio",)
    CONFIG_ONLY: ClassVar[dict[str, Any]] = {"use_param_ratio": bool}

    @classmethod
    def from_model(
        cls,
        tasks: Sequence[str],
        model: nn.Module | None = None,
        *,
        use_param_ratio: bool = True,
        **options: Any,
    ) -> AdaptiveWeighting:
        """``param_ratio`` measured on ``model`` (:func:`param_ratio`), or dropped with
        ``use_param_ratio=False`` (Table 5's "w/o lambda"); without a model it stays as
        ``options`` give it.

        Warns when ``lam`` is given and ``lam * param_ratio`` is outside [0.5, 2]: that product
        scales every task loss from the end of the warm-up on, which changes how far Adam steps
        until its second-moment estimate has caught up (about ``1 / (1 - beta2)`` steps) and how
        strong a coupled weight decay is against the task gradient; on the CPU suites such a
        scale decided the comparison more than the task weights did (docs/methods.md).
        """
        given = {
            k: v for k, v in options.items() if model is not None or k not in cls.MODEL_DERIVED
        }
        cls.check_options({**given, "use_param_ratio": use_param_ratio})
        if not use_param_ratio:
            options["param_ratio"] = None
        elif model is not None:
            options["param_ratio"] = param_ratio(model)
        weighting = cls(tasks, **options)
        scale = weighting.loss_scale
        if scale is not None and not LOSS_SCALE_RANGE[0] <= scale <= LOSS_SCALE_RANGE[1]:
            warnings.warn(
                f"adaptive weighting: lam * |W_B| / sum |W_t| = {weighting.lam:g} * "
                f"{weighting.param_ratio:.3g} = {scale:.3g} scales every task loss from the "
                "end of the warm-up on, which changes the optimizer's effective step (and a "
                "coupled weight decay's strength) as much as the task weights do; for the "
                f"task weights alone, leave lam out (the default: no factor), or set it to "
                f"{1 / weighting.param_ratio:.3g} (scale 1) (docs/methods.md, 'The adaptive "
                "weighting's scale')",
                UserWarning,
                stacklevel=2,
            )
        return weighting

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        mode: str = "paper",
        window: int = 400,
        warmup: int = 5000,
        lam: float | None = None,
        param_ratio: float | None = 1.0,
        deviation: str = "window",
    ) -> None:
        super().__init__(tasks)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if deviation not in DEVIATIONS:
            raise ValueError(f"deviation must be one of {DEVIATIONS}, got {deviation!r}")
        if not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an integer >= 2, got {window!r}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup!r}")
        if lam is not None and lam <= 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        if param_ratio is not None and param_ratio <= 0:
            raise ValueError(f"param_ratio must be > 0 or None, got {param_ratio!r}")
        self.mode = mode
        self.window = window
        self.warmup = warmup
        self.lam = None if lam is None else float(lam)
        self.param_ratio = None if param_ratio is None else float(param_ratio)
        self.deviation = deviation
        self.reset()

    @property
    def loss_scale(self) -> float | None:
        """Eq. 6's common factor ``lam * param_ratio`` when the paper's form is in use (both
        given), else None (no factor)."""
        if self.lam is None or self.param_ratio is None:
            return None
        return self.lam * self.param_ratio

    def reset(self) -> None:
        """Forget the loss history and return to the warm-up."""
        self.step = 0
        self.history = torch.zeros(0, len(self.tasks), dtype=torch.float64, device="cpu")
        self.previous: torch.Tensor | None = None
        self.weights = torch.ones(len(self.tasks), device="cpu")

    def _record(self, row: torch.Tensor) -> None:
        self.history = torch.cat([self.history, row[None]])[-self.window :]

    def _follow(self, device: torch.device) -> None:
        """Keep the state on the losses' device (state loaded from a checkpoint is on the CPU)."""
        self.history = self.history.to(device)
        self.weights = self.weights.to(device)
        if self.previous is not None:
            self.previous = self.previous.to(device)

    def update(self, losses: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        losses = self._check(losses)
        self._follow(losses.device)
        if validate and (not torch.isfinite(losses).all() or (losses <= 0).any()):
            raise ValueError(
                "adaptive weighting needs finite, positive task losses, got "
                + ", ".join(
                    f"{t}={v:.4g}" for t, v in zip(self.tasks, losses.tolist(), strict=True)
                )
            )
        if self.mode == "official":
            self._update_official(losses)
        else:
            self._update_paper(losses)
        self.previous = losses
        self.step += 1
        return self.weights.clone()

    def _update_official(self, losses: torch.Tensor) -> None:
        if self.step < self.warmup:
            return
        if self.previous is not None:
            self._record((self.previous - losses).abs() / losses)
        if self.history.shape[0] > 0:
            # no weights while every change recorded so far is zero (torch.where: no host read)
            mean = self.history.mean(dim=0)
            direct = (len(self.tasks) * mean / mean.sum()).float()
            self.weights = torch.where(mean.sum() > 0, direct, self.weights)

    def _relative_deviation(self, losses: torch.Tensor) -> torch.Tensor | None:
        if self.deviation == "adjacent":
            if self.previous is None:
                return None
            return (self.previous - losses).abs() / losses
        if self.history.shape[0] < 2:
            return None
        return (self.history - self.history.mean(dim=0)).abs().mean(dim=0) / losses

    def _update_paper(self, losses: torch.Tensor) -> None:
        self._record(losses)
        if self.step < self.warmup:
            return
        r = self._relative_deviation(losses)
        if r is None:
            return
        beta = (r / r.mean()).reciprocal()
        if self.loss_scale is not None:
            beta = beta * self.loss_scale
        # a task whose loss did not move (r = 0) leaves the weights as they were
        self.weights = torch.where((r > 0).all(), beta.float(), self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "mode": self.mode,
            "step": self.step,
            "history": self.history.clone(),
            "previous": None if self.previous is None else self.previous.clone(),
            "weights": self.weights.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks or state["mode"] != self.mode:
            raise ValueError(
                f"weighting state is for tasks {state['tasks']} in mode {state['mode']!r}, "
                f"not {self.tasks} in mode {self.mode!r}"
            )
        self.step = int(state["step"])
        self.history = state["history"].to(torch.float64)[-self.window :]
        self.previous = state["previous"]
        self.weights = state["weights"].float()
