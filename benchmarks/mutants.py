"""The mutants of ``benchmarks/mutation.py``: one-line changes to the core, with the tests that
must catch them. ``module`` is relative to ``src/adapmtl``; ``old`` must occur exactly once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    description: str
    old: str
    new: str
    tests: tuple[str, ...]
    equivalent: str = ""


CONTROLLER_TESTS = (
    "tests/test_sparsity_controller.py",
    "tests/test_sparsity_landing.py",
)
WEIGHTING_TESTS = ("tests/test_weighting.py", "tests/test_weighting_properties.py")
NORMAL_TESTS = ("tests/test_tasks_normal.py", "tests/test_tasks_normal_edges.py")
DISPARSE_TESTS = ("tests/test_methods_disparse.py",)
EXPORT_TESTS = ("tests/test_export.py", "tests/test_export_round_trips.py")
INFERENCE_TESTS = ("tests/test_inference.py", "tests/test_inference_threads.py")
SOFT_TESTS = ("tests/test_sparsity_soft_threshold.py", "tests/test_soft_threshold_properties.py")
REPORT_TESTS = ("tests/test_sparsity_report.py", "tests/test_report_counts.py")
SCORE_TESTS = ("tests/test_score.py", "tests/test_score_properties.py")

MUTANTS: list[Mutant] = [
    # ---- the survivors listed in issue 18
    Mutant(
        "controller-ceil-plus-one",
        "sparsity/controller.py",
        "land_on_target prunes one weight too many",
        "pruned = math.ceil(target * everything.numel())",
        "pruned = math.ceil(target * everything.numel()) + 1",
        CONTROLLER_TESTS,
    ),
    Mutant(
        "weighting-zero-loss-accepted",
        "weighting/adaptive.py",
        "`losses <= 0` -> `losses < 0`",
        "(losses <= 0).any()",
        "(losses < 0).any()",
        WEIGHTING_TESTS,
    ),
    Mutant(
        "weighting-previous-not-restored",
        "weighting/adaptive.py",
        "load_state_dict forgets the previous losses",
        'self.previous = state["previous"]',
        "self.previous = None",
        WEIGHTING_TESTS,
    ),
    Mutant(
        "weighting-official-warmup-early",
        "weighting/adaptive.py",
        "official mode: the warm-up ends one step early",
        "        if self.step < self.warmup:\n            return\n        if self.previous",
        "        if self.step < self.warmup - 1:\n            return\n        if self.previous",
        WEIGHTING_TESTS,
    ),
    Mutant(
        "normal-within-strict",
        "tasks/normal.py",
        "within thresholds `<=` -> `<`",
        "(angles[:, None] <= thresholds)",
        "(angles[:, None] < thresholds)",
        (*NORMAL_TESTS, "tests/test_tasks_base.py"),
        equivalent="no float64 cosine maps through arccos to exactly 11.25, 22.5 or 30 degrees "
        "(nearest 2-4 ulps away, checked over 400 ulps of cosine), so `<` and `<=` agree on "
        "every input; the tests pin each threshold to within 1e-9 degree instead",
    ),
    Mutant(
        "disparse-drop-does-nothing",
        "methods/disparse.py",
        "dynamic update: the drop step keeps every active weight",
        "round(self.densities[path] * (1.0 - rate) * score.numel()),",
        "int(current[path].sum()),",
        DISPARSE_TESTS,
    ),
    Mutant(
        "disparse-xavier-ignored",
        "methods/disparse.py",
        "static: `score_on: xavier` ignored",
        'if self.options.score_on == "xavier":',
        'if self.options.score_on == "never":',
        DISPARSE_TESTS,
    ),
    Mutant(
        "export-sparsified-branch-skipped",
        "sparsity/export.py",
        "load_into skips the branch for a sparsified model",
        "    if is_sparsified(model):\n        try:",
        "    if False:\n        try:",
        (*EXPORT_TESTS, "tests/test_inference_loading.py"),
    ),
    Mutant(
        "layers-thread-restore-removed",
        "inference/layers.py",
        "the torch thread-count restore after a kernel launch removed",
        "        _threads.restore(threads)\n",
        "",
        INFERENCE_TESTS,
    ),
    Mutant(
        "kernels-first-chunk-only",
        "inference/_kernels.py",
        "the parallel loop runs only the first chunk of the work split",
        "for chunk in prange(bounds.shape[0] - 1):",
        "for chunk in prange(1):",
        INFERENCE_TESTS,
    ),
]
