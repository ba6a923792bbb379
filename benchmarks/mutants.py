"""The mutants of ``benchmarks/mutation.py``: one-line changes to the core, with the tests that
must catch them. ``module`` is relative to ``src/adapmtl``; ``old`` must occur exactly once."""

from __future__ import annotations

import io
import itertools
import tokenize
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    description: str
    old: str
    new: str
    tests: tuple[str, ...]
    equivalent: str = ""


EDGES = "tests/test_sparsity_edges.py"
CONTROLLER_TESTS = (
    "tests/test_sparsity_controller.py",
    "tests/test_sparsity_landing.py",
)
WEIGHTING_TESTS = ("tests/test_weighting.py", "tests/test_weighting_properties.py")
DECLARATIONS = "tests/test_tasks_declarations.py"
NORMAL_TESTS = ("tests/test_tasks_normal.py", "tests/test_tasks_normal_edges.py", DECLARATIONS)
DISPARSE_TESTS = ("tests/test_methods_disparse.py", "tests/test_methods_disparse_properties.py")
EXPORT_TESTS = ("tests/test_export.py", "tests/test_export_round_trips.py")
INFERENCE_TESTS = ("tests/test_inference.py", "tests/test_inference_threads.py")
SOFT_TESTS = ("tests/test_sparsity_soft_threshold.py", "tests/test_soft_threshold_properties.py")
REPORT_TESTS = ("tests/test_sparsity_report.py", "tests/test_report_counts.py")
SCORE_TESTS = ("tests/test_score.py", "tests/test_score_properties.py")
MASK_TESTS = ("tests/test_sparsity_masks.py", "tests/test_export_round_trips.py", EDGES)
PRESSURE_TESTS = ("tests/test_sparsity_pressure.py", EDGES)
DEPTH_TESTS = ("tests/test_tasks_depth.py", DECLARATIONS)
SEGMENTATION_TESTS = (
    "tests/test_tasks_segmentation.py",
    "tests/test_tasks_metric_state.py",
    DECLARATIONS,
)
BASE_TESTS = ("tests/test_tasks_base.py", "tests/test_tasks_normal.py")
METHOD_TESTS = ("tests/test_methods.py", "tests/test_methods_options.py")

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
    # ---- further mutants of the core, one or more per mechanism
    Mutant(
        "soft-clamp-wrong-sign",
        "sparsity/parametrization.py",
        "forward subtracts clamp(W, 0, a) instead of clamp(W, -a, a)",
        "clamped = weight.clamp(-alpha, alpha)",
        "clamped = weight.clamp(0, alpha)",
        SOFT_TESTS,
    ),
    Mutant(
        "soft-grad-alpha-sign",
        "sparsity/parametrization.py",
        "dS/da loses its minus sign",
        "grad_alpha = -torch.dot(",
        "grad_alpha = torch.dot(",
        SOFT_TESTS,
    ),
    Mutant(
        "soft-grad-weight-signed",
        "sparsity/parametrization.py",
        "dS/dW = sign(S) instead of the indicator",
        "return signs.abs_().mul_(grad_out), grad_alpha",
        "return signs.mul_(grad_out), grad_alpha",
        SOFT_TESTS,
    ),
    Mutant(
        "active-inclusive",
        "sparsity/parametrization.py",
        "active set |W| >= a instead of |W| > a",
        "return weight.abs() > torch.sigmoid(self.thresholds[self.group])",
        "return weight.abs() >= torch.sigmoid(self.thresholds[self.group])",
        (*REPORT_TESTS, *CONTROLLER_TESTS),
    ),
    Mutant(
        "masked-active-ignores-zeros",
        "sparsity/parametrization.py",
        "a masked layer counts stored zeros under the mask as active",
        "return self.mask & (weight != 0)",
        "return self.mask.clone()",
        REPORT_TESTS,
    ),
    Mutant(
        "report-component-total",
        "sparsity/report.py",
        "component totals count nonzeros",
        "counts.total += layer.total",
        "counts.total += layer.nonzero",
        REPORT_TESTS,
    ),
    Mutant(
        "overall-sparsity-inverted",
        "sparsity/report.py",
        "overall_sparsity returns the density",
        "return 1.0 - nonzero / total if total else 0.0\n",
        "return nonzero / total if total else 0.0\n",
        REPORT_TESTS,
    ),
    Mutant(
        "landing-factor-last-pruned",
        "sparsity/controller.py",
        "land_on_target uses the last pruned ratio itself (rounding may unprune it)",
        "factor = (last_pruned + first_kept) / 2",
        "factor = first_kept",
        CONTROLLER_TESTS,
    ),
    Mutant(
        "landing-skips-when-reached",
        "sparsity/controller.py",
        "land_on_target never lowers the thresholds",
        "    if factor >= 1:\n        return",
        "    if factor >= 0:\n        return",
        CONTROLLER_TESTS,
    ),
    Mutant(
        "controller-freeze-strict",
        "sparsity/controller.py",
        "the target counts as reached only above it",
        "reached = self.last_sparsity >= self.target",
        "reached = self.last_sparsity > self.target",
        CONTROLLER_TESTS,
    ),
    Mutant(
        "freeze-keeps-raw-weight",
        "sparsity/masks.py",
        "freeze_masks keeps W instead of S(W, a) for the survivors",
        "        original.copy_(effective)\n",
        "",
        (*MASK_TESTS, *CONTROLLER_TESTS),
    ),
    Mutant(
        "set-masks-no-zeroing",
        "sparsity/masks.py",
        "set_masks leaves pruned stored weights in place",
        "        if zero_pruned:\n            original.mul_(p.mask)",
        "        if False:\n            original.mul_(p.mask)",
        (*MASK_TESTS, "tests/test_methods.py"),
    ),
    Mutant(
        "pressure-direction",
        "sparsity/pressure.py",
        "weight decay shrinks when sparsity is behind the schedule",
        "decay * self.growth if sparsity < self.schedule(iteration) else decay / self.growth",
        "decay / self.growth if sparsity < self.schedule(iteration) else decay * self.growth",
        PRESSURE_TESTS,
    ),
    Mutant(
        "pressure-schedule-square",
        "sparsity/pressure.py",
        "cubic schedule made quadratic",
        "(1.0 - (1.0 - progress) ** 3)",
        "(1.0 - (1.0 - progress) ** 2)",
        PRESSURE_TESTS,
    ),
    Mutant(
        "export-bitmask-order",
        "sparsity/export.py",
        "bitmask packed big-endian",
        'bits = np.packbits(nonzero.numpy(), bitorder="little")',
        'bits = np.packbits(nonzero.numpy(), bitorder="big")',
        EXPORT_TESTS,
    ),
    Mutant(
        "export-worth-encoding",
        "sparsity/export.py",
        "every float tensor is bitmask-encoded, even when that is larger",
        "return nonzero * tensor.element_size() + (numel + 7) // 8 < numel * tensor.element_size()",
        "return True",
        EXPORT_TESTS,
    ),
    Mutant(
        "weighting-inverse-dropped",
        "weighting/adaptive.py",
        "Eq. 6 without the inverse (a direct relation)",
        "beta = (r / r.mean()).reciprocal()",
        "beta = r / r.mean()",
        WEIGHTING_TESTS,
    ),
    Mutant(
        "weighting-lambda-dropped",
        "weighting/adaptive.py",
        "lambda * ratio applied without lambda",
        "beta = beta * self.lam * self.param_ratio",
        "beta = beta * self.param_ratio",
        WEIGHTING_TESTS,
    ),
    Mutant(
        "weighting-window-off-by-one",
        "weighting/adaptive.py",
        "the window keeps one loss too many",
        "self.history = torch.cat([self.history, row[None]])[-self.window :]",
        "self.history = torch.cat([self.history, row[None]])[-self.window - 1 :]",
        WEIGHTING_TESTS,
    ),
    Mutant(
        "weighting-official-sum",
        "weighting/adaptive.py",
        "official weights normalised to sum 1 instead of T",
        "self.weights = (len(self.tasks) * mean / mean.sum()).float()",
        "self.weights = (mean / mean.sum()).float()",
        WEIGHTING_TESTS,
    ),
    Mutant(
        "score-direction-ignored",
        "tasks/score.py",
        "lower-is-better metrics scored as higher-is-better",
        "sign = 1.0 if higher_is_better else -1.0",
        "sign = 1.0",
        SCORE_TESTS,
    ),
    Mutant(
        "score-mean-over-metrics",
        "tasks/score.py",
        "the sum form divides by the metric count",
        'per_task[task] = sum(deltas) if reduce == "sum" else sum(deltas) / len(deltas)',
        "per_task[task] = sum(deltas) / len(deltas)",
        SCORE_TESTS,
    ),
    Mutant(
        "score-overall-sum",
        "tasks/score.py",
        "overall Delta_T sums the tasks instead of averaging",
        "overall = sum(per_task.values()) / len(per_task)",
        "overall = sum(per_task.values())",
        SCORE_TESTS,
    ),
    Mutant(
        "normal-loss-target-unnormalised",
        "tasks/normal.py",
        "the loss uses the raw target vector",
        "cos = (F.normalize(pred, dim=1) * F.normalize(target, dim=1)).sum(dim=1)",
        "cos = (F.normalize(pred, dim=1) * target).sum(dim=1)",
        NORMAL_TESTS,
    ),
    Mutant(
        "normal-valid-all",
        "tasks/normal.py",
        "a target is valid only if all three components are nonzero",
        "return (target != 0).any(dim=1)",
        "return (target != 0).all(dim=1)",
        NORMAL_TESTS,
    ),
    Mutant(
        "depth-delta-strict",
        "tasks/depth.py",
        "delta accuracies count ratio < 1.25^k",
        "within=(ratio[:, None] <= thresholds).sum(dim=0),",
        "within=(ratio[:, None] < thresholds).sum(dim=0),",
        DEPTH_TESTS,
    ),
    Mutant(
        "depth-rel-err-over-pred",
        "tasks/depth.py",
        "relative error divided by the prediction",
        "rel_err = abs_err / g",
        "rel_err = abs_err / p",
        DEPTH_TESTS,
    ),
    Mutant(
        "segmentation-union",
        "tasks/segmentation.py",
        "IoU union counts the true positives twice",
        "union = confusion.sum(0) + confusion.sum(1) - tp",
        "union = confusion.sum(0) + confusion.sum(1)",
        SEGMENTATION_TESTS,
    ),
    Mutant(
        "segmentation-confusion-transposed",
        "tasks/segmentation.py",
        "confusion matrix rows and columns swapped",
        "confusion = torch.bincount(gt * c + pr, minlength=c * c).reshape(c, c)",
        "confusion = torch.bincount(pr * c + gt, minlength=c * c).reshape(c, c)",
        SEGMENTATION_TESTS,
    ),
    Mutant(
        "masked-mean-all-pixels",
        "tasks/base.py",
        "masked_mean divides by all pixels",
        "return total / count.clamp_min(1).to(total.dtype)",
        "return total / valid.numel()",
        BASE_TESTS,
    ),
    Mutant(
        "keep-count-floor",
        "sparsity/topk.py",
        "keep_count truncates instead of rounding",
        "return round((1.0 - sparsity) * total)",
        "return int((1.0 - sparsity) * total)",
        (*METHOD_TESTS, *DISPARSE_TESTS),
    ),
    Mutant(
        "magnitude-scores-revive",
        "methods/masking.py",
        "magnitude scores let pruned weights come back",
        'score = score.masked_fill(~p.mask, float("-inf"))',
        "score = score",
        (*METHOD_TESTS, *DISPARSE_TESTS),
    ),
    Mutant(
        "snip-score-gradient-only",
        "methods/snip.py",
        "SNIP scores |g| instead of |g * W|",
        '            lambda grad, weight: (grad * weight).abs(),\n        )["all"]',
        '            lambda grad, weight: grad.abs(),\n        )["all"]',
        METHOD_TESTS,
    ),
    Mutant(
        "imp-cubic-square",
        "methods/imp.py",
        "IMP schedule exponent 2 instead of 3",
        "return final + (initial - final) * (1.0 - step / steps) ** 3",
        "return final + (initial - final) * (1.0 - step / steps) ** 2",
        METHOD_TESTS,
    ),
    Mutant(
        "lth-round-sparsity-linear",
        "methods/lth.py",
        "LTH rounds grow linearly instead of geometrically",
        "return 1.0 - (1.0 - target) ** (round_index / rounds)",
        "return target * round_index / rounds",
        METHOD_TESTS,
    ),
    Mutant(
        "disparse-union-intersection",
        "methods/disparse.py",
        "static backbone keeps a weight only if every task keeps it",
        "u[path] = torch.minimum(u[path], u_task[start : start + n].view_as(u[path]))",
        "u[path] = torch.where(torch.isinf(u[path]), u_task[start : start + n].view_as(u[path]), "
        "torch.maximum(u[path], u_task[start : start + n].view_as(u[path])))",
        DISPARSE_TESTS,
    ),
    Mutant(
        "disparse-cosine-rate",
        "methods/disparse.py",
        "the drop rate decays linearly instead of by the cosine",
        "return 0.5 * initial * (1.0 + math.cos(math.pi * iteration / end))",
        "return initial * (1.0 - iteration / end)",
        DISPARSE_TESTS,
    ),
    Mutant(
        "erk-power-ignored",
        "methods/disparse.py",
        "ERK raw scores without the power",
        "raw = {path: (sum(shape) / sizes[path]) ** power for path, shape in shapes.items()}",
        "raw = {path: sum(shape) / sizes[path] for path, shape in shapes.items()}",
        DISPARSE_TESTS,
    ),
    Mutant(
        "csr-linear-no-bias",
        "inference/layers.py",
        "the CSR linear layer drops its bias",
        "        if self.bias is not None:\n            y = y + self.bias\n",
        "",
        INFERENCE_TESTS,
    ),
    Mutant(
        "direct-conv-left-padding",
        "inference/layers.py",
        "packed input's left padding not rounded up to the stride",
        "left = -(-pw // sw) * sw",
        "left = pw",
        INFERENCE_TESTS,
        equivalent="the packing and every tap offset use the same `left`, so any left >= the "
        "padding reads the same input columns; rounding up to the stride only aligns the phases",
    ),
    Mutant(
        "balanced-bounds-one-chunk",
        "inference/layers.py",
        "the work split ignores the requested chunk count",
        "targets = cumulative[-1] * np.arange(1, chunks) / chunks",
        "targets = cumulative[-1] * np.arange(1, 1) / chunks",
        INFERENCE_TESTS,
    ),
    Mutant(
        "direct-conv-kh-range",
        "inference/layers.py",
        "kernel rows partly in the padding are skipped",
        "kh_lo, kh_hi = _valid_range((in_rows >= 0) & (in_rows < height))",
        "kh_lo, kh_hi = _valid_range((in_rows >= 1) & (in_rows < height))",
        INFERENCE_TESTS,
    ),
]


