"""Dynamics: phase transitions along training and algorithmic branches within basins.

* :func:`detect_transitions` - abrupt changes of behavioural metrics that a smooth trend
  (exponential, power law, spline in log-steps) does not explain; :func:`fit_trend`;
  :func:`grokking_onset`, :func:`lead_time`.
* :func:`commutator_defect` - non-commutativity of two SGD steps, an early-warning
  signal of grokking; :func:`defect_along` over checkpoints.
* :func:`stage_boundaries`, :func:`llc_stages` - learning-coefficient stages.
* :func:`linear_cka`, :func:`find_branches` - functional similarity and branches
  within basins.
* :func:`run_grokking` - the built-in grokking run (modular addition).
* :func:`plot_transitions`, :func:`plot_trajectory_transitions` - figures.
* :func:`dynamics_report`, :func:`branches_report` - what the CLI verbs call.
"""

from .branches import (
    BranchResult,
    basins_from_barriers,
    find_branches,
    functional_distances,
    linear_cka,
    prediction_disagreement,
    representations,
)
from .commutator import commutator_defect, defect_along, first_order_difference, sgd_commutator
from .grokking import GrokkingResult, ModularMLP, modular_mlp, run_grokking
from .plot import plot_trajectory_transitions, plot_transitions
from .report import branches_report, dynamics_report
from .stages import StageResult, llc_along, llc_stages, stage_boundaries
from .transitions import (
    Transition,
    detect_all,
    detect_transitions,
    fit_trend,
    grokking_onset,
    lead_time,
    noise_scale,
    rise_step,
)

__all__ = [
    "BranchResult",
    "GrokkingResult",
    "ModularMLP",
    "StageResult",
    "Transition",
    "basins_from_barriers",
    "branches_report",
    "commutator_defect",
    "defect_along",
    "detect_all",
    "detect_transitions",
    "dynamics_report",
    "find_branches",
    "first_order_difference",
    "fit_trend",
    "functional_distances",
    "grokking_onset",
    "lead_time",
    "linear_cka",
    "llc_along",
    "llc_stages",
    "modular_mlp",
    "noise_scale",
    "plot_trajectory_transitions",
    "plot_transitions",
    "prediction_disagreement",
    "representations",
    "rise_step",
    "run_grokking",
    "sgd_commutator",
    "stage_boundaries",
]
