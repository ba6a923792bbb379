"""``optim.fused``: the trainer's Adam runs PyTorch's fused kernel on the CPU, and its step gives
the same weights, up to rounding, as PyTorch's default Adam (``optim.fused: false``). One step is
compared: the tiny run's updates are a tenth of its weights, so rounding differences grow about
a hundredfold per step and a longer run compares chaos, not the update."""

from __future__ import annotations

import torch

from conftest import fit_tiny

DENSE = {"name": "dense", "target": None}


def test_fused_adam_makes_the_same_step(tiny_settings, tmp_path):
    fused = fit_tiny(tiny_settings, tmp_path / "fused", DENSE, {"fused": True}, iterations=1)
    default = fit_tiny(tiny_settings, tmp_path / "default", DENSE, {"fused": False}, iterations=1)
    assert all(group["fused"] for group in fused.optimizer.param_groups)
    assert not any(group["fused"] for group in default.optimizer.param_groups)
    expected = default.model.state_dict()
    moved = 0
    for key, value in fused.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-6)
            moved += int(not torch.equal(value, expected[key]))
    assert moved > 0  # the kernels round differently: the comparison is not of one path twice
