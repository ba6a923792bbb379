"""Threshold sparsity (paper Sections 3.1-3.2): parametrizations, report, controller, the
scheduled level and allocation, bake."""

from adapmtl.components import default_components, path_matches
from adapmtl.sparsity.allocation import CostAllocation
from adapmtl.sparsity.batched import batched_thresholds
from adapmtl.sparsity.controller import CONTROLLER_MODES, TargetSparsityController
from adapmtl.sparsity.level import CubicSchedule, ScheduledLevel, rescale_thresholds
from adapmtl.sparsity.masks import (
    bake,
    current_masks,
    dense_state_dict,
    freeze_masks,
    keep_masks_in_weights,
    load_dense_state_dict,
    set_masks,
)
from adapmtl.sparsity.optim import param_groups
from adapmtl.sparsity.parametrization import SparseWeight, soft_threshold
from adapmtl.sparsity.pressure import ThresholdPressure
from adapmtl.sparsity.report import SparsityReport, overall_sparsity, report
from adapmtl.sparsity.sparsify import (
    GROUPINGS,
    PRUNABLE_TYPES,
    THRESHOLDS_ATTR,
    is_sparsified,
    layer_components,
    sparse_layers,
    sparsify,
    theta_from_alpha,
    thresholds,
)

__all__ = [
    "CONTROLLER_MODES",
    "GROUPINGS",
    "PRUNABLE_TYPES",
    "THRESHOLDS_ATTR",
    "CostAllocation",
    "CubicSchedule",
    "ScheduledLevel",
    "SparseWeight",
    "SparsityReport",
    "TargetSparsityController",
    "ThresholdPressure",
    "bake",
    "batched_thresholds",
    "current_masks",
    "default_components",
    "dense_state_dict",
    "freeze_masks",
    "is_sparsified",
    "keep_masks_in_weights",
    "layer_components",
    "load_dense_state_dict",
    "overall_sparsity",
    "param_groups",
    "path_matches",
    "report",
    "rescale_thresholds",
    "set_masks",
    "soft_threshold",
    "sparse_layers",
    "sparsify",
    "theta_from_alpha",
    "thresholds",
]
