"""Built-in studies of the survey's experiments: the edge of stability and double descent.

Each study writes a run directory (``run.json``, a summary JSON, PNG figures) and
returns a JSON-able summary dict.
"""

from .double_descent import (
    double_descent_population,
    double_descent_study,
    flip_labels,
    interpolation_threshold,
    model_sharpness,
    plot_double_descent,
    run_double_descent,
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

__all__ = [
    "SharpnessTracker",
    "TopEigen",
    "double_descent_population",
    "double_descent_study",
    "eos_study",
    "flip_labels",
    "gd_sharpness_trace",
    "interpolation_threshold",
    "model_sharpness",
    "mse_loss",
    "plot_double_descent",
    "plot_eos",
    "run_double_descent",
    "run_eos",
    "top_eigen",
]
