"""Mutation testing of the core with mutmut: run a sample (or all) of its mutants, write the report.

mutmut is configured in ``pyproject.toml`` (``[tool.mutmut]``): it copies ``src/`` and ``tests/``
to ``mutants/``, gives every function of the core modules a trampoline to its mutants (operator
swaps, ``n`` to ``n + 1``, changed strings, arguments dropped or set to ``None``, ...), records
which of the selected tests call each function, and runs only those tests against each mutant
(pytest, one forked process at a time with ``--max-children 1``). A mutant is *killed* when its
tests fail or time out, *survived* when they pass, *no tests* when no selected test calls its
function (counted as not killed). A survivor judged unable to change behaviour is listed in
``EQUIVALENT`` with the reason and left out of the kill rate.

This script only chooses the mutants (``--sample N`` per module with ``--seed``, ``-1`` for all;
``--modules`` to restrict), runs those without a kill on record (``--rerun``: all of them; mutmut
clears the record of a function that changed) and writes the Markdown report from mutmut's
results. All of them is several thousand mutants, hours on two cores: a sample or one module
at a time is the usual run. Slow, so it is ``make mutation``, outside CI. Inspect one mutant
with ``mutmut show NAME``.

Usage::

    python benchmarks/mutation.py --sample 8 --seed 0 --markdown docs/results/mutation.md
    python benchmarks/mutation.py --sample -1 --modules sparsity/controller.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants" / "src" / "adapmtl"
MUTMUT = Path(sys.executable).with_name("mutmut")

# mutmut's exit codes of a checked mutant (mutmut.stats.status_by_exit_code), in our words
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout"}
STATUS.update({-24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout"})

# Survivors judged equivalent, by mutmut name. mutmut numbers the mutants of a function in order,
# so re-judge an entry when its function changes.
_CPU_ONLY = "the same on a machine without a GPU, where every tensor is on the CPU already"
_JSON_SPACING = "only the indentation of the JSON changes, not what it says"
EQUIVALENT: dict[str, str] = {
    "adapmtl.inference.layers.xǁDirectSparseConv2dǁ__init____mutmut_1": "the default input "
    "channels per block only orders the visits for cache locality; every block size gives the "
    "same sums up to the order of float additions",
    "adapmtl.methods.imp.xǁIMPǁafter_step__mutmut_26": "`at == done` already excludes the step "
    "just done (its `at` is an earlier iteration), so `>=` and `>` agree on `steps_done`",
    "adapmtl.methods.masking.x_accumulate_gradient_scores__mutmut_21": "zero_grad(None) and "
    "zero_grad(False) keep zero gradients instead of None: the next backward adds to zeros and "
    "every score (|g W| or |g|) of a zero gradient is zero",
    "adapmtl.methods.masking.x_accumulate_gradient_scores__mutmut_22": "as mutmut_21",
    "adapmtl.methods.masking.x_accumulate_gradient_scores__mutmut_30": "keeping the graph after "
    "the last backward only holds memory until the losses go out of scope",
    "adapmtl.methods.masking.x_accumulate_gradient_scores__mutmut_31": "as mutmut_30",
    "adapmtl.methods.masking.x_read_dense_checkpoint__mutmut_7": _CPU_ONLY,
    "adapmtl.sparsity.report.x__layer_values__mutmut_8": "torch.stack promotes the float32 zeros "
    "to float64 (the count's dtype); zero is exact in both",
    "adapmtl.sparsity.report.x__layer_values__mutmut_9": _CPU_ONLY,
    "adapmtl.sparsity.report.x__layer_values__mutmut_11": "as mutmut_8",
    "adapmtl.sparsity.report.xǁSparsityReportǁto_json__mutmut_2": _JSON_SPACING,
    "adapmtl.sparsity.report.xǁSparsityReportǁto_json__mutmut_4": _JSON_SPACING,
    "adapmtl.sparsity.report.xǁSparsityReportǁto_json__mutmut_5": _JSON_SPACING,
    "adapmtl.methods.masking.x_read_dense_checkpoint__mutmut_10": _CPU_ONLY,
    "adapmtl.methods.disparse.xǁDiSparseǁ_init_dynamic__mutmut_37": _CPU_ONLY,
    "adapmtl.methods.disparse.xǁDiSparseǁ_init_dynamic__mutmut_22": "the stem's mask of ones in "
    "the weight's dtype instead of bool: set_mask casts every mask to bool, so the layer gets the "
    "same all-True mask",
    "adapmtl.sparsity.allocation.xǁCostAllocationǁload_state_dict__mutmut_10": _CPU_ONLY,
    "adapmtl.tasks.base.x_cross_entropy_mean__mutmut_33": "a boolean per-item weight gives the "
    "same products and, summed, the same count as its 0/1 float form",
    "adapmtl.tasks.classification.xǁClassificationMetricǁupdate__mutmut_14": _CPU_ONLY,
    "adapmtl.tasks.depth.xǁDepthMetricǁ_zero_state__mutmut_8": _CPU_ONLY,
    "adapmtl.tasks.heatmap.xǁHeatmapMetricǁ_zero_state__mutmut_28": _CPU_ONLY,
    "adapmtl.tasks.heatmap.xǁHeatmapMetricǁ_zero_state__mutmut_38": _CPU_ONLY,
    "adapmtl.tasks.normal.xǁNormalMetricǁ_zero_state__mutmut_35": _CPU_ONLY,
    "adapmtl.tasks.normal.xǁNormalMetricǁupdate__mutmut_43": _CPU_ONLY,
    "adapmtl.sparsity.allocation.xǁCostAllocationǁload_state_dict__mutmut_1": _CPU_ONLY,
    "adapmtl.tasks.base.x_batch_weighted__mutmut_11": _CPU_ONLY,
    "adapmtl.tasks.depth.xǁDepthMetricǁ_zero_state__mutmut_15": _CPU_ONLY,
    "adapmtl.tasks.depth.xǁDepthMetricǁupdate__mutmut_39": _CPU_ONLY,
    "adapmtl.tasks.normal.xǁNormalMetricǁ_zero_state__mutmut_8": _CPU_ONLY,
    "adapmtl.weighting.base.xǁWeightingǁ_check__mutmut_6": _CPU_ONLY,
    "adapmtl.methods.lth.xǁLTHǁ_prune_and_rewind__mutmut_1": "an internal assertion whose two "
    "conditions both hold whenever the method prunes",
    "adapmtl.weighting.adaptive.xǁAdaptiveWeightingǁ_update_official__mutmut_6": "with an "
    "empty history the mean is NaN, `NaN > 0` is false and torch.where keeps the weights, as "
    "skipping the branch does",
}


def generate() -> None:
    """mutmut's own first step of ``mutmut run``: copy the tree and write every mutant."""
    os.chdir(ROOT)
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    set_mutant_under_test("mutant_generation")
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines
        copy_src_dir()
        copy_also_copy_files()
        setup_source_paths()
        create_mutants(1)


