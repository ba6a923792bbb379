"""lenet_mtl: output shapes, the trunk/heads weight split, and a CLI training run on tiny
Fashion-MNIST files."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from adapmtl.cli import main
from adapmtl.errors import UserError
from adapmtl.models import build_model
from adapmtl.models.counts import component_counts
from adapmtl.sparsity import sparsify
from fashion_files import write_fashion


def test_outputs_are_logits_per_task():
    model = build_model("lenet_mtl", {"left": 10, "right": 10, "extra": 3})
    out = model(torch.zeros(5, 1, 28, 56))
    assert {task: tuple(t.shape) for task, t in out.items()} == {
        "left": (5, 10),
        "right": (5, 10),
        "extra": (5, 3),
    }
    assert model.out_channels == {"left": 10, "right": 10, "extra": 3}


def test_weight_split_of_the_docstring():
    counts = component_counts(build_model("lenet_mtl", {"left": 10, "right": 10}))
    # conv 1->32 5x5, conv 32->64 5x5, Linear (64 * 4 * 11) -> 128 on a 28 x 56 input
    trunk = 1 * 32 * 25 + 32 * 64 * 25 + 64 * 4 * 11 * 128
    head = 128 * 192 + 192 * 10
    assert counts == {"backbone": trunk, "left": head, "right": head}
    assert trunk / (trunk + 2 * head) == pytest.approx(0.886, abs=5e-4)


def test_batch_norm_adds_no_prunable_weights_and_makes_layers_scale_invariant():
    plain = build_model("lenet_mtl", {"left": 10, "right": 10})
    normed = build_model("lenet_mtl", {"left": 10, "right": 10}, batch_norm=True)
    assert component_counts(normed) == component_counts(plain)
    norms = [m for m in normed.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 3 + 2  # two convs and the trunk's Linear; each head's hidden Linear
    torch.manual_seed(0)
    x = torch.randn(8, 1, 28, 56)
    before = normed(x)["left"]
    with torch.no_grad():
        for layer in (normed.backbone.layers[0], normed.backbone.layers[4]):
            layer.weight.mul_(3.0)
            layer.bias.mul_(3.0)
    after = normed(x)["left"]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_input_size_and_bad_sizes():
    model = build_model("lenet_mtl", {"a": 2}, in_channels=3, input_size=(32, 32))
    assert model(torch.zeros(2, 3, 32, 32))["a"].shape == (2, 2)
    with pytest.raises(UserError, match="too small"):
        build_model("lenet_mtl", {"a": 2}, input_size=(12, 56))


def test_component_sparsification_gives_the_trunk_and_each_head_a_threshold():
    model = build_model("lenet_mtl", {"left": 10, "right": 10})
    sparsify(model, grouping="component")
    assert model(torch.zeros(2, 1, 28, 56))["right"].shape == (2, 10)
    assert set(model.components()) == {"backbone", "left", "right"}


def test_cli_trains_and_evaluates_on_tiny_fashion_files(tmp_path, capsys):
    root = tmp_path / "fashion"
    write_fashion(root)
    settings = {
        "model": {"name": "lenet_mtl"},
        "tasks": {"preset": "fashion_pairs"},
        "data": {
            "name": "fashion_pairs",
            "batch_size": 8,
            "eval_batch_size": 8,
            "options": {"root": str(root), "holdout": 8},
            "train_options": {"n": 32},
            "val_options": {"n": 12},
        },
        "method": {"name": "adapmtl", "target": 0.5, "options": {"init": -5.0}},
        "weighting": {"name": "adaptive", "options": {"window": 2, "warmup": 2}},
        "optim": {"lr": 1e-3, "lr_step": 10, "threshold_lr": 0.1},
        "train": {"iterations": 6, "val_every": 3, "log_every": 3, "checkpoint_every": 3},
    }
    config = tmp_path / "fashion.yaml"
    config.write_text(yaml.safe_dump(settings))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert set(metrics) == {"left", "right"}
    for values in metrics.values():
        # accuracy over 12 canvases: a multiple of 100 / 12
        assert 0 <= values["accuracy"] <= 100
        assert values["accuracy"] * 12 / 100 == pytest.approx(round(values["accuracy"] * 0.12))
    capsys.readouterr()
    assert main(["eval", str(run / "last.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["left"] == pytest.approx(metrics["left"])
