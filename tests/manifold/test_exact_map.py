"""The atlas's map as one estimator: ReducedEmbedding(exact=True) with included points,
saved and loaded whole; SpanReduction.distances against decoding and measuring."""

import pytest
import torch
from conftest import curve_population

from lossatlas.manifold import (
    AutoencoderEmbedding,
    KernelPCAEmbedding,
    PCAEmbedding,
    ReducedEmbedding,
    SpanReduction,
    load_embedding,
)


@pytest.fixture(scope="module")
def population():
    X, _ = curve_population(n=16, d=300)
    g = torch.Generator().manual_seed(1)
    mid = 0.5 * (X[:3] + X[5:8]) + 0.01 * torch.randn(3, 300, generator=g)
    return X, {"mid": mid}


@pytest.mark.parametrize("inner", [PCAEmbedding(2), KernelPCAEmbedding(2),
                                   AutoencoderEmbedding(n_components=2, epochs=80, seed=0)],
                         ids=["pca", "kpca", "ae"])
def test_exact_map_reproduces_the_models_and_round_trips_through_save(population, inner,
                                                                       tmp_path):
    X, include = population
    emb = ReducedEmbedding(inner, exact=True).fit(X, include=include)
    assert emb.codes_.shape == (16, 2) and emb.include_codes_["mid"].shape == (3, 2)
    torch.testing.assert_close(emb.codes_, emb.encode(X))
    torch.testing.assert_close(emb.include_codes_["mid"], emb.encode(include["mid"]))
    # exact at the models (to float rounding), the inner decoder alone is not
    scale = X.abs().max()
    assert (emb.decode(emb.codes_) - X).abs().max() < 1e-4 * scale
    raw = emb.decode(emb.codes_, corrected=False)
    assert (raw - X).abs().max() > 1e-3 * scale or isinstance(inner, KernelPCAEmbedding)
    # the correction is zero at the included points: there the map is the inner decoder
    inc = emb.include_codes_["mid"]
    torch.testing.assert_close(emb.decode(inc), emb.decode(inc, corrected=False),
                               atol=1e-4 * float(scale), rtol=0)
    # decode = the basis applied to decode_span
    z = emb.codes_[:4] + 0.05
    torch.testing.assert_close(emb.decode(z), emb.reduction_.decode(emb.decode_span(z)))
    # one file holds the whole map: loaded, it decodes and encodes bit for bit
    path = emb.save(tmp_path / "map")
    back = load_embedding(path)
    assert isinstance(back, ReducedEmbedding) and back.exact
    assert torch.equal(back.codes_, emb.codes_)
    assert torch.equal(back.include_codes_["mid"], emb.include_codes_["mid"])
    for corrected in (True, False):
        assert torch.equal(back.decode(z, corrected=corrected), emb.decode(z, corrected=corrected))
    assert torch.equal(back.encode(X), emb.encode(X))
    assert back.fingerprint() == emb.fingerprint()
    # from_fitted assembles the same map from its fitted parts
    same = ReducedEmbedding.from_fitted(emb.reduction_, emb.inner_, emb.codes_,
                                        emb.correction_, emb.include_codes_)
    assert torch.equal(same.decode(z), emb.decode(z))


def test_without_exact_there_is_no_correction(population):
    X, _ = population
    emb = ReducedEmbedding(PCAEmbedding(2)).fit(X)
    z = emb.codes_ + 0.1
    assert emb.correction_ is None
    assert torch.equal(emb.decode(z), emb.decode(z, corrected=False))


def test_include_needs_a_tensor_population_of_the_same_width(population):
    X, include = population
    with pytest.raises(ValueError, match=r"include\['bad'\] must be a Tensor\[P, 300\]"):
        ReducedEmbedding(PCAEmbedding(2)).fit(X, include={"bad": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match="include= needs the population X as a Tensor"):
        ReducedEmbedding(PCAEmbedding(2)).fit(X.numpy(), include=include)


@pytest.mark.parametrize("standardize", [False, True])
def test_span_distances_equal_decoding_and_measuring(population, standardize):
    X, _ = population
    red = SpanReduction(standardize=standardize, block_size=64).fit(X.double())
    C = red.encode(X.double())
    g = torch.Generator().manual_seed(2)
    A = C[:5] + 0.3 * torch.randn(5, C.shape[1], generator=g, dtype=torch.float64)
    got = red.distances(A, C)
    want = torch.cdist(red.decode(A), red.decode(C))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # the models' own span coordinates: their parameter distances
    torch.testing.assert_close(red.distances(C, C), torch.cdist(X.double(), X.double()),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"distances: A must be span coordinates"):
        red.distances(A[:, :3], C)
