"""Graceful stop on SIGINT/SIGTERM: the trainer finishes the current step, writes a checkpoint
and exits with a message saying how to resume.

A second SIGINT (Ctrl-C pressed twice) aborts at once with ``KeyboardInterrupt``; checkpoints are
written atomically, so the last complete one survives even that. SIGTERM is always graceful:
schedulers and torchrun follow it with SIGKILL after their grace period.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterruptedError(Exception):
    """Training stopped on a signal after writing a checkpoint; ``exit_code`` = 128 + signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """Which stop signals arrived (counts per signal), set by the handlers of :func:`catch`."""

    def __init__(self) -> None:
        self.counts = {int(s): 0 for s in STOP_SIGNALS}

    def vector(self) -> list[float]:
        """Counts in :data:`STOP_SIGNALS` order (summed over processes under DDP)."""
        return [float(self.counts[int(s)]) for s in STOP_SIGNALS]

    @staticmethod
    def signal_of(vector: list[float]) -> int | None:
        """The signal a (summed) :meth:`vector` asks to stop for; SIGINT wins over SIGTERM."""
        for signum, count in zip(STOP_SIGNALS, vector, strict=True):
            if count > 0:
                return int(signum)
        return None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.counts[signum] > 0:
            raise KeyboardInterrupt
        self.counts[signum] += 1


@contextmanager
def catch() -> Iterator[StopRequest]:
    """Record SIGINT/SIGTERM in a :class:`StopRequest` instead of dying, for the duration of the
    block (only in the main thread, where Python delivers signals)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, request._handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
