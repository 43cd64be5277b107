"""Symmetries of neural networks: permutation specs from the torch.fx graph (with the
sign flips of tanh-like units: signed permutations), weight and activation matching
(git re-basin), REPAIR / BatchNorm reset for interpolated models, the rescaling
canonical form (ReLU units and layers before a BatchNorm / LayerNorm), and distances
modulo symmetry."""

from ._inputs import infer_example_input
from .distance import align, compare_alignment, parameter_distance
from .matching import (
    activation_matching,
    match_activations,
    match_signed_weights,
    match_weights,
    weight_matching,
)
from .ot import ot_align, ot_plans
from .repair import interpolate, interpolate_state, repair, reset_bn
from .rescale import (
    apply_norm_scaling,
    apply_rescaling,
    canonical_rescaling,
    random_norm_scaling,
    random_rescaling,
    rescale_canonical,
)
from .spec import (
    Axis,
    NormScale,
    PermutationSpec,
    SpecWarning,
    apply_permutation,
    check_spec,
    identity_permutation,
    permutation_spec,
    permute_model,
    random_permutation,
    random_signs,
    spec_discrepancy,
)

__all__ = [
    "Axis",
    "NormScale",
    "PermutationSpec",
    "SpecWarning",
    "activation_matching",
    "align",
    "apply_norm_scaling",
    "apply_permutation",
    "apply_rescaling",
    "canonical_rescaling",
    "check_spec",
    "compare_alignment",
    "identity_permutation",
    "infer_example_input",
    "interpolate",
    "interpolate_state",
    "match_activations",
    "match_signed_weights",
    "match_weights",
    "ot_align",
    "ot_plans",
    "parameter_distance",
    "permutation_spec",
    "permute_model",
    "random_norm_scaling",
    "random_permutation",
    "random_rescaling",
    "random_signs",
    "repair",
    "rescale_canonical",
    "reset_bn",
    "spec_discrepancy",
    "weight_matching",
]
