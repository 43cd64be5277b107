"""3-D and 4-D atlases end to end on a population with known wells.

The "network" is a parameter vector w in R^(d+2) whose loss is analytic: one Gaussian
well at each vertex of a regular d-simplex (d + 1 wells, spanning d dimensions, so a
(d-1)-dimensional map cannot hold them apart). Each variant is a few models inside one
well. The atlas in d latent dimensions (map -> refined field -> merge tree) must find
exactly d + 1 basins, each holding all the models of one well and no other.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import Atlas, Population

SIGMA = 0.5  # well width; the wells are 2 apart
EXTRA = 2  # parameters beyond the map's dimension (not embedded exactly)


def simplex(d: int) -> torch.Tensor:
    """The d + 1 vertices of a regular simplex with edge 2 in R^d: Tensor[d + 1, d]."""
    E = torch.eye(d + 1, dtype=torch.float64)
    E = E - E.mean(0)  # centred standard simplex in R^(d+1), edge sqrt(2)
    basis = torch.linalg.svd(E)[2][:d]  # orthonormal basis of its d-dim span
    return (E @ basis.T) * math.sqrt(2.0)


class Wells(nn.Module):
    """Loss ``1 - 0.9 sum_j exp(-|w - mu_j|^2 / (2 sigma^2))`` of its parameter vector w,
    returned for every input row: minima ~0.1 at the wells ``mu_j``, ~1 far away."""

    def __init__(self, centres: torch.Tensor, w: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("centres", centres.float())
        self.w = nn.Parameter(torch.zeros(centres.shape[1]) if w is None else w.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = (self.w - self.centres).square().sum(-1)
        loss = 1.0 - 0.9 * torch.exp(-sq / (2 * SIGMA**2)).sum()
        return loss * torch.ones(x.shape[0], 1, dtype=x.dtype)


def _mean_output(out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
    return out.mean()


def wells_population(d: int, per_well: int = 4, seed: int = 0) -> tuple[Population, torch.Tensor]:
    """``per_well`` models in each of the d + 1 wells (variant ``W<j>``), scattered by 0.1
    (0.02 in the EXTRA directions) around the well; and the wells, Tensor[d + 1, d + 2]."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.cat([simplex(d), torch.zeros(d + 1, EXTRA, dtype=torch.float64)], 1).float()
    scale = torch.tensor([0.1] * d + [0.02] * EXTRA)
    models, labels = [], []
    for j in range(d + 1):
        for i in range(per_well):
            w = mu[j] + scale * torch.randn(d + EXTRA, generator=g)
            models.append(Wells(mu, w))
            labels.append({"variant": f"W{j}", "seed": i, "epoch": 0})
    return Population.from_models(models, labels), mu


def test_wells_model_has_its_minima_at_the_wells():
    mu = torch.cat([simplex(3), torch.zeros(4, EXTRA, dtype=torch.float64)], 1).float()
    assert torch.cdist(mu, mu)[~torch.eye(4, dtype=bool)] == pytest.approx(2.0, rel=1e-5)
    m = Wells(mu, mu[1].clone())
    loss = m(torch.zeros(2, 1))[0, 0]
    loss.backward()
    # each other well pulls by 0.9 exp(-2^2 / (2 sigma^2)) 2 / sigma^2 = 0.0024 only
    assert float(m.w.grad.norm()) < 3 * 0.0025
    assert float(loss.detach()) == pytest.approx(0.1, abs=1e-2)


@pytest.mark.parametrize("dim,resolution,budget", [(3, 7, 900), (4, 5, 1500)])
def test_atlas_in_d_dimensions_finds_one_basin_per_well(dim, resolution, budget, tmp_path):
    pop, mu = wells_population(dim)
    data = (torch.zeros(4, 1), torch.zeros(4, 1))
    atlas = Atlas(pop, data, tmp_path / f"run{dim}", loss_fn=_mean_output, device="cpu")
    atlas.embed("pca", dim=dim)
    assert atlas.codes_.shape == (len(pop), dim)
    # the models' own losses (the independent values: the analytic formula)
    own = torch.stack([pop.model(i)(torch.zeros(1, 1))[0, 0] for i in range(len(pop))])
    torch.testing.assert_close(atlas.true_values()["loss"], own.detach(), rtol=1e-5,
                               atol=1e-6)
    field = atlas.field(resolution=resolution, budget=budget, tol=0.1)
    assert field.coords.shape[1] == dim and field.n >= resolution**dim
    atlas.topology()
    summary = atlas.summary()["basins"]
    wells = [str(lab["variant"]) for lab in pop.labels]
    # one basin per well, holding that well's models and no other's
    assert summary["num_model_basins"] == dim + 1 == summary["num_variants"]
    for basin in set(atlas.basins_.tolist()):
        members = {wells[i] for i in np.flatnonzero(atlas.basins_ == basin)}
        assert len(members) == 1, (basin, members)
    # and no basin without models deeper than the wells: every minimum of the tree lies
    # at a well (decoded, within 3 sigma of one) at a loss near the wells' 0.1
    minima = np.asarray(atlas.tree_.minima).reshape(-1)
    z = torch.as_tensor(field.coords[minima], dtype=torch.float32)
    w = atlas.decode(z)
    assert len(minima) == dim + 1
    assert torch.cdist(w, mu).min(1).values.max() < 3 * SIGMA
    assert np.all(field.values["loss"][minima] < 0.2)
    # Table 1 in d dimensions: every embedding, with or without inverse, keeps each model's
    # nearest neighbour in its own well; PCA decodes the models to their own loss
    rows = {r["method"]: r for r in atlas.reconstruction_table(methods=("pca",), dim=dim)}
    assert {m: rows[m]["nn_purity"] for m in ("pca", "mds", "isomap")} == {
        "pca": 1.0, "mds": 1.0, "isomap": 1.0}
    assert rows["mds"]["mse"] is None and rows["pca"]["median_rel_loss_error"] < 0.05
