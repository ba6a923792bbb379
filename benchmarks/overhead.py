"""Training-step overhead of AdapMTL's sparse-weight parametrization: a sparsified model versus
the same dense model, same batch (one run, ratios only: absolute times are noisy on a shared
machine).

Modes (``--modes``): ``soft`` = ``sparsify(model, grouping="component")`` (the paper's soft
threshold, Eq. 2), ``hard_regrow`` = the same with ``mode="hard", regrow=True`` (the hard
threshold with the straight-through gradient), ``auto`` = ``mode="auto", regrow=True`` (the
recommended recipe: soft on the layers that feed a BatchNorm, hard with regrowth on the others),
``auto_block4`` = ``auto`` pruning blocks of 4 output channels (``method.options.block: 4``;
its blocked layers compute their thresholds in an autograd function of their own, outside
the batched node), ``auto_per_layer`` = ``auto`` with each
layer's threshold in its own autograd call (``train.batched_thresholds: false``; every other
mode, like training, applies the thresholds of the layers without recycled buffers in one node,
:func:`~adapmtl.sparsity.batched.batched_thresholds`), ``frozen`` = ``hard_regrow`` after
``freeze_masks`` with the mask kept in the weights (``keep_masks_in_weights``: what training runs
once the target-sparsity controller has fixed the mask, and SNIP/LTH/IMP/DiSparse once their last
mask is set), ``frozen_computed`` = the same mask applied as ``W * M`` in every forward (what runs
while a method's masks can still change), ``dense_copy`` = a second copy of the dense model (a
control: the ratio between two identical models, i.e. what this measurement resolves on the
machine; weights, gradients and activations of two models sit at different addresses, which
moves a step's time by several per cent on its own).

Time: one training step = forward, backward and an Adam step (Adam's fused kernel, as training
uses by default, ``optim.fused``; ``--unfused-adam``: PyTorch's default loop of tensor
operations). The dense model and one sparsified copy per mode are stepped in turn in one process
(the order flips every repetition), after two warm-up steps each; the reported ratio is the
median over repetitions of t_sparse / t_dense of the same repetition, so slow phases of a shared
machine hit all variants alike. t is the CPU time of the process (``time.process_time``) with
one intra-op thread: on a shared machine it excludes the time the process waits for a core,
which wall-clock time does not (the wall-clock ratio is reported too).

Memory: each variant runs in a fresh subprocess that imports torch, warms up torch's kernels on a
tiny model, then builds the case's model and optimizer and trains three steps; the peak resident
set size (Linux ``VmHWM``, reset before the model is built) minus the RSS at that reset is the
training memory (weights, gradients, Adam state, activations and allocator overhead). Process RSS
counts what the operating system really had to provide; ``tracemalloc`` does not see torch's
allocations. The peak-RSS ratio including the process baseline is reported too.

Allocator: like training (``train.keep_freed_memory``), the process and the memory subprocesses
first make glibc keep the memory each step frees (:mod:`adapmtl.engine.allocator`);
``--default-allocator`` leaves glibc's adaptive defaults, under which some processes fault
thousands of pages in again every step.

Breakdown (``--breakdown``): after the timed repetitions each sparsified variant runs a few more
steps with timers around the parametrization's work (``SparseWeight.forward`` and the backward of
its autograd functions), reported as ``parametrization_ms`` per step and as a share of the dense
step: the part of the overhead that is the sparse weights' own arithmetic; the rest of a ratio
above 1 is the other costs of a sparsified model (more autograd nodes, memory placement: compare
``dense_copy``).

The load average (``os.getloadavg``) before and after each case is written beside its figures.

Usage::

    python benchmarks/overhead.py                       # all default cases, JSON on stdout
    python benchmarks/overhead.py --cases small_conv --repeats 20
    python benchmarks/overhead.py --cases mobilenetv2_cpu@128 --modes soft,hard_regrow,frozen
    python benchmarks/overhead.py --markdown table.md   # also write a Markdown table
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from adapmtl.engine.allocator import keep_freed_memory
from adapmtl.models import MultiTaskModel, build_model
from adapmtl.sparsity import (
    batched,
    batched_thresholds,
    blocks,
    freeze_masks,
    keep_masks_in_weights,
    param_groups,
    parametrization,
    sparsify,
)

NYU = {"seg": 40, "normal": 3, "depth": 1}
TIME_GOAL = {"small": 1.15, "large": 1.05}
MEMORY_GOAL = 1.2
FUSED_ADAM = True
"""Adam's fused kernel, as training uses (``optim.fused``); ``--unfused-adam`` turns it off."""


