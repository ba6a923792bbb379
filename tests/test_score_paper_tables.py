"""Delta_T reproduces the paper's Tables 1 and 2 (NYUv2, 90 % sparsity) from their metric columns.

The numbers below are transcribed from the paper (arXiv 2408.03913, Tables 1 and 2): the
metric columns are the inputs, the printed Delta_T_1..3 and Delta_T the expected outputs. The
dense row of each table is the reference. The tables use the "sum" form
(per-task sums of the metric deltas).
"""

import pytest

from adapmtl.tasks import delta_t, task_set
from adapmtl.tasks.score import metric_directions

TASKS = ["seg", "normal", "depth"]
COLUMNS = {
    "seg": ["miou", "pixel_acc"],
    "normal": ["angle_mean", "angle_median", "within_11.25", "within_22.5", "within_30"],
    "depth": ["abs_err", "rel_err", "delta1", "delta2", "delta3"],
}

# Row: 12 metric values (mIoU, PixAcc | mean, median, 11.25, 22.5, 30 | abs, rel, d1, d2, d3),
# then the printed Delta_T1, Delta_T2, Delta_T3 and Delta_T.
TABLE2_MOBILENETV2 = {
    "Dense": (
        [19.94, 48.71, 17.85, 16.21, 29.77, 72.19, 86.19, 0.64, 0.24, 58.93, 86.27, 96.16],
        [0.00, 0.00, 0.00],
        0.00,
    ),
    "SNIP": (
        [18.96, 46.93, 18.33, 16.97, 28.93, 71.21, 85.78, 0.64, 0.25, 56.75, 85.71, 95.33],
        [-8.57, -12.03, -9.38],
        -9.99,
    ),
    "LTH": (
        [19.14, 47.25, 17.67, 16.32, 29.67, 72.15, 86.22, 0.65, 0.25, 57.68, 85.89, 96.13],
        [-7.01, -0.03, -8.32],
        -5.12,
    ),
    "IMP": (
        [18.76, 48.12, 18.71, 16.68, 29.63, 71.76, 85.91, 0.64, 0.23, 59.75, 86.52, 96.31],
        [-7.13, -9.11, 6.00],
        -3.41,
    ),
    "DiSparse": (
        [19.87, 48.83, 17.92, 16.79, 29.87, 71.76, 85.64, 0.65, 0.24, 58.42, 85.72, 96.28],
        [-0.10, -4.87, -2.94],
        -2.64,
    ),
    "AdapMTL w/o adaptive thresholds": (
        [18.93, 47.51, 18.16, 16.87, 28.37, 71.53, 86.63, 0.65, 0.24, 58.26, 85.82, 95.92],
        [-7.53, -10.91, -3.47],
        -7.30,
    ),
    "AdapMTL": (
        [20.16, 49.14, 17.53, 15.96, 30.16, 72.36, 86.51, 0.64, 0.24, 59.03, 86.57, 96.38],
        [1.99, 5.25, 0.75],
        2.66,
    ),
}

TABLE1_RESNET34 = {
    "Dense": (
        [25.54, 57.91, 17.11, 14.95, 36.35, 72.25, 85.44, 0.55, 0.22, 65.21, 89.87, 97.52],
        [0.00, 0.00, 0.00],
        0.00,
    ),
    "SNIP": (
        [24.09, 55.32, 16.94, 14.93, 36.17, 72.39, 86.98, 0.61, 0.23, 60.61, 87.88, 96.77],
        [-10.15, 2.63, -25.49],
        -11.00,
    ),
    "LTH": (
        [25.42, 57.98, 16.73, 15.08, 35.20, 72.35, 87.22, 0.57, 0.22, 60.93, 88.64, 96.20],
        [-0.35, 0.41, -12.92],
        -4.29,
    ),
    "IMP": (
        [25.68, 57.86, 16.86, 15.18, 35.53, 71.96, 86.26, 0.56, 0.22, 65.23, 89.29, 97.53],
        [0.46, -1.77, -3.82],
        -1.71,
    ),
    "DiSparse": (
        [25.71, 58.08, 17.03, 15.23, 35.10, 71.85, 86.22, 0.57, 0.22, 64.93, 88.64, 97.20],
        [0.96, -4.48, -5.76],
        -3.10,
    ),
    "AdapMTL w/o adaptive thresholds": (
        [25.59, 57.53, 17.26, 15.75, 36.21, 71.53, 85.91, 0.58, 0.22, 62.52, 87.12, 96.50],
        [-0.46, -7.06, -13.68],
        -7.07,
    ),
    "AdapMTL": (
        [26.28, 58.29, 16.92, 14.91, 36.36, 72.97, 86.29, 0.55, 0.22, 65.39, 89.93, 97.58],
        [3.55, 3.41, 0.38],
        2.45,
    ),
}
# Table 1, IMP, depth: the printed -3.82 is not what its printed columns give (-2.42), plausibly
# because abs/rel are printed with two decimals only. Its printed Delta_T is the
# mean of its printed Delta_T_t, as for every other row.
TABLE1_KNOWN_MISMATCH = {("IMP", "depth")}

