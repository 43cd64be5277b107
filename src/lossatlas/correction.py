"""Make a decoder exact at the population: smooth interpolation of its residuals.

A learned decoder ``D`` reproduces the population models only approximately, and
trained minima are so narrow that a tiny weight error changes the loss a lot.
``ResidualCorrection`` adds to ``D(z)`` a Gaussian radial-basis interpolation of
the residuals ``r_i = c_i - D(z_i)`` at the models' codes ``z_i``: the corrected
decoder returns every model exactly at its code and blends smoothly to ``D``
away from the models (the correction decays over ``length_scale``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ResidualCorrection"]


class ResidualCorrection:
    """RBF interpolation of decoder residuals over latent space.

    Parameters
    ----------
    codes : Tensor[N, d]       the models' latent codes
    residuals : Tensor[N, r]   target minus decoded, in the decoder's output space
    length_scale : float, optional
        Gaussian width in latent units; default: the median distance from a code
        to its nearest other code.
    ridge : float
        Relative diagonal regulariser of the kernel system (keeps it well posed
        for codes that nearly coincide).
    zero_at : Tensor[M, d], optional
        Further latent points where the correction is pinned to zero (points fitted into
        the map that are not models: the models' residuals must not be carried onto
        them). The default ``length_scale`` is still measured on ``codes`` alone. A point
        within a quarter of the length scale of a model's code is left out (it is, to the
        map, that model: pinning it to zero there would ask two values of one place and
        blow the interpolation up between them).
    """

    def __init__(self, codes: Tensor, residuals: Tensor, length_scale: float | None = None,
                 ridge: float = 1e-8, zero_at: Tensor | None = None):
        codes = codes.double()
        if codes.shape[0] != residuals.shape[0]:
            raise ValueError(
                f"ResidualCorrection: {codes.shape[0]} codes but {residuals.shape[0]} residuals"
            )
        if length_scale is None:
            dist = torch.cdist(codes, codes)
            dist.fill_diagonal_(float("inf"))
            nn = dist.min(1).values
            length_scale = float(nn[torch.isfinite(nn)].median()) if len(codes) > 1 else 1.0
            length_scale = max(length_scale, 1e-6)
        self.length_scale = float(length_scale)
        if zero_at is not None and len(zero_at):
            zero_at = zero_at.double()
            far = torch.cdist(zero_at, codes).min(1).values > 0.25 * self.length_scale
            zero_at = zero_at[far]
            residuals = torch.cat([residuals.double(),
                                   residuals.new_zeros(len(zero_at), residuals.shape[1],
                                                       dtype=torch.float64)])
            codes = torch.cat([codes, zero_at.double()])
        self.codes = codes
        k = self._kernel(codes)
        k += ridge * torch.eye(len(codes), dtype=k.dtype)
        # row-major, as when read back from a file: the same products, bit for bit, in a
        # fresh run and a resumed one
        self.weights = torch.linalg.solve(k, residuals.double()).contiguous()  # [N, r]

    def _kernel(self, z: Tensor) -> Tensor:
        d2 = torch.cdist(z.double(), self.codes.to(z.device)).square()
        return torch.exp(-0.5 * d2 / self.length_scale**2)

    def __call__(self, z: Tensor) -> Tensor:
        """Correction Tensor[P, r] at latent points z [P, d] (same device and dtype as z)."""
        k = self._kernel(z)
        return (k @ self.weights.to(z.device)).to(z.dtype)

    def state(self) -> dict[str, Tensor]:
        return {"codes": self.codes, "weights": self.weights,
                "length_scale": torch.tensor(self.length_scale, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> ResidualCorrection:
        obj = cls.__new__(cls)
        obj.codes = state["codes"]
        obj.weights = state["weights"]
        obj.length_scale = float(state["length_scale"])
        return obj
