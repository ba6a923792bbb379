"""Swap the layers of a baked sparse model for sparse kernels, chosen per layer by measurement.

``optimize(model, example)`` runs the model once on ``example`` to record the input of every
Conv2d/Linear layer, then times, on that input, the dense layer and each sparse kernel that
supports it (``repeats`` interleaved runs, the order rotated every round; the fastest run
counts, since background load only ever adds time), checks that the sparse output matches the
dense one, and keeps the fastest. A layer stays dense unless a sparse kernel is at least
``min_speedup`` times faster: unstructured sparsity does not pay on every shape and density.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from adapmtl.inference.fold import batchnorm_pairs, fold_batchnorm
from adapmtl.inference.hooks import forward_with_hooks
from adapmtl.inference.layers import (
    CSRConv1x1,
    CSRLinear,
    DirectSparseConv2d,
    csr_conv_supported,
    direct_conv_supported,
    shares_positions,
)
from adapmtl.inference.threads import numba_available
from adapmtl.sparsity import THRESHOLDS_ATTR

DENSE = "dense"
KERNELS = ("direct", "direct-wide", "direct-block4", "direct-block4-wide", "csr")
DIRECT_SHAPES = {
    "direct": (128, 2, 1),
    "direct-wide": (512, 1, 1),
    "direct-block4": (128, 1, 4),
    "direct-block4-wide": (512, 1, 4),
}
"""(input-channel block, most output rows per block, output channels sharing nonzero
positions) of each direct-convolution kernel; the ``block4`` ones are tried only on weights
whose output channels share their positions in groups of 4 (:func:`shares_positions`)."""


@dataclass
class LayerChoice:
    """The measurement behind one layer's kernel choice (best-of-``repeats`` times in ms)."""

    path: str
    kind: str
    input_shape: tuple[int, ...]
    density: float
    kernel: str
    times_ms: dict[str, float] = field(default_factory=dict)
    max_rel_error: float = 0.0

    @property
    def speedup(self) -> float:
        return self.times_ms[DENSE] / self.times_ms[self.kernel]


@dataclass
class InferencePlan:
    """The per-layer choices of :func:`optimize`; ``str()`` is a table."""

    layers: list[LayerChoice]
    threads: int
    folded_batchnorm: list[tuple[str, str]] = field(default_factory=list)
    """(conv, BN) paths whose BN was folded into the conv (the BN is ``nn.Identity``)."""

    def to_dict(self) -> dict:
        return {
            "threads": self.threads,
            "layers": [asdict(layer) for layer in self.layers],
            "folded_batchnorm": [list(pair) for pair in self.folded_batchnorm],
        }

    def __str__(self) -> str:
        lines = [
            f"{'layer':<40}{'kind':<22}{'density':>8}{'dense ms':>10}{'kernel':>13}"
            f"{'ms':>9}{'speedup':>9}"
        ]
        for c in self.layers:
            lines.append(
                f"{c.path:<40}{c.kind:<22}{c.density:>8.3f}{c.times_ms[DENSE]:>10.2f}"
                f"{c.kernel:>13}{c.times_ms[c.kernel]:>9.2f}{c.speedup:>8.2f}x"
            )
        return "\n".join(lines)


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k = "x".join(map(str, module.kernel_size))
        extra = "" if module.dilation == (1, 1) else f" d{module.dilation[0]}"
        extra += "" if module.stride == (1, 1) else f" s{module.stride[0]}"
        extra += "" if module.groups == 1 else f" g{module.groups}"
        return f"conv{k} {module.in_channels}>{module.out_channels}{extra}"
    return f"linear {module.in_features}>{module.out_features}"


def candidate_kernels(
    module: nn.Module, kernels: tuple[str, ...] = KERNELS
) -> dict[str, nn.Module]:
    """The sparse replacements available for ``module`` among ``kernels``."""
    found: dict[str, nn.Module] = {}
    if isinstance(module, nn.Conv2d):
        if numba_available() and direct_conv_supported(module) is None:
            group_in = module.in_channels // module.groups
            group_out = module.out_channels // module.groups
            for name, (block, rows, out_group) in DIRECT_SHAPES.items():
                wide = block > DIRECT_SHAPES["direct"][0]
                if name not in kernels or (wide and group_in <= DIRECT_SHAPES["direct"][0]):
                    continue
                if out_group > 1 and (
                    group_out % out_group or not shares_positions(module.weight, out_group)
                ):
                    continue
                found[name] = DirectSparseConv2d(module, block, rows, out_group)
        if "csr" in kernels and csr_conv_supported(module):
            found["csr"] = CSRConv1x1(module)
    elif type(module) is nn.Linear and module.weight.dtype == torch.float32 and "csr" in kernels:
        found["csr"] = CSRLinear(module)
    return found


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def rotations(names: list[str], rounds: int) -> list[list[str]]:
    """``names`` in a new order each round, rotated by one: over ``len(names)`` rounds each
    name runs once in every position. A fixed order would bias the choice: the run right after
    the dense layer finds the caches cold (a sparse kernel on a small layer measured up to 25 %
    slower there than in the next position)."""
    return [names[i % len(names) :] + names[: i % len(names)] for i in range(rounds)]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (0 when both are all zero)."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    diff = float((got - expected).abs().max()) if expected.numel() else 0.0
    return diff / scale if scale > 0 else diff


def flat_outputs(result: object) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or dicts/lists/tuples of them), in a fixed
    order (dict keys sorted)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [t for key in sorted(result) for t in flat_outputs(result[key])]
    if isinstance(result, (list, tuple)):
        return [t for item in result for t in flat_outputs(item)]
    return []


