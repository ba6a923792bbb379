"""Run under ``torchrun`` by tests/test_distributed.py: trains one run with the same session and
Trainer as ``adapmtl train`` and saves what each process ends with to ``<out>/rank<r>.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from adapmtl.config import load_config
from adapmtl.engine.distributed import session
from adapmtl.engine.trainer import Trainer


def main(config_path: str, out: str) -> None:
    config = load_config(config_path)
    with session(config.train.device) as dist:
        trainer = Trainer(config, out, verbose=False, dist=dist)
        results = trainer.fit()
        final = {
            "model": trainer.model.state_dict(),
            "weighting": trainer.weighting.state_dict(),
            "task_weights": trainer.weighting.weights,
            "method": trainer.method.state_dict(),
            "wraps": trainer.parallel.wraps,
            "results": results,
        }
        torch.save(final, Path(out) / f"rank{dist.rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
