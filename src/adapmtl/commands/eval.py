"""``adapmtl eval CHECKPOINT``: the paper's metric table and Delta_T on the validation split (or
another split, against a reference measured on that split)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adapmtl.commands.common import CHECKPOINT_HELP, DEVICE_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    parser.add_argument(
        "--reference",
        type=Path,
        help="dense results for Delta_T: a results.json, or 'adapmtl eval --json' output "
        "(default: the run's eval.reference)",
    )
    parser.add_argument("--split", help="dataset split (default: the run's data.val_split)")
    parser.add_argument(
        "--reduce", choices=["sum", "mean"], help="Delta_T form (default: the run's, sum)"
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def check_reference_split(reference: Path, split: str, val_split: str) -> None:
    """Delta_T compares metrics on one split with a reference measured on the same split:
    refuse a known mismatch, and say so when the reference does not record its split."""
    from adapmtl.errors import UserError
    from adapmtl.tasks.score import reference_split

    measured = reference_split(reference)
    if measured is not None and measured != split:
        raise UserError(
            f"--split {split}: the reference {reference} holds metrics on the {measured!r} "
            f"split, so Delta_T would compare two splits; give --reference with the dense run's "
            f"metrics on {split!r} ('adapmtl eval DENSE_RUN --split {split} --json > FILE')"
        )
    if measured is None and split != val_split:
        print(
            f"note: {reference} does not record its split; Delta_T assumes it was measured on "
            f"{split!r}",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from adapmtl.analysis.tables import results_table
    from adapmtl.build import build_run_dataset
    from adapmtl.commands.common import load_trained
    from adapmtl.engine.distributed import resolve_device
    from adapmtl.engine.evaluate import evaluate
    from adapmtl.errors import UserError
    from adapmtl.sparsity import is_sparsified, report
    from adapmtl.tasks.score import load_reference, normalised_score

    trained = load_trained(args.checkpoint)
    config, tasks = trained.config, trained.tasks
    if config is None or tasks is None:
        raise UserError(
            f"{trained.path} was exported from a bare weights file and records no run config, "
            "so its data and tasks are unknown: evaluate the run's checkpoint instead"
        )
    device = resolve_device(args.device, "--device")
    model = trained.model.to(device)
    split = args.split or config.data.val_split
    reference = args.reference or config.eval.reference
    if reference is not None:
        check_reference_split(Path(reference), split, config.data.val_split)
    dataset = build_run_dataset(config, split, tasks, train=False)
    loader = DataLoader(dataset, batch_size=config.data.eval_batch_size)
    results = evaluate(model, tasks, loader, device)
    results["iteration"] = trained.iteration
    results["split"] = split
    if is_sparsified(model):
        rep = report(model).to_dict()
        results["sparsity"] = {k: rep[k] for k in ("overall", "components", "thresholds")}
    if reference is not None:
        results["delta_t"] = normalised_score(
            results["metrics"],
            load_reference(reference, "--reference", tasks),
            tasks,
            args.reduce or config.eval.delta_reduce,
        )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        label = f"{config.method.name} @ {trained.iteration}"
        print(results_table([(label, results)], list(tasks)))
    return 0
