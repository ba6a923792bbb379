"""Fast CPU inference for models with unstructured sparsity (baked weights with exact zeros).

``optimize(model, example)`` returns a copy whose Conv2d/Linear layers run on sparse kernels
where a measurement on ``example`` shows that they are faster, plus the per-layer plan;
``compare_end_to_end`` times the dense and the optimized model against each other. The sparse
direct convolution needs numba (``pip install adapmtl[inference]``); without it only the
torch.sparse CSR kernels (1x1 convs, Linear) are considered.
"""

from adapmtl.inference.bench import EndToEnd, compare_end_to_end
from adapmtl.inference.optimize import KERNELS, InferencePlan, LayerChoice, optimize
from adapmtl.inference.threads import numba_available

__all__ = [
    "KERNELS",
    "EndToEnd",
    "InferencePlan",
    "LayerChoice",
    "compare_end_to_end",
    "numba_available",
    "optimize",
]
