"""NYUv2 (AdaShare, MTAN) and Taskonomy readers on tiny datasets written by hand and by the
synthetic-scene writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adapmtl.data import build_dataset
from adapmtl.data.nyuv2 import BGR_MEAN, NYUv2AdaShare, NYUv2MTAN
from adapmtl.data.scenes import ScenesDataset
from adapmtl.data.taskonomy import Taskonomy
from adapmtl.data.writer import write_scenes

H, W = 4, 6


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def rgb_pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def write_adashare(root: Path, count: int = 2) -> dict[str, np.ndarray]:
    """Two hand-made items; returns the arrays of item 0."""
    seg = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 40
    seg[0, 0] = 255
    normal = np.full((H, W, 3), 128, dtype=np.uint8)
    normal[0, 0] = (255, 128, 128)  # a channel at 255: invalid
    normal[0, 1] = (0, 128, 255)  # the blue channel at 255: invalid too
    normal[1, 1] = (200, 60, 180)
    depth = np.full((H, W), 2.5, dtype=np.float32)
    depth[0, 2] = 0.0
    depth[0, 3] = 1e-6  # below the 3e-5 validity threshold
    depth[0, 4] = -1.0
    entries = []
    for i in range(count):
        save_png(root / f"img/{i}.png", rgb_pixels(i))
        save_png(root / f"seg/{i}.png", seg)
        save_png(root / f"normal_mask/{i}.png", normal)
        save_npy(root / f"depth/{i}.npy", depth)
        entries.append([f"img/{i}.png", f"seg/{i}.png", f"normal_mask/{i}.png", f"depth/{i}.npy"])
    (root / "nyu_v2_3task.json").write_text(json.dumps({"train": entries, "test": entries[:1]}))
    return {"rgb": rgb_pixels(0), "seg": seg, "normal": normal, "depth": depth}


def test_adashare_values(tmp_path: Path) -> None:
    raw = write_adashare(tmp_path)
    dataset = NYUv2AdaShare(tmp_path, split="train")
    assert len(dataset) == 2 and len(NYUv2AdaShare(tmp_path, split="test")) == 1
    image, targets = dataset[0]
    # BGR order, minus the BGR mean, 0-255 scale.
    expected = raw["rgb"][..., ::-1].transpose(2, 0, 1) - np.array(BGR_MEAN)[:, None, None]
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-4)
    assert targets["seg"].dtype == torch.int64 and targets["seg"][0, 0] == 255
    assert torch.equal(targets["seg"][1:], torch.from_numpy(raw["seg"][1:].astype(np.int64)))
    depth = targets["depth"][0]
    assert depth[0, 2] == 0 and depth[0, 3] == 0 and depth[0, 4] == 0 and depth[1, 1] == 2.5
    normal = targets["normal"]
    assert torch.equal(normal[:, 0, 0], torch.zeros(3)) and torch.equal(
        normal[:, 0, 1], torch.zeros(3)
    )
    decoded = 2 * np.array([200, 60, 180]) / 255 - 1
    np.testing.assert_allclose(
        normal[:, 1, 1].numpy(), decoded / np.linalg.norm(decoded), atol=1e-6
    )


def test_adashare_official_normal_decoding(tmp_path: Path) -> None:
    write_adashare(tmp_path)
    _, targets = NYUv2AdaShare(tmp_path, normal_decoding="official")[0]
    raw = np.array([200, 60, 180])
    np.testing.assert_allclose(
        targets["normal"][:, 1, 1].numpy(), raw / np.linalg.norm(raw), atol=1e-6
    )
    assert torch.equal(targets["normal"][:, 0, 0], torch.zeros(3))


def test_adashare_task_subset_does_not_need_other_files(tmp_path: Path) -> None:
    write_adashare(tmp_path)
    for path in (tmp_path / "normal_mask").iterdir():
        path.unlink()
    _, targets = NYUv2AdaShare(tmp_path, tasks=("seg", "depth"))[1]
    assert set(targets) == {"seg", "depth"}


def test_adashare_eval_resize_and_training_crop(tmp_path: Path) -> None:
    write_adashare(tmp_path)
    image, targets = NYUv2AdaShare(tmp_path, size=(8, 12))[0]
    assert image.shape == (3, 8, 12) and targets["seg"].shape == (8, 12)
    assert targets["seg"][0, 0] == 255 and targets["seg"][1, 1] == 255  # nearest: 2x2 blocks
    train = NYUv2AdaShare(tmp_path, size=(10, 10), augment=True, seed=3)
    seen_padding = False
    for epoch in range(6):
        train.set_epoch(epoch)
        image, targets = train[0]
        assert image.shape == (3, 10, 10) and targets["normal"].shape == (3, 10, 10)
        pad = targets["seg"] == 255
        # Padded pixels: ignore label, invalid depth and normal, image = 0 - mean.
        if pad[-1].all():
            seen_padding = True
            assert (targets["depth"][0, -1] == 0).all()
            assert (targets["normal"][:, -1] == 0).all()
            np.testing.assert_allclose(
                image[:, -1].numpy(), -np.array(BGR_MEAN)[:, None].repeat(10, 1), atol=1e-4
            )
    assert seen_padding  # every crop needs padding: the images are smaller than 10 x 10


def test_adashare_augmentation_flip_negates_normal_x(tmp_path: Path) -> None:
    """A constant normal map: after any scale/crop the normals are unchanged or x-negated, and
    the flip is the only thing that changes their x sign."""
    root = tmp_path
    normal = np.zeros((8, 8, 3), dtype=np.uint8)
    normal[...] = (220, 128, 200)
    save_png(root / "img/0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    save_png(root / "seg/0.png", np.zeros((8, 8), dtype=np.uint8))
    save_png(root / "normal_mask/0.png", normal)
    save_npy(root / "depth/0.npy", np.ones((8, 8), dtype=np.float32))
    (root / "nyu_v2_3task.json").write_text(
        json.dumps({"train": [["img/0.png", "seg/0.png", "normal_mask/0.png", "depth/0.npy"]]})
    )
    dataset = NYUv2AdaShare(root, size=(4, 4), augment=True)
    decoded = 2 * np.array([220, 128, 200]) / 255 - 1
    decoded /= np.linalg.norm(decoded)
    signs = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        _, targets = dataset[0]
        n = targets["normal"][:, 0, 0].numpy()
        assert np.allclose(n[1:], decoded[1:], atol=1e-6)
        signs.add(int(np.sign(n[0])))
        assert abs(n[0]) == pytest.approx(decoded[0], abs=1e-6)
    assert signs == {1, -1}


def write_mtan(root: Path, split: str = "train", count: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.random((H, W, 3)).astype(np.float32)
    label = (np.arange(H * W).reshape(H, W) % 13).astype(np.float32)
    label[0, 0] = -1
    depth = np.full((H, W, 1), 3.0, dtype=np.float32)
    depth[0, 1] = 0.0
    normal = np.zeros((H, W, 3), dtype=np.float32)
    normal[..., 2] = 1.0
    normal[1, 2] = (0.6, 0.0, 0.8)
    normal[0, 3] = 0.0  # invalid
    for i in range(count):
        for kind, array in (
            ("image", image),
            ("label", label),
            ("depth", depth),
            ("normal", normal),
        ):
            save_npy(root / split / kind / f"{i}.npy", array)
    return {"image": image, "label": label, "depth": depth, "normal": normal}


def test_mtan_values(tmp_path: Path) -> None:
    raw = write_mtan(tmp_path)
    dataset = NYUv2MTAN(tmp_path, split="train")
    image, targets = dataset[1]
    assert len(dataset) == 2
    np.testing.assert_array_equal(image.numpy(), raw["image"].transpose(2, 0, 1))
    assert (
        targets["seg"][0, 0] == 255
        and targets["seg"][0, 1] == 1
        and targets["seg"].dtype == torch.int64
    )
    assert targets["depth"].shape == (1, H, W) and targets["depth"][0, 0, 1] == 0
    np.testing.assert_allclose(targets["normal"][:, 1, 2].numpy(), [0.6, 0.0, 0.8])
    assert torch.equal(targets["normal"][:, 0, 3], torch.zeros(3))


def test_mtan_items_are_in_numeric_order(tmp_path: Path) -> None:
    write_mtan(tmp_path, count=11)
    marker = np.zeros((H, W, 3), dtype=np.float32)
    marker[0, 0, 0] = 10.0
    save_npy(tmp_path / "train/image/10.npy", marker)
    image, _ = NYUv2MTAN(tmp_path)[10]  # "10" sorts before "2" as a string
    assert image[0, 0, 0] == 10.0


def scene_of(split: str, index: int, size=(24, 32), seed: int = 4):
    return ScenesDataset(10, size=size, seed=seed, split=split).render(index)


def angle_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=0), -1, 1)))


def test_writer_round_trip_nyuv2_adashare(tmp_path: Path) -> None:
    write_scenes("nyuv2-adashare", tmp_path / "d", n=3, size=(24, 32), seed=4, n_test=2)
    dataset = NYUv2AdaShare(tmp_path / "d", split="test")
    assert len(dataset) == 2 and len(NYUv2AdaShare(tmp_path / "d", split="train")) == 3
    image, targets = dataset[1]
    view = scene_of("test", 1)
    expected = view.rgb[..., ::-1].transpose(2, 0, 1) - np.array(BGR_MEAN)[:, None, None]
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-4)
    assert np.array_equal(targets["seg"].numpy(), view.seg)
    assert np.array_equal(targets["depth"][0].numpy(), view.depth)
    # 8-bit normals: within a degree of the rendered unit vectors.
    assert angle_degrees(targets["normal"].numpy(), view.normal.transpose(2, 0, 1)).max() < 1.0


def test_writer_round_trip_nyuv2_mtan(tmp_path: Path) -> None:
    write_scenes("nyuv2-mtan", tmp_path / "d", n=2, size=(24, 32), seed=4, n_test=1)
    image, targets = NYUv2MTAN(tmp_path / "d", split="val")[0]
    view = scene_of("val", 0)
    np.testing.assert_allclose(image.numpy(), view.rgb.transpose(2, 0, 1) / 255, atol=1e-7)
    assert np.array_equal(targets["seg"].numpy(), view.seg)
    assert np.array_equal(targets["depth"][0].numpy(), view.depth)
    np.testing.assert_allclose(targets["normal"].numpy(), view.normal.transpose(2, 0, 1), atol=1e-7)


def test_writer_round_trip_taskonomy(tmp_path: Path) -> None:
    write_scenes("taskonomy", tmp_path / "d", n=2, size=(24, 32), seed=4, n_test=1)
    dataset = Taskonomy(tmp_path / "d", split="train", load_size=None)
    _, targets = dataset[1]
    view = scene_of("train", 1)
    assert np.array_equal(targets["seg"].numpy(), view.seg)
    raw_depth = np.round(view.depth * 512)
    np.testing.assert_allclose(
        targets["depth"][0].numpy(), np.log1p(raw_depth) / np.log(2**16), rtol=1e-6
    )
    assert angle_degrees(targets["normal"].numpy(), view.normal.transpose(2, 0, 1)).max() < 1.0
    # Heatmap h stored as h * 0.005 * 2^16, decoded to [-1, 1]: 2 h - 1 up to quantisation.
    np.testing.assert_allclose(targets["keypoint"][0].numpy(), 2 * view.keypoint - 1, atol=2 / 327)
    np.testing.assert_array_equal(targets["edge"][0].numpy(), 2 * view.edge - 1)
    assert len(Taskonomy(tmp_path / "d", split="test")) == 1


def write_taskonomy_by_hand(root: Path) -> None:
    seg = np.array([[0, 1, 17, 5]] * 2, dtype=np.uint8)
    depth = np.array([[0, 512, 65535, 64499]] * 2, dtype=np.uint16)
    keypoint = np.array([[0, 164, 327, 60000]] * 2, dtype=np.uint16)
    edge = np.array([[0, 2621, 5243, 60000]] * 2, dtype=np.uint16)
    normal = np.full((2, 4, 3), (200, 60, 180), dtype=np.uint8)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 4, 3), dtype=np.uint8)
    arrays = {
        "rgb": rgb,
        "segment_semantic": seg,
        "normal": normal,
        "depth_zbuffer": depth,
        "keypoints2d": keypoint,
        "edge_texture": edge,
    }
    entry = [f"bldg/{domain}/p0.png" for domain in arrays]
    for relative, array in zip(entry, arrays.values(), strict=True):
        save_png(root / "train" / relative, array)
    (root / "taskonomy.json").write_text(json.dumps({"train": [entry]}))


def test_taskonomy_decoding_table(tmp_path: Path) -> None:
    write_taskonomy_by_hand(tmp_path)
    image, t = Taskonomy(tmp_path, load_size=None)[0]
    assert image.shape == (3, 2, 4)
    assert t["seg"][0].tolist() == [255, 0, 16, 4]  # raw 0 (unlabelled) ignored; k -> k - 1
    depth = t["depth"][0, 0].numpy()
    np.testing.assert_allclose(depth[[1, 3]], np.log1p([512, 64499]) / np.log(2**16), rtol=1e-6)
    assert depth[0] == 0 and depth[2] == 0  # raw 0 -> log(1) = 0; raw 65535 invalid
    # The normal mask is the depth mask (raw >= 64500 invalid).
    assert torch.equal(t["normal"][:, 0, 2], torch.zeros(3))
    n = 200 / 255 * 2 - 1, 60 / 255 * 2 - 1, 180 / 255 * 2 - 1
    np.testing.assert_allclose(
        t["normal"][:, 0, 0].numpy(), np.array(n) / np.linalg.norm(n), atol=1e-6
    )
    clip = lambda raw, c: np.clip(np.array(raw) / 2**16, 0, c) / c * 2 - 1  # noqa: E731
    np.testing.assert_allclose(
        t["keypoint"][0, 0].numpy(), clip([0, 164, 327, 60000], 0.005), atol=1e-6
    )
    np.testing.assert_allclose(
        t["edge"][0, 0].numpy(), clip([0, 2621, 5243, 60000], 0.08), atol=1e-6
    )
    _, folded = Taskonomy(tmp_path, load_size=None, unlabelled="class0")[0]
    assert folded["seg"][0].tolist() == [0, 0, 16, 4]


def test_taskonomy_load_size_and_template(tmp_path: Path) -> None:
    write_taskonomy_by_hand(tmp_path)
    image, targets = Taskonomy(tmp_path, load_size=(4, 8), tasks=("seg",))[0]
    assert image.shape == (3, 4, 8) and targets["seg"][:, ::2].tolist() == [[255, 0, 16, 4]] * 4
    # DiSparse-style tree: entry a/b/rest is stored under b/taskonomy/a/rest.
    other = tmp_path / "other"
    for path in (tmp_path / "train").rglob("*.png"):
        relative = path.relative_to(tmp_path / "train").parts
        target = other / relative[1] / "taskonomy" / relative[0] / Path(*relative[2:])
        save_png(target, np.array(Image.open(path)))
    (other / "taskonomy.json").write_text((tmp_path / "taskonomy.json").read_text())
    dataset = Taskonomy(other, load_size=None, path_template="{second}/taskonomy/{first}/{rest}")
    assert dataset[0][1]["seg"][0].tolist() == [255, 0, 16, 4]


def test_taskonomy_class_weights(tmp_path: Path) -> None:
    write_taskonomy_by_hand(tmp_path)
    dataset = Taskonomy(tmp_path)
    with pytest.warns(UserWarning, match="uniform"):
        assert torch.equal(dataset.seg_class_weights, torch.ones(17))
    np.save(tmp_path / "semseg_prior_factor.npy", np.arange(17, dtype=np.float32))
    assert torch.equal(dataset.seg_class_weights, torch.arange(17, dtype=torch.float32))


@pytest.mark.parametrize(
    ("name", "layout", "split"),
    [
        ("nyuv2_adashare", "nyuv2-adashare", "test"),
        ("nyuv2_mtan", "nyuv2-mtan", "val"),
        ("taskonomy", "taskonomy", "test"),
    ],
)
def test_registry_builds_each_reader(tmp_path: Path, name: str, layout: str, split: str) -> None:
    write_scenes(layout, tmp_path, n=1, size=(16, 16), n_test=1)
    dataset = build_dataset(name, split, ("seg", "depth"), root=tmp_path, size=(12, 12))
    image, targets = dataset[0]
    assert image.shape == (3, 12, 12) and set(targets) == {"seg", "depth"}


def test_registry_builds_scenes() -> None:
    dataset = build_dataset("scenes", "val", None, n=3, size=(8, 8), seed=2)
    assert len(dataset) == 3 and len(dataset[0][1]) == 5


def test_a_taskonomy_run_weights_its_segmentation_by_the_class_prior(tmp_path: Path) -> None:
    """The run's task set takes the prior from the data root (the supplement's Taskonomy
    tables weight the segmentation loss and cross-entropy by it); an explicit config wins."""
    from adapmtl.build import build_run_tasks
    from adapmtl.config import from_dict

    prior = np.linspace(0.5, 2.0, 17).astype(np.float32)
    np.save(tmp_path / "semseg_prior_factor.npy", prior)
    settings = {
        "tasks": {"preset": "taskonomy"},
        "data": {"name": "taskonomy", "root": str(tmp_path)},
    }
    seg = build_run_tasks(from_dict(settings))["seg"]
    assert torch.allclose(seg.class_weights, torch.from_numpy(prior))
    # the weighted mean cross-entropy, by hand: pixel 0 of class 0 with logit 2 for class 0
    # (CE log(e^2 + 16) - 2), pixel 1 of class 16 with uniform logits (CE log 17)
    logits = torch.zeros(1, 17, 1, 2)
    logits[0, 0, 0, 0] = 2.0
    target = torch.tensor([[[0, 16]]])
    ce = np.array([np.log(np.e**2 + 16) - 2, np.log(17)])
    expected = (prior[0] * ce[0] + prior[16] * ce[1]) / (prior[0] + prior[16])
    assert seg.loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(ce.mean(), rel=1e-3)  # the weights matter here

    settings["tasks"]["options"] = {"options": {"seg": {"class_weights": [1.0] * 17}}}
    assert torch.equal(build_run_tasks(from_dict(settings))["seg"].class_weights, torch.ones(17))
    settings["data"]["root"] = str(tmp_path / "elsewhere")  # no data here: nothing derived
    assert build_run_tasks(from_dict(settings))["seg"].class_weights is not None
    del settings["tasks"]["options"]
    assert build_run_tasks(from_dict(settings))["seg"].class_weights is None


def test_a_task_set_without_segmentation_gets_no_prior(tmp_path: Path, monkeypatch) -> None:
    """The prior is for 'seg': a task set of its own (taking per-task options) without it builds
    on Taskonomy data as its config says, instead of being refused options for a task it lacks."""
    from adapmtl.build import build_run_tasks
    from adapmtl.config import from_dict
    from adapmtl.tasks.presets import TASK_SETS, task_set

    def depth_only(options=None):
        unknown = sorted(set(options or {}) - {"depth"})  # refused, as the presets refuse them
        if unknown:
            raise ValueError(f"options for unknown task(s) {unknown}")
        return task_set("taskonomy", tasks=["depth"], options=options)

    # registered for this test only (the preset list is asserted elsewhere)
    monkeypatch.setitem(TASK_SETS._factories, "taskonomy_depth_only_test", depth_only)

    np.save(tmp_path / "semseg_prior_factor.npy", np.ones(17, dtype=np.float32))
    settings = {
        "tasks": {"preset": "taskonomy_depth_only_test"},
        "data": {"name": "taskonomy", "root": str(tmp_path)},
    }
    assert list(build_run_tasks(from_dict(settings))) == ["depth"]
