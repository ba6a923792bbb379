"""File sizes of the dense and bitmask exports, and dense vs sparse-kernel CPU latency, at several
sparsities, for both backbones (CPU presets and full size). Prints a results page; ``--write``
saves it (``docs/results/inference.md`` holds the measured ones).

The dense reference is the faster of PyTorch and onnxruntime running the same dense graph (ONNX
export, checked against PyTorch), timed interleaved with the sparse model in the same run;
``--no-onnxruntime`` (or onnxruntime not installed) leaves PyTorch as the only reference.
``--batch 1,8`` measures each batch size (the sparse kernels are chosen per batch size).

Sparse models are made without training, by per-layer magnitude pruning to each target
(``adapmtl.inference.pruning.magnitude_prune``) of a randomly initialised model; the kernels only
see where the zeros are, so trained weights at the same per-layer densities time the same.
``--blocks 4`` prunes blocks of 4 output channels at one (input channel, kernel position) by
their L2 norm instead (``block_magnitude_prune``): a probe of what block-structured masks buy
the kernels (``direct-block4``), which the training methods do not produce.

    python benchmarks/inference.py                        # everything (long: full-size models)
    python benchmarks/inference.py --models deeplab_resnet34_cpu --sparsities 0.9 --repeats 3
    python benchmarks/inference.py --models deeplab_resnet34 --sparsities 0.9,0.95 \
        --threads 1,2 --batch 1,8
    python benchmarks/inference.py --models deeplab_resnet34 --sparsities 0.9 --blocks 1,4
    python benchmarks/inference.py --models deeplab_resnet34 --threads 2 \
        --write docs/results/inference.md --append          # add a section to the page
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from adapmtl.analysis import count_cost
from adapmtl.atomic import write_text
from adapmtl.inference import compare_end_to_end, optimize
from adapmtl.inference.onnx_export import (
    check_against_torch,
    run_session,
    session,
    to_onnx_program,
)
from adapmtl.sparsity.export import export_model
from pruned_models import INPUT_SIZES, pruned_model


@dataclass
class Row:
    model: str
    size: tuple[int, int]
    threads: int
    batch: int
    sparsity: float
    blocks: int
    dense_mib: float
    sparse_mib: float
    macs_g: float
    nonzero_macs_g: float
    dense_ms: float
    sparse_ms: float
    sparse_layers: int
    layers: int
    max_rel_error: float
    calibration_s: float
    onnxruntime_ms: float | None = None

    @property
    def size_ratio(self) -> float:
        return self.sparse_mib / self.dense_mib

    @property
    def speedup(self) -> float:
        """Against PyTorch's dense model."""
        return self.dense_ms / self.sparse_ms

    @property
    def reference_ms(self) -> float:
        """The faster dense run: PyTorch or onnxruntime."""
        if self.onnxruntime_ms is None:
            return self.dense_ms
        return min(self.dense_ms, self.onnxruntime_ms)

    @property
    def reference_speedup(self) -> float:
        return self.reference_ms / self.sparse_ms


@dataclass
class Subject:
    """One pruned model and what does not depend on threads or batch size."""

    name: str
    sparsity: float
    blocks: int
    model: torch.nn.Module
    size: tuple[int, int]
    file_sizes: dict[str, int]
    macs: float
    nonzero_macs: float
    onnx: bytes | None


def prepare(name: str, sparsity: float, blocks: int, with_onnxruntime: bool) -> Subject:
    height, width = INPUT_SIZES[name]
    model = pruned_model(name, sparsity, blocks)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {
            fmt: export_model(model, Path(tmp) / f"{fmt}.safetensors", format=fmt).stat().st_size
            for fmt in ("dense", "sparse")
        }
    cost = count_cost(model, (height, width))
    onnx = None
    if with_onnxruntime:
        program, _ = to_onnx_program(model, torch.zeros(2, 3, height, width))
        onnx = program.model_proto.SerializeToString()
    return Subject(
        name, sparsity, blocks, model, (height, width), sizes, cost.overall.macs,
        cost.overall.nonzero_macs, onnx,
    )  # fmt: skip


