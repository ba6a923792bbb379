"""Round trips of masks and exported files: the bitmask codec on random tensors, export then load
into a plain or a sparsified model, and dense state dicts between the two kinds of model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from torch import nn

from adapmtl.sparsity import (
    bake,
    dense_state_dict,
    freeze_masks,
    load_dense_state_dict,
    set_masks,
    sparse_layers,
    sparsify,
    thresholds,
)
from adapmtl.sparsity.export import (
    LAYOUT_KEY,
    decode_bitmask,
    encode_bitmask,
    export_model,
    load_exported,
    load_into,
)
from sparsity_toys import conv_mtl, logit

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_bitmask_codec_round_trips_any_tensor(shape, density, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    tensor = torch.randn(shape, generator=g).to(dtype)
    tensor[torch.rand(shape, generator=g) >= density] = 0
    values, bits = encode_bitmask(tensor)
    n = math.prod(shape)
    assert bits.dtype == torch.uint8 and bits.numel() == (n + 7) // 8
    assert values.numel() == int(torch.count_nonzero(tensor)) and values.dtype == dtype
    # bit i of the little-endian packing is entry i of the row-major flattening
    flags = np.unpackbits(bits.numpy(), bitorder="little")[:n].astype(bool)
    assert np.array_equal(flags, (tensor.reshape(-1) != 0).numpy())
    assert torch.equal(decode_bitmask(values, bits, tuple(shape)), tensor)


def random_masks(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        path: torch.rand(m.parametrizations.weight.original.shape, generator=g) < 0.3
        for path, m, _ in sparse_layers(model)
    }


def forward(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
@pytest.mark.parametrize("seed", [0, 1])
def test_export_loads_into_a_sparsified_model_keeping_its_masks(tmp_path, fmt, seed):
    source = sparsify(conv_mtl(seed), mode="mask")
    masks = random_masks(source, seed)
    set_masks(source, masks)
    x = torch.randn(2, 3, 6, 6)
    expected = forward(source, x)
    path = export_model(source, tmp_path / "m.safetensors", format=fmt)

    target = sparsify(conv_mtl(seed + 10), mode="mask")  # other weights, same masks
    set_masks(target, masks)
    assert load_into(target, path) is target
    got = forward(target, x)
    for task in expected:
        assert torch.equal(got[task], expected[task]), task
    state = load_exported(path)
    for layer, module, p in sparse_layers(target):
        assert torch.equal(p.mask, masks[layer]), layer  # the target's masks stay
        # the file's effective weights went to the stored weights
        assert torch.equal(module.parametrizations.weight.original, state[f"{layer}.weight"])


def test_export_loads_into_a_soft_threshold_model_keeping_its_thresholds(tmp_path):
    source = sparsify(conv_mtl(0), mode="mask")
    set_masks(source, random_masks(source, 3))
    path = export_model(source, tmp_path / "m.safetensors")
    target = sparsify(conv_mtl(1), init=-4.0)
    theta = {g: t.detach().clone() for g, t in thresholds(target).items()}
    load_into(target, path)
    state = load_exported(path)
    for layer, module, _ in sparse_layers(target):
        assert torch.equal(module.parametrizations.weight.original, state[f"{layer}.weight"])
    for group, value in thresholds(target).items():
        assert torch.equal(value, theta[group]), group


@SETTINGS
@given(seed=st.integers(0, 2**16), alpha=st.floats(0.01, 0.2), frozen=st.booleans())
def test_dense_state_dict_of_a_soft_model_equals_its_baked_copy(seed, alpha, frozen):
    model = sparsify(conv_mtl(seed % 100))
    with torch.no_grad():
        for theta in thresholds(model).values():
            theta.fill_(logit(alpha))
    if frozen:
        freeze_masks(model)
    x = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    expected = forward(model, x)
    state = dense_state_dict(model)
    plain = conv_mtl(seed % 100 + 1)
    plain.load_state_dict(state)  # strict: exactly the plain model's keys
    got = forward(plain, x)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], rtol=0, atol=0)
    baked = bake(model)
    for key, value in baked.state_dict().items():
        assert torch.equal(value, state[key]), key
    # and a plain state dict goes back into a sparsified model's stored weights
    again = sparsify(conv_mtl(seed % 100 + 2), mode="mask")
    load_dense_state_dict(again, state)
    for task, out in forward(again, x).items():
        torch.testing.assert_close(out, expected[task], rtol=0, atol=0)


def test_sparse_export_encodes_exactly_the_tensors_that_get_smaller(tmp_path):
    model = sparsify(conv_mtl(0), mode="mask")
    masks = random_masks(model, 4)
    masks["heads.depth"] = torch.ones_like(masks["heads.depth"])  # a dense weight stays plain
    set_masks(model, masks)
    path = export_model(model, tmp_path / "m.safetensors", format="sparse")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    state = dense_state_dict(model)
    encoded = 0
    for key, tensor in state.items():
        size = tensor.element_size()
        smaller = tensor.is_floating_point() and (
            int(torch.count_nonzero(tensor)) * size + (tensor.numel() + 7) // 8
            < tensor.numel() * size
        )
        assert (key + "::values" in keys) == smaller, key
        assert (key in keys) != smaller, key
        encoded += smaller
    assert 0 < encoded < len(state)


def test_export_creates_missing_parent_directories(tmp_path):
    model = sparsify(conv_mtl(0), mode="mask")
    path = export_model(model, tmp_path / "new" / "nested" / "m.safetensors")
    assert path.is_file()
    assert load_exported(path).keys() == dense_state_dict(model).keys()


@pytest.mark.parametrize("suffix", ["::values", "::bitmask"])
def test_an_encoded_piece_missing_from_the_layout_is_an_error(tmp_path, suffix):
    from safetensors.torch import save_file

    from adapmtl.errors import UserError

    path = export_model(sparsify(conv_mtl(0), mode="mask"), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        metadata = f.metadata()
    tensors["stray" + suffix] = torch.zeros(2, dtype=torch.uint8)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(UserError, match=r"\['stray" + suffix + r"'\] are not described"):
        load_exported(tmp_path / "bad.safetensors")


def _tampered(tmp_path, change) -> str:
    """A sparse export of a partly pruned model with one layout entry edited by ``change``."""
    import json

    from safetensors.torch import save_file

    path = export_model(sparsify(conv_mtl(0), init=-3.0), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        metadata = f.metadata()
    layout = json.loads(metadata[LAYOUT_KEY])
    key = sorted(layout)[0]
    change(layout[key])
    metadata[LAYOUT_KEY] = json.dumps(layout)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    return key


def test_a_layout_that_disagrees_with_the_stored_pieces_is_named(tmp_path):
    from adapmtl.errors import UserError

    key = _tampered(tmp_path, lambda entry: entry.update(dtype="float16"))
    message = rf"'{key}': values are torch.float32, layout says 'float16'"
    with pytest.raises(UserError, match=message):
        load_exported(tmp_path / "bad.safetensors")
    held = {}

    def add_one(entry):
        held["n"] = int(entry["nonzero"])
        entry["nonzero"] = held["n"] + 1

    key = _tampered(tmp_path, add_one)
    message = rf"'{key}': layout says {held['n'] + 1} nonzeros, file holds {held['n']}"
    with pytest.raises(UserError, match=message):
        load_exported(tmp_path / "bad.safetensors")


def test_an_unknown_encoding_and_the_callers_metadata(tmp_path):
    from adapmtl.errors import UserError
    from adapmtl.sparsity.export import read_metadata

    key = _tampered(tmp_path, lambda entry: entry.update(encoding="rle"))
    with pytest.raises(UserError, match=rf"'{key}': unknown encoding 'rle', expected 'bitmask'"):
        load_exported(tmp_path / "bad.safetensors")
    path = export_model(conv_mtl(0), tmp_path / "n.safetensors", metadata={"note": 3})
    assert read_metadata(path)["note"] == "3"
