"""PCA and kernel PCA embeddings.

`PCAEmbedding` is the span reduction truncated to its leading components (same Gram
route, blockwise and lazy). `KernelPCAEmbedding` is fitted by scikit-learn's
``KernelPCA(fit_inverse_transform=True)``; its fitted arrays are kept as tensors and
`encode` / `decode` are evaluated in torch (equal to sklearn's ``transform`` /
``inverse_transform``), so a latent grid decodes on any device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Embedding, _as_population, _out_dtype
from .span import SpanReduction

__all__ = ["KernelPCAEmbedding", "PCAEmbedding"]


class PCAEmbedding(SpanReduction):
    """Principal component analysis of a population: the ``n_components`` leading
    directions of its span (the same blockwise Gram route as `SpanReduction`).

    Parameters
    ----------
    n_components : int
        Latent dimension d (default 2); must not exceed the population's rank.
    standardize : bool
        Divide each parameter by its population std first (undone by `decode`).
    tol, block_size, device
        As in `SpanReduction`.

    Attributes are those of `SpanReduction` (``components_ : Tensor[d, D]``, ...).
    Components agree with ``sklearn.decomposition.PCA`` up to sign.

    Example
    -------
    >>> emb = PCAEmbedding(2).fit(X)         # X : Tensor[N, D]
    >>> Z = emb.encode(X)                    # Tensor[N, 2]
    >>> W = emb.decode(Z)                    # Tensor[N, D]
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        standardize: bool = False,
        tol: float | None = None,
        block_size: int | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__(
            n_components,
            standardize=standardize,
            tol=tol,
            block_size=block_size,
            device=device,
        )


_KERNELS = ("rbf", "linear", "poly", "sigmoid", "cosine", "laplacian")


def _kernel(name: str, A: Tensor, B: Tensor, gamma: float, degree: int, coef0: float) -> Tensor:
    """sklearn's pairwise kernels in torch: A [M, F], B [N, F] -> [M, N]."""
    if name == "rbf":
        sq = (A.square().sum(1)[:, None] + B.square().sum(1)[None] - 2.0 * A @ B.T).clamp_min(0)
        return torch.exp(-gamma * sq)
    if name == "laplacian":
        return torch.exp(-gamma * torch.cdist(A, B, p=1))
    if name == "linear":
        return A @ B.T
    if name == "poly":
        return (gamma * (A @ B.T) + coef0) ** degree
    if name == "sigmoid":
        return torch.tanh(gamma * (A @ B.T) + coef0)
    if name == "cosine":
        An = A / A.norm(dim=1, keepdim=True).clamp_min(1e-300)
        Bn = B / B.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return An @ Bn.T
    raise ValueError(f"kernel {name!r}")  # validated in fit


