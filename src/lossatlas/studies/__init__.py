"""Built-in studies of the survey's experiments: the edge of stability, double descent, batch size
vs flatness and the developmental stages of a transformer (induction heads).

Each study writes a run directory (``run.json``, a summary JSON, PNG figures) and
returns a JSON-able summary dict.
"""

from .batch_size import batch_size_study, plot_batch_size, run_batch_size
from .double_descent import (
    double_descent_population,
    double_descent_study,
    flip_labels,
    interpolation_threshold,
    model_sharpness,
    plot_double_descent,
    plot_double_descent_surfaces,
    run_double_descent,
    surface_flatness,
)
from .eos import (
    SharpnessTracker,
    TopEigen,
    eos_study,
    gd_sharpness_trace,
    mse_loss,
    plot_eos,
    run_eos,
    top_eigen,
)
from .induction import (
    INDUCTION_CONFIGS,
    AttentionOnlyTransformer,
    InductionData,
    attention_similarity,
    checkpoint_steps,
    induction_data,
    induction_heads_study,
    induction_scores,
    plot_induction,
    run_induction_heads,
)

__all__ = [
    "INDUCTION_CONFIGS",
    "AttentionOnlyTransformer",
    "InductionData",
    "attention_similarity",
    "checkpoint_steps",
    "induction_data",
    "induction_heads_study",
    "induction_scores",
    "plot_induction",
    "run_induction_heads",
    "SharpnessTracker",
    "batch_size_study",
    "TopEigen",
    "double_descent_population",
    "double_descent_study",
    "eos_study",
    "flip_labels",
    "gd_sharpness_trace",
    "interpolation_threshold",
    "model_sharpness",
    "mse_loss",
    "plot_batch_size",
    "plot_double_descent",
    "plot_double_descent_surfaces",
    "plot_eos",
    "run_batch_size",
    "run_double_descent",
    "run_eos",
    "surface_flatness",
    "top_eigen",
]
