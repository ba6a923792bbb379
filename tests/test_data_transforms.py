"""Joint transforms: resize, scale, flip, pad + crop; seeding without global state."""

from __future__ import annotations

import torch

from adapmtl.data.transforms import (
    PAD_VALUES,
    generator_for,
    horizontal_flip,
    pad_and_random_crop,
    random_scale,
    resize,
    train_transform,
)


def sample(height: int = 6, width: int = 8):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, height, width, generator=g)
    seg = torch.randint(0, 5, (height, width), generator=g)
    seg[0, 0] = 255
    normal = torch.nn.functional.normalize(torch.randn(3, height, width, generator=g), dim=0)
    normal[:, 1, 1] = 0.0  # invalid
    targets = {
        "seg": seg,
        "depth": torch.rand(1, height, width, generator=g) + 0.5,
        "normal": normal,
        "keypoint": torch.rand(1, height, width, generator=g),
        "edge": (torch.rand(1, height, width, generator=g) > 0.5).float(),
    }
    return image, targets


def test_horizontal_flip_mirrors_and_negates_normal_x_only() -> None:
    image, targets = sample()
    flipped_image, flipped = horizontal_flip(image, targets)
    assert torch.equal(flipped_image[:, :, 0], image[:, :, -1])
    assert torch.equal(flipped["seg"][:, 0], targets["seg"][:, -1])
    assert torch.equal(flipped["normal"][0, :, 0], -targets["normal"][0, :, -1])
    assert torch.equal(flipped["normal"][1:, :, 0], targets["normal"][1:, :, -1])
    # The invalid (all-zero) normal stays all-zero, at its mirrored position.
    assert torch.equal(flipped["normal"][:, 1, -2], torch.zeros(3))
    twice_image, twice = horizontal_flip(flipped_image, flipped)
    assert torch.equal(twice_image, image)
    assert all(torch.equal(twice[t], targets[t]) for t in targets)


def test_resize_uses_nearest_for_targets_and_bilinear_for_the_image() -> None:
    image, targets = sample(4, 4)
    big_image, big = resize(image, targets, (8, 8))
    # Nearest upsampling by 2 repeats every value in a 2x2 block.
    for task, target in targets.items():
        expected = target.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        assert torch.equal(big[task], expected), task
    assert big["seg"].dtype == torch.int64
    expected_image = torch.nn.functional.interpolate(
        image[None], size=(8, 8), mode="bilinear", align_corners=False
    )[0]
    assert torch.allclose(big_image, expected_image)
    # Bilinear output mixes neighbours: it is not a block copy.
    assert not torch.equal(big_image, image.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_resize_to_the_same_size_is_identity() -> None:
    image, targets = sample()
    out_image, out = resize(image, targets, (6, 8))
    assert torch.equal(out_image, image) and all(torch.equal(out[t], targets[t]) for t in targets)


def test_random_scale_stays_in_range_and_keeps_label_values() -> None:
    image, targets = sample(20, 30)
    heights = set()
    for seed in range(30):
        scaled_image, scaled = random_scale(image, targets, torch.Generator().manual_seed(seed))
        h, w = scaled_image.shape[-2:]
        assert 10 <= h < 30 + 1 and 15 <= w < 45 + 1
        assert abs(w / h - 1.5) < 0.1
        assert set(scaled["seg"].unique().tolist()) <= set(targets["seg"].unique().tolist())
        heights.add(h)
    assert len(heights) > 5


def test_pad_and_crop_pads_with_invalid_markers() -> None:
    image, targets = sample(4, 5)
    pad = (-1.0, -2.0, -3.0)
    out_image, out = pad_and_random_crop(image, targets, (7, 9), torch.Generator(), pad)
    assert out_image.shape == (3, 7, 9)
    # Padding is bottom/right: the original sits at the top-left corner.
    assert torch.equal(out_image[:, :4, :5], image)
    assert torch.equal(out_image[:, 4:, :], torch.tensor(pad)[:, None, None].expand(3, 3, 9))
    for task, value in PAD_VALUES.items():
        assert (out[task][..., 4:, :] == value).all() and (out[task][..., :, 5:] == value).all()
        assert torch.equal(out[task][..., :4, :5], targets[task])
    assert PAD_VALUES["seg"] == 255 and PAD_VALUES["depth"] == 0 and PAD_VALUES["normal"] == 0


def test_random_crop_is_a_window_of_the_input() -> None:
    image, targets = sample(10, 12)
    seen = set()
    for seed in range(20):
        out_image, out = pad_and_random_crop(image, targets, (4, 5), generator_for(seed))
        matches = [
            (top, left)
            for top in range(7)
            for left in range(8)
            if torch.equal(image[:, top : top + 4, left : left + 5], out_image)
            and torch.equal(targets["seg"][top : top + 4, left : left + 5], out["seg"])
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5


def test_train_transform_depends_only_on_the_generator() -> None:
    image, targets = sample(12, 16)
    torch.manual_seed(1)
    a_image, a = train_transform(image, targets, (8, 8), generator_for(3, 4))
    torch.manual_seed(2)  # global state must not matter
    b_image, b = train_transform(image, targets, (8, 8), generator_for(3, 4))
    assert torch.equal(a_image, b_image) and all(torch.equal(a[t], b[t]) for t in a)
    assert a_image.shape == (3, 8, 8) and a["seg"].shape == (8, 8)


def test_generator_for_keys() -> None:
    def draw(*keys: int) -> torch.Tensor:
        return torch.rand(4, generator=generator_for(*keys))

    assert torch.equal(draw(1, 2, 3), draw(1, 2, 3))
    assert not torch.equal(draw(1, 2, 3), draw(1, 2, 4))
    assert not torch.equal(draw(1, 2, 3), draw(2, 1, 3))
