"""Dense and bitmask export: round trips, file size, plain-PyTorch loading, and bad files."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adapmtl.errors import UserError
from adapmtl.sparsity import bake, set_masks, sparsify
from adapmtl.sparsity.export import (
    decode_bitmask,
    encode_bitmask,
    export_model,
    load_exported,
    load_into,
    read_metadata,
)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Module()
    model.backbone = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3)
    )
    model.heads = nn.ModuleDict({"seg": nn.Conv2d(64, 5, 1), "depth": nn.Conv2d(64, 1, 1)})
    model.forward = lambda x: {t: h(model.backbone(x)) for t, h in model.heads.items()}
    return model


def pruned(sparsity: float) -> nn.Module:
    """Sparsified model with per-layer magnitude masks at ``sparsity``."""
    model = sparsify(small_model(), mode="mask")
    masks = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach().abs().flatten()
            k = int(sparsity * w.numel())
            masks[path] = (module.weight.detach().abs() > w.kthvalue(k).values) if k else None
    set_masks(model, {p: m for p, m in masks.items() if m is not None})
    return model.eval()


def outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_bitmask_codec_against_numpy():
    t = torch.tensor([[0.0, 1.5, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    values, bits = encode_bitmask(t)
    assert values.tolist() == [1.5, -2.0, 3.0]
    # row-major bits 0,1,0,1,0,0,0,0 | 1 -> little-endian bytes 0b00001010, 0b00000001
    assert bits.tolist() == [10, 1]
    assert torch.equal(decode_bitmask(values, bits, (3, 3)), t)
    with pytest.raises(ValueError, match="nonzeros"):
        decode_bitmask(values[:2], bits, (3, 3))
    with pytest.raises(ValueError, match="uint8"):
        decode_bitmask(values, bits[:1], (3, 3))


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
def test_round_trip_identical_outputs(tmp_path, fmt):
    model = pruned(0.9)
    x = torch.randn(2, 3, 12, 12)
    expected = outputs(model, x)
    path = export_model(model, tmp_path / f"m.{fmt}.safetensors", format=fmt)
    fresh = small_model().eval()
    load_into(fresh, path)
    got = outputs(fresh, x)
    for task in expected:
        assert torch.equal(got[task], expected[task])
    assert read_metadata(path)["adapmtl.format"] in ("dense", "sparse-bitmask")


def test_dense_file_loads_with_plain_pytorch(tmp_path):
    model = pruned(0.8)
    path = export_model(model, tmp_path / "d.safetensors", format="dense")
    state = load_file(path)  # plain safetensors, no adapmtl code
    plain = small_model()
    plain.load_state_dict(state)  # strict: plain keys, no parametrization keys
    w = plain.backbone[3].weight
    assert (w == 0).float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert torch.equal(w, bake(model).backbone[3].weight)


def test_sparse_file_size_at_90_percent(tmp_path):
    torch.manual_seed(1)
    big = nn.Module()
    big.backbone = nn.Conv2d(64, 128, 3)
    big.heads = nn.ModuleDict({"t": nn.Conv2d(128, 128, 3)})
    model = sparsify(big, mode="mask")
    set_masks(model, {p: torch.rand(m.weight.shape) >= 0.9 for p, m, _ in _layers(model)})
    dense = export_model(model, tmp_path / "d.safetensors", format="dense").stat().st_size
    sparse = export_model(model, tmp_path / "s.safetensors", format="sparse").stat().st_size
    # expected: 0.1 * 4 B + 1/8 B per weight = 0.131 of 4 B (biases stay dense)
    assert sparse / dense <= 0.15
    assert sparse / dense == pytest.approx(0.131, abs=0.01)


def _layers(model):
    from adapmtl.sparsity import sparse_layers

    return sparse_layers(model)


def test_plain_safetensors_file_is_read_as_dense(tmp_path):
    model = small_model()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "p.st")
    fresh = small_model()
    load_into(fresh, tmp_path / "p.st")
    assert torch.equal(fresh.heads["seg"].weight, model.heads["seg"].weight)


def test_bad_files_give_clear_errors(tmp_path):
    model = pruned(0.9)
    path = export_model(model, tmp_path / "s.safetensors", format="sparse")
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(UserError, match="not a safetensors file"):
        load_exported(junk)

    raw = load_file(path)
    meta = read_metadata(path)
    key = "backbone.3.weight"
    broken = {k: v for k, v in raw.items() if k != key + "::bitmask"}
    save_file(broken, tmp_path / "b1.st", metadata=meta)
    with pytest.raises(UserError, match=r"backbone\.3\.weight.*::bitmask"):
        load_exported(tmp_path / "b1.st")

    short = dict(raw)
    short[key + "::values"] = raw[key + "::values"][:-1].clone()
    save_file(short, tmp_path / "b2.st", metadata=meta)
    with pytest.raises(UserError, match="does not match its layout"):
        load_exported(tmp_path / "b2.st")

    layout = json.loads(meta["adapmtl.layout"])
    layout[key]["shape"] = [1, 2, 3]
    save_file(raw, tmp_path / "b3.st", metadata={**meta, "adapmtl.layout": json.dumps(layout)})
    with pytest.raises(UserError, match="does not match its layout"):
        load_exported(tmp_path / "b3.st")

    other = nn.Module()
    other.backbone = nn.Conv2d(3, 8, 3)
    with pytest.raises(UserError, match=r"missing .* unexpected"):
        load_into(other, path)

    wrong = small_model()
    wrong.heads["seg"] = nn.Conv2d(64, 7, 1)
    with pytest.raises(UserError, match=r"heads\.seg\.(weight|bias) has shape \[5.*expects \[7"):
        load_into(wrong, path)


def test_export_leaves_no_partial_file(tmp_path, monkeypatch):
    import adapmtl.sparsity.export as export

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        export_model(pruned(0.5), tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_decoded_values_equal_numpy_reference():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    a[rng.random((5, 7)) < 0.7] = 0
    values, bits = encode_bitmask(torch.from_numpy(a))
    assert np.array_equal(values.numpy(), a[a != 0])
    assert np.array_equal(bits.numpy(), np.packbits(a.ravel() != 0, bitorder="little"))


@pytest.mark.parametrize("suffix", ["::values", "::bitmask"])
def test_a_key_with_either_reserved_suffix_is_refused(tmp_path, suffix):
    """A state dict key holding one of the sparse format's own suffixes would be read back as
    part of an encoded tensor: each one alone is refused, by name, and no file is written."""
    model = small_model()
    model.register_buffer("scale" + suffix, torch.ones(3))
    path = tmp_path / "s.safetensors"
    with pytest.raises(UserError, match=rf"'scale{suffix}' contains a reserved suffix"):
        export_model(model, path, format="sparse")
    assert not path.exists()
