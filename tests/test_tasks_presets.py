"""Task-set presets, subsets, options and custom task specs."""

import pytest

from adapmtl.tasks import (
    TASK_SETS,
    ClassificationTask,
    DepthTask,
    HeatmapTask,
    NormalTask,
    SegmentationTask,
    task_set,
    tasks_from_spec,
)


def test_presets_tasks_channels_and_order():
    assert TASK_SETS.names() == ["fashion_pairs", "nyuv2", "scenes", "taskonomy"]
    nyu = task_set("nyuv2")
    assert list(nyu) == ["seg", "normal", "depth"]
    assert [t.channels for t in nyu.values()] == [40, 3, 1]
    assert task_set("nyuv2", seg_classes=13)["seg"].channels == 13
    taskonomy = task_set("taskonomy")
    assert list(taskonomy) == ["seg", "normal", "depth", "keypoint", "edge"]
    assert taskonomy["seg"].channels == 17
    assert isinstance(taskonomy["edge"], HeatmapTask) and taskonomy["edge"].name == "edge"
    scenes = task_set("scenes")
    assert list(scenes) == ["seg", "normal", "depth", "keypoint", "edge"]
    assert scenes["seg"].channels == 8 and task_set("scenes", seg_classes=5)["seg"].channels == 5
    assert isinstance(scenes["normal"], NormalTask) and isinstance(scenes["depth"], DepthTask)
    pairs = task_set("fashion_pairs")
    assert list(pairs) == ["left", "right"]
    assert all(isinstance(t, ClassificationTask) and t.channels == 10 for t in pairs.values())


def test_subset_keeps_preset_order_and_a_bad_subset_names_the_preset():
    subset = task_set("taskonomy", tasks=["edge", "seg"])
    assert list(subset) == ["seg", "edge"]
    with pytest.raises(ValueError, match=r"^'nyuv2': unknown task\(s\) \['sn'\]"):
        task_set("nyuv2", tasks=["seg", "sn"])
    with pytest.raises(ValueError, match=r"^'taskonomy': tasks must be a non-empty list"):
        task_set("taskonomy", tasks=[])


def test_options_and_reference_conventions():
    tasks = task_set(
        "nyuv2", options={"seg": {"miou": "official"}, "depth": {"valid_threshold": 3e-5}}
    )
    assert tasks["seg"].miou == "official" and tasks["seg"].pixel_acc == "pooled"
    assert tasks["depth"].valid_threshold == 3e-5
    ref = task_set("nyuv2", conventions="reference", options={"seg": {"pixel_acc": "pooled"}})
    seg, depth = ref["seg"], ref["depth"]
    assert isinstance(seg, SegmentationTask) and (seg.miou, seg.pixel_acc) == ("official", "pooled")
    assert (depth.faithful, depth.average, depth.valid_threshold) == (True, "batch", 3e-5)
    assert task_set("taskonomy", conventions="reference")["keypoint"].average == "batch"
    assert task_set("taskonomy", conventions="reference")["depth"].valid_threshold == 0.0


def test_bad_preset_arguments():
    with pytest.raises(ValueError, match="seg_classes must be 13 or 40"):
        task_set("nyuv2", seg_classes=20)
    with pytest.raises(ValueError, match=r"unknown option 'bins' for task 'normal'"):
        task_set("nyuv2", options={"normal": {"bins": 3}})
    with pytest.raises(ValueError, match=r"'median_bins' \(did you mean 'median_bin'\?\)"):
        task_set("nyuv2", options={"normal": {"median_bins": 3}})
    with pytest.raises(ValueError, match=r"options for unknown task\(s\) \['edge'\]"):
        task_set("nyuv2", options={"edge": {"average": "batch"}})
    with pytest.raises(ValueError, match="conventions"):
        task_set("scenes", conventions="faithful")
    with pytest.raises(KeyError, match="did you mean 'nyuv2'"):
        task_set("nyuv3")


def test_custom_spec_for_classification():
    tasks = tasks_from_spec(
        {
            "left": {"type": "classification", "num_classes": 10},
            "right": {"type": "classification", "num_classes": 10},
            "seg": {"type": "segmentation", "num_classes": 3},
        }
    )
    assert list(tasks) == ["left", "right", "seg"]
    assert isinstance(tasks["left"], ClassificationTask) and tasks["right"].name == "right"
    with pytest.raises(ValueError, match="missing 'type'"):
        tasks_from_spec({"left": {"num_classes": 10}})
    with pytest.raises(KeyError, match="unknown task type"):
        tasks_from_spec({"left": {"type": "classifier"}})
