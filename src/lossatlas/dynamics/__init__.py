"""Dynamics: phase transitions along training and algorithmic branches within basins.

* :func:`detect_transitions` - abrupt changes of behavioural metrics that a smooth trend
  (exponential, power law, spline in log-steps) does not explain; :func:`fit_trend`;
  :func:`grokking_onset`, :func:`lead_time`.
* :func:`commutator_defect` - non-commutativity of two SGD steps, an early-warning
  signal of grokking; :func:`defect_along` over checkpoints.
* :func:`stage_boundaries`, :func:`llc_stages` - learning-coefficient stages.
* :func:`linear_cka`, :func:`find_branches` - functional similarity and branches
  within basins.
* :func:`run_grokking` - the built-in grokking run (modular addition), with the
  interventions ``weight_decay`` and ``freeze_embedding``.
* :func:`fit_lead_time_law`, :func:`lead_time_sweep`, :func:`grokking_interventions` -
  the defect's lead over the onset as a power law; the interventions' effect on onset.
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
from .grokking import GrokkingResult, ModularMLP, defect_lead, modular_mlp, run_grokking
from .lead_law import (
    LeadTimeLaw,
    fit_lead_time_law,
    grokking_interventions,
    lead_time_sweep,
    onset_effect,
    plot_lead_time_law,
    redetect_leads,
    write_lead_time_law,
)
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
    "LeadTimeLaw",
    "ModularMLP",
    "StageResult",
    "Transition",
    "basins_from_barriers",
    "branches_report",
    "commutator_defect",
    "defect_along",
    "defect_lead",
    "detect_all",
    "detect_transitions",
    "dynamics_report",
    "find_branches",
    "first_order_difference",
    "fit_lead_time_law",
    "fit_trend",
    "functional_distances",
    "grokking_interventions",
    "grokking_onset",
    "lead_time",
    "lead_time_sweep",
    "linear_cka",
    "llc_along",
    "llc_stages",
    "modular_mlp",
    "noise_scale",
    "onset_effect",
    "plot_lead_time_law",
    "plot_trajectory_transitions",
    "plot_transitions",
    "prediction_disagreement",
    "redetect_leads",
    "representations",
    "write_lead_time_law",
    "rise_step",
    "run_grokking",
    "sgd_commutator",
    "stage_boundaries",
]
