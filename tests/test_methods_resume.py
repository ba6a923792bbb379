"""A method restored from its state_dict mid-run finishes exactly as the uninterrupted run: the
unit form of the trainer's resume (model, optimizer, scheduler and method state), on the tiny
harness model."""

from __future__ import annotations

import pytest
import torch

from methods_harness import Run, plain_weights, start

CASES = [
    # (method, target, options, iterations, stop): each stop leaves state that matters later
    ("dense", None, {"keep_weights_at": 0}, 6, 3),
    ("imp", 0.8, {"start_fraction": 0.1, "end_fraction": 0.6, "steps": 4}, 12, 5),
    ("lth", 0.9, {"rounds": 2, "dense_fraction": 0.5}, 12, 4),
    ("lth", 0.9, {"rounds": 2, "dense_fraction": 0.5, "rewind_iteration": 1}, 12, 4),
    ("adapmtl", 0.5, {"allocation": "cost", "level": "schedule", "init": -3.0}, 12, 3),
]


def _resumed(name, target, options, iterations, stop) -> Run:
    first = start(name, target, options, iterations=iterations)
    first.fit(until=stop)
    saved = {
        "model": {k: v.clone() for k, v in first.model.state_dict().items()},
        "optimizer": first.ctx.optimizer.state_dict(),
        "scheduler": first.ctx.scheduler.state_dict(),
        "method": first.method.state_dict(),
    }
    second = start(name, target, options, iterations=iterations)
    second.model.load_state_dict(saved["model"])
    second.method.load_state_dict(saved["method"])
    second.ctx.optimizer.load_state_dict(saved["optimizer"])
    second.ctx.scheduler.load_state_dict(saved["scheduler"])
    second.iteration, second.started = stop, True  # a resumed run skips on_start
    second.fit()
    return second


def _same_state(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.parametrize(("name", "target", "options", "iterations", "stop"), CASES)
def test_resumed_method_ends_as_the_uninterrupted_one(name, target, options, iterations, stop):
    whole = start(name, target, options, iterations=iterations)
    whole.fit()
    resumed = _resumed(name, target, options, iterations, stop)
    expected, got = plain_weights(whole.model), plain_weights(resumed.model)
    assert all((expected[p] == got[p]).all() for p in expected)
    assert _same_state(whole.method.state_dict(), resumed.method.state_dict())
    assert whole.method.summary() == resumed.method.summary()