# ---- generated mutants: every operator of the core modules, swapped for a near neighbour
SPARSITY = tuple(f"tests/test_sparsity_{n}.py" for n in ("soft_threshold", "report", "masks"))
TESTS_BY_MODULE: dict[str, tuple[str, ...]] = {
    "sparsity/parametrization.py": (
        *SOFT_TESTS,
        *REPORT_TESTS,
        EDGES,
        "tests/test_sparsity_serialization.py",
    ),
    "sparsity/controller.py": CONTROLLER_TESTS,
    "sparsity/report.py": REPORT_TESTS,
    "sparsity/masks.py": (*MASK_TESTS, "tests/test_sparsity_bake.py"),
    "sparsity/export.py": EXPORT_TESTS,
    "sparsity/pressure.py": PRESSURE_TESTS,
    "sparsity/sparsify.py": (
        "tests/test_sparsity_grouping.py",
        "tests/test_sparsity_init_warning.py",
        EDGES,
        *SPARSITY,
    ),
    "weighting/adaptive.py": WEIGHTING_TESTS,
    "components.py": (
        "tests/test_sparsity_grouping.py",
        "tests/test_weighting.py",
        "tests/test_cost.py",
    ),
    "tasks/normal.py": NORMAL_TESTS,
    "tasks/depth.py": DEPTH_TESTS,
    "tasks/segmentation.py": SEGMENTATION_TESTS,
    "tasks/score.py": (*SCORE_TESTS, "tests/test_score_paper_tables.py"),
    "tasks/base.py": (
        "tests/test_tasks_base.py",
        "tests/test_tasks_metric_state.py",
        *NORMAL_TESTS,
        *DEPTH_TESTS,
    ),
    "methods/masking.py": (*METHOD_TESTS, *DISPARSE_TESTS),
    "sparsity/topk.py": (
        *METHOD_TESTS,
        *DISPARSE_TESTS,
        "tests/test_inference_loading.py",
        "tests/test_sensitivity.py",
    ),
    "methods/disparse.py": (*DISPARSE_TESTS, "tests/test_methods_options.py"),
    "methods/snip.py": METHOD_TESTS,
    "methods/lth.py": METHOD_TESTS,
    "methods/imp.py": METHOD_TESTS,
    "inference/layers.py": INFERENCE_TESTS,
}
# generated mutants judged equivalent, by name (module:line:column): re-judge when lines move
EQUIVALENT = {
    "tasks.normal:105:40": "the curated normal-within-strict mutant: no cosine maps to exactly "
    "11.25, 22.5 or 30 degrees",
    "tasks.depth:74:51": "depth predictions are checked to be 4-D, where shape[2:] is shape[-2:]",
    "sparsity.report:120:35": "a layer has a theta exactly when it has a group (SparseWeight.theta "
    "is None only for group None), so `and` and `or` select the same layers",
    "tasks.base:49:78": "the default ignore label is used only by classification, which rejects "
    "negative labels before the loss, so -100 and -101 never occur",
    "sparsity.topk:33:36": "topk with sorted=True returns the same index set, and only the set "
    "is used",
    "methods.masking:117:32": "a one-element all-true mask broadcasts: W * [True] = W, the same "
    "dense weight as the empty (unmasked) mask gives",
}
SWAPS = {
    "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==",
    "+": "-", "-": "+", "*": "/", "/": "*", "//": "/", "and": "or", "or": "and",
    "True": "False", "False": "True",
}  # fmt: skip


