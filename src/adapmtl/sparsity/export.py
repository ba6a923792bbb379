"""Deployment export of a (sparse) model as safetensors, and the loader for it.

Two formats, both holding the *plain* state dict (keys of the never-sparsified model, effective
weights with exact zeros, no thresholds or masks):

* ``dense``: every tensor as is. Plain PyTorch loads it with
  ``model.load_state_dict(safetensors.torch.load_file(path))``; the file is as large as a dense one.
* ``sparse`` (bitmask): a floating-point tensor ``K`` whose bitmask encoding is smaller than the
  tensor is stored as ``K::values`` (its nonzero entries, row-major, original dtype) and
  ``K::bitmask`` (uint8, one bit per entry of the row-major flattened tensor, 1 = nonzero,
  little-endian bit order within each byte); its shape, dtype and nonzero count are in the JSON
  metadata entry ``adapmtl.layout``. Every other tensor is stored unchanged under its own key. At
  90 % sparsity in float32 a weight costs 0.1 x 4 + 1/8 bytes instead of 4 (0.13x).

The metadata says which format a file is (``adapmtl.format``); a safetensors file without it is
read as a plain dense state dict. Zeros come back as +0.0 (the sign of a zero is not kept).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from adapmtl.errors import UserError
from adapmtl.sparsity.masks import dense_state_dict, load_dense_state_dict
from adapmtl.sparsity.sparsify import is_sparsified

FORMATS = ("dense", "sparse")
FORMAT_KEY = "adapmtl.format"
LAYOUT_KEY = "adapmtl.layout"
VERSION_KEY = "adapmtl.version"
VERSION = "1"
VALUES, BITMASK = "::values", "::bitmask"
_MASK_BUFFER = ".parametrizations.weight.0.mask"
_FORMAT_NAMES = {"dense": "dense", "sparse": "sparse-bitmask"}
_DESCRIPTION = (
    "tensor K listed in adapmtl.layout is stored as K::values (nonzero entries in row-major order) "
    "and K::bitmask (uint8, bit i = entry i of the row-major flattened tensor is nonzero, "
    "little-endian bit order); shape and dtype are in adapmtl.layout"
)
_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16)
}


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain (never sparsified) model with the effective weights."""
    state = dense_state_dict(model) if is_sparsified(model) else model.state_dict()
    return {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}


