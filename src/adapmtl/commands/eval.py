"""``adapmtl eval CHECKPOINT``: the paper's metric table and Delta_T on the validation split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch.utils.data import DataLoader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--reference", type=Path, help="dense results.json for Delta_T")
    parser.add_argument("--split", help="dataset split (default: the run's val split)")
    parser.add_argument("--reduce", choices=["sum", "mean"], help="Delta_T form (default: sum)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from adapmtl.analysis.tables import results_table
    from adapmtl.engine.build import build_dataset, resolve_device
    from adapmtl.engine.checkpoint import load_checkpoint
    from adapmtl.engine.evaluate import evaluate, normalised_score, read_reference
    from adapmtl.engine.trainer import model_from_checkpoint
    from adapmtl.sparsity import is_sparsified, report

    state = load_checkpoint(args.checkpoint)
    model, config, tasks = model_from_checkpoint(state, args.checkpoint)
    device = resolve_device(args.device)
    model.to(device)
    dataset = build_dataset(config, args.split or config.data.val_split, tasks, train=False)
    loader = DataLoader(dataset, batch_size=config.data.eval_batch_size)
    results = evaluate(model, tasks, loader, device)
    results["iteration"] = state["iteration"]
    if is_sparsified(model):
        rep = report(model).to_dict()
        results["sparsity"] = {k: rep[k] for k in ("overall", "components", "thresholds")}
    reference = args.reference or config.eval.reference
    if reference is not None:
        results["delta_t"] = normalised_score(
            results["metrics"],
            read_reference(reference, "--reference"),
            tasks,
            args.reduce or config.eval.delta_reduce,
        )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        label = f"{config.method.name} @ {state['iteration']}"
        print(results_table([(label, results)], list(tasks)))
    return 0
