"""Loading weights for export/bench, magnitude pruning, and the export/bench commands."""

import copy

import pytest
import torch
from torch import nn

from adapmtl.checkpoint import load_baked as load_weights
from adapmtl.cli import main
from adapmtl.commands.common import parse_size
from adapmtl.errors import UserError
from adapmtl.inference.layers import shares_positions
from adapmtl.inference.pruning import block_magnitude_prune, magnitude_prune
from adapmtl.loading import parse_tasks, read_state_dict
from adapmtl.sparsity import dense_state_dict, set_masks, sparse_layers, sparsify
from adapmtl.sparsity.export import load_exported


def net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 16, 3))
    model.heads = nn.ModuleDict({"a": nn.Conv2d(16, 2, 1), "b": nn.Conv2d(16, 1, 1)})
    return model


def conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every Conv2d weight, by module path."""
    return {
        path: m.weight.detach().clone()
        for path, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    }


def test_parse_tasks_and_size():
    assert parse_tasks("seg:40, normal:3,depth:1") == {"seg": 40, "normal": 3, "depth": 1}
    assert parse_size("321x257") == (321, 257) and parse_size("64") == (64, 64)
    for bad in ("seg", "seg:0", "seg:x", ""):
        with pytest.raises(UserError, match="NAME:CHANNELS"):
            parse_tasks(bad)
    with pytest.raises(UserError, match="HxW"):
        parse_size("32x")


def test_magnitude_prune_per_layer_exact_and_global():
    original = conv_weights(net())
    model = magnitude_prune(net(), 0.75)
    for path, before in original.items():
        after = model.get_submodule(path).weight
        k = round(0.75 * before.numel())
        smallest = torch.zeros(before.numel(), dtype=torch.bool)
        smallest[before.abs().flatten().argsort()[:k]] = True
        assert torch.equal((after == 0).flatten(), smallest)  # exactly the k smallest went
        assert torch.equal(after[after != 0], before[after != 0])  # survivors unchanged
    assert type(model.backbone[0]) is nn.Conv2d  # baked: plain layers
    glob = magnitude_prune(net(), 0.5, scope="global")
    weights = [m.weight for m in glob.modules() if isinstance(m, nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert zeros == round(0.5 * total)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(net(), 1.0)


def test_read_state_dict_formats(tmp_path):
    model = net()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": plain, "iteration": 3}, tmp_path / "ckpt.pt")
    torch.save(plain, tmp_path / "sd.pt")
    for name in ("ckpt.pt", "sd.pt"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(plain) and torch.equal(
            got["heads.a.weight"], plain["heads.a.weight"]
        )
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="expected a state dict"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "nope.pt")


@pytest.mark.parametrize("grouping", ["component", "global", "layer"])
def test_sparsified_state_dicts_load_baked(grouping):
    source = sparsify(net(), grouping=grouping, init=-3.5)  # alpha ~ 0.03: prunes some weights
    state = copy.deepcopy(source.state_dict())
    loaded = load_weights(net(), state, source="test")
    expected = dense_state_dict(source)
    assert set(loaded.state_dict()) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert type(loaded.heads["a"]) is nn.Conv2d


def test_mask_state_dict_loads_baked():
    source = sparsify(net(), mode="mask")
    shapes = {p: m.parametrizations.weight.original.shape for p, m, _ in sparse_layers(source)}
    set_masks(source, {p: torch.rand(s) < 0.3 for p, s in shapes.items()})
    loaded = load_weights(net(), source.state_dict(), source="test")
    assert torch.equal(loaded.backbone[2].weight, dense_state_dict(source)["backbone.2.weight"])


def test_state_dict_for_another_model_is_rejected():
    other = nn.Module()
    other.backbone = nn.Conv2d(3, 4, 1)
    with pytest.raises(UserError, match="missing"):
        load_weights(net(), other.state_dict(), source="x.pt")


def test_export_command_round_trip(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    from adapmtl.models import build_model

    tasks = {"seg": 4, "depth": 1}
    model = magnitude_prune(build_model("mobilenetv2_cpu", tasks), 0.9)
    torch.save(model.state_dict(), weights)
    out = tmp_path / "m.safetensors"
    code = main(
        ["export", str(weights), "--model", "mobilenetv2_cpu", "--tasks", "seg:4,depth:1",
         "--format", "sparse", "-o", str(out)]
    )  # fmt: skip
    assert code == 0 and "sparse" in capsys.readouterr().out
    restored = load_exported(out)
    for key, value in model.state_dict().items():
        assert torch.equal(restored[key], value), key
    # the exported file is itself a valid weights file for the commands
    assert main(["export", str(out), "--model", "mobilenetv2_cpu", "--tasks", "seg:4,depth:1",
                 "--format", "dense", "-o", str(tmp_path / "d.safetensors")]) == 0  # fmt: skip


def test_commands_reject_bad_input(tmp_path, capsys):
    assert (
        main(["export", "--model", "mobilenetv2_cpu", "-o", str(tmp_path / "x.safetensors")]) == 2
    )
    assert "--prune" in capsys.readouterr().err
    assert main(["export", "--model", "nonexistent", "--prune", "0.5", "-o", "x.safetensors"]) == 2
    assert "nonexistent" in capsys.readouterr().err
    assert main(["bench", "--model", "mobilenetv2_cpu", "--prune", "0.5", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_command_prints_plan_and_end_to_end(tmp_path, capsys):
    report = tmp_path / "bench.json"
    code = main(
        ["bench", "--model", "mobilenetv2_cpu", "--tasks", "seg:4", "--prune", "0.9",
         "--input-size", "32x32", "--threads", "1", "--repeats", "2", "--layer-repeats", "1",
         "--json", str(report)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "end to end (median of 2)" in out and "speedup" in out
    import json

    data = json.loads(report.read_text())
    assert data["end_to_end"]["max_rel_error"] < 1e-4


def test_block_magnitude_prune_keeps_largest_blocks_shared_by_4_channels():
    original = conv_weights(net())
    model = block_magnitude_prune(net(), 0.75)
    for path, before in original.items():
        after = model.get_submodule(path).weight
        assert torch.equal(after[after != 0], before[after != 0])  # survivors unchanged
        if before.shape[0] % 4:  # heads with 2 and 1 outputs: weight by weight
            assert int((after == 0).sum()) == round(0.75 * before.numel())
            continue
        assert shares_positions(after, 4)
        norms = before.reshape(before.shape[0] // 4, 4, -1).norm(dim=1).flatten()
        kept = (after.reshape(before.shape[0] // 4, 4, -1) != 0).any(1).flatten()
        assert int((~kept).sum()) == round(0.75 * norms.numel())
        assert norms[kept].min() >= norms[~kept].max()  # the largest-norm blocks stayed
    with pytest.raises(ValueError, match="block"):
        block_magnitude_prune(net(), 0.5, block=0)