def encode_bitmask(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nonzero values in row-major order, packed little-endian bitmask as uint8)."""
    flat = tensor.detach().cpu().reshape(-1)
    nonzero = flat != 0
    bits = np.packbits(nonzero.numpy(), bitorder="little")
    return flat[nonzero].clone(), torch.from_numpy(bits)


def decode_bitmask(
    values: torch.Tensor, bitmask: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """Inverse of :func:`encode_bitmask`; raises ``ValueError`` if the pieces do not fit."""
    numel = int(np.prod(shape, dtype=np.int64))
    if bitmask.dtype != torch.uint8 or bitmask.numel() != (numel + 7) // 8:
        raise ValueError(
            f"bitmask has {bitmask.numel()} {bitmask.dtype} entries, "
            f"expected {(numel + 7) // 8} uint8 for shape {list(shape)}"
        )
    nonzero = torch.from_numpy(
        np.unpackbits(bitmask.numpy(), count=numel, bitorder="little").astype(bool)
    )
    count = int(nonzero.sum())
    if values.dim() != 1 or values.numel() != count:
        raise ValueError(f"bitmask marks {count} nonzeros but values hold {values.numel()}")
    out = torch.zeros(numel, dtype=values.dtype, device=values.device)
    out[nonzero] = values
    return out.reshape(shape)


def _worth_encoding(tensor: torch.Tensor) -> bool:
    if not tensor.is_floating_point() or tensor.dtype not in _DTYPES.values():
        return False
    numel = tensor.numel()
    nonzero = int(torch.count_nonzero(tensor))
    return nonzero * tensor.element_size() + (numel + 7) // 8 < numel * tensor.element_size()


def _write_atomically(tensors: dict[str, torch.Tensor], path: Path, metadata: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # O_EXCL: never write through a file someone else created. The file gets the mode of any
    # other new file (0o666 minus the umask, unlike mkstemp's 0o600); safetensors replaces the
    # file it writes, so that mode is put back afterwards.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str = "sparse",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the model's plain state dict to ``path`` as safetensors in ``format`` (``dense`` or
    ``sparse``). ``metadata`` (string to string) is stored alongside; the model is not changed."""
    if format not in FORMATS:
        raise UserError(f"export format must be one of {FORMATS}, got {format!r}")
    state = plain_state_dict(model)
    info = {
        "format": "pt",
        FORMAT_KEY: _FORMAT_NAMES[format],
        VERSION_KEY: VERSION,
        **{str(k): str(v) for k, v in (metadata or {}).items()},
    }
    tensors: dict[str, torch.Tensor] = {}
    if format == "dense":
        tensors = state
    else:
        layout = {}
        for key, tensor in state.items():
            if VALUES in key or BITMASK in key:
                raise UserError(f"state dict key {key!r} contains a reserved suffix")
            if _worth_encoding(tensor):
                values, bits = encode_bitmask(tensor)
                tensors[key + VALUES], tensors[key + BITMASK] = values, bits
                layout[key] = {
                    "encoding": "bitmask",
                    "shape": list(tensor.shape),
                    "dtype": str(tensor.dtype).removeprefix("torch."),
                    "nonzero": values.numel(),
                }
            else:
                tensors[key] = tensor
        info[LAYOUT_KEY] = json.dumps(layout)
        info["adapmtl.description"] = _DESCRIPTION
    target = Path(path)
    _write_atomically(tensors, target, info)
    return target


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (empty if it has none)."""
    with _open(path) as f:
        return dict(f.metadata() or {})


def _open(path: str | os.PathLike):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a safetensors file ({err})") from None


def load_exported(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`export_model` (either format) or any plain safetensors state
    dict, and return the plain state dict. Raises ``UserError`` naming the file and the key when
    the file is not safetensors, a listed tensor is missing, or its pieces do not match the
    layout."""
    with _open(path) as f:
        metadata = dict(f.metadata() or {})
        raw = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    kind = metadata.get(FORMAT_KEY, "dense")
    if kind == _FORMAT_NAMES["dense"]:
        return raw
    if kind != _FORMAT_NAMES["sparse"]:
        raise UserError(
            f"{path}: unknown {FORMAT_KEY} {kind!r}, "
            f"expected one of {sorted(_FORMAT_NAMES.values())}"
        )
    try:
        layout = json.loads(metadata[LAYOUT_KEY])
    except (KeyError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: metadata {LAYOUT_KEY!r} missing or not JSON ({err})") from None
    state = {key: value for key, value in raw.items() if VALUES not in key and BITMASK not in key}
    for key, entry in layout.items():
        where = f"{path}: tensor {key!r}"
        if entry.get("encoding") != "bitmask":
            raise UserError(
                f"{where}: unknown encoding {entry.get('encoding')!r}, expected 'bitmask'"
            )
        for part in (VALUES, BITMASK):
            if key + part not in raw:
                raise UserError(f"{where}: the file has no {key + part!r}")
        values = raw[key + VALUES]
        dtype = _DTYPES.get(str(entry.get("dtype")))
        if dtype is None or values.dtype != dtype:
            raise UserError(
                f"{where}: values are {values.dtype}, layout says {entry.get('dtype')!r}"
            )
        try:
            shape = tuple(int(s) for s in entry["shape"])
            state[key] = decode_bitmask(values, raw[key + BITMASK], shape)
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{where}: does not match its layout ({err})") from None
        if "nonzero" in entry and int(entry["nonzero"]) != values.numel():
            raise UserError(
                f"{where}: layout says {entry['nonzero']} nonzeros, file holds {values.numel()}"
            )
    orphans = sorted(
        k for k in raw if (VALUES in k or BITMASK in k) and k.rsplit("::", 1)[0] not in layout
    )
    if orphans:
        raise UserError(f"{path}: tensors {orphans[:3]} are not described in {LAYOUT_KEY!r}")
    return state


def load_into(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an exported file into ``model`` (plain, or sparsified: then the weights go to the
    stored weights and the masks/thresholds stay). Raises ``UserError`` listing missing and
    unexpected keys or the first shape mismatch."""
    state = load_exported(path)
    if is_sparsified(model):
        try:
            load_dense_state_dict(model, state)
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        return model
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state)
    return model


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Raise ``UserError`` unless ``state`` has exactly the model's keys and shapes (a mask
    buffer of a sparsified model may differ in shape: loading adopts the saved one)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{source}: state dict does not fit the model: "
            f"missing {len(missing)} {missing[:3]}, unexpected {len(unexpected)} {unexpected[:3]}"
        )
    for key, value in state.items():
        if key.endswith(_MASK_BUFFER):
            continue
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UserError(
                f"{source}: {key} has shape {list(value.shape)}, "
                f"the model expects {list(expected[key].shape)}"
            )
