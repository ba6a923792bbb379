"""``adapmtl sensitivity CHECKPOINT --component C --levels ...``: magnitude-prune one component of
a trained model over a sweep of sparsities (the others held fixed), evaluate every task, and write
a table and one plot per component (paper Figure 5, supplement C.1)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adapmtl.commands.common import DEVICE_HELP, resolve_checkpoint


def _fixed(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected COMPONENT=SPARSITY, e.g. backbone=0.95"
        )
    name, value = text.split("=", 1)
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="a run's checkpoint (.pt) or run directory (best.pt, else last.pt)",
    )
    parser.add_argument(
        "--component",
        action="append",
        required=True,
        help="component to sweep: backbone, a task head, or heads (all heads); repeatable",
    )
    parser.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.99],
        help="sparsities of the swept component (fractions)",
    )
    parser.add_argument(
        "--fix",
        type=_fixed,
        action="append",
        default=[],
        metavar="COMPONENT=SPARSITY",
        help="prune a component to a fixed sparsity first, e.g. backbone=0.95 (repeatable)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        help="dense results.json for ΔT (default: the model as loaded, after --fix)",
    )
    parser.add_argument("--split", help="dataset split (default: the run's val split)")
    parser.add_argument("--max-batches", type=int, help="evaluate on the first N batches only")
    parser.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="N",
        help="retrain each pruned model N iterations with its mask fixed",
    )
    parser.add_argument("--finetune-lr", type=float, help="fine-tuning lr (default: optim.lr)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--out", type=Path, help="output directory (default: next to CHECKPOINT)")
    parser.add_argument("--no-plots", action="store_true", help="tables only, no matplotlib")


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from adapmtl.analysis.sensitivity import finetune, points_csv, points_table, sweep
    from adapmtl.atomic import write_text
    from adapmtl.build import build_run_dataset
    from adapmtl.checkpoint import load_checkpoint
    from adapmtl.engine.distributed import resolve_device
    from adapmtl.engine.evaluate import evaluate
    from adapmtl.errors import UserError
    from adapmtl.loading import model_from_checkpoint
    from adapmtl.tasks.score import load_reference, normalised_score

    if args.finetune < 0:
        raise UserError(f"--finetune: expected >= 0 iterations, got {args.finetune}")
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    state = load_checkpoint(args.checkpoint)
    model, config, tasks = model_from_checkpoint(state, args.checkpoint)
    device = resolve_device(args.device, "--device")
    model.to(device)
    dataset = build_run_dataset(config, args.split or config.data.val_split, tasks, train=False)
    loader = DataLoader(dataset, batch_size=config.data.eval_batch_size)

    def metrics_of(candidate: torch.nn.Module) -> dict:
        return evaluate(candidate, tasks, loader, device, max_batches=args.max_batches)["metrics"]

    def score(metrics: dict, reference: dict) -> dict:
        return normalised_score(metrics, reference, tasks, config.eval.delta_reduce)

    retrain = None
    if args.finetune:
        train_set = build_run_dataset(config, config.data.train_split, tasks, train=True)
        generator = torch.Generator().manual_seed(config.train.seed)

        def batches():
            while True:
                yield from DataLoader(
                    train_set, batch_size=config.data.batch_size, shuffle=True, generator=generator
                )

        def retrain(candidate: torch.nn.Module) -> None:
            lr = args.finetune_lr or config.optim.lr
            finetune(candidate, tasks, batches, args.finetune, lr, device)

    points = sweep(
        model,
        tasks,
        metrics_of,
        args.component,
        args.levels,
        fixed=dict(args.fix),
        score=score,
        reference=load_reference(args.reference, "--reference", tasks) if args.reference else None,
        retrain=retrain,
    )
    out = args.out or args.checkpoint.parent / "sensitivity"
    out.mkdir(parents=True, exist_ok=True)
    names = list(tasks)
    table = points_table(points, names)
    fixed = ", ".join(f"{c} at {100 * v:g}%" for c, v in args.fix) or "nothing"
    header = (
        f"# Pruning sensitivity of {args.checkpoint}\n\n"
        f"Magnitude pruning of one component at a time; fixed first: {fixed}; "
        f"fine-tuning: {args.finetune} iterations. ΔT against "
        f"{args.reference or 'the model as loaded (first row)'}.\n\n"
    )
    write_text(out / "sensitivity.md", header + table + "\n")
    write_text(out / "sensitivity.csv", points_csv(points, names))
    write_text(out / "sensitivity.json", json.dumps([p.__dict__ for p in points], indent=2) + "\n")
    written = [out / "sensitivity.md", out / "sensitivity.csv", out / "sensitivity.json"]
    if not args.no_plots:
        from adapmtl.analysis.plots import plot_sensitivity

        for component in args.component:
            written.append(
                plot_sensitivity(points, component, names, out / f"sensitivity_{component}.png")
            )
    print(header + table)
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return 0