def _small_conv() -> MultiTaskModel:
    backbone = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
    )
    backbone.out_channels = 64
    heads = {task: nn.Conv2d(64, c, 1) for task, c in NYU.items()}
    return MultiTaskModel(backbone, heads)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], MultiTaskModel]
    batch: int
    size: int
    repeats: int
    scale: str  # "small" or "large": which time goal applies


def _preset(name: str) -> Callable[[], MultiTaskModel]:
    return lambda: build_model(name, NYU)


CASES = {
    c.name: c
    for c in (
        Case("small_conv", _small_conv, 8, 64, 30, "small"),
        Case("deeplab_resnet34_cpu@64", _preset("deeplab_resnet34_cpu"), 8, 64, 15, "small"),
        Case("deeplab_resnet34_cpu@128", _preset("deeplab_resnet34_cpu"), 8, 128, 10, "small"),
        Case("mobilenetv2_cpu@64", _preset("mobilenetv2_cpu"), 8, 64, 15, "small"),
        Case("mobilenetv2_cpu@128", _preset("mobilenetv2_cpu"), 8, 128, 15, "small"),
        Case("deeplab_resnet34@321", _preset("deeplab_resnet34"), 2, 321, 3, "large"),
        Case("mobilenetv2@321", _preset("mobilenetv2"), 2, 321, 3, "large"),
    )
}
DEFAULT_CASES = tuple(CASES)


class Trainer:
    """One model, its optimizer and a fixed batch with random regression/class targets."""

    def __init__(
        self, model: MultiTaskModel, case: Case, mode: str = "dense", seed: int = 0
    ) -> None:
        self.model = model.train()
        self.batched = mode != "auto_per_layer"
        self.optimizer = torch.optim.Adam(param_groups(model, lr=1e-4), fused=FUSED_ADAM or None)
        if mode == "frozen":
            keep_masks_in_weights(model, self.optimizer)
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(case.batch, 3, case.size, case.size, generator=gen)
        with torch.no_grad():
            shapes = {t: o.shape for t, o in model(self.x).items()}
        self.targets = {
            t: torch.randint(0, s[1], (s[0], *s[2:]), generator=gen)
            if t == "seg"
            else torch.randn(s, generator=gen)
            for t, s in shapes.items()
        }

    def step(self) -> tuple[float, float]:
        """One training step; returns (CPU seconds of this process, wall-clock seconds)."""
        cpu, wall = time.process_time(), time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with batched_thresholds(self.model) if self.batched else contextlib.nullcontext():
            out = self.model(self.x)
        loss = sum(
            F.cross_entropy(o, self.targets[t]) if t == "seg" else F.mse_loss(o, self.targets[t])
            for t, o in out.items()
        )
        loss.backward()
        self.optimizer.step()
        return time.process_time() - cpu, time.perf_counter() - wall


MODES = (
    "soft",
    "hard_regrow",
    "auto",
    "auto_per_layer",
    "auto_block4",
    "frozen",
    "frozen_computed",
    "dense_copy",
)


def sparsified(model: nn.Module, mode: str) -> nn.Module:
    """``model`` sparsified in place in one of :data:`MODES` (``dense_copy``: left dense)."""
    if mode == "dense_copy":
        return model
    if mode == "soft":
        return sparsify(model, grouping="component")
    if mode in ("auto", "auto_per_layer"):
        return sparsify(model, grouping="component", mode="auto", regrow=True)
    if mode == "auto_block4":
        return sparsify(model, grouping="component", mode="auto", regrow=True, block=4)
    sparsify(model, grouping="component", mode="hard", regrow=True)
    if mode in ("frozen", "frozen_computed"):
        freeze_masks(model)
    return model


