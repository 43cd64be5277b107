"""Fast batched forward paths used by the Evaluator.

- :mod:`.mlp`: plain Linear/activation chains, all points' first layer as one GEMM
  and batched GEMMs after.
- :mod:`.bnfold`: eval-mode BatchNorm folded into the preceding convolution per point.
- :mod:`.mlp_triton`: a Linear-ReLU-Linear-ReLU-Linear MLP and its cross-entropy as one
  Triton kernel (CUDA).
- :mod:`.conv_triton`: a 3x3 convolution with its bias, residual add and ReLU as one
  Triton kernel (CUDA, bf16/fp16), and the graph rewrite that uses it.
- :mod:`.bn_triton`: BatchNorm with batch statistics: the convolution also returns its
  output's statistics, one elementwise kernel normalises, adds the residual, applies ReLU.
"""

from .bnfold import FoldPair, FoldPlan, fold_batchnorm
from .mlp import MLPPlan, detect_mlp, mlp_logits

__all__ = ["FoldPair", "FoldPlan", "MLPPlan", "detect_mlp", "fold_batchnorm", "mlp_logits"]
