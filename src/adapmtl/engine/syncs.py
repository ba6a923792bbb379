"""Counting host synchronisations on any device, the CPU included.

On a GPU, the host waits for the device whenever Python needs a tensor's *value*: ``.item()``,
``bool()``/``int()``/``float()`` (and so ``if tensor:``), ``.tolist()``, ``.cpu()``/``.numpy()``
of a device tensor, and operations whose output shape depends on the data (boolean-mask
indexing, ``nonzero``, ``masked_select``, ``unique``). ``torch.cuda.set_sync_debug_mode`` reports
these on CUDA only; :class:`SyncCounter` records the same events on any device, so a CPU test can
assert how many a training step makes. It is a proxy, and a conservative one: it counts every such
call, although on the CPU none of them waits for anything. One exception: reads inside
``Optimizer.step`` are not counted. Adam keeps its step counts on the host (PyTorch's default,
``capturable=False``) even when the parameters are on a GPU, and reads them there without
waiting for the device.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# value reads reach the dispatcher as one op; data-dependent shapes as these
_DISPATCH_SYNCS = {
    torch.ops.aten._local_scalar_dense.default: "value read (item/bool/int/float)",
    torch.ops.aten.nonzero.default: "nonzero",
    torch.ops.aten.masked_select.default: "masked_select",
    torch.ops.aten._unique2.default: "unique",
    torch.ops.aten.unique_consecutive.default: "unique",
    torch.ops.aten.unique_dim.default: "unique",
}
# these copy to the host without passing through the dispatcher on the CPU
_FUNCTION_SYNCS = {
    torch.Tensor.tolist: "tolist",
    torch.Tensor.cpu: "cpu",
    torch.Tensor.numpy: "numpy",
}


def _bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices if i is not None
    )


class _Dispatch(TorchDispatchMode):
    def __init__(self, counts: Counter[str], paused: list[bool]) -> None:
        super().__init__()
        self.counts = counts
        self.paused = paused

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.paused[0]:
            pass
        elif func in _DISPATCH_SYNCS:
            self.counts[_DISPATCH_SYNCS[func]] += 1
        elif func is torch.ops.aten.index.Tensor and _bool_index(args):
            self.counts["boolean-mask indexing"] += 1
        return func(*args, **(kwargs or {}))


class _Function(TorchFunctionMode):
    def __init__(self, counts: Counter[str], paused: list[bool]) -> None:
        super().__init__()
        self.counts = counts
        self.paused = paused

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _FUNCTION_SYNCS and not self.paused[0]:
            self.counts[_FUNCTION_SYNCS[func]] += 1
        return func(*args, **(kwargs or {}))


class SyncCounter:
    """Context manager counting host synchronisations by kind (``counts``) and in all
    (``total``)::

        with SyncCounter() as syncs:
            trainer.train_step(batch)
        assert syncs.total == 1, syncs.counts
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._paused = [False]
        self._modes = (_Function(self.counts, self._paused), _Dispatch(self.counts, self._paused))
        self._hooks: list[Any] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _pause(self, paused: bool) -> Any:
        def hook(*_: Any) -> None:
            self._paused[0] = paused

        return hook

    def __enter__(self) -> SyncCounter:
        self._hooks = [
            register_optimizer_step_pre_hook(self._pause(True)),
            register_optimizer_step_post_hook(self._pause(False)),
        ]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        for handle in self._hooks:
            handle.remove()
        self._paused[0] = False
