"""Analysis of trained models and runs: cost (parameters, MACs), tables, plots."""

from adapmtl.analysis.cost import Cost, CostReport, LayerCost, count_cost

__all__ = ["Cost", "CostReport", "LayerCost", "count_cost"]
