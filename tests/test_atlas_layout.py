"""The stored map: one estimator file (RUN/embedding/map), and runs written before it
(reduction + inner + the correction inside codes.safetensors) still load, bit for bit."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lossatlas import Atlas, Population
from lossatlas.manifold import ReducedEmbedding
from lossatlas.models import create


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    x, y = torch.randn(120, 12), torch.randint(0, 3, (120,))
    models, labels = [], []
    for v in "AB":
        for s in range(3):
            torch.manual_seed(10 * ord(v) + s)
            models.append(create("mlp", in_features=12, hidden=(8,), num_classes=3))
            labels.append({"variant": v})
    pop = Population.from_models(models, labels=labels)
    include = {"mid": 0.5 * (pop.as_points()[:2] + pop.as_points()[3:5])}
    run = tmp_path_factory.mktemp("run")
    atlas = Atlas(pop, (x, y), run, device="cpu")
    atlas.embed("pca", dim=2, include=include)
    atlas.field(resolution=6, budget=60)
    return pop, (x, y), include, run, atlas


def test_the_map_is_one_estimator_file(setup):
    pop, xy, include, run, atlas = setup
    folder = run / "embedding"
    assert (folder / "map").is_file() and not (folder / "reduction").exists()
    assert isinstance(atlas.embedding_, ReducedEmbedding) and atlas.embedding_.exact
    again = Atlas(pop, xy, run, device="cpu").embed("pca", dim=2, include=include)
    assert torch.equal(again.codes_, atlas.codes_)
    z = atlas.codes_ + 0.05
    assert torch.equal(again.decode(z), atlas.decode(z))


def test_a_run_in_the_layout_before_loads_bit_for_bit(setup, tmp_path):
    pop, xy, include, run, atlas = setup
    emb = atlas.embedding_
    old = tmp_path / "old"
    import shutil

    shutil.copytree(run, old)
    folder = old / "embedding"
    for name in ("map", "map.json"):
        (folder / name).unlink()
    # what Atlas.embed wrote before the map was one estimator
    emb.reduction_.save(folder / "reduction")
    emb.inner_.save(folder / "inner")
    save_file({"codes": emb.codes_.contiguous(), "include.mid": emb.include_codes_["mid"],
               **{f"cor.{k}": v.contiguous() for k, v in emb.correction_.state().items()}},
              str(folder / "codes.safetensors"))
    back = Atlas(pop, xy, old, device="cpu").embed("pca", dim=2, include=include)
    assert torch.equal(back.codes_, atlas.codes_)
    assert torch.equal(back.include_codes_["mid"], atlas.include_codes_["mid"])
    z = atlas.codes_ + 0.05
    for corrected in (True, False):
        assert torch.equal(back.decode(z, corrected=corrected),
                           atlas.decode(z, corrected=corrected))
    field = back.field(resolution=6, budget=60)  # the stored rounds are reused
    np.testing.assert_array_equal(field.values["log10_loss"],
                                  atlas.field_.values["log10_loss"])
    np.testing.assert_array_equal(field.values["distance"], atlas.field_.values["distance"])


def test_stages_called_out_of_order_say_which_first(setup, tmp_path):
    from lossatlas.errors import NotComputedError

    pop, xy, include, run, atlas = setup
    fresh = Atlas(pop, xy, tmp_path / "fresh", device="cpu")
    with pytest.raises(NotComputedError, match=r"Atlas: call embed\(\) first"):
        fresh.decode(torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match=r"call field\(\) first"):
        fresh.topology()
    assert not hasattr(fresh, "codes_")  # the map's attributes exist once embedded
    with pytest.raises(AttributeError, match=r"Atlas.codes_: call embed\(\) first"):
        fresh.codes_  # noqa: B018
