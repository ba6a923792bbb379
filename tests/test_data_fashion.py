"""FashionPairs: IDX parsing, deterministic pairing, the canvas layout and bad files, on tiny IDX
gzip files written here (never the system copy)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from adapmtl.data import DataError, MissingDataError, build_dataset
from adapmtl.data.fashion import FashionPairs, read_idx
from fashion_files import TRAIN_N, idx_bytes, write_fashion, write_gz


@pytest.fixture
def fashion(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "fashion"
    return root, write_fashion(root)


def test_idx_files_parse_to_the_written_arrays(fashion):
    root, arrays = fashion
    images = read_idx(root / "train-images-idx3-ubyte.gz", 0x0803, (28, 28))
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz", 0x0801, ())
    np.testing.assert_array_equal(images, arrays["train_images"])
    np.testing.assert_array_equal(labels, arrays["test_labels"])


def test_canvas_is_item_i_left_and_item_j_right_with_their_labels(fashion):
    root, arrays = fashion
    data = FashionPairs(n=20, root=str(root), split="train", holdout=8, normalise="unit")
    pool = arrays["train_images"][:16]
    for index in range(len(data)):
        i, j, _, _ = data.pair(index)
        assert i != j and 0 <= i < 16 and 0 <= j < 16
        image, targets = data[index]
        assert image.shape == (1, 28, 56) and image.dtype == torch.float32
        expected = torch.from_numpy(np.concatenate([pool[i], pool[j]], axis=1)).float() / 255
        torch.testing.assert_close(image[0], expected, rtol=0, atol=0)
        assert targets["left"].dtype == torch.int64 and targets["left"].ndim == 0
        assert int(targets["left"]) == arrays["train_labels"][i]
        assert int(targets["right"]) == arrays["train_labels"][j]


def test_val_pairs_only_the_held_out_training_images_and_test_the_t10k_images(fashion):
    root, arrays = fashion
    val = FashionPairs(n=10, root=str(root), split="val", holdout=8)
    test = FashionPairs(n=10, root=str(root), split="test")
    held_out = arrays["train_images"][16:]
    for index in range(10):
        i, j, _, _ = val.pair(index)
        np.testing.assert_array_equal(val.canvas(index)[:, :28], held_out[i])
        np.testing.assert_array_equal(val.canvas(index)[:, 28:], held_out[j])
        i, j, _, _ = test.pair(index)
        np.testing.assert_array_equal(test.canvas(index)[:, 28:], arrays["test_images"][j])
        assert int(test[index][1]["left"]) == arrays["test_labels"][i]


def test_pairing_depends_only_on_seed_split_and_index(fashion):
    root, _ = fashion
    a = FashionPairs(n=16, root=str(root), seed=3, holdout=8, shift=3)
    b = FashionPairs(n=16, root=str(root), seed=3, holdout=8, shift=3)
    forward = [a.pair(k) for k in range(16)]
    assert [b.pair(k) for k in reversed(range(16))] == forward[::-1]
    other_seed = FashionPairs(n=16, root=str(root), seed=4, holdout=8, shift=3)
    assert [other_seed.pair(k) for k in range(16)] != forward
    # the shift option draws after the pair: the same items with and without shifts
    plain = FashionPairs(n=16, root=str(root), seed=3, holdout=8)
    assert [p[:2] for p in forward] == [plain.pair(k)[:2] for k in range(16)]


def test_shifted_items_overlap_and_the_brighter_pixel_wins(fashion):
    root, arrays = fashion
    data = FashionPairs(n=30, root=str(root), holdout=8, shift=5)
    shifts = set()
    for index in range(30):
        i, j, left, right = data.pair(index)
        assert 0 <= left <= 5 and 0 <= right <= 5
        shifts.add((left, right))
        a = np.pad(arrays["train_images"][i], ((0, 0), (left, 28 - left)))
        b = np.pad(arrays["train_images"][j], ((0, 0), (28 - right, right)))
        np.testing.assert_array_equal(data.canvas(index), np.maximum(a, b))
    assert len(shifts) > 1


def test_standard_normalisation(fashion):
    root, _ = fashion
    unit = FashionPairs(n=2, root=str(root), holdout=8, normalise="unit")[1][0]
    standard = FashionPairs(n=2, root=str(root), holdout=8)[1][0]
    torch.testing.assert_close(standard, (unit - 0.286) / 0.353)


def test_registry_builds_it_with_the_task_subset(fashion):
    root, arrays = fashion
    data = build_dataset("fashion_pairs", "train", ("right",), n=4, root=str(root), holdout=8)
    _, j, _, _ = data.pair(0)
    assert data[0][1] == {"right": torch.tensor(int(arrays["train_labels"][j]))}
    with pytest.raises(DataError, match="unknown option 'size'"):
        build_dataset("fashion_pairs", "train", n=4, root=str(root), size=(28, 56))


def _replace(root: Path, name: str, payload: bytes, compress: bool = True) -> Path:
    path = root / name
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("magic", "magic number 0x00000803 expected, found 0x00000801"),
        ("short_payload", "header announces 24 items"),
        ("cut_gzip", "not a complete gzip file"),
        ("not_gzip", "not a complete gzip file"),
        ("item_shape", r"items of shape \(28, 28\) expected"),
    ],
)
def test_bad_image_file_is_one_error_naming_it(fashion, case, match):
    root, arrays = fashion
    name = "train-images-idx3-ubyte.gz"
    good = idx_bytes(arrays["train_images"], 2051)
    payload = {
        "magic": idx_bytes(arrays["train_images"], 2049),
        "short_payload": good[:-100],
        "cut_gzip": gzip.compress(good)[:-40],
        "not_gzip": good,
        "item_shape": idx_bytes(arrays["train_images"].reshape(TRAIN_N, 14, 56), 2051),
    }[case]
    path = _replace(root, name, payload, compress=case not in ("cut_gzip", "not_gzip"))
    with pytest.raises(DataError, match=match) as err:
        FashionPairs(n=4, root=str(root), holdout=8)
    assert str(path) in str(err.value)


def test_label_count_mismatch_names_both_files(fashion):
    root, arrays = fashion
    labels = idx_bytes(arrays["train_labels"][:-1], 2049)
    path = _replace(root, "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(
        DataError, match=r"23 labels, but .*train-images-idx3-ubyte\.gz holds 24"
    ) as err:
        FashionPairs(n=4, root=str(root), holdout=8)
    assert str(err.value).startswith(f"{path}: ")


def test_labels_out_of_range_are_an_error(fashion):
    root, arrays = fashion
    labels = arrays["test_labels"].copy()
    labels[3] = 10
    _replace(root, "t10k-labels-idx1-ubyte.gz", idx_bytes(labels, 2049))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: labels must be in \[0, 9\]"):
        FashionPairs(n=4, root=str(root), split="test")


def test_missing_root_or_file(tmp_path, fashion):
    with pytest.raises(MissingDataError, match="apt-get install dataset-fashion-mnist"):
        FashionPairs(n=4, root=str(tmp_path / "nowhere"))
    root, _ = fashion
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(MissingDataError, match=r"t10k-images-idx3-ubyte\.gz does not exist"):
        FashionPairs(n=4, root=str(root), split="test")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"split": "dev"}, "split must be one of train, val, test"),
        ({"n": 0}, "n must be an integer >= 1"),
        ({"shift": 15}, r"shift must be an integer in \[0, 14\]"),
        ({"normalise": "z"}, "normalise must be one of standard, unit"),
        ({"holdout": 23}, "holdout 23 leaves fewer than 2"),
        ({"tasks": ("left", "seg")}, "tasks must be a non-empty subset of left, right"),
    ],
)
def test_bad_options(fashion, options, match):
    root, _ = fashion
    with pytest.raises(DataError, match=match):
        FashionPairs(**{"n": 4, "root": str(root), "holdout": 8, **options})


def test_decoded_arrays_are_cached_until_the_file_changes(fashion):
    root, _ = fashion
    path = root / "train-labels-idx1-ubyte.gz"
    first = read_idx(path, 0x0801, ())
    assert read_idx(path, 0x0801, ()) is first
    new = np.arange(TRAIN_N, dtype=np.uint8) % 10
    write_gz(path, idx_bytes(new, 2049))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(read_idx(path, 0x0801, ()), new)
