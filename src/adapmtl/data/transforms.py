"""Joint image/target transforms in plain torch: the references' training augmentation
(docs/reference_implementations.md, augmentation and evaluation resolution).

Every function takes and returns a sample ``(image [3, H, W], {task: target})`` in the library's
conventions (docs/architecture.md) and draws its randomness from an explicit
``torch.Generator``; nothing touches global random state. Images are resized bilinearly, every
target by nearest neighbour, so labels, invalid markers and unit normals are preserved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]

# Value that marks a padded pixel as invalid, per task (docs/architecture.md).
PAD_VALUES: dict[str, float] = {
    "seg": 255,
    "depth": 0.0,
    "normal": 0.0,
    "keypoint": 255.0,
    "edge": 255.0,
}
SCALE_RANGE = (0.5, 1.5)


def generator_for(*keys: int) -> torch.Generator:
    """A torch generator seeded from integer keys (e.g. base seed, split, epoch, index), so that
    every sample's randomness is reproducible in any worker process and independent of order."""
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _resize_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of [H, W] or [C, H, W] targets of any dtype."""
    batched = target.reshape(1, -1, *target.shape[-2:])
    if batched.dtype.is_floating_point:
        out = F.interpolate(batched, size=size, mode="nearest")
    else:
        out = F.interpolate(batched.double(), size=size, mode="nearest").to(target.dtype)
    return out.reshape(*target.shape[:-2], *size)


def resize(image: torch.Tensor, targets: dict[str, torch.Tensor], size: tuple[int, int]) -> Sample:
    """Resize to exactly ``size = (H, W)`` (aspect not kept): image bilinear, targets nearest."""
    size = (int(size[0]), int(size[1]))
    if tuple(image.shape[-2:]) == size:
        return image, dict(targets)
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    return image, {task: _resize_target(t, size) for task, t in targets.items()}


def random_scale(
    image: torch.Tensor,
    targets: dict[str, torch.Tensor],
    generator: torch.Generator,
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> Sample:
    """Scale both sides by s ~ U[low, high)."""
    s = _uniform(generator, *scale_range)
    height, width = image.shape[-2:]
    size = (max(1, round(height * s)), max(1, round(width * s)))
    return resize(image, targets, size)


def horizontal_flip(image: torch.Tensor, targets: dict[str, torch.Tensor]) -> Sample:
    """Mirror left-right. Normals' x component is negated (the NYUv2 references forget to); invalid
    normals (the all-zero vector) stay invalid because -0 == 0."""
    flipped = {task: t.flip(-1) for task, t in targets.items()}
    if "normal" in flipped:
        normal = flipped["normal"].clone()
        normal[0] = -normal[0]
        flipped["normal"] = normal
    return image.flip(-1), flipped


def random_flip(
    image: torch.Tensor,
    targets: dict[str, torch.Tensor],
    generator: torch.Generator,
    p: float = 0.5,
) -> Sample:
    if _uniform(generator) < p:
        return horizontal_flip(image, targets)
    return image, dict(targets)


def _pad(tensor: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    pad_h = max(0, height - tensor.shape[-2])
    pad_w = max(0, width - tensor.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return tensor
    shape = (*tensor.shape[:-2], tensor.shape[-2] + pad_h, tensor.shape[-1] + pad_w)
    out = tensor.new_full(shape, value)
    out[..., : tensor.shape[-2], : tensor.shape[-1]] = tensor
    return out


def pad_and_random_crop(
    image: torch.Tensor,
    targets: dict[str, torch.Tensor],
    size: tuple[int, int],
    generator: torch.Generator,
    image_pad: Sequence[float] = (0.0, 0.0, 0.0),
) -> Sample:
    """Pad bottom/right up to ``size`` (image with ``image_pad`` per channel, targets with their
    invalid marker, PAD_VALUES), then crop a random ``size`` window."""
    crop_h, crop_w = int(size[0]), int(size[1])
    padded = _pad(image, crop_h, crop_w, 0.0)
    if padded is not image:
        fill = torch.as_tensor(image_pad, dtype=image.dtype)[:, None, None]
        valid = torch.zeros(padded.shape[-2:], dtype=torch.bool)
        valid[: image.shape[-2], : image.shape[-1]] = True
        padded = torch.where(valid, padded, fill)
    padded_targets = {
        task: _pad(t, crop_h, crop_w, PAD_VALUES[task]) for task, t in targets.items()
    }
    height, width = padded.shape[-2:]
    top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    return padded[(..., *window)], {task: t[(..., *window)] for task, t in padded_targets.items()}


def train_transform(
    image: torch.Tensor,
    targets: dict[str, torch.Tensor],
    size: tuple[int, int],
    generator: torch.Generator,
    image_pad: Sequence[float] = (0.0, 0.0, 0.0),
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> Sample:
    """The references' training augmentation: random scale, horizontal flip, pad + crop."""
    image, targets = random_scale(image, targets, generator, scale_range)
    image, targets = random_flip(image, targets, generator)
    return pad_and_random_crop(image, targets, size, generator, image_pad)
