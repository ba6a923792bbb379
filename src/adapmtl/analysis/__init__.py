"""Analysis of trained models: cost (parameters, MACs) per component."""

from adapmtl.analysis.cost import Cost, CostReport, LayerCost, count_cost

__all__ = ["Cost", "CostReport", "LayerCost", "count_cost"]