def measure(subject: Subject, threads: int, batch: int, args: argparse.Namespace) -> Row:
    torch.set_num_threads(threads)
    model = subject.model
    height, width = subject.size
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(batch, 3, height, width, generator=generator)
    start = time.perf_counter()
    fast, plan = optimize(model, example, repeats=args.layer_repeats)
    calibration = time.perf_counter() - start
    ort_run = None
    if subject.onnx is not None:
        sess = session(subject.onnx, threads=threads)
        check_against_torch(sess, model, example)
        ort_run = lambda: run_session(sess, example)  # noqa: E731
    result = compare_end_to_end(model, fast, example, repeats=args.repeats, onnxruntime=ort_run)
    return Row(
        model=subject.name,
        size=subject.size,
        threads=threads,
        batch=batch,
        sparsity=subject.sparsity,
        blocks=subject.blocks,
        dense_mib=subject.file_sizes["dense"] / 2**20,
        sparse_mib=subject.file_sizes["sparse"] / 2**20,
        macs_g=subject.macs / 1e9,
        nonzero_macs_g=subject.nonzero_macs / 1e9,
        dense_ms=result.dense_ms,
        sparse_ms=result.sparse_ms,
        sparse_layers=sum(c.kernel != "dense" for c in plan.layers),
        layers=len(plan.layers),
        max_rel_error=result.max_rel_error,
        calibration_s=calibration,
        onnxruntime_ms=result.onnxruntime_ms,
    )


