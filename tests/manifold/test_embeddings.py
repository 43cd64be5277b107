"""Every embedding: the estimator contract, save/load, registry, reconstruction table."""

import json

import pytest
import torch
from conftest import curve_population

from lossatlas.manifold import (
    AutoencoderEmbedding,
    Embedding,
    KernelPCAEmbedding,
    NotFittedError,
    PCAEmbedding,
    ReducedEmbedding,
    SpanReduction,
    UMAPEmbedding,
    list_embeddings,
    load_embedding,
    make_embedding,
    reconstruction_table,
    roundtrip,
)

FAST = {
    "pca": lambda: PCAEmbedding(2),
    "pca-std": lambda: PCAEmbedding(3, standardize=True),
    "span": lambda: SpanReduction(),
    "kpca": lambda: KernelPCAEmbedding(2),
    "kpca-median": lambda: KernelPCAEmbedding(2, gamma="median"),
    "ae": lambda: AutoencoderEmbedding(n_components=2, epochs=60),
    "ae-bounded-3d": lambda: AutoencoderEmbedding(n_components=3, epochs=40, bounded=True),
    "reduced-ae": lambda: ReducedEmbedding(AutoencoderEmbedding(epochs=60)),
    "reduced-kpca": lambda: ReducedEmbedding(
        KernelPCAEmbedding(2), SpanReduction(standardize=True)
    ),
}


@pytest.fixture(scope="module")
def population():
    X, _ = curve_population(n=24, d=300)
    return X


@pytest.mark.parametrize("name", list(FAST))
def test_estimator_contract(name, population, tmp_path):
    X = population
    emb = FAST[name]()
    params = emb.get_params()
    with pytest.raises(
        NotFittedError, match=rf"{type(emb).__name__}\.decode: not fitted; call fit first"
    ):
        emb.decode(torch.zeros(3, 2))
    with pytest.raises(NotFittedError, match="encode: not fitted"):
        emb.encode(X)
    assert emb.fit(X) is emb
    assert emb.get_params().keys() == params.keys()  # fit does not touch the hyper-parameters
    d = emb.n_components_
    Z = emb.encode(X)
    assert Z.shape == (24, d) and Z.dtype == torch.float32
    M = torch.randn(5, d)
    W = emb.decode(M)
    assert W.shape == (5, 300) and W.dtype == torch.float32
    assert torch.allclose(emb.decode(M, device="cpu", chunk_size=2), W, atol=1e-5)
    err = emb.reconstruction_error(X)
    assert isinstance(err, float) and err >= 0
    assert torch.allclose(roundtrip(emb, X), emb.decode(Z), atol=1e-5)
    # fit_encode equals fit then encode (every method here is deterministic)
    Z2 = FAST[name]().fit_encode(X)
    assert torch.allclose(Z2, Z, atol=1e-5)
    # save / load: identical decode output
    path = emb.save(tmp_path / "emb.safetensors")
    assert json.loads(path.with_suffix(".json").read_text())["class"] == type(emb).__name__
    loaded = load_embedding(path)
    assert type(loaded) is type(emb) and loaded.n_components_ == d
    assert torch.equal(loaded.decode(M), W)
    assert torch.allclose(loaded.encode(X), Z, atol=1e-6)
    assert type(emb).load(path).n_features_in_ == 300
    assert loaded.fingerprint() == emb.fingerprint()
    # wrong widths are refused by name
    with pytest.raises(ValueError, match=r"expected latent points of shape \[M, "):
        emb.decode(torch.zeros(2, d + 1))
    with pytest.raises(ValueError, match="expected vectors of 300 parameters"):
        emb.encode(torch.zeros(2, 299))


@pytest.mark.slow  # umap-learn compiles its numba kernels in every fresh process (~20-50 s)
def test_umap_embedding(population, tmp_path):
    pytest.importorskip("umap")
    X = population
    emb = UMAPEmbedding(n_components=2, n_epochs=50)
    with pytest.raises(NotFittedError, match=r"UMAPEmbedding\.decode: not fitted; call fit first"):
        emb.decode(torch.zeros(3, 2))
    assert emb.fit(X) is emb
    assert emb.umap_.n_neighbors == 15  # min(15, N - 1)
    Z = emb.encode(X)
    assert Z.shape == (24, 2)
    assert torch.allclose(Z, emb.embedding_)  # umap recognises its training data
    W = emb.decode(Z[:4])
    assert W.shape == (4, 300)
    path = emb.save(tmp_path / "umap.safetensors")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_embedding(path)
    loaded = load_embedding(path, allow_pickle=True)
    assert torch.allclose(loaded.decode(Z[:4]), W)
    small = UMAPEmbedding().fit(X[:6])  # n_neighbors defaults to N - 1 = 5
    assert small.umap_.n_neighbors == 5


