"""The seed's re-basin experiment: re-basined models land in their partner's basin, the
unpermuted control does not, and the reported errors match a direct computation."""

import json

import numpy as np
import pytest
import torch

from lossatlas import Evaluator
from lossatlas.data import create
from lossatlas.symmetry import permutation_spec, weight_matching
from lossatlas.symmetry.rebasin_study import (
    pair_runs,
    rebasin_study,
    train_pairs,
    write_rebasin_study,
)


@pytest.fixture(scope="module")
def digits_xy():
    sp = create("digits")
    return sp.x_train[:400], sp.y_train[:400]


@pytest.fixture(scope="module")
def pairs_pop(tmp_path_factory):
    # 8 pairs of 64-128-10 MLPs, 3 epochs of SGD on digits (re-basin needs some width:
    # at 16 hidden units the permuted model is not in its partner's basin)
    return train_pairs(tmp_path_factory.mktemp("pairs"), pairs=8, hidden=(128,), epochs=3,
                       checkpoint_every=1)


@pytest.fixture(scope="module")
def study(pairs_pop, digits_xy, tmp_path_factory):
    return rebasin_study(pairs_pop, digits_xy, tmp_path_factory.mktemp("map"),
                         include=True, embed_kwargs={"epochs": 400}, resolution=14,
                         budget=300, progress=False)


def test_most_rebased_models_land_in_their_partners_basin(study):
    n = len(study.pairs)
    assert n == 8
    # the map (fitted on the models, the re-basined models and the permuted trajectories,
    # the basins from the models alone) separates the pairs: A and B in different basins
    assert study.control_in_partner_basin <= 1
    assert study.in_partner_basin >= 6, [(p["partner_basin"], p["rebased_basin"])
                                         for p in study.pairs]
    assert study.in_partner_basin > study.control_in_partner_basin + 3
    # on the map, the re-basined code is nearest its partner's (checked by hand for one)
    codes = study.atlas.codes_.double()
    p = study.pairs[0]
    d = (codes - torch.tensor(p["rebased_code"], dtype=torch.float64)).norm(dim=1)
    assert p["nearest_model"] == int(d.argmin())
    assert study.nearest_is_partner >= 6
    for p in study.pairs:  # matching brings B closer to A in weight space
        assert p["distance_after"] < 0.8 * p["distance_before"]


def test_reported_values_match_a_direct_computation(study, pairs_pop, digits_xy):
    atlas = study.atlas
    ev = Evaluator(pairs_pop.model(0), digits_xy)
    spec = permutation_spec(pairs_pop.model(0), data=digits_xy)
    p = study.pairs[3]
    a, b = pairs_pop.model(p["a_index"]), pairs_pop.model(p["b_index"])
    w = pairs_pop.space.flatten(weight_matching(a, b, spec=spec))[None].float()
    true = float(ev.evaluate(w)["loss"][0])
    dec = float(ev.evaluate(atlas.decode(atlas.encode(w)))["loss"][0])
    assert p["rebased_true_loss"] == pytest.approx(true, rel=1e-5)
    # a permutation leaves the function, hence the loss, unchanged
    assert true == pytest.approx(float(ev.evaluate(pairs_pop.space.flatten(b)[None])["loss"][0]),
                                 rel=1e-4)
    assert p["rebased_projected_loss"] == pytest.approx(dec, rel=1e-4)
    assert p["rebased_abs_error"] == pytest.approx(abs(dec - true), rel=1e-3, abs=1e-6)
    # the partner's basin is the atlas's basin of A; the control's that of B
    members = atlas.population.labels
    ia = members.index(pairs_pop.labels[p["a_index"]])
    ib = members.index(pairs_pop.labels[p["b_index"]])
    assert p["partner_basin"] == int(atlas.basins_[ia])
    assert p["control_basin"] == int(atlas.basins_[ib])
    # B's whole trajectory (epochs 0..3) permuted and projected, with its median error
    tr = p["trajectory"]
    assert tr["epochs"] == [0, 1, 2, 3]
    err = np.abs(np.asarray(tr["projected_loss"]) - np.asarray(tr["true_loss"]))
    assert tr["median_abs_error"] == pytest.approx(float(np.median(err)))
    assert tr["true_loss"][-1] == pytest.approx(true, rel=1e-4)


def test_written_file_and_report_section(study):
    from lossatlas.report import SECTIONS, RunView

    path = write_rebasin_study(study, study.atlas.path)
    data = json.loads(path.read_text())
    assert data["in_partner_basin"] == study.in_partner_basin
    assert data["num_pairs"] == 8 and len(data["map"]["models"]) == 16
    assert data["map"]["model_basin"] == [int(b) for b in study.atlas.basins_]
    sec = SECTIONS["rebasin"].build(RunView(study.atlas.path))
    assert f"<b>{study.in_partner_basin} of 8</b>" in sec.html
    assert sec.summary["control_in_partner_basin"] == study.control_in_partner_basin
    traces = {tr["name"]: tr for tr in sec.figures["fig-rebasin"]["data"]}
    np.testing.assert_allclose(traces["re-basined B"]["x"],
                               [p["rebased_code"][0] for p in study.pairs])
    # a run holding the study one folder down (lossatlas study rebasin --out RUN/rebasin)
    # shows the same section
    import shutil

    run = study.atlas.path.parent / "outer-run"
    (run / "rebasin").mkdir(parents=True)
    shutil.copy(path, run / "rebasin" / path.name)
    shutil.copy(study.atlas.path / "run.json", run / "run.json")
    outer = SECTIONS["rebasin"].build(RunView(run))
    assert outer is not None and outer.summary == sec.summary


def test_pairs_are_checked(pairs_pop):
    runs = list(pairs_pop.trajectories())
    assert pair_runs(pairs_pop)[0] == (runs[0], runs[1])
    with pytest.raises(ValueError, match="not in the population"):
        pair_runs(pairs_pop, [(runs[0], "nope/seed0")])
    with pytest.raises(ValueError, match="with itself"):
        pair_runs(pairs_pop, [(runs[0], runs[0])])
    with pytest.raises(ValueError, match="even number"):
        pair_runs(pairs_pop.subset(pairs_pop.indices(seed=[0, 1, 2])))