def onnxruntime_version() -> str | None:
    """onnxruntime's version, or None if it (or the ONNX exporter's packages) is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        return None
    return onnxruntime.__version__


def conditions(args: argparse.Namespace, load_before: tuple, load_after: tuple) -> list[str]:
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        models = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = models[0].split(":", 1)[1].strip() if models else cpu
    except OSError:
        pass
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; the threads column is the thread count "
        "of PyTorch, numba and onnxruntime.",
        f"- torch {torch.__version__}, numba {numba.__version__}, onnxruntime "
        f"{args.onnxruntime_version or 'not used'}, Python {platform.python_version()}.",
        f"- Load average (1, 5, 15 min) before: {load_before}, after: {load_after}. The machine "
        "was shared with other jobs, so absolute times are noisy; dense and sparse runs are "
        "interleaved, so their ratio is the figure to read.",
        f"- End to end: median of {args.repeats} interleaved runs (PyTorch dense, sparse"
        f"{', onnxruntime dense' if args.onnxruntime_version else ''}) after one warm-up; per "
        f"layer (kernel choice): fastest of {args.layer_repeats} interleaved runs. Speedup: "
        "PyTorch dense / sparse; vs faster dense: the faster of PyTorch and onnxruntime / sparse.",
    ]


def write_markdown(rows: list[Row], command: str, notes: list[str], title: str) -> str:
    lines = [
        title,
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        "Sparse models: random initialisation, then every Conv/Linear weight magnitude-pruned to "
        "the target sparsity (no training; kernels only see where the zeros are; rows marked "
        "'blocks of 4': in blocks of 4 output channels by L2 norm), BN statistics "
        "set from one random batch so that signal reaches the heads. NYUv2 tasks "
        "(seg 40, normal 3, depth 1). Files: `adapmtl export --format dense|sparse` "
        "(safetensors; sparse = nonzero values + bitmask). MACs: multiply-accumulates of one "
        "forward pass of the batch (`adapmtl.analysis.count_cost`), nonzero MACs bound the "
        "possible speedup. "
        "Sparse latency: `adapmtl.inference.optimize` (per-layer choice of dense, numba sparse "
        "direct convolution or CSR by measurement), checked against the dense model's outputs.",
        "",
        "Conditions:",
        "",
        *notes,
        "",
        "| model | input | batch | threads | sparsity | dense file MiB | sparse file MiB "
        "| size ratio | GMACs dense | GMACs nonzero | dense ms | onnxruntime ms | sparse ms "
        "| speedup | vs faster dense | layers on sparse kernels | max rel. error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ort = "-" if r.onnxruntime_ms is None else f"{r.onnxruntime_ms:.0f}"
        lines.append(
            f"| {r.model} | {r.size[0]}x{r.size[1]} | {r.batch} | {r.threads} "
            f"| {100 * r.sparsity:.0f}%{f' (blocks of {r.blocks})' if r.blocks > 1 else ''} "
            f"| {r.dense_mib:.1f} | {r.sparse_mib:.1f} "
            f"| {r.size_ratio:.3f} | {r.macs_g * r.batch:.2f} | {r.nonzero_macs_g * r.batch:.2f} "
            f"| {r.dense_ms:.0f} | {ort} | {r.sparse_ms:.0f} | {r.speedup:.2f}x "
            f"| {r.reference_speedup:.2f}x | {r.sparse_layers}/{r.layers} "
            f"| {r.max_rel_error:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(INPUT_SIZES))
    parser.add_argument("--sparsities", default="0.5,0.8,0.9,0.95")
    parser.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    parser.add_argument("--batch", default="1", help="batch sizes, e.g. 1,8")
    parser.add_argument(
        "--blocks",
        default="1",
        help="prune blocks of this many output channels together (1: weight by weight), e.g. 1,4",
    )
    parser.add_argument(
        "--no-onnxruntime",
        action="store_true",
        help="do not time onnxruntime running the dense graph (PyTorch is the only reference)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layer-repeats", type=int, default=3)
    parser.add_argument("--write", type=Path, help="save the page here (replaces the file)")
    parser.add_argument("--json", help="also write the rows as JSON")
    parser.add_argument(
        "--append", action="store_true", help="with --write: add a section, keep the rest"
    )
    args = parser.parse_args(argv)
    if args.append and args.write is None:
        parser.error("--append needs --write PAGE")
    thread_counts = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    block_sizes = [int(b) for b in args.blocks.split(",")]
    if min(thread_counts + batches + block_sizes) < 1:
        parser.error("--threads, --batch and --blocks take positive integers")
    args.onnxruntime_version = None if args.no_onnxruntime else onnxruntime_version()
    if not args.no_onnxruntime and args.onnxruntime_version is None:
        print("onnxruntime (or onnx, onnxscript) is not installed: PyTorch is the only reference")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(INPUT_SIZES))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(INPUT_SIZES)}")
    sparsities = [float(s) for s in args.sparsities.split(",")]
    load_before = tuple(round(v, 2) for v in os.getloadavg())
    rows = []
    for name in names:
        for sparsity in sparsities:
            for blocks in block_sizes:
                subject = prepare(name, sparsity, blocks, args.onnxruntime_version is not None)
                for threads in thread_counts:
                    for batch in batches:
                        row = measure(subject, threads, batch, args)
                        extra = {"speedup": row.speedup, "reference_speedup": row.reference_speedup}
                        print(json.dumps(row.__dict__ | extra), flush=True)
                        rows.append(row)
    rows.sort(key=lambda r: (names.index(r.model), r.batch, r.threads, r.sparsity, r.blocks))
    load_after = tuple(round(v, 2) for v in os.getloadavg())
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/inference.py " + " ".join(given)
    title = "## Another run" if args.append else "# Sparse export and CPU inference"
    text = write_markdown(rows, command.strip(), conditions(args, load_before, load_after), title)
    print(text)
    if args.write is not None:
        page = text
        if args.append and args.write.exists():
            page = args.write.read_text() + "\n" + text
        args.write.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.write, page)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
