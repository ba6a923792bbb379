"""Training step time, page faults and peak memory under glibc's allocator settings.

Each (allocator, variant) pair trains in a fresh process, because the allocator's settings are
process-wide: the process sets them (or not), builds the case's model (dense, or sparsified in
one of ``overhead.py``'s modes), trains two warm-up steps and then ``--steps`` steps, and reports
the median CPU time of a step, the median number of minor page faults of a step
(``getrusage``) and the process's peak resident set size (``VmHWM``). Pairs run one after the
other, ``--rounds`` times in turn, so a slow phase of the machine hits every pair alike; the
load average before and after is written beside the table.

Allocators (``--allocators``):

* ``default`` — glibc's adaptive trim and mmap thresholds, untouched;
* ``kept`` — what training does by default (``train.keep_freed_memory``,
  :func:`adapmtl.engine.allocator.keep_freed_memory`): trim threshold 1 GiB, mmap threshold
  32 MiB;
* ``kept-1g`` — the same, started with ``MALLOC_MMAP_THRESHOLD_=1073741824`` in the environment
  (which training leaves as it is): weight-sized buffers of large models come from the heap too.

Usage::

    python benchmarks/allocator.py --cases mobilenetv2@321 --modes dense,auto
    python benchmarks/allocator.py --cases mobilenetv2_cpu@128 --steps 10 --markdown table.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ALLOCATORS = ("default", "kept", "kept-1g")


def child(allocator: str, case_name: str, variant: str, steps: int) -> None:
    """Subprocess body: set the allocator, train, print one JSON line."""
    import resource

    import torch

    from adapmtl.engine import allocator as settings

    if allocator != "default":  # kept-1g: the environment's mmap threshold is left alone
        settings.keep_freed_memory()
    sys.path.insert(0, str(Path(__file__).parent))
    import overhead

    torch.set_num_threads(1)
    case = overhead.CASES[case_name]
    torch.manual_seed(0)
    model = case.build()
    if variant != "dense":
        overhead.sparsified(model, variant)
    trainer = overhead.Trainer(model, case)
    trainer.step()
    trainer.step()
    times, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times.append(trainer.step()[0])
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    with open("/proc/self/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {"ms": 1e3 * statistics.median(times), "faults": statistics.median(faults),
             "peak_mb": peak_kb / 1024}
        )
    )  # fmt: skip


def _run(allocator: str, case: str, variant: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    if allocator == "kept-1g":
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 30)
    out = subprocess.run(
        [sys.executable, __file__, "--child", allocator, case, variant, str(steps)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="mobilenetv2_cpu@128", help="comma-separated")
    parser.add_argument("--modes", default="dense,auto", help="dense and/or overhead.py modes")
    parser.add_argument("--allocators", default=",".join(ALLOCATORS), help="comma-separated")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--markdown", default=None, help="also write a Markdown table here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        allocator, case, variant, steps = args.child
        child(allocator, case, variant, int(steps))
        return 0
    allocators = [a for a in args.allocators.split(",") if a]
    bad = [a for a in allocators if a not in ALLOCATORS]
    if bad:
        parser.error(f"--allocators: unknown {bad[0]!r}; valid: {', '.join(ALLOCATORS)}")
    cases = [c for c in args.cases.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    load_before = os.getloadavg()
    results: dict[tuple[str, str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for case in cases:
            for mode in modes:
                for allocator in allocators:
                    row = _run(allocator, case, mode, args.steps)
                    results.setdefault((case, mode, allocator), []).append(row)
                    print(f"{case} {mode} {allocator}: {row}", file=sys.stderr)
    load_after = os.getloadavg()
    lines = [
        "| case | variant | allocator | step ms (per round) | page faults per step | peak RSS MB |",
        "|---|---|---|---|---:|---:|",
    ]
    for (case, mode, allocator), rows in results.items():
        times = " / ".join(f"{r['ms']:.0f}" for r in rows)
        faults = statistics.median(r["faults"] for r in rows)
        peak = max(r["peak_mb"] for r in rows)
        lines.append(f"| {case} | {mode} | {allocator} | {times} | {faults:.0f} | {peak:.0f} |")
    loads = (
        f"Load average (1, 5, 15 min) before: {tuple(round(x, 2) for x in load_before)}, "
        f"after: {tuple(round(x, 2) for x in load_after)}."
    )
    table = "\n".join(lines)
    print(table + "\n\n" + loads)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n\n" + loads + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
