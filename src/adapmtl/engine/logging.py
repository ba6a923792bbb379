"""Run logging: JSONL of every scalar (always), TensorBoard when installed (one line at the start
says when it is not), and a progress bar on interactive terminals or plain periodic lines
otherwise (CI)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

TENSORBOARD_OFF = (
    "TensorBoard logging is off (tensorboard is not installed; pip install tensorboard turns it "
    "on); every scalar is in log.jsonl, and adapmtl plot RUN draws them"
)


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


class RunLogger:
    """Writes ``log.jsonl`` in the run directory; mirrors scalars to TensorBoard if available.

    ``enabled=False`` writes nothing (processes other than rank 0); ``console=False`` keeps the
    files but prints nothing."""

    def __init__(
        self, run_dir: Path, total: int, start: int = 0, enabled: bool = True, console: bool = True
    ) -> None:
        self.enabled = enabled
        self.console = enabled and console
        self.path = run_dir / "log.jsonl"
        self.tensorboard = None
        self.bar = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            self.tensorboard = None
        if self.console and _interactive():
            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, desc="train")
        if self.tensorboard is None:
            self.message(TENSORBOARD_OFF)

    def log(self, iteration: int, scalars: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "iteration": iteration, **scalars}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)) and value is not None:
                    self.tensorboard.add_scalar(f"{kind}/{key}", value, iteration)

    def progress(self, iteration: int, text: str) -> None:
        if not self.console:
            return
        if self.bar is not None:
            self.bar.n = iteration
            self.bar.set_postfix_str(text, refresh=True)
        else:
            print(f"[{iteration}] {text}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.console:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
