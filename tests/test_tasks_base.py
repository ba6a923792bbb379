"""Shared behaviour: bad input, metric state merging, nearest resizing."""

import pytest
import torch

from adapmtl.tasks import (
    ClassificationTask,
    DepthTask,
    HeatmapTask,
    NormalTask,
    SegmentationTask,
    resize_nearest,
)
from adapmtl.tasks.base import cross_entropy_mean


def seg_target(gen, b, h, w):
    target = torch.randint(0, 5, (b, h, w), generator=gen)
    target[torch.rand(b, h, w, generator=gen) < 0.2] = 255
    return target


def normal_target(gen, b, h, w):
    target = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=gen), dim=1)
    return target * (torch.rand(b, 1, h, w, generator=gen) > 0.2)


def depth_target(gen, b, h, w):
    return torch.rand(b, 1, h, w, generator=gen) * (torch.rand(b, 1, h, w, generator=gen) > 0.2)


def heatmap_target(gen, b, h, w):
    target = torch.rand(b, 1, h, w, generator=gen)
    target[torch.rand(b, 1, h, w, generator=gen) < 0.2] = 255.0
    return target


DENSE = [
    (SegmentationTask(5), seg_target),
    (NormalTask(), normal_target),
    (DepthTask(), depth_target),
    (HeatmapTask("edge"), heatmap_target),
]
# Every option that changes the statistics' reduction, so each is checked for summability.
MERGE_CASES = [
    *DENSE,
    (SegmentationTask(5, pixel_acc="batch", miou="official"), seg_target),
    (DepthTask(average="batch"), depth_target),
    (HeatmapTask("edge", average="batch"), heatmap_target),
]


def task_id(value):
    return repr(value) if hasattr(value, "name") else ""


@pytest.mark.parametrize(("task", "make_target"), MERGE_CASES, ids=task_id)
def test_merged_halves_equal_one_metric_over_both(task, make_target):
    gen = torch.Generator().manual_seed(7)
    batches = [
        (torch.randn(2, task.channels, 4, 4, generator=gen), make_target(gen, 2, 8, 8))
        for _ in range(4)
    ]
    whole, first, second = task.new_metric(), task.new_metric(), task.new_metric()
    for i, (pred, target) in enumerate(batches):
        whole.update(pred, target)
        (first if i < 2 else second).update(pred, target)
    # What an all-reduce does: add the states element-wise, load the sum.
    summed = {k: v + second.state()[k] for k, v in first.state().items()}
    reloaded = task.new_metric()
    reloaded.load_state(summed)
    first.merge(second.state())
    assert first.compute() == pytest.approx(whole.compute(), rel=1e-12)
    assert reloaded.compute() == pytest.approx(whole.compute(), rel=1e-12)
    whole.reset()
    with pytest.raises(ValueError, match=r"no valid"):
        whole.compute()


def test_state_is_a_copy_and_foreign_states_are_rejected():
    metric = DepthTask().new_metric()
    metric.update(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    state = metric.state()
    state["count"] += 100
    assert metric.state()["count"].item() == 4
    with pytest.raises(ValueError, match=r"'depth'.*keys"):
        metric.merge(NormalTask().new_metric().state())
    bad = metric.state()
    bad["within"] = torch.zeros(5, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"'depth'.*'within'.*shape"):
        metric.load_state(bad)


@pytest.mark.parametrize(("task", "make_target"), DENSE, ids=task_id)
def test_bad_shapes_and_nan_name_the_task(task, make_target):
    gen = torch.Generator().manual_seed(0)
    target = make_target(gen, 2, 8, 8)
    good = torch.zeros(2, task.channels, 4, 4)
    name = f"'{task.name}'"
    cases = [
        (torch.zeros(3, task.channels, 4, 4), "batch size"),
        (torch.zeros(2, task.channels + 1, 4, 4), rf"\[B, {task.channels}, h, w\]"),
        (torch.zeros(task.channels, 4, 4), rf"\[B, {task.channels}, h, w\]"),
    ]
    nan = good.clone()
    nan[0, 0, 1, 1] = float("nan")
    inf = good.clone()
    inf[1, 0, 0, 0] = float("inf")
    cases += [(nan, "NaN or Inf"), (inf, "NaN or Inf")]
    for pred, message in cases:
        with pytest.raises(ValueError, match=f"{name}.*{message}"):
            task.loss(pred, target)
        with pytest.raises(ValueError, match=f"{name}.*{message}"):
            task.new_metric().update(pred, target)
    with pytest.raises(ValueError, match=f"{name}.*target must"):
        task.loss(good, target[0])


def test_wrong_number_of_classes():
    task = SegmentationTask(40)
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"'seg'.*\[B, 40, h, w\].*\[1, 13, 4, 4\]"):
        task.loss(torch.zeros(1, 13, 4, 4), target)
    target[0, 3, 3] = 45
    with pytest.raises(ValueError, match=r"'seg'.*\[0, 39\] or 255.*found 45"):
        task.loss(torch.zeros(1, 40, 4, 4), target)
    target[0, 3, 3] = -1
    with pytest.raises(ValueError, match=r"'seg'.*found -1"):
        task.new_metric().update(torch.zeros(1, 40, 4, 4), target)
    with pytest.raises(ValueError, match=r"'seg'.*integer class ids"):
        task.loss(torch.zeros(1, 40, 4, 4), target.float())


