"""ONNX export of a (sparse) multitask model, checked in onnxruntime before it is kept.

The model is baked first (the plain model, pruned weights as exact zeros in the initializers).
It is exported with ``torch.onnx.export(dynamo=True)`` through a wrapper that returns the task
outputs as a tuple in the model's task order, so the graph's input is called :data:`INPUT_NAME`
and each output is called after its task (the exporter names a dict's values after the last
graph node, e.g. ``add_18``, otherwise). The batch dimension is dynamic (``batch``); height and
width are those of the example. Before anything is written, onnxruntime runs the serialised
model on a batch of another size than the example's and every output is compared with
PyTorch's: the export fails when the largest relative error (``max |ort - torch| /
max |torch|``) exceeds ``rtol``. Needs the ``onnx`` extra: ``pip install 'adapmtl[onnx]'``
(onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapmtl.atomic import atomic_write
from adapmtl.errors import UserError
from adapmtl.inference.optimize import relative_error
from adapmtl.sparsity import bake, is_sparsified

INPUT_NAME = "image"
BATCH = "batch"
RTOL = 1e-4
INSTALL_HINT = "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'adapmtl[onnx]'"


def _require_onnx() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserError(f"{INSTALL_HINT} ({err})") from None
    return onnxruntime


class _TaskTuple(nn.Module):
    """``model(x)`` as a tuple of its outputs in ``tasks`` order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module, tasks: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(tasks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(out[task] for task in self.tasks)


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and how it was checked."""

    path: Path
    inputs: list[str]
    outputs: list[str]
    checked_batch: int
    max_rel_error: float


def plain_copy(model: nn.Module) -> nn.Module:
    """The model as a plain module in eval mode: a sparsified model is baked (on a copy)."""
    if is_sparsified(model):
        model = bake(copy.deepcopy(model))
    return model.eval()


def task_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The keys of ``model(example)``, which must be a dict of tensors keyed by task."""
    with torch.no_grad():
        out = model(example)
    if not isinstance(out, dict) or not all(isinstance(v, torch.Tensor) for v in out.values()):
        raise UserError(f"ONNX export expects a model returning {{task: tensor}}, got {type(out)}")
    if INPUT_NAME in out:
        raise UserError(f"a task is called {INPUT_NAME!r}, the name of the ONNX input: rename it")
    return list(out)


def to_onnx_program(model: nn.Module, example: torch.Tensor) -> tuple[Any, list[str]]:
    """The ``torch.onnx.ONNXProgram`` of the plain ``model`` (named input and outputs, dynamic
    batch) and its task order."""
    _require_onnx()
    tasks = task_names(model, example)
    wrapper = _TaskTuple(model, tasks).eval()
    if example.shape[0] < 2:  # torch.export specialises a batch dimension of size 1
        example = torch.cat([example, example])
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it warns about every missing torchvision operator
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export
            program = torch.onnx.export(
                wrapper,
                (example,),
                input_names=[INPUT_NAME],
                output_names=tasks,
                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim(BATCH)}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    return program, tasks


def session(model: str | os.PathLike | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU inference session for an ONNX file or its bytes (``threads``
    intra-op threads)."""
    ort = _require_onnx()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_session(sess: Any, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of an onnxruntime session on ``image``, by output name."""
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {INPUT_NAME: image.detach().cpu().numpy()})
    return {name: torch.from_numpy(value) for name, value in zip(names, values, strict=True)}


def check_against_torch(
    sess: Any, model: nn.Module, image: torch.Tensor, rtol: float = RTOL
) -> float:
    """Largest relative error of any onnxruntime output against ``model(image)``; raises a
    :class:`UserError` beyond ``rtol`` or when the outputs are not the model's tasks."""
    with torch.no_grad():
        expected = model(image)
    got = run_session(sess, image)
    if list(got) != list(expected):
        raise UserError(f"ONNX outputs {list(got)} are not the model's tasks {list(expected)}")
    errors = {task: relative_error(got[task], expected[task].cpu()) for task in expected}
    worst = max(errors, key=errors.__getitem__)
    if errors[worst] > rtol:
        raise UserError(
            f"the ONNX model disagrees with PyTorch: output {worst!r} relative error "
            f"{errors[worst]:.2e} > {rtol:.0e}; nothing was written"
        )
    return errors[worst]


def export_onnx(
    model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, rtol: float = RTOL
) -> OnnxExport:
    """Write ``model`` (baked if sparsified; not changed) to ``path`` as ONNX, input
    :data:`INPUT_NAME` ``[batch, C, H, W]`` with ``C, H, W`` of ``example``, one output per task,
    after checking it in onnxruntime against PyTorch on a batch of ``example.shape[0] + 1``."""
    plain = plain_copy(model)
    program, tasks = to_onnx_program(plain, example)
    data = program.model_proto.SerializeToString()
    batch = example.shape[0] + 1
    check = torch.randn(batch, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    error = check_against_torch(session(data), plain, check.to(example), rtol)
    written = atomic_write(path, lambda handle: handle.write(data), "ONNX model")
    return OnnxExport(written, [INPUT_NAME], tasks, batch, error)