def results() -> dict[str, dict[str, int | None]]:
    """Exit code of every mutant (None: not run), by module path relative to ``src/adapmtl``."""
    from mutmut.configuration import config

    out = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        module = str(meta.relative_to(MUTANTS)).removesuffix(".meta")
        if config().should_mutate(f"src/adapmtl/{module}"):  # not a module dropped since
            out[module] = json.loads(meta.read_text())["exit_code_by_key"]
    return out


def status(name: str, code: int | None) -> str:
    if code is None:
        return "not run"
    found = STATUS.get(code, f"suspicious (exit {code})")
    return "equivalent" if found == "survived" and name in EQUIVALENT else found


def change(name: str) -> str:
    """The changed lines of a mutant, from ``mutmut show``."""
    shown = subprocess.run(
        [MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    lines = [
        line
        for line in shown.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return " / ".join(f"`{line.strip()}`" for line in lines).replace("|", "\\|")


def markdown(
    chosen: dict[str, list[str]], command: str, load: tuple[tuple, tuple], ran: int
) -> str:
    codes = results()
    total = sum(len(codes[module]) for module in chosen)
    lines = [
        "# Mutation testing of the core",
        "",
        "Generated by `benchmarks/mutation.py` with mutmut (do not edit by hand); configuration",
        "in `pyproject.toml` (`[tool.mutmut]`: the modules mutated and the tests run). Each",
        "mutant runs the selected tests that call its function. Kill rate = (killed + timeout)",
        "/ (mutants - equivalent); a mutant that no test reaches counts as not killed.",
        "",
        f"- Command: `{command}`",
        f"- Sample: {sum(len(n) for n in chosen.values())} of the {total} mutants of these modules",
        f"- Mutants run by this command: {ran} of {sum(len(n) for n in chosen.values())} (the"
        " others' kills were on record from an earlier run of the same functions)",
        f"- Load average (1, 5, 15 min) before: {load[0]}, after: {load[1]}",
        "",
        "| module | mutants | killed | timeout | survived | no tests | equivalent | kill rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    notable = []
    for module, names in chosen.items():
        counts = Counter(status(n, codes[module][n]) for n in names)
        total += counts
        notable += [n for n in names if status(n, codes[module][n]) not in ("killed", "timeout")]
        lines.append(row(f"`{module}`", len(names), counts))
    lines.append(row("**all**", sum(len(n) for n in chosen.values()), total))
    lines += ["", "| mutant | change | status / reason |", "|---|---|---|"]
    for module, names in chosen.items():
        for name in names:
            if name in notable:
                found = status(name, codes[module][name])
                reason = f"equivalent: {EQUIVALENT[name]}" if found == "equivalent" else found
                lines.append(f"| `{name}` | {change(name)} | {reason} |")
    return "\n".join(lines) + "\n"


def row(label: str, count: int, counts: Counter[str]) -> str:
    killed = counts["killed"] + counts["timeout"]
    scored = count - counts["equivalent"]
    rate = f"{100 * killed / scored:.0f} %" if scored else "-"
    return (
        f"| {label} | {count} | {counts['killed']} | {counts['timeout']} | "
        f"{counts['survived']} | {counts['no tests']} | {counts['equivalent']} | {rate} |"
    )


def run_mutmut(names: list[str]) -> list[str]:
    """``mutmut run`` of ``names`` with one worker (its log in ``mutants/run.log``)."""
    if names:
        with (ROOT / "mutants" / "run.log").open("a") as log:
            subprocess.run(
                [MUTMUT, "run", "--max-children", "1", *names],
                cwd=ROOT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=8, help="mutants per module (-1: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument(
        "--modules", nargs="+", default=(), help="paths under src/adapmtl, or their prefixes"
    )
    parser.add_argument("--markdown", type=Path, help="write the report to this file")
    parser.add_argument("--rerun", action="store_true", help="run the killed mutants again too")
    args = parser.parse_args(argv)
    generate()
    chosen = {}
    for module, codes in results().items():
        if args.modules and not module.startswith(tuple(args.modules)):
            continue
        names = sorted(codes)
        count = len(names) if args.sample < 0 else min(args.sample, len(names))
        if count:  # one generator per module: its sample does not depend on the other modules
            chosen[module] = sorted(random.Random(f"{args.seed}:{module}").sample(names, count))
    if not chosen:
        parser.error(f"no mutants in the modules {list(args.modules)}")
    load_before = tuple(round(v, 2) for v in os.getloadavg())
    # A kill stands (mutmut clears the verdicts of a function that changed); the rest run again.
    codes = results()
    pending = [
        name
        for module, names in chosen.items()
        for name in names
        if args.rerun or status(name, codes[module][name]) not in ("killed", "timeout")
    ]
    ran = run_mutmut(pending)
    # mutmut clears every verdict when its configuration changed: run what that left unchecked
    codes = results()
    ran += run_mutmut(
        [n for m, names in chosen.items() for n in names if codes[m][n] is None and n not in ran]
    )
    load_after = tuple(round(v, 2) for v in os.getloadavg())
    arguments = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/mutation.py " + " ".join(arguments)
    text = markdown(chosen, command.strip(), (load_before, load_after), len(ran))
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    codes = results()
    return int(
        any(
            status(n, codes[m][n]) in ("survived", "no tests")
            for m, names in chosen.items()
            for n in names
        )
    )


if __name__ == "__main__":
    sys.exit(main())