def output_error(got: nn.Module, expected: nn.Module, example: torch.Tensor) -> float:
    """The largest :func:`relative_error` of any output of ``got`` against ``expected``."""
    pairs = zip(flat_outputs(got(example)), flat_outputs(expected(example)), strict=True)
    return max((relative_error(g, e) for g, e in pairs), default=0.0)


def record_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of the first call of every Conv2d/Linear module during ``model(example)``."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for path, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):

            def hook(mod, inputs, path=path):
                seen.setdefault(path, inputs[0].detach().clone())

            handles.append(module.register_forward_pre_hook(hook))
    forward_with_hooks(model, example, handles)
    return seen


def _plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every parametrized tensor replaced by its current value as a plain
    parameter. (``bake(copy.deepcopy(model))`` would break ``model``: the copy shares torch's
    injected ``Parametrized...`` class, and removing a parametrization deletes the property from
    that class.)"""
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if not parametrize.is_parametrized(module):
            continue
        values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
        module.__class__ = module.__class__.__bases__[0]
        del module._modules["parametrizations"]
        for name, value in values.items():
            module.register_parameter(name, nn.Parameter(value))
    for attr in (THRESHOLDS_ATTR, "_adapmtl_components"):
        if hasattr(plain, attr):
            delattr(plain, attr)
    return plain


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, module)


@torch.no_grad()
def optimize(
    model: nn.Module,
    example: torch.Tensor,
    *,
    kernels: tuple[str, ...] = KERNELS,
    min_speedup: float = 1.05,
    max_density: float = 0.7,
    repeats: int = 5,
    rtol: float = 1e-4,
    fold_bn: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, InferencePlan]:
    """A copy of ``model`` for CPU inference with each prunable layer on its fastest kernel.

    Args:
        model: a sparse model (sparsified or already baked; it is not changed).
        example: a representative input (batch and size as in deployment).
        kernels: sparse kernels to consider: ``direct`` / ``direct-wide`` (numba sparse direct
            convolution with input-channel blocks of 128 / 512 and row blocks of 2 / 1),
            ``direct-block4`` / ``direct-block4-wide`` (the same with blocks of 128 / 512 and
            single rows, for weights whose output channels share their nonzero positions in
            groups of 4: one input load for 4 multiply-adds) and ``csr`` (torch.sparse CSR for
            1x1 convs and Linear layers).
        min_speedup: a layer switches to a sparse kernel only if it is at least this much faster.
        max_density: layers denser than this keep the dense kernel without being timed.
        repeats: timed runs per kernel and layer (interleaved, in an order rotated every
            round; the fastest counts).
        rtol: largest accepted max|sparse - dense| / max|dense| of a layer's output.
        fold_bn: fold each eval-mode BatchNorm2d into the convolution before it
            (:mod:`adapmtl.inference.fold`), kept only if the model's outputs on ``example``
            stay within ``rtol``.

    Returns the optimized copy (eval mode, no autograd through swapped layers) and the plan.
    Raises ``RuntimeError`` if a sparse kernel disagrees with the dense layer beyond ``rtol``.
    """
    unknown = sorted(set(kernels) - set(KERNELS))
    if unknown:
        raise ValueError(f"unknown kernels {unknown}; choose from {KERNELS}")
    fast = _plain_copy(model).eval()
    folded: list[tuple[str, str]] = []
    if fold_bn:
        pairs = batchnorm_pairs(fast, example)
        candidate = fold_batchnorm(fast, pairs)
        if pairs and output_error(candidate, fast, example) <= rtol:
            fast, folded = candidate, pairs
        elif pairs and log:
            log("BatchNorm folding changed the outputs on the example: left unfolded")
    inputs = record_inputs(fast, example)
    choices = []
    for path, x in inputs.items():
        layer = fast.get_submodule(path)
        weight = layer.weight
        density = float(torch.count_nonzero(weight)) / weight.numel()
        choice = LayerChoice(path, _describe(layer), tuple(x.shape), density, DENSE)
        candidates = candidate_kernels(layer, kernels) if density <= max_density else {}
        expected = layer(x)
        for name, candidate in candidates.items():
            candidate(x)  # warm up: compile, build the geometry for this input size
            choice.max_rel_error = max(choice.max_rel_error, relative_error(candidate(x), expected))
            if choice.max_rel_error > rtol:
                raise RuntimeError(
                    f"sparse kernel {name!r} for {path} differs from the dense layer by "
                    f"{choice.max_rel_error:.2e} (relative), more than {rtol:.0e}"
                )
        runners = {DENSE: layer, **candidates}
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for order in rotations(list(runners), repeats):
            for name in order:
                samples[name].append(median_ms(lambda r=runners[name], x=x: r(x), 1))
        choice.times_ms = {name: min(ts) for name, ts in samples.items()}
        best = min(candidates, key=lambda n: choice.times_ms[n], default=None)
        if best is not None and choice.times_ms[DENSE] >= min_speedup * choice.times_ms[best]:
            choice.kernel = best
            _set_submodule(fast, path, candidates[best])
        choices.append(choice)
        if log:
            log(
                f"{path}: {choice.kind}, density {density:.3f}, "
                f"dense {choice.times_ms[DENSE]:.2f} ms -> {choice.kernel} "
                f"{choice.times_ms[choice.kernel]:.2f} ms"
            )
    return fast, InferencePlan(choices, torch.get_num_threads(), folded)
