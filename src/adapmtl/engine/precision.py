"""Mixed precision for the training step (``train.autocast``): the forward pass under
``torch.autocast`` in bfloat16 or float16, everything else in float32.

* The model's weights, the thresholds and Adam's state stay float32; the soft and hard
  thresholds are applied to the float32 weight with autocast off
  (:class:`adapmtl.sparsity.SparseWeight`), and the layer casts the effective weight.
* The predictions are cast back to float32 before the losses, so the task losses, the adaptive
  weighting (paper Eq. 6) and the controller see float32 values.
* ``fp16`` scales the loss with a :class:`torch.amp.GradScaler`: the gradients are unscaled
  right after ``backward`` (the gradient check, the methods and the optimizer see true
  gradients), and a step whose gradients overflowed is skipped with a smaller scale next time,
  as GradScaler does; the overflow is read from the step's one host read, not by GradScaler's
  own ``step``. bf16 has float32's range and needs no scaling.

Evaluation runs in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The training step's precision for ``train.autocast`` (``None``: float32 throughout)."""

    def __init__(self, autocast: str | None, device: torch.device) -> None:
        self.dtype = DTYPES[autocast] if autocast is not None else None
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if autocast == "fp16" else None
        self._unscaled = False

    def forward(self, model: Callable[[torch.Tensor], Any], images: torch.Tensor) -> Any:
        """``model(images)`` under autocast, with float32 predictions."""
        if self.dtype is None:
            return model(images)
        with torch.autocast(self.device.type, dtype=self.dtype):
            outputs = model(images)
        return {name: value.float() for name, value in outputs.items()}

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward of ``loss`` (scaled for fp16), leaving true gradients in ``.grad``."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)  # records the overflow on the device, reads nothing
        self._unscaled = True

    def overflow(self) -> bool:
        """After a step's non-finite gradient: whether the loss scale explains it (fp16). The
        scale is then reduced and the step must be skipped."""
        if self.scaler is None or not self._unscaled:
            return False
        self.stepped()
        return True

    def stepped(self) -> None:
        """After the optimizer step (or a skipped one): update the loss scale."""
        if self.scaler is not None and self._unscaled:
            self.scaler.update()
            self._unscaled = False

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
