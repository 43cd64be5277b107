"""Quiet by default: a small atlas of a BatchNorm CNN and of a transformer, its terrain,
barriers (stored with string coordinates) and report emit no warning a user would see.

Only DeprecationWarnings raised inside torch itself are left out: Python hides them
outside ``__main__`` (torch's own ``torch.jit.script`` use on first forward-mode AD).
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/zoo.py
import zoo  # noqa: E402

from lossatlas.atlas import Atlas  # noqa: E402
from lossatlas.connectivity import barrier_matrix  # noqa: E402
from lossatlas.curvature import terrain  # noqa: E402
from lossatlas.population import Population  # noqa: E402
from lossatlas.report import write_report  # noqa: E402
from lossatlas.store import Run  # noqa: E402


def _hidden_by_python(w: warnings.WarningMessage) -> bool:
    return (issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
            and "/site-packages/torch/" in Path(w.filename).as_posix())


@pytest.mark.parametrize("family", ["bn_cnn", "transformer"])
def test_small_atlas_is_quiet(family, tmp_path):
    torch.set_num_threads(1)
    fam = zoo.FAMILIES[family]
    models = []
    for s in range(4):
        torch.manual_seed(s)
        models.append(fam.factory())
    x, y = fam.data()
    xy = (x[:96], y[:96])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pop = Population.from_models(models, labels=[{"variant": "AB"[s % 2], "seed": s}
                                                     for s in range(4)])
        atlas = Atlas(pop, xy, tmp_path / "run")
        atlas.embed("pca", dim=2)
        atlas.field(resolution=6, budget=60)
        atlas.topology()
        atlas.faithfulness()
        ds = terrain(models[:2], models[0], xy, measures=("trace",), num_probes=3,
                     labels=["A/0", "B/1"], progress=False)
        run = Run(tmp_path / "run")
        run.save_dataset("terrain", ds)
        mat = barrier_matrix(models[:3], xy, points=3, names=["a", "b", "c"])
        run.save_dataset("barriers", mat.to_dataset(name="loss_barrier"))
        write_report(tmp_path / "run", progress=False)
    seen = Counter(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
                   for w in caught if not _hidden_by_python(w))
    assert not seen, seen