ROUNDING = 0.005 + 1e-9  # the tables print two decimals
TABLE1_TOLERANCE = 0.03


def as_results(values: list[float]) -> dict[str, dict[str, float]]:
    flat = iter(values)
    return {task: {metric: next(flat) for metric in COLUMNS[task]} for task in TASKS}


def directions():
    return metric_directions(task_set("nyuv2"))


@pytest.mark.parametrize("row", list(TABLE2_MOBILENETV2))
def test_table2_every_row(row):
    values, printed_tasks, printed_overall = TABLE2_MOBILENETV2[row]
    dense = as_results(TABLE2_MOBILENETV2["Dense"][0])
    per_task, overall = delta_t(as_results(values), dense, directions(), reduce="sum")
    assert list(per_task) == TASKS
    for task, printed in zip(TASKS, printed_tasks, strict=True):
        assert abs(per_task[task] - printed) <= ROUNDING, (row, task, per_task[task])
    assert abs(overall - printed_overall) <= ROUNDING, (row, overall)


@pytest.mark.parametrize("row", list(TABLE1_RESNET34))
def test_table1_every_row_within_input_rounding(row):
    """Table 1 was computed from unrounded metrics: its two-decimal columns (abs 0.55, rel 0.22)
    only reproduce the printed Delta_T to within 0.03, and IMP's depth term not at all."""
    values, printed_tasks, printed_overall = TABLE1_RESNET34[row]
    dense = as_results(TABLE1_RESNET34["Dense"][0])
    per_task, overall = delta_t(as_results(values), dense, directions(), reduce="sum")
    for task, printed in zip(TASKS, printed_tasks, strict=True):
        if (row, task) in TABLE1_KNOWN_MISMATCH:
            assert per_task[task] == pytest.approx(-2.42, abs=ROUNDING)
        else:
            assert abs(per_task[task] - printed) <= TABLE1_TOLERANCE, (row, task, per_task[task])
    if row != "IMP":
        assert abs(overall - printed_overall) <= TABLE1_TOLERANCE, (row, overall)
    assert abs(sum(printed_tasks) / 3 - printed_overall) <= 0.01


def test_eq7_as_printed_does_not_reproduce_table2():
    """The "mean" form (Eq. 7 as printed) gives other numbers: AdapMTL 0.73, SNIP -2.86."""
    dense = as_results(TABLE2_MOBILENETV2["Dense"][0])
    expected = {"AdapMTL": 0.73, "SNIP": -2.86}
    for row, value in expected.items():
        per_task, overall = delta_t(
            as_results(TABLE2_MOBILENETV2[row][0]), dense, directions(), "mean"
        )
        assert abs(overall - value) <= ROUNDING
        printed = TABLE2_MOBILENETV2[row][1]
        # Per task, the mean form is the sum form divided by the number of metrics (2, 5, 5).
        for task, n, total in zip(TASKS, (2, 5, 5), printed, strict=True):
            assert per_task[task] == pytest.approx(total / n, abs=ROUNDING / n)
