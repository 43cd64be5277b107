"""AutoencoderEmbedding: reconstruction of a nonlinear curve, determinism, bounded latent,
stress and smoothness terms, and the span-reduced variant."""

import pytest
import torch
from conftest import curve_population
from scipy.stats import spearmanr

from lossatlas.manifold import AutoencoderEmbedding, PCAEmbedding, ReducedEmbedding


@pytest.fixture(scope="module")
def curve():
    X, t = curve_population(n=40, d=500)
    var = float((X - X.mean(dim=0)).square().mean())  # mean per-parameter variance
    return X, var


def _pair_distances(Z):
    i, j = torch.triu_indices(len(Z), len(Z), 1)
    return (Z[i] - Z[j]).norm(dim=1).numpy()


def test_reconstructs_a_nonlinear_curve_far_better_than_pca(curve):
    X, var = curve
    ae = AutoencoderEmbedding(n_components=2, epochs=600, seed=0).fit(X)
    rel = ae.reconstruction_error(X) / var
    assert rel < 0.01  # below 1 % of the population's variance
    assert PCAEmbedding(2).fit(X).reconstruction_error(X) / var > 0.05  # 2 linear dims do not
    assert ae.loss_history_.shape == (600,)
    assert ae.loss_history_[-1] < 0.05 * ae.loss_history_[0]


def test_deterministic_for_a_seed(curve):
    X, _ = curve
    X = X[:, :100]
    a = AutoencoderEmbedding(epochs=50, seed=3).fit(X)
    b = AutoencoderEmbedding(epochs=50, seed=3).fit(X)
    c = AutoencoderEmbedding(epochs=50, seed=4).fit(X)
    assert torch.equal(a.loss_history_, b.loss_history_)
    Z = torch.randn(5, 2)
    assert torch.equal(a.decode(Z), b.decode(Z))
    assert not torch.equal(a.decode(Z), c.decode(Z))
    # the global RNG is left alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    AutoencoderEmbedding(epochs=2, seed=0).fit(X)
    assert torch.equal(torch.rand(3), expected)


def test_bounded_latent_stays_in_open_unit_cube(curve):
    X, _ = curve
    ae = AutoencoderEmbedding(n_components=3, epochs=100, bounded=True).fit(X)
    Z = ae.encode(X)
    assert Z.shape == (40, 3)
    assert torch.all(Z.abs() < 1)
    assert torch.all(ae.encode(100 * X).abs() <= 1)  # tanh saturates to +-1.0 in float32


def test_stress_term_preserves_distances_better(curve):
    X, _ = curve
    plain = AutoencoderEmbedding(epochs=600, seed=0).fit(X)
    stressed = AutoencoderEmbedding(epochs=600, seed=0, stress=1.0).fit(X)
    target = _pair_distances(X)
    rho_plain = spearmanr(_pair_distances(plain.encode(X)), target).statistic
    rho_stress = spearmanr(_pair_distances(stressed.encode(X)), target).statistic
    assert rho_stress > rho_plain + 0.05
    assert rho_stress > 0.95


def test_smoothness_term_reduces_decoder_curvature(curve):
    X, _ = curve
    X = X[:, :200]
    rough = AutoencoderEmbedding(epochs=300, seed=0).fit(X)
    smooth = AutoencoderEmbedding(epochs=300, seed=0, smoothness=1.0).fit(X)

    def curvature(ae, draws=10):  # the training penalty, averaged over random latent points
        g = torch.Generator().manual_seed(0)
        Z = ae.encoder_((X - ae.mean_) / ae.scale_)
        return sum(float(ae._curvature(ae.decoder_, Z, g)) for _ in range(draws)) / draws

    assert curvature(smooth) < 0.5 * curvature(rough)


def test_reduced_autoencoder_matches_full_width(curve):
    X, var = curve
    X = X[:, :200]
    full = AutoencoderEmbedding(epochs=600, seed=0).fit(X)
    reduced = ReducedEmbedding(AutoencoderEmbedding(epochs=600, seed=0)).fit(X)
    assert reduced.inner_.n_features_in_ == 6  # the curve's span, not N - 1 = 39
    e_full, e_red = full.reconstruction_error(X), reduced.reconstruction_error(X)
    assert e_red / var < 0.01
    assert e_red <= 3 * e_full + 1e-4 * var


@pytest.mark.parametrize("mode", [True, "feature", False])
def test_standardize_input_modes_round_trip(curve, mode):
    X, var = curve
    X = X[:, :100]
    ae = AutoencoderEmbedding(epochs=300, standardize_input=mode).fit(X)
    assert ae.reconstruction_error(X) / var < 0.05
    assert ae.decode(ae.encode(X)).shape == X.shape


def test_small_problems_train_on_one_thread_and_restore_the_setting():
    X = torch.randn(10, 20)
    before = torch.get_num_threads()
    ae = AutoencoderEmbedding(epochs=2)
    assert ae._threads(10, 20, torch.device("cpu")) == 1
    assert ae._threads(100, 300_000, torch.device("cpu")) is None  # full width: torch's setting
    ae.fit(X)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads must be"):
        AutoencoderEmbedding(num_threads=0).fit(X)


def test_latent_dim_is_a_deprecated_name_of_n_components(curve):
    X = curve[0][:12, :30]
    with pytest.warns(DeprecationWarning, match="latent_dim= is deprecated; use n_components="):
        old = AutoencoderEmbedding(latent_dim=3, epochs=5, seed=1)
    new = AutoencoderEmbedding(n_components=3, epochs=5, seed=1)
    assert old.get_params() == new.get_params() and "latent_dim" not in old.get_params()
    with pytest.warns(DeprecationWarning, match="read n_components"):
        assert old.latent_dim == 3
    Z = torch.randn(4, 3)
    assert torch.equal(old.fit(X).decode(Z), new.fit(X).decode(Z))
    with pytest.raises(TypeError, match="give n_components= only"):
        AutoencoderEmbedding(latent_dim=3, n_components=3)


def _rewrite_header(path, old: str, new: str) -> None:
    """Rename a stored constructor argument in the header of a saved embedding, as a file
    saved by an earlier release would have it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    (key,) = meta
    assert f'"{old}"' in meta[key]
    save_file(state, str(path), metadata={key: meta[key].replace(f'"{old}"', f'"{new}"')})


@pytest.mark.parametrize("reduced", [False, True])
def test_loads_an_embedding_saved_with_latent_dim(curve, tmp_path, reduced):
    import warnings

    from lossatlas.manifold import load_embedding

    X = curve[0][:12, :30]
    ae = AutoencoderEmbedding(n_components=2, epochs=5, seed=0)
    emb = (ReducedEmbedding(ae) if reduced else ae).fit(X)
    path = emb.save(tmp_path / "map.safetensors")
    _rewrite_header(path, "n_components", "latent_dim")  # the pre-rename header
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # reading old files is silent
        loaded = load_embedding(path)
    inner = loaded.inner if reduced else loaded
    assert isinstance(inner, AutoencoderEmbedding) and inner.n_components == 2
    Z = torch.randn(4, 2)
    assert torch.equal(loaded.decode(Z), emb.decode(Z))
    assert loaded.fingerprint() == emb.fingerprint()