def test_bad_options():
    with pytest.raises(ValueError, match=r"'seg'.*miou"):
        SegmentationTask(3, miou="standard")
    with pytest.raises(ValueError, match=r"'seg'.*class_weights.*3"):
        SegmentationTask(3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"'depth'.*average"):
        DepthTask(average="mean")
    with pytest.raises(ValueError, match=r"'x'.*num_classes"):
        ClassificationTask("x", num_classes=1)


def test_resize_nearest_matches_index_selection():
    x = torch.arange(36, dtype=torch.int64).reshape(1, 6, 6)
    assert torch.equal(resize_nearest(x, (3, 3)), x[:, ::2, ::2])
    assert resize_nearest(x, (3, 3)).dtype == torch.int64
    y = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert torch.equal(resize_nearest(y, (4, 4)), y.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert resize_nearest(y, (2, 2)) is y


@pytest.mark.parametrize(
    ("task", "shape"),
    [
        (NormalTask(), (2, 1, 8, 8)),  # four dimensions, the wrong channel count
        (NormalTask(), (2, 3, 8)),  # the right channel count, three dimensions
        (DepthTask(), (2, 3, 8, 8)),
        (DepthTask(), (2, 1, 8)),
        (SegmentationTask(5), (2, 1, 8, 8)),  # a label map has no channel dimension
    ],
    ids=str,
)
def test_a_target_of_the_wrong_shape_is_rejected(task, shape):
    dtype = torch.int64 if isinstance(task, SegmentationTask) else torch.float32
    target = torch.ones(shape, dtype=dtype)
    pred = torch.zeros(2, task.channels, 4, 4)
    expected = r"\[B, H, W\]" if isinstance(task, SegmentationTask) else r"\[B, \d, H, W\]"
    with pytest.raises(ValueError, match=rf"'{task.name}'.*target must have shape {expected}"):
        task.loss(pred, target)
    with pytest.raises(ValueError, match=rf"'{task.name}'.*target must have shape {expected}"):
        task.new_metric().update(pred, target)


def test_cross_entropy_mean_counts_labels_outside_the_classes_as_ignored():
    # With the value check off (check_values=False), labels -1 and C are skipped like the
    # ignore label, not gathered out of range.
    gen = torch.Generator().manual_seed(5)
    pred = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 3, -1, 2, -100, 1])
    keep = torch.tensor([0, 3, 5])
    expected = torch.nn.functional.cross_entropy(pred[keep], target[keep])
    assert cross_entropy_mean(pred, target, None).item() == pytest.approx(expected.item(), 1e-14)


def test_repr_names_the_class_the_task_and_its_channels():
    assert repr(DepthTask()) == "DepthTask(name='depth', channels=1)"
    assert repr(SegmentationTask(5)) == "SegmentationTask(name='seg', channels=5)"


def test_segmentation_class_weights_must_be_finite_and_non_negative():
    for bad in ([1.0, -0.5, 1.0], [1.0, float("inf"), 1.0]):
        with pytest.raises(ValueError, match=r"'seg'.*class_weights must be finite and non-neg"):
            SegmentationTask(3, class_weights=bad)
    with pytest.raises(ValueError, match=r"'seg'.*class_weights must have 3 entries, got 2"):
        SegmentationTask(3, class_weights=[1.0, 2.0])