def test_fit_validates_at_fit_time_not_in_init():
    emb = AutoencoderEmbedding(n_components=0, activation="nope")  # stored, not checked
    with pytest.raises(ValueError, match="n_components must be a positive int, got 0"):
        emb.fit(torch.randn(5, 10))
    with pytest.raises(ValueError, match="kernel='nope' is not supported"):
        KernelPCAEmbedding(kernel="nope").fit(torch.randn(5, 10))
    with pytest.raises(TypeError, match="expected a Tensor"):
        PCAEmbedding().fit("weights.pt")
    with pytest.raises(TypeError, match="expected a Tensor"):
        KernelPCAEmbedding().fit("weights.pt")
    with pytest.raises(ValueError, match="need at least 2 models, got 1"):
        AutoencoderEmbedding().fit(torch.randn(1, 10))


def test_kernel_pca_matches_sklearn(population):
    from sklearn.decomposition import KernelPCA

    X = population.double()
    ours = KernelPCAEmbedding(2, kernel="rbf", gamma=1e-3, alpha=1e-2).fit(X)
    sk = KernelPCA(2, kernel="rbf", gamma=1e-3, alpha=1e-2, fit_inverse_transform=True).fit(
        X.numpy()
    )
    Xn = X[:5] + 0.1
    assert torch.allclose(ours.encode(Xn), torch.from_numpy(sk.transform(Xn.numpy())), atol=1e-8)
    Z = torch.randn(6, 2, dtype=torch.float64) * 0.3
    assert torch.allclose(
        ours.decode(Z), torch.from_numpy(sk.inverse_transform(Z.numpy())), atol=1e-8
    )


def test_reduced_pca_equals_pca(population):
    X = population.double()
    direct = PCAEmbedding(2).fit(X)
    reduced = ReducedEmbedding(PCAEmbedding(2)).fit(X)
    assert torch.allclose(reduced.encode(X).abs(), direct.encode(X).abs(), atol=1e-8)
    assert abs(reduced.reconstruction_error(X) - direct.reconstruction_error(X)) < 1e-10


def test_reduced_embedding_accepts_lazy_population(population):
    X = population

    def blocks():
        return (X[:, i : i + 70] for i in range(0, 300, 70))

    lazy = ReducedEmbedding(PCAEmbedding(2)).fit(blocks)
    eager = ReducedEmbedding(PCAEmbedding(2)).fit(X)
    assert torch.allclose(lazy.encode(blocks), eager.encode(X), atol=1e-4)
    assert abs(lazy.reconstruction_error(blocks) - eager.reconstruction_error(X)) < 1e-6
    with pytest.raises(ValueError, match="rank 0"), pytest.warns(UserWarning):
        ReducedEmbedding(PCAEmbedding(2)).fit(X[:1].expand(5, -1))


def test_make_embedding_registry():
    assert list_embeddings() == ["ae", "kpca", "pca", "umap"]
    assert isinstance(make_embedding("pca"), PCAEmbedding)
    ae = make_embedding("ae", n_components=3, epochs=None)  # None falls back to the default
    assert ae.n_components == 3 and ae.epochs == AutoencoderEmbedding().epochs
    red = make_embedding("AE", reduce=True, reduction=SpanReduction(standardize=True))
    assert isinstance(red, ReducedEmbedding) and isinstance(red.inner, AutoencoderEmbedding)
    with pytest.raises(ValueError, match="ae, kpca, pca, umap"):
        make_embedding("tsne")
    for name in list_embeddings():
        assert isinstance(make_embedding(name), Embedding)


def test_reconstruction_table(population):
    X = population
    fitted = {"pca": PCAEmbedding(2).fit(X), "span": SpanReduction().fit(X)}
    rows = reconstruction_table(fitted, X)
    assert [r["method"] for r in rows] == ["pca", "span"]
    pca, span = rows
    assert len(pca["per_model_mse"]) == 24
    assert abs(sum(pca["per_model_mse"]) / 24 - pca["mse"]) < 1e-9
    assert 0 < pca["relative_mse"] < 1
    assert span["relative_mse"] < 1e-9
    assert span["n_components"] == 6  # the curve spans 6 dimensions