@contextlib.contextmanager
def timed_parametrization(spent: dict[str, float]) -> Iterator[None]:
    """Add the wall time spent in ``SparseWeight.forward`` and the batched thresholds' forward
    to ``spent["forward"]`` and in the backward of the parametrization's autograd functions to
    ``spent["backward"]`` while the block runs."""

    def timed(fn: Callable, key: str) -> Callable:
        def wrapper(*args: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[key] += time.perf_counter() - start

        return wrapper

    functions = [
        f
        for module in (parametrization, batched, blocks)
        for f in vars(module).values()
        if isinstance(f, type) and issubclass(f, torch.autograd.Function) and "backward" in vars(f)
    ]
    # the batched node's forward runs before the layers', outside SparseWeight.forward
    saved = [(f, "backward") for f in functions] + [(batched._BatchedThreshold, "forward")]
    originals = [vars(f)[name] for f, name in saved]
    forward = parametrization.SparseWeight.forward
    try:
        for (f, name), original in zip(saved, originals, strict=True):
            plain = original.__func__ if isinstance(original, staticmethod) else original
            setattr(f, name, staticmethod(timed(plain, name)))
        parametrization.SparseWeight.forward = timed(forward, "forward")
        yield
    finally:
        for (f, name), original in zip(saved, originals, strict=True):
            setattr(f, name, original)
        parametrization.SparseWeight.forward = forward


def parametrization_ms(trainer: Trainer, steps: int = 5) -> dict[str, float]:
    """Milliseconds per training step spent in the sparse weights' parametrization, forward and
    backward."""
    spent = {"forward": 0.0, "backward": 0.0}
    with timed_parametrization(spent):
        for _ in range(steps):
            trainer.step()
    return {key: 1e3 * value / steps for key, value in spent.items()}


def measure_time(
    case: Case, repeats: int, modes: tuple[str, ...], breakdown: bool = False
) -> dict[str, dict[str, float]]:
    """Per mode: the median of t_mode / t_dense over interleaved repetitions, and its range;
    with ``breakdown``, the parametrization's time per step too."""
    torch.manual_seed(0)
    dense = case.build()
    models = {"dense": dense} | {m: sparsified(copy.deepcopy(dense), m) for m in modes}
    trainers = {name: Trainer(model, case, name) for name, model in models.items()}
    for trainer in trainers.values():
        trainer.step()
        trainer.step()
    names = list(trainers)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else reversed(names):
            c, w = trainers[name].step()
            cpu[name].append(c)
            wall[name].append(w)
    result = {}
    for mode in modes:
        ratios = [s / d for s, d in zip(cpu[mode], cpu["dense"], strict=True)]
        wall_ratios = [s / d for s, d in zip(wall[mode], wall["dense"], strict=True)]
        result[mode] = {
            "dense_ms": 1e3 * statistics.median(cpu["dense"]),
            "sparse_ms": 1e3 * statistics.median(cpu[mode]),
            "time_ratio": statistics.median(ratios),
            "time_ratio_min": min(ratios),
            "time_ratio_max": max(ratios),
            "dense_wall_ms": 1e3 * statistics.median(wall["dense"]),
            "wall_ratio": statistics.median(wall_ratios),
        }
        if breakdown:
            spent = parametrization_ms(trainers[mode])
            total = spent["forward"] + spent["backward"]
            result[mode]["parametrization_forward_ms"] = spent["forward"]
            result[mode]["parametrization_backward_ms"] = spent["backward"]
            result[mode]["parametrization_ms"] = total
            result[mode]["parametrization_share"] = total / result[mode]["dense_ms"]
    return result


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(case_name: str, variant: str, allocator: str) -> None:
    """Subprocess body: report the training memory of one variant as JSON.

    A tiny model is trained first so that torch's lazily loaded kernels and thread pools are in
    the baseline; the peak-RSS mark (VmHWM) is then reset and the case's model is built and
    trained. VmHWM, unlike ``ru_maxrss``, does not inherit the parent process's peak.
    ``allocator`` is ``kept`` (glibc keeps freed memory, as in training) or ``default``."""
    if allocator == "kept":
        keep_freed_memory()
    torch.set_num_threads(1)
    Trainer(_small_conv(), Case("warm-up", _small_conv, 2, 32, 0, "small")).step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    baseline = _status_mb("VmRSS")
    case = CASES[case_name]
    torch.manual_seed(0)
    model = case.build()
    if variant != "dense":
        sparsified(model, variant)
    trainer = Trainer(model, case, variant)
    for _ in range(3):
        trainer.step()
    peak = _status_mb("VmHWM")
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak, "training_mb": peak - baseline}))


def _memory_child(case: Case, variant: str, allocator: str) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-child",
            case.name,
            variant,
            allocator,
            *([] if FUSED_ADAM else ["--unfused-adam"]),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_memory(
    case: Case, modes: tuple[str, ...], allocator: str
) -> dict[str, dict[str, float]]:
    """Per mode: training memory (peak RSS over the reset mark) of dense and sparsified."""
    dense = _memory_child(case, "dense", allocator)
    result = {}
    for mode in modes:
        sparse = _memory_child(case, mode, allocator)
        result[mode] = {
            "dense_peak_mb": dense["peak_mb"],
            "dense_training_mb": dense["training_mb"],
            "sparse_peak_mb": sparse["peak_mb"],
            "sparse_training_mb": sparse["training_mb"],
            "memory_ratio": sparse["training_mb"] / dense["training_mb"],
            "peak_rss_ratio": sparse["peak_mb"] / dense["peak_mb"],
        }
    return result