class KernelPCAEmbedding(Embedding):
    """Kernel PCA with a learned pre-image (scikit-learn ``KernelPCA``,
    ``fit_inverse_transform=True``).

    Parameters
    ----------
    n_components : int
        Latent dimension d (default 2).
    kernel : {"rbf", "linear", "poly", "sigmoid", "cosine", "laplacian"}
    gamma : float, "median" or None
        Kernel coefficient. ``None``: scikit-learn's default ``1 / D``; ``"median"``: one
        over the median squared pairwise distance of the population (for rbf). The same
        value is used by the pre-image kernel on latent codes, as in scikit-learn.
    degree, coef0 : as in scikit-learn (poly / sigmoid kernels).
    alpha : float
        Ridge penalty of the pre-image regression (default 1e-3; scikit-learn's is 1.0,
        which smooths the pre-images so much that trained models are not recovered).
    eigen_solver : str
        Passed to scikit-learn (default "dense": N is small).

    Attributes
    ----------
    X_fit_ : Tensor[N, D] float64, the population
    eigenvectors_ : Tensor[N, d], eigenvalues_ : Tensor[d]
    dual_coef_ : Tensor[N, D], X_transformed_fit_ : Tensor[N, d]
    gamma_ : float
    n_components_, n_features_in_, dtype_
    """

    _fitted_attr = "dual_coef_"

    def __init__(
        self,
        n_components: int = 2,
        kernel: str = "rbf",
        gamma: float | str | None = None,
        alpha: float = 1e-3,
        *,
        degree: int = 3,
        coef0: float = 1.0,
        eigen_solver: str = "dense",
    ):
        self.n_components = n_components
        self.kernel = kernel
        self.gamma = gamma
        self.alpha = alpha
        self.degree = degree
        self.coef0 = coef0
        self.eigen_solver = eigen_solver

    def fit(self, X: Tensor) -> KernelPCAEmbedding:
        """Fit on a population ``X : Tensor[N, D]``; returns ``self``."""
        from sklearn.decomposition import KernelPCA

        who = f"{type(self).__name__}.fit"
        X = _as_population(X, who, min_rows=2)
        N, D = X.shape
        if self.kernel not in _KERNELS:
            raise ValueError(
                f"{who}: kernel={self.kernel!r} is not supported; use one of {', '.join(_KERNELS)}"
            )
        if not isinstance(self.n_components, (int, np.integer)) or not (
            1 <= self.n_components <= N
        ):
            raise ValueError(
                f"{who}: n_components must be an int in [1, N={N}], got {self.n_components!r}"
            )
        Xn = X.detach().cpu().double().numpy()
        gamma = self.gamma
        if isinstance(gamma, str):
            if gamma != "median":
                raise ValueError(f"{who}: gamma must be a float, 'median' or None, got {gamma!r}")
            Xt = torch.from_numpy(Xn)
            sq = torch.cdist(Xt, Xt).square()
            med = float(sq[torch.triu_indices(N, N, 1).unbind()].median())
            gamma = 1.0 / med if med > 0 else 1.0
        kpca = KernelPCA(
            n_components=int(self.n_components),
            kernel=self.kernel,
            gamma=gamma,
            degree=self.degree,
            coef0=self.coef0,
            alpha=self.alpha,
            fit_inverse_transform=True,
            eigen_solver=self.eigen_solver,
        ).fit(Xn)
        f64 = torch.float64
        self.gamma_ = float(kpca.gamma_)
        self.X_fit_ = torch.as_tensor(kpca.X_fit_, dtype=f64)
        self.eigenvectors_ = torch.as_tensor(kpca.eigenvectors_, dtype=f64)
        self.eigenvalues_ = torch.as_tensor(kpca.eigenvalues_, dtype=f64)
        self.K_fit_rows_ = torch.as_tensor(kpca._centerer.K_fit_rows_, dtype=f64)
        self.K_fit_all_ = torch.as_tensor(float(kpca._centerer.K_fit_all_), dtype=f64)
        self.X_transformed_fit_ = torch.as_tensor(kpca.X_transformed_fit_, dtype=f64)
        self.n_components_ = int(self.eigenvectors_.shape[1])
        self.n_features_in_ = D
        self.dtype_ = _out_dtype(X.dtype)
        self.dual_coef_ = torch.as_tensor(kpca.dual_coef_, dtype=f64)
        self._device_cache: dict[torch.device, dict[str, Tensor]] = {}
        return self

    def _kernel(self, A: Tensor, B: Tensor) -> Tensor:
        return _kernel(self.kernel, A, B, self.gamma_, self.degree, self.coef0)

    def _on(self, device: torch.device) -> dict[str, Tensor]:
        cache = self.__dict__.setdefault("_device_cache", {})
        if device not in cache:
            cache.clear()
            cache[device] = {
                k: getattr(self, k).to(device)
                for k in ("X_fit_", "X_transformed_fit_", "dual_coef_", "K_fit_rows_")
            }
        return cache[device]

    def _scaled_alphas(self) -> Tensor:
        nz = self.eigenvalues_ > 0
        alphas = torch.zeros_like(self.eigenvectors_)
        alphas[:, nz] = self.eigenvectors_[:, nz] / self.eigenvalues_[nz].sqrt()
        return alphas

    def _encode(self, X: Tensor) -> Tensor:
        arrays = self._on(X.device)
        K = self._kernel(X.double(), arrays["X_fit_"])
        Kc = K - arrays["K_fit_rows_"][None] - K.mean(dim=1, keepdim=True) + self.K_fit_all_.item()
        return Kc @ self._scaled_alphas().to(X.device)

    def _latent_dtype(self) -> torch.dtype:
        return torch.float64

    def _decode(self, C: Tensor) -> Tensor:
        arrays = self._on(C.device)
        return self._kernel(C, arrays["X_transformed_fit_"]) @ arrays["dual_coef_"]

    def _state(self) -> dict[str, Tensor]:
        return {
            k: getattr(self, k)
            for k in (
                "X_fit_",
                "eigenvectors_",
                "eigenvalues_",
                "K_fit_rows_",
                "K_fit_all_",
                "X_transformed_fit_",
                "dual_coef_",
            )
        }

    def _meta(self) -> dict[str, Any]:
        return {**super()._meta(), "gamma_": self.gamma_}

    def _restore(self, state: dict[str, Tensor], meta: dict[str, Any], **options: Any) -> None:
        super()._restore(state, meta)
        for k, v in state.items():
            setattr(self, k, v)
        self.gamma_ = float(meta["gamma_"])
        self._device_cache = {}