def generated(root: Path) -> list[Mutant]:
    """One mutant per swappable operator token (and integer literal, n -> n + 1) of the modules
    in TESTS_BY_MODULE, where the mutated line is unique in its file and still compiles."""
    out = []
    for module, tests in TESTS_BY_MODULE.items():
        text = (root / "src" / "adapmtl" / module).read_text()
        lines = text.splitlines(keepends=True)
        counts: dict[str, int] = {}
        for line in lines:
            counts[line] = counts.get(line, 0) + 1
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        for token, following in itertools.pairwise(tokens):
            if token.string == "*" and following.string in (",", ")"):
                continue  # the keyword-only marker of a signature, not a multiplication
            if token.type == tokenize.NUMBER and token.string.isdigit():
                new = str(int(token.string) + 1)
            elif token.type in (tokenize.OP, tokenize.NAME) and token.string in SWAPS:
                new = SWAPS[token.string]
            else:
                continue
            row, col = token.start
            line = lines[row - 1]
            if counts[line] != 1 or token.end[0] != row:
                continue
            mutated = line[:col] + new + line[token.end[1] :]
            try:
                compile(text.replace(line, mutated), module, "exec")
            except SyntaxError:
                continue
            name = f"{module.removesuffix('.py').replace('/', '.')}:{row}:{col}"
            out.append(
                Mutant(
                    name,
                    module,
                    f"line {row}: `{token.string}` -> `{new}`",
                    line,
                    mutated,
                    tests,
                    EQUIVALENT.get(name, ""),
                )
            )
    return out
