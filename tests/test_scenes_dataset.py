"""ScenesDataset: determinism, seed streams, sample format, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from adapmtl.data.errors import DataError
from adapmtl.data.scenes import ScenesDataset
from adapmtl.data.scenes.dataset import IMAGE_MEAN, IMAGE_STD

ALL = ("seg", "depth", "normal", "keypoint", "edge")


def sample_bytes(sample) -> bytes:
    image, targets = sample
    return image.numpy().tobytes() + b"".join(targets[t].numpy().tobytes() for t in sorted(targets))


def test_sample_format_follows_the_conventions() -> None:
    image, targets = ScenesDataset(2, size=(24, 40), seed=1)[1]
    assert image.dtype == torch.float32 and image.shape == (3, 24, 40)
    assert set(targets) == set(ALL)
    assert targets["seg"].dtype == torch.int64 and targets["seg"].shape == (24, 40)
    for task, channels in (("depth", 1), ("normal", 3), ("keypoint", 1), ("edge", 1)):
        assert targets[task].dtype == torch.float32
        assert targets[task].shape == (channels, 24, 40)


def test_image_normalisation_is_the_documented_one() -> None:
    scenes = ScenesDataset(1, size=(16, 16), seed=2)
    rgb = scenes.render(0).rgb
    image, _ = scenes[0]
    expected = (rgb.transpose(2, 0, 1) / 255.0 - np.array(IMAGE_MEAN)[:, None, None]) / np.array(
        IMAGE_STD
    )[:, None, None]
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-6)


def test_task_subset() -> None:
    _, targets = ScenesDataset(1, size=(16, 16), tasks=("seg", "depth"))[0]
    assert set(targets) == {"seg", "depth"}


def test_same_seed_same_bytes_in_any_order() -> None:
    a = ScenesDataset(6, size=(20, 28), seed=5)
    b = ScenesDataset(6, size=(20, 28), seed=5)
    forward = [sample_bytes(a[i]) for i in range(6)]
    backward = [sample_bytes(b[i]) for i in reversed(range(6))][::-1]
    assert forward == backward


def test_different_seeds_splits_and_indices_give_different_scenes() -> None:
    def rgb(seed: int, split: str, index: int) -> np.ndarray:
        return ScenesDataset(4, size=(20, 20), seed=seed, split=split).render(index).rgb

    reference = rgb(0, "train", 0)
    for other in (rgb(1, "train", 0), rgb(0, "val", 0), rgb(0, "test", 0), rgb(0, "train", 1)):
        assert not np.array_equal(reference, other)


def test_worker_processes_render_the_same_samples() -> None:
    scenes = ScenesDataset(4, size=(16, 16), seed=7)
    direct = [sample_bytes(scenes[i]) for i in range(4)]
    loader = DataLoader(scenes, batch_size=1, num_workers=2)
    via_workers = [
        sample_bytes((image[0], {t: v[0] for t, v in targets.items()})) for image, targets in loader
    ]
    assert via_workers == direct


def test_same_scene_at_two_resolutions() -> None:
    small = ScenesDataset(1, size=(32, 32), seed=4).render(0)
    large = ScenesDataset(1, size=(64, 64), seed=4).render(0)
    # A 2x2 block of the large render shares the small pixel's area: its labels mostly agree.
    agree = (large.seg[::2, ::2] == small.seg) | (large.seg[1::2, 1::2] == small.seg)
    assert agree.mean() > 0.95


def test_flip_augmentation_mirrors_and_negates_normal_x() -> None:
    plain = ScenesDataset(8, size=(16, 24), seed=9)
    augmented = ScenesDataset(8, size=(16, 24), seed=9, augment=True)
    flipped_count = 0
    for i in range(8):
        image, targets = plain[i]
        aug_image, aug_targets = augmented[i]
        if torch.equal(aug_image, image):
            assert all(torch.equal(aug_targets[t], targets[t]) for t in targets)
            continue
        flipped_count += 1
        assert torch.equal(aug_image, image.flip(-1))
        assert torch.equal(aug_targets["seg"], targets["seg"].flip(-1))
        assert torch.equal(aug_targets["normal"][0], -targets["normal"][0].flip(-1))
        assert torch.equal(aug_targets["normal"][1:], targets["normal"][1:].flip(-1))
    assert 0 < flipped_count < 8


def test_augmentation_depends_on_epoch_not_on_call_order() -> None:
    scenes = ScenesDataset(16, size=(8, 8), seed=1, augment=True)
    first = [sample_bytes(scenes[i]) for i in range(16)]
    assert [sample_bytes(scenes[i]) for i in range(16)] == first
    scenes.set_epoch(1)
    assert [sample_bytes(scenes[i]) for i in range(16)] != first


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 2, "size": (1, 8)},
        {"n": 2, "size": (8,)},
        {"n": 2, "size": 8},
        {"n": 2, "split": "validation"},
        {"n": 2, "tasks": ("seg", "semantic")},
        {"n": 2, "tasks": ()},
        {"n": 2, "seed": -1},
    ],
)
def test_bad_arguments_are_clear_errors(kwargs) -> None:
    with pytest.raises(DataError):
        ScenesDataset(**kwargs)


def test_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        ScenesDataset(2, size=(8, 8))[2]