def run_case(
    case: Case, repeats: int | None, modes: tuple[str, ...], allocator: str, breakdown: bool
) -> list[dict]:
    """One row per mode; the load average is read before and after the whole case."""
    load_before = os.getloadavg()
    torch.manual_seed(0)
    params = sum(p.numel() for p in case.build().parameters())
    count = repeats or case.repeats
    times = measure_time(case, count, modes, breakdown)
    memory = measure_memory(case, modes, allocator)
    load_after = os.getloadavg()
    rows = []
    for mode in modes:
        row: dict = {
            "case": case.name,
            "mode": mode,
            "batch": case.batch,
            "size": case.size,
            "parameters": params,
            "repeats": count,
            "allocator": allocator,
            "load_before": list(load_before),
            "load_after": list(load_after),
        }
        row.update(times[mode])
        row.update(memory[mode])
        row["time_goal"] = TIME_GOAL[case.scale]
        row["memory_goal"] = MEMORY_GOAL
        row["meets_goals"] = row["time_ratio"] <= row["time_goal"] and (
            row["memory_ratio"] <= MEMORY_GOAL
        )
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| case | mode | batch | input | params | dense ms | sparse ms | time ratio (min-max) "
        "| goal | parametrization ms/step (share of dense) "
        "| dense MB | sparse MB | memory ratio | peak RSS ratio "
        "| load (1 min) before-after |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        spent = (
            f"{r['parametrization_ms']:.1f} ({100 * r['parametrization_share']:.1f} %)"
            if "parametrization_ms" in r
            else "-"
        )
        lines.append(
            f"| {r['case']} | {r['mode']} | {r['batch']} | {r['size']}² "
            f"| {r['parameters'] / 1e6:.2f} M "
            f"| {r['dense_ms']:.0f} | {r['sparse_ms']:.0f} "
            f"| {r['time_ratio']:.3f} ({r['time_ratio_min']:.2f}-{r['time_ratio_max']:.2f}) "
            f"| ≤ {r['time_goal']} | {spent} "
            f"| {r['dense_training_mb']:.0f} | {r['sparse_training_mb']:.0f} "
            f"| {r['memory_ratio']:.3f} | {r['peak_rss_ratio']:.3f} "
            f"| {r['load_before'][0]:.2f}-{r['load_after'][0]:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated, from: {', '.join(CASES)}",
    )
    parser.add_argument(
        "--modes", default="soft", help=f"comma-separated, from: {', '.join(MODES)}"
    )
    parser.add_argument("--repeats", type=int, default=None, help="override every case's count")
    parser.add_argument("--markdown", default=None, help="also write a Markdown table here")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's allocator as it is, instead of keeping freed memory as training "
        "does (train.keep_freed_memory)",
    )
    parser.add_argument(
        "--unfused-adam",
        action="store_true",
        help="PyTorch's default Adam (a loop of tensor operations on the CPU) instead of the "
        "fused kernel training uses (optim.fused)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the parametrization's own work per step (forward and backward)",
    )
    parser.add_argument(
        "--memory-child", nargs=3, metavar=("CASE", "VARIANT", "ALLOCATOR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    global FUSED_ADAM
    FUSED_ADAM = not args.unfused_adam
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; valid: {', '.join(CASES)}")
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        parser.error(f"--modes: unknown mode {bad[0] if bad else ''!r}; valid: {', '.join(MODES)}")
    allocator = "default" if args.default_allocator else "kept"
    if allocator == "kept":
        keep_freed_memory()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = []
    for name in names:
        for row in run_case(CASES[name], args.repeats, modes, allocator, args.breakdown):
            rows.append(row)
            spent = (
                f", parametrization {row['parametrization_ms']:.1f} ms/step "
                f"({row['parametrization_forward_ms']:.1f} forward)"
                if "parametrization_ms" in row
                else ""
            )
            print(
                f"{name} {row['mode']}: time x{row['time_ratio']:.3f}, "
                f"memory x{row['memory_ratio']:.3f}{spent}, load {row['load_before'][0]:.2f}",
                file=sys.stderr,
            )
    result = {
        "benchmark": "overhead",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "fused_adam": FUSED_ADAM,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "cases": rows,
    }
    print(json.dumps(result, indent=2))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
