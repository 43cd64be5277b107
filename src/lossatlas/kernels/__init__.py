"""Fast batched forward paths used by the Evaluator.

- :mod:`.mlp`: plain Linear/activation chains, all points' first layer as one GEMM
  and batched GEMMs after.
- :mod:`.bnfold`: eval-mode BatchNorm folded into the preceding convolution per point.
"""

from .bnfold import FoldPair, FoldPlan, fold_batchnorm
from .mlp import MLPPlan, detect_mlp, mlp_logits

__all__ = ["FoldPair", "FoldPlan", "MLPPlan", "detect_mlp", "fold_batchnorm", "mlp_logits"]
