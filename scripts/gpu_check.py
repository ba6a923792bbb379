"""GPU check: train the full DeepLab-ResNet34 NYUv2 model on synthetic data in the NYUv2 layout,
in minutes, and print one table of what passed, the step times and the soft threshold's overhead.

    python scripts/gpu_check.py                 # on a CUDA machine: everything it can run
    python scripts/gpu_check.py --device cpu    # the same on the CPU (CUDA-only checks skipped)

Checks, each a row of the table:

* ``dense``, ``adapmtl``, ``snip`` — a few dozen iterations of the NYUv2 ResNet34 preset (dense,
  soft thresholds, one mask method), with the median step time (device synchronised around each
  step) and the host synchronisations of one step (:class:`adapmtl.engine.syncs.SyncCounter`);
* ``soft-threshold overhead`` — adapmtl's median step time over dense's;
* ``deterministic resume`` — ``train.deterministic: true``: a run stopped half-way (as SIGTERM
  does) and resumed ends with exactly the weights of an uninterrupted run;
* ``torchrun nccl x2`` — the adapmtl run under ``torchrun --nproc_per_node=2`` (two GPUs);
* ``autocast <dtype>`` — the adapmtl run under ``train.autocast`` (bf16 where the device supports
  it, else fp16 with its loss scale): finite losses, float32 weights and thresholds, its step
  time against the float32 adapmtl row and its host synchronisations per step.

Exit status 0 when every check that ran passed. ``--tiny`` swaps in the CPU-sized model and
small images, for the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from adapmtl.config import Config, load_config
from adapmtl.data.writer import write_scenes
from adapmtl.engine.interrupt import TrainingInterruptedError
from adapmtl.engine.syncs import SyncCounter
from adapmtl.engine.trainer import Trainer
from adapmtl.sparsity.parametrization import threshold_levels_as_tensors

PRESET = Path(__file__).resolve().parents[1] / "configs" / "nyuv2" / "resnet34_adapmtl.yaml"
METHODS = {
    "dense": ["method.name=dense", "method.target=null", "method.options={}"],
    # a few dozen iterations: thresholds start near the weights' scale so that they prune
    "adapmtl": ["method.options.init=-6.0"],
    "snip": ["method.name=snip", "method.options={}"],
}


@dataclass
class Row:
    check: str
    result: str  # PASS, FAIL, SKIP, or INFO for a measurement
    detail: str = ""


class TimedTrainer(Trainer):
    """Times every step (device synchronised) and counts the host syncs of one step; a stop
    request can be raised after a chosen step, as SIGTERM would."""

    count_syncs_at = 5

    def __init__(self, *args: Any, stop_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_after = stop_after
        self.times: list[float] = []
        self.syncs: int | None = None

    def train_step(self, batch: Any) -> dict[str, float] | None:
        self._wait()
        start = time.perf_counter()
        if self.iteration == self.count_syncs_at:
            # on the CPU, count the reads the accelerator's threshold path makes
            with threshold_levels_as_tensors(), SyncCounter() as counter:
                scalars = super().train_step(batch)
            self.syncs = counter.total
        else:
            scalars = super().train_step(batch)
        self._wait()
        self.times.append(time.perf_counter() - start)
        if self.stop_after is not None and self.iteration + 1 == self.stop_after:
            self.stop_request.counts[int(signal.SIGTERM)] += 1
        return scalars

    def _wait(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def settings(args: argparse.Namespace, data: Path, method: str) -> list[str]:
    size = 32 if args.tiny else args.size
    overrides = [
        f"data.root={data}",
        f"data.batch_size={args.batch}",
        f"data.eval_batch_size={args.batch}",
        "data.num_workers=0" if args.tiny else f"data.num_workers={args.workers}",
        f"data.train_options={{size: [{size}, {size}], augment: true}}",
        f"data.val_options={{size: [{size}, {size}], augment: false}}",
        f"train.iterations={args.iterations}",
        f"train.val_every={args.iterations}",
        f"train.checkpoint_every={args.iterations}",
        f"train.log_every={max(1, args.iterations // 4)}",
        f"train.device={args.device}",
        "eval.reference=null",
        "eval.max_batches=2",
        *METHODS[method],
    ]
    if args.tiny:
        overrides += [
            "model.name=deeplab_resnet34_cpu",
            "model.options={width: 0.125, head_channels: 16}",
            "train.threads=1",
        ]
    return overrides


def train(config: Config, run: Path, stop_after: int | None = None) -> TimedTrainer:
    trainer = TimedTrainer(config, run, verbose=False, overwrite=True, stop_after=stop_after)
    trainer.fit()
    return trainer


def median_ms(trainer: TimedTrainer) -> float:
    steady = trainer.times[3:] or trainer.times
    return 1000 * statistics.median(steady)


def guarded(name: str, rows: list[Row], check: Callable[[], Row]) -> None:
    try:
        rows.append(check())
    except Exception as err:  # a check that crashes is a failed row, the others still run
        traceback.print_exc(file=sys.stderr)
        rows.append(Row(name, "FAIL", f"{type(err).__name__}: {err}"[:200]))


def check_methods(
    args: argparse.Namespace, data: Path, work: Path, rows: list[Row]
) -> dict[str, float]:
    times: dict[str, float] = {}
    for method in METHODS:

        def run(method: str = method) -> Row:
            config = load_config(PRESET, settings(args, data, method))
            trainer = train(config, work / method)
            times[method] = median_ms(trainer)
            return Row(
                method,
                "PASS",
                f"{args.iterations} it, {times[method]:.1f} ms/step, {trainer.syncs} syncs/step",
            )

        guarded(method, rows, run)
    if "dense" in times and "adapmtl" in times:
        ratio = times["adapmtl"] / times["dense"]
        rows.append(Row("soft-threshold overhead", "INFO", f"{ratio:.2f}x dense step time"))
    else:
        rows.append(Row("soft-threshold overhead", "SKIP", "needs the dense and adapmtl rows"))
    return times


def check_deterministic_resume(args: argparse.Namespace, data: Path, work: Path) -> Row:
    overrides = [*settings(args, data, "adapmtl"), "train.deterministic=true"]
    config = load_config(PRESET, overrides)
    whole = train(config, work / "whole").model.state_dict()
    half = max(1, args.iterations // 2)
    try:
        train(config, work / "split", stop_after=half)
        return Row("deterministic resume", "FAIL", f"the stop after step {half} did not stop")
    except TrainingInterruptedError:
        pass
    resumed = TimedTrainer(config, work / "split", resume=True, verbose=False)
    resumed.fit()
    state = resumed.model.state_dict()
    differing = [k for k, v in whole.items() if not torch.equal(v, state[k])]
    if differing:
        return Row("deterministic resume", "FAIL", f"{len(differing)} tensors differ")
    return Row("deterministic resume", "PASS", f"stopped at {half}, resumed: weights identical")


def check_autocast(args: argparse.Namespace, data: Path, work: Path, fp32_ms: float | None) -> Row:
    bf16 = args.device == "cpu" or torch.cuda.is_bf16_supported()
    dtype = "bf16" if bf16 else "fp16"
    name = f"autocast {dtype}"
    config = load_config(PRESET, [*settings(args, data, "adapmtl"), f"train.autocast={dtype}"])
    trainer = train(config, work / "autocast")
    results = json.loads((work / "autocast" / "results.json").read_text())
    if not all(math.isfinite(v) for v in results["loss"].values()):
        return Row(name, "FAIL", f"validation losses {results['loss']}")
    if any(p.dtype != torch.float32 for p in trainer.model.parameters()):
        return Row(name, "FAIL", "a weight or threshold left float32")
    ms = median_ms(trainer)
    versus = f" ({ms / fp32_ms:.2f}x float32)" if fp32_ms else ""
    return Row(name, "PASS", f"{ms:.1f} ms/step{versus}, {trainer.syncs} syncs/step")


def check_torchrun(args: argparse.Namespace, data: Path, work: Path) -> Row:
    name = "torchrun nccl x2"
    if args.device == "cpu" or torch.cuda.device_count() < 2:
        return Row(name, "SKIP", "needs two CUDA devices")
    config = load_config(PRESET, settings(args, data, "adapmtl"))
    path = work / "torchrun.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "-m", "adapmtl", "train", "--config", str(path), "--out", str(work / "torchrun"),
        "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return Row(name, "FAIL", f"exit {done.returncode}: {done.stderr.strip()[-200:]}")
    return Row(name, "PASS", f"{args.iterations} it in {seconds:.0f} s (with start-up)")


def table(rows: list[Row]) -> str:
    width = max(len(r.check) for r in rows)
    lines = [f"{'check':<{width}}  result  detail"]
    lines += [f"{r.check:<{width}}  {r.result:<6}  {r.detail}" for r in rows]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=321, help="crop size (the NYUv2 protocol)")
    parser.add_argument("--images", type=int, default=32, help="synthetic training images")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model, 32x32 images")
    parser.add_argument("--out", type=Path, help="work directory (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        work = args.out or Path(scratch)
        data = work / "nyuv2"
        if not data.exists():
            size = 32 if args.tiny else args.size
            write_scenes("nyuv2-adashare", data, n=args.images, size=(size, size), n_test=4)
        rows: list[Row] = []
        times = check_methods(args, data, work, rows)
        guarded("deterministic resume", rows, lambda: check_deterministic_resume(args, data, work))
        guarded("torchrun nccl x2", rows, lambda: check_torchrun(args, data, work))
        fp32 = times.get("adapmtl")
        guarded("autocast", rows, lambda: check_autocast(args, data, work, fp32))
    name = f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""
    print(f"device {args.device}{name}")
    print(table(rows))
    return 1 if any(r.result == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
