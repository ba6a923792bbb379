"""Bad input: one clear error naming the file and the problem; never a wrong sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapmtl.cli import main
from adapmtl.data import build_dataset
from adapmtl.data.errors import DataError, MissingDataError
from adapmtl.data.nyuv2 import NYUv2AdaShare, NYUv2MTAN
from adapmtl.data.taskonomy import Taskonomy
from adapmtl.data.writer import MARKER, write_scenes
from adapmtl.errors import UserError


@pytest.fixture
def adashare(tmp_path: Path) -> Path:
    root = tmp_path / "nyu"
    write_scenes("nyuv2-adashare", root, n=2, size=(8, 10), n_test=1)
    return root


@pytest.fixture
def mtan(tmp_path: Path) -> Path:
    root = tmp_path / "mtan"
    write_scenes("nyuv2-mtan", root, n=2, size=(8, 10), n_test=1)
    return root


@pytest.fixture
def taskonomy(tmp_path: Path) -> Path:
    root = tmp_path / "tk"
    write_scenes("taskonomy", root, n=2, size=(8, 10), n_test=1)
    return root


def listing(root: Path) -> dict:
    return json.loads((root / "nyu_v2_3task.json").read_text())


def set_listing(root: Path, content) -> None:
    (root / "nyu_v2_3task.json").write_text(json.dumps(content))


def test_errors_are_user_errors_and_standard_exceptions() -> None:
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)
    assert issubclass(MissingDataError, UserError) and issubclass(
        MissingDataError, FileNotFoundError
    )


@pytest.mark.parametrize("cls", [NYUv2AdaShare, NYUv2MTAN, Taskonomy])
def test_missing_root(tmp_path: Path, cls) -> None:
    with pytest.raises(MissingDataError, match=r"nowhere.*does not exist"):
        cls(tmp_path / "nowhere")


def test_missing_listing(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"nyu_v2_3task.json"):
        NYUv2AdaShare(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read JSON"),
        ("[]", "expected a JSON object"),
        ('{"test": []}', "no split 'train'.*'test'"),
        ('{"train": []}', "non-empty list"),
        ('{"train": [["a.png", "b.png"]]}', r"train\[0\].*list of 4 paths"),
        ('{"train": [["../x.png", "s.png", "n.png", "d.npy"]]}', "'../x.png' points outside"),
        ('{"train": [["/etc/x.png", "s.png", "n.png", "d.npy"]]}', "points outside"),
        ('{"train": [["img/../../x.png", "s.png", "n.png", "d.npy"]]}', "points outside"),
        ('{"train": [[3, "s.png", "n.png", "d.npy"]]}', "expected a relative file path"),
    ],
)
def test_bad_listing(adashare: Path, content: str, message: str) -> None:
    (adashare / "nyu_v2_3task.json").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        NYUv2AdaShare(adashare)
    assert "nyu_v2_3task.json" in str(info.value)


def test_missing_file_of_the_first_item_is_found_at_open(adashare: Path) -> None:
    first = listing(adashare)["train"][0]
    (adashare / first[3]).unlink()
    with pytest.raises(MissingDataError, match=f"missing file .*{first[3]}"):
        NYUv2AdaShare(adashare)


def test_missing_file_of_a_later_item_is_found_at_read(adashare: Path) -> None:
    second = listing(adashare)["train"][1]
    (adashare / second[1]).unlink()
    dataset = NYUv2AdaShare(adashare)
    dataset[0]
    with pytest.raises(MissingDataError, match=f"missing file .*{second[1]}"):
        dataset[1]


def test_unreadable_png(adashare: Path) -> None:
    second = listing(adashare)["train"][1]
    (adashare / second[0]).write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=f"{second[0]}.*not a readable image"):
        NYUv2AdaShare(adashare)[1]


def test_wrong_png_mode(adashare: Path) -> None:
    first = listing(adashare)["train"][0]
    Image.new("RGB", (10, 8)).save(adashare / first[1])  # labels must be greyscale
    with pytest.raises(DataError, match=f"{first[1]}.*greyscale.*'RGB'"):
        NYUv2AdaShare(adashare)


def test_size_mismatch(adashare: Path) -> None:
    first = listing(adashare)["train"][0]
    Image.new("L", (10, 9)).save(adashare / first[1])
    with pytest.raises(DataError, match=f"{first[1]}.*9x10 but the image is 8x10"):
        NYUv2AdaShare(adashare)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((8, 10), dtype=np.int32), "float array, got dtype int32"),
        (np.ones((8, 11), dtype=np.float32), r"shape \[8, 10\] or \[8, 10, 1\], got \[8, 11\]"),
        (np.ones((8, 10, 3), dtype=np.float32), "got \\[8, 10, 3\\]"),
    ],
)
def test_bad_depth_array_at_open(adashare: Path, array: np.ndarray, message: str) -> None:
    np.save(adashare / listing(adashare)["train"][0][3], array)
    with pytest.raises(DataError, match=message):
        NYUv2AdaShare(adashare)


def test_bad_depth_values_at_read(adashare: Path) -> None:
    path = adashare / listing(adashare)["train"][1][3]
    depth = np.ones((8, 10), dtype=np.float32)
    depth[2, 2] = np.nan
    np.save(path, depth)
    with pytest.raises(DataError, match="NaN"):
        NYUv2AdaShare(adashare)[1]
    path.write_bytes(b"not an npy file")
    with pytest.raises(DataError, match=r"not a readable .npy"):
        NYUv2AdaShare(adashare)[1]


def test_label_out_of_range(adashare: Path) -> None:
    path = adashare / listing(adashare)["train"][1][1]
    labels = np.zeros((8, 10), dtype=np.uint8)
    labels[0, 0] = 40
    Image.fromarray(labels).save(path)
    with pytest.raises(DataError, match=r"label values \[40\] out of range: expected 0..39 or 255"):
        NYUv2AdaShare(adashare)[1]
    assert NYUv2AdaShare(adashare, num_classes=41)[1][1]["seg"][0, 0] == 40


def test_bad_options(adashare: Path) -> None:
    with pytest.raises(DataError, match="normal_decoding"):
        NYUv2AdaShare(adashare, normal_decoding="raw")
    with pytest.raises(DataError, match="augment=True needs a crop size"):
        NYUv2AdaShare(adashare, augment=True)
    with pytest.raises(DataError, match="tasks must be"):
        NYUv2AdaShare(adashare, tasks=("seg", "keypoint"))
    with pytest.raises(IndexError):
        NYUv2AdaShare(adashare)[2]


def test_mtan_missing_split_and_files(mtan: Path) -> None:
    with pytest.raises(MissingDataError, match=r"test.*does not exist"):
        NYUv2MTAN(mtan, split="test")
    (mtan / "train/label/1.npy").unlink()
    with pytest.raises(MissingDataError, match=r"missing file .*train/label/1.npy"):
        NYUv2MTAN(mtan)
    NYUv2MTAN(mtan, tasks=("depth",))  # label not needed


def test_mtan_bad_names_and_shapes(mtan: Path) -> None:
    np.save(mtan / "train/image/extra.npy", np.zeros((8, 10, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"extra.npy.*<i>.npy"):
        NYUv2MTAN(mtan)
    (mtan / "train/image/extra.npy").unlink()
    np.save(mtan / "train/normal/0.npy", np.zeros((8, 10), dtype=np.float32))
    with pytest.raises(DataError, match=r"normal/0.npy.*normal must have shape \[8, 10, 3\]"):
        NYUv2MTAN(mtan)


@pytest.mark.parametrize(
    ("kind", "array", "message"),
    [
        ("label", np.full((8, 10), 13.0, dtype=np.float32), r"label values \[13\] out of range"),
        ("label", np.full((8, 10), 0.5, dtype=np.float32), "labels must be integers"),
        ("normal", np.full((8, 10, 3), 0.5, dtype=np.float32), "unit vectors"),
        ("image", np.full((8, 10, 3), np.inf, dtype=np.float32), "finite"),
    ],
)
def test_mtan_bad_values_at_read(mtan: Path, kind: str, array: np.ndarray, message: str) -> None:
    np.save(mtan / f"train/{kind}/1.npy", array)
    dataset = NYUv2MTAN(mtan)
    with pytest.raises(DataError, match=f"{kind}/1.npy.*{message}|{message}"):
        dataset[1]


def test_taskonomy_bad_input(taskonomy: Path) -> None:
    entry = json.loads((taskonomy / "taskonomy.json").read_text())["train"][1]
    seg_path = taskonomy / "train" / entry[1]
    Image.fromarray(np.full((8, 10), 18, dtype=np.uint8)).save(seg_path)
    with pytest.raises(DataError, match=r"segment_semantic values \[18\] out of range"):
        Taskonomy(taskonomy)[1]
    depth_path = taskonomy / "train" / entry[3]
    Image.fromarray(np.zeros((8, 10), dtype=np.uint8)).save(depth_path)  # 8-bit, not 16-bit
    with pytest.raises(DataError, match=r"depth_zbuffer.*16-bit"):
        Taskonomy(taskonomy, tasks=("depth",))[1]
    with pytest.raises(DataError, match="bad path_template"):
        Taskonomy(taskonomy, path_template="{building}/{path}")
    with pytest.raises(DataError, match="unlabelled"):
        Taskonomy(taskonomy, unlabelled="zero")
    with pytest.raises(DataError, match="load_size"):
        Taskonomy(taskonomy, load_size=256)
    with pytest.raises(MissingDataError, match="missing file"):
        Taskonomy(taskonomy, path_template="elsewhere/{path}")


def test_registry_errors() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'nyu_v2'.*valid"):
        build_dataset("nyu_v2", "train")
    with pytest.raises(DataError, match=r"unknown option 'sise'.*did you mean 'size'"):
        build_dataset("scenes", "train", n=2, sise=(8, 8))
    with pytest.raises(DataError, match="missing a required argument: 'root'"):
        build_dataset("taskonomy", "train")


def test_writer_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"not empty.*--force"):
        write_scenes("nyuv2-mtan", out, n=1, size=(8, 8))
    with pytest.raises(DataError, match="not written by 'adapmtl data synth'"):
        write_scenes("nyuv2-mtan", out, n=1, size=(8, 8), force=True)
    assert (out / "mine.txt").read_text() == "keep me"
    fresh = tmp_path / "fresh"
    write_scenes("nyuv2-mtan", fresh, n=3, size=(8, 8))
    write_scenes("nyuv2-mtan", fresh, n=1, size=(8, 8), force=True)
    assert len(NYUv2MTAN(fresh)) == 1  # replaced, no stale items
    assert json.loads((fresh / MARKER).read_text())["splits"] == {"train": 1, "val": 1}
    assert not list(tmp_path.glob(".*partial*"))


def test_writer_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    import adapmtl.data.writer as writer

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_save_npy", broken)
    with pytest.raises(OSError, match="disk full"):
        write_scenes("nyuv2-mtan", tmp_path / "out", n=1, size=(8, 8))
    assert list(tmp_path.iterdir()) == []


def test_cli_synth_and_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "d"
    args = [
        "data",
        "synth",
        "--layout",
        "taskonomy",
        "--out",
        str(out),
        "--n",
        "2",
        "--size",
        "8x12",
    ]
    assert main(args) == 0
    assert "wrote 2 train, 1 test images" in capsys.readouterr().out
    assert len(Taskonomy(out, load_size=None)) == 2 and Taskonomy(out, load_size=None)[0][
        0
    ].shape == (3, 8, 12)
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*args[:-1], "8by12"]) == 2
    assert "--size must be HxW" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--layout", "coco", "--out", str(out), "--n", "1", "--size", "8x8"])
