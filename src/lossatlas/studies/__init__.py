"""Built-in studies of the survey's experiments: the edge of stability and double descent.

Each study writes a run directory (``run.json``, a summary JSON, PNG figures) and
returns a JSON-able summary dict.
"""

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
    "eos_study",
    "gd_sharpness_trace",
    "mse_loss",
    "plot_eos",
    "run_eos",
    "top_eigen",
]
