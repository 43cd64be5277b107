"""SpanReduction: exactness, blockwise Gram, lazy inputs, standardisation, edge cases."""

import numpy as np
import pytest
import torch

from lossatlas.manifold import PCAEmbedding, SpanReduction, TensorBlocks, centered_gram


def _population(n=12, d=5000, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1  # mixed magnitudes
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + 2.0
    return X.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_reconstruction_with_n_minus_1_components(dtype):
    X = _population(dtype=dtype)
    red = SpanReduction(block_size=777).fit(X)
    assert red.n_components_ == 11 and red.rank_ == 11
    C = red.encode(X)
    assert C.shape == (12, 11) and C.dtype == dtype
    Y = red.decode(C)
    assert Y.shape == X.shape and Y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    assert (Y - X).abs().max() <= tol * X.abs().max()
    assert red.reconstruction_error(X) < (1e-11 if dtype == torch.float32 else 1e-24)
    # orthonormal basis, variances ordered and summing to 1
    gram = red.components_.double() @ red.components_.double().T
    assert torch.allclose(gram, torch.eye(11, dtype=torch.float64), atol=1e-5)
    assert torch.all(red.singular_values_[:-1] >= red.singular_values_[1:])
    assert abs(float(red.explained_variance_ratio_.sum()) - 1.0) < 1e-9


def test_blockwise_gram_equals_direct_product():
    X = _population(n=9, d=3001, dtype=torch.float64)
    Xc = X - X.mean(dim=0)
    G_direct = Xc @ Xc.T
    for bs in (1, 100, 1000, 3001, 10_000):
        G, mean, scale = centered_gram(X, block_size=bs)
        assert scale is None
        assert torch.allclose(G, G_direct, rtol=1e-12, atol=1e-9)
        assert torch.allclose(mean, X.mean(dim=0))
    Gs, _, scale = centered_gram(X, block_size=250, standardize=True)
    Xs = Xc / Xc.std(dim=0, unbiased=False)
    assert torch.allclose(Gs, Xs @ Xs.T, atol=1e-9)


def test_encode_decode_round_trip_of_new_points_in_the_span():
    X = _population(n=10, d=2000, dtype=torch.float64)
    red = SpanReduction().fit(X)
    C = torch.randn(7, red.n_components_, dtype=torch.float64)
    W = red.decode(C, chunk_size=3)
    assert torch.allclose(red.encode(W), C, atol=1e-9)
    # a point off the span is projected onto it
    off = X[:1] + torch.randn(1, 2000, dtype=torch.float64)
    proj = red.decode(red.encode(off))
    assert torch.allclose(red.encode(proj), red.encode(off), atol=1e-9)


def test_standardize_round_trip_and_scale():
    X = _population(n=8, d=1500, dtype=torch.float64)
    X[:, 10] = 3.0  # a zero-variance parameter: floored scale, reproduced exactly
    red = SpanReduction(standardize=True, block_size=400).fit(X)
    assert red.scale_ is not None and red.scale_.shape == (1500,)
    assert torch.all(red.scale_ > 0)
    assert torch.allclose(red.scale_[:10], X[:, :10].std(dim=0, unbiased=False))
    assert torch.allclose(red.decode(red.encode(X)), X, atol=1e-10)
    assert red.reconstruction_error(X) < 1e-20


def test_lazy_block_inputs_equal_tensor_input(tmp_path):
    X = _population(n=11, d=4000, dtype=torch.float32)
    ref = SpanReduction().fit(X)
    C_ref = ref.encode(X)

    def chunks():  # a callable returning a fresh iterator of column blocks
        return (X[:, i : i + 900] for i in range(0, 4000, 900))

    path = tmp_path / "pop.npy"
    np.save(path, X.numpy())
    memmap = np.load(path, mmap_mode="r")

    for source in (chunks, TensorBlocks(X), memmap, iter(list(chunks())), X.numpy()):
        red = SpanReduction(block_size=1234).fit(source)
        assert torch.allclose(red.mean_, ref.mean_)
        assert torch.allclose(red.singular_values_, ref.singular_values_, rtol=1e-10)
        assert torch.allclose(red.components_, ref.components_, atol=1e-6)
        assert torch.allclose(red.encode(chunks), C_ref, atol=1e-4)
    assert SpanReduction().fit(memmap).reconstruction_error(chunks) < 1e-10


def test_lazy_block_source_checks_shapes():
    X = torch.randn(5, 100)
    red = SpanReduction().fit(X)
    with pytest.raises(ValueError, match="expected vectors of 100 parameters"):
        red.encode(lambda: iter([X[:, :60]]))
    with pytest.raises(ValueError, match="column block 1 has 4 rows, expected 5"):
        SpanReduction().fit(lambda: iter([X[:, :50], X[:4, 50:]]))


def test_one_model_is_an_error():
    with pytest.raises(ValueError, match="SpanReduction.fit: need at least 2 models, got 1"):
        SpanReduction().fit(torch.randn(1, 100))


def test_zero_variance_population_has_rank_zero():
    X = torch.randn(1, 300).expand(6, -1).clone()
    with pytest.warns(UserWarning, match="rank 0"):
        red = SpanReduction().fit(X)
    assert red.n_components_ == 0 and red.rank_ == 0
    assert red.components_.shape == (0, 300)
    C = red.encode(X)
    assert C.shape == (6, 0)
    assert torch.equal(red.decode(C), X)
    assert red.reconstruction_error(X) == 0.0
    with pytest.raises(ValueError, match="only 0 non-degenerate"):
        SpanReduction(n_components=2).fit(X)


def test_rank_deficient_population_drops_degenerate_components():
    base = torch.randn(4, 800, dtype=torch.float64)
    X = torch.cat([base, base[:2], 0.5 * (base[:1] + base[1:2])])  # 7 models, rank 3
    red = SpanReduction().fit(X)
    assert red.rank_ == 3 and red.n_components_ == 3
    assert torch.allclose(red.decode(red.encode(X)), X, atol=1e-10)
    with pytest.raises(ValueError, match="n_components=5 but the population has only 3"):
        SpanReduction(n_components=5).fit(X)
    with pytest.raises(ValueError, match="span at most 6 dimensions"):
        SpanReduction(n_components=7).fit(X)
    assert SpanReduction(n_components=0.5).fit(X).n_components_ <= 3


def test_pca_embedding_matches_sklearn():
    from sklearn.decomposition import PCA

    X = _population(n=15, d=600, dtype=torch.float64, seed=3)
    ours = PCAEmbedding(n_components=3).fit(X)
    sk = PCA(n_components=3, svd_solver="full").fit(X.numpy())
    comps = torch.from_numpy(sk.components_)
    signs = torch.sign((ours.components_ * comps).sum(dim=1))
    assert torch.allclose(ours.components_, comps * signs[:, None], atol=1e-10)
    assert torch.allclose(
        ours.explained_variance_ratio_, torch.from_numpy(sk.explained_variance_ratio_)
    )
    Z_sk = torch.from_numpy(sk.transform(X.numpy())) * signs
    assert torch.allclose(ours.encode(X), Z_sk, atol=1e-9)
    rec_sk = torch.from_numpy(sk.inverse_transform(sk.transform(X.numpy())))
    assert torch.allclose(ours.decode(ours.encode(X)), rec_sk, atol=1e-9)


def test_decode_on_device_in_chunks_matches_whole():
    X = _population(n=10, d=700)
    red = SpanReduction().fit(X)
    C = torch.randn(25, 9)
    assert torch.allclose(red.decode(C, device="cpu", chunk_size=4), red.decode(C), atol=1e-6)


def test_basis_on_disk_matches_memory(tmp_path):
    """components_path: the basis written by blocks to a file equals the in-memory one;
    a memory-mapped population is read by blocks; save / load keep the file."""
    from lossatlas.manifold import load_embedding
    from lossatlas.vectors import VectorFileWriter

    g = torch.Generator().manual_seed(3)
    X = torch.randn(9, 4000, generator=g) * torch.linspace(0.1, 2.0, 4000)
    with VectorFileWriter(tmp_path / "pop.safetensors", X.shape) as w:
        w.write_rows(0, X)
    from lossatlas.vectors import VectorFile

    vf = VectorFile(tmp_path / "pop.safetensors")
    for standardize in (False, True):
        mem = SpanReduction(standardize=standardize).fit(X)
        disk = SpanReduction(standardize=standardize, block_size=700,
                             components_path=tmp_path / "basis.safetensors").fit(vf)
        assert disk.on_disk and not mem.on_disk
        torch.testing.assert_close(disk.components_.to_tensor(), mem.components_,
                                   rtol=0, atol=1e-6)
        C = disk.encode(vf)
        torch.testing.assert_close(C, mem.encode(X), rtol=0, atol=1e-5)
        torch.testing.assert_close(disk.decode(C), X, rtol=0, atol=1e-5)  # streamed decode
        assert float(disk.reconstruction_errors(vf).max()) < 1e-10
        disk.save(tmp_path / "red")
        back = load_embedding(tmp_path / "red")
        assert back.on_disk and back.components_.path.name == "red.components.safetensors"
        torch.testing.assert_close(back.decode(C), X, rtol=0, atol=1e-5)
        assert back.fingerprint() == disk.fingerprint() != mem.fingerprint()
