"""The Globscope autoencoder: weight vectors -> d-dimensional latent -> weight vectors.

Encoder ``Linear(D_in, 128) - act - Linear(128, 64) - act - Linear(64, 16) - act -
Linear(16, d)`` and the mirrored decoder, trained full batch with Adam on the mean
squared reconstruction error of the (standardised) vectors. Optional terms: a stress term
that keeps latent distances proportional to the population's pairwise distances, and a
smoothness term that penalises the decoder's curvature at random latent points (both
off by default, as in the paper). Train it on span coordinates with
``ReducedEmbedding(AutoencoderEmbedding())``: input width N-1 instead of D.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._compat import renamed_argument
from .base import Embedding, _as_population, _out_dtype, _sub_state

__all__ = ["AutoencoderEmbedding"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _mlp(sizes: Sequence[int], activation: str, bounded_out: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    if bounded_out:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _pair_distances(Z: Tensor) -> Tensor:
    """Distances of all pairs i < j: Tensor[N, k] -> Tensor[N (N - 1) / 2]."""
    i, j = torch.triu_indices(Z.shape[0], Z.shape[0], 1, device=Z.device)
    return ((Z[i] - Z[j]).square().sum(dim=1) + 1e-12).sqrt()


def _stress(Z: Tensor, target: Tensor) -> Tensor:
    """Scale-normalised stress: mean squared difference of pair distances, each divided
    by its mean (``target`` already normalised)."""
    d = _pair_distances(Z)
    return (d / d.mean() - target).square().mean()


class AutoencoderEmbedding(Embedding):
    """Autoencoder embedding of a population (the Globscope method).

    Parameters
    ----------
    n_components : int
        d, the latent dimension (2 by default; 3 or 4 on request); scikit-learn's name,
        as in the other embeddings (``latent_dim=`` is its deprecated name).
    widths : sequence of int
        Hidden widths of the encoder, mirrored by the decoder (default (128, 64, 16)).
    epochs : int
        Full-batch Adam steps (default 2000: a few seconds on CPU for N ~ 100 models of
        width N-1 after span reduction).
    lr : float
        Adam learning rate (default 1e-3), annealed by ``schedule``.
    seed : int
        Seeds the initialisation and the random latent points of the smoothness term;
        training is deterministic for a seed on a given device.
    device : torch.device or str, optional
        Where to train and keep the networks (default: the device of ``X``).
    bounded : bool
        Squash the latent with tanh, so codes lie in (-1, 1)^d.
    stress : float
        Weight of the stress term: mean squared difference between latent and input
        pairwise distances, each divided by its mean (scale-free).
    smoothness : float
        Weight of the decoder curvature penalty: the squared second finite difference
        ``|D(z + h v) - 2 D(z) + D(z - h v)|^2`` at N random latent points in the codes'
        (10 % padded) bounding box, random unit v, step ``h`` = 5 % of the latent spread,
        divided by ``0.05^4`` and by the input variance (scale-free).
    standardize_input : bool or {"global", "feature"}
        Centre the inputs and divide by their RMS std (``True`` / "global": one scale, so
        the training loss stays proportional to the MSE of the weights), or by every
        feature's own std ("feature"); undone on decode. ``False``: raw inputs.
    activation : {"elu", "relu", "gelu", "silu", "tanh"}
        Hidden activation (default "elu": smooth, so decoded maps have no kinks).
    weight_decay : float
        Adam weight decay (default 0).
    schedule : {"cosine", "constant"}
        Learning-rate schedule over the epochs (cosine anneals to 1 % of ``lr``).
    num_threads : int, "auto" or None
        CPU threads for training. "auto" (default): one thread when a training step is
        small (under 5e7 multiply-adds, e.g. span coordinates of a few hundred models),
        where extra threads only add overhead (8x slower measured on a busy 2-core
        machine), else torch's setting. An int sets it for the fit; None leaves torch's
        setting. The previous setting is restored after `fit`; ignored on GPUs.

    Attributes
    ----------
    encoder_, decoder_ : nn.Sequential
    mean_ : Tensor[D], scale_ : Tensor[] or Tensor[D]
    loss_history_ : Tensor[epochs], total training loss per epoch
    reconstruction_history_ : Tensor[epochs], the reconstruction term alone
    n_components_ (= n_components), n_features_in_, dtype_

    Example
    -------
    >>> ae = AutoencoderEmbedding(n_components=2, epochs=500).fit(X)   # X : Tensor[N, D]
    >>> Z = ae.encode(X)                                              # Tensor[N, 2]
    >>> W = ae.decode(torch.zeros(1, 2))                              # Tensor[1, D]
    """

    _fitted_attr = "decoder_"
    _renamed_params = {"latent_dim": "n_components"}

    @renamed_argument("latent_dim", "n_components")
    def __init__(
        self,
        n_components: int = 2,
        widths: Sequence[int] = (128, 64, 16),
        epochs: int = 2000,
        lr: float = 1e-3,
        seed: int = 0,
        device: torch.device | str | None = None,
        bounded: bool = False,
        stress: float = 0.0,
        smoothness: float = 0.0,
        standardize_input: bool | str = True,
        *,
        activation: str = "elu",
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        num_threads: int | str | None = "auto",
    ):
        self.n_components = n_components
        self.widths = widths
        self.epochs = epochs
        self.lr = lr
        self.seed = seed
        self.device = device
        self.bounded = bounded
        self.stress = stress
        self.smoothness = smoothness
        self.standardize_input = standardize_input
        self.activation = activation
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.num_threads = num_threads

    @property
    def latent_dim(self) -> int:
        """Deprecated name of `n_components` (the latent dimension d)."""
        warnings.warn("AutoencoderEmbedding.latent_dim is deprecated; read n_components",
                      DeprecationWarning, stacklevel=2)
        return self.n_components

    # -- validation -------------------------------------------------------------------------
    def _validate(self, who: str) -> None:
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ValueError(
                f"{who}: n_components must be a positive int, got {self.n_components!r}"
            )
        widths = tuple(self.widths)
        if not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"{who}: widths must be positive ints, got {self.widths!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"{who}: epochs must be an int >= 0, got {self.epochs!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"{who}: activation={self.activation!r}; use one of {', '.join(_ACTIVATIONS)}"
            )
        if self.standardize_input not in (True, False, "global", "feature"):
            raise ValueError(
                f"{who}: standardize_input must be True, False, 'global' or 'feature', got "
                f"{self.standardize_input!r}"
            )
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(
                f"{who}: schedule must be 'cosine' or 'constant', got {self.schedule!r}"
            )
        if not (
            self.num_threads in (None, "auto")
            or (isinstance(self.num_threads, int) and self.num_threads >= 1)
        ):
            raise ValueError(
                f"{who}: num_threads must be 'auto', None or an int >= 1, got {self.num_threads!r}"
            )
        for name in ("stress", "smoothness", "lr", "weight_decay"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{who}: {name} must be >= 0, got {getattr(self, name)!r}")

    def _build(self, D: int, device: torch.device) -> tuple[nn.Sequential, nn.Sequential]:
        widths = [int(w) for w in self.widths]
        enc = _mlp([D, *widths, self.n_components], self.activation, bool(self.bounded))
        dec = _mlp([self.n_components, *widths[::-1], D], self.activation, False)
        return enc.to(device), dec.to(device)

    # -- fit ----------------------------------------------------------------------------------
    def _threads(self, N: int, D: int, device: torch.device) -> int | None:
        if device.type != "cpu" or self.num_threads is None:
            return None
        if self.num_threads != "auto":
            return int(self.num_threads)
        sizes = [D, *(int(w) for w in self.widths), int(self.n_components)]
        weights = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        return 1 if N * weights < 5e7 else None

    def fit(self, X: Tensor) -> AutoencoderEmbedding:
        """Train on a population ``X : Tensor[N, D]`` (N >= 2); returns ``self``."""
        who = f"{type(self).__name__}.fit"
        self._validate(who)
        X = _as_population(X, who, min_rows=2)
        N, D = X.shape
        device = torch.device(self.device) if self.device is not None else X.device
        threads = self._threads(N, D, device)
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            return self._fit(X, device)
        finally:
            if threads is not None:
                torch.set_num_threads(previous)

    def _fit(self, X: Tensor, device: torch.device) -> AutoencoderEmbedding:
        N, D = X.shape
        Xf = X.detach().to(device=device, dtype=torch.float32)

        mean = Xf.mean(dim=0)
        if self.standardize_input is False:
            mean = torch.zeros_like(mean)
            scale = torch.ones((), device=device)
        elif self.standardize_input == "feature":
            std = (Xf - mean).square().mean(dim=0).sqrt()
            rms = std.square().mean().sqrt()
            scale = torch.maximum(std, 1e-6 * rms if rms > 0 else torch.ones((), device=device))
        else:
            scale = (Xf - mean).square().mean().sqrt()
            scale = scale if scale > 0 else torch.ones((), device=device)
        Xs = (Xf - mean) / scale
        data_var = Xs.square().mean().clamp_min(1e-30)

        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.seed))
            enc, dec = self._build(D, device)
        gen = torch.Generator(device=device).manual_seed(int(self.seed) + 1)

        params = [*enc.parameters(), *dec.parameters()]
        opt = torch.optim.Adam(params, lr=float(self.lr), weight_decay=float(self.weight_decay))
        sched = None
        if self.schedule == "cosine" and self.epochs > 0:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=self.epochs, eta_min=0.01 * float(self.lr)
            )
        target_d = None
        if self.stress > 0:
            d = _pair_distances(Xs)
            target_d = d / d.mean()

        losses = torch.zeros(self.epochs, device=device)
        recons = torch.zeros(self.epochs, device=device)
        for epoch in range(self.epochs):
            opt.zero_grad(set_to_none=True)
            Z = enc(Xs)
            rec = (dec(Z) - Xs).square().mean()
            loss = rec
            if target_d is not None:
                loss = loss + float(self.stress) * _stress(Z, target_d)
            if self.smoothness > 0:
                loss = loss + float(self.smoothness) * self._curvature(dec, Z, gen) / data_var
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses[epoch] = loss.detach()
            recons[epoch] = rec.detach()

        enc.eval()
        dec.eval()
        for p in params:
            p.requires_grad_(False)
        self.encoder_ = enc
        self.mean_ = mean
        self.scale_ = scale
        self.loss_history_ = losses.cpu()
        self.reconstruction_history_ = recons.cpu()
        self.n_components_ = int(self.n_components)
        self.n_features_in_ = D
        self.dtype_ = _out_dtype(X.dtype)
        self._device_cache: dict[torch.device, tuple[nn.Module, Tensor, Tensor]] = {}
        self.decoder_ = dec
        return self

    @staticmethod
    def _curvature(
        dec: nn.Module, Z: Tensor, gen: torch.Generator, rel_step: float = 0.05
    ) -> Tensor:
        """Mean squared second difference of ``dec`` at random points of Z's padded box,
        with a step proportional to Z's spread, / step^4.

        The box and the step follow Z with gradients, so the value and its gradient are
        invariant to rescaling the latent (encoder x c, decoder / c): the penalty cannot
        be lowered by inflating the codes.
        """
        lo, hi = Z.min(dim=0).values, Z.max(dim=0).values
        pad = 0.1 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        u = torch.rand(Z.shape, generator=gen, device=Z.device, dtype=Z.dtype)
        z = lo + u * (hi - lo)
        v = torch.randn(Z.shape, generator=gen, device=Z.device, dtype=Z.dtype)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        h = rel_step * Z.std(dim=0).clamp_min(1e-12) * v
        second = dec(z + h) - 2.0 * dec(z) + dec(z - h)
        return second.square().mean() / rel_step**4

    # -- encode / decode -------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.mean_.device

    def _encode(self, X: Tensor) -> Tensor:
        dev = self._device()
        Xs = (X.to(device=dev, dtype=torch.float32) - self.mean_) / self.scale_
        with torch.no_grad():
            return self.encoder_(Xs)

    def _latent_dtype(self) -> torch.dtype:
        return torch.float32

    def _decoder_on(self, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
        if device == self._device():
            return self.decoder_, self.mean_, self.scale_
        cache = self.__dict__.setdefault("_device_cache", {})
        if device not in cache:
            cache.clear()  # at most one extra copy of the decoder
            cache[device] = (
                copy.deepcopy(self.decoder_).to(device),
                self.mean_.to(device),
                self.scale_.to(device),
            )
        return cache[device]

    def _decode(self, C: Tensor) -> Tensor:
        dec, mean, scale = self._decoder_on(C.device)
        with torch.no_grad():
            return dec(C).mul_(scale).add_(mean)

    def to(self, device: torch.device | str) -> AutoencoderEmbedding:
        """Move the fitted networks and scaling to ``device`` (decode then runs there)."""
        self._check_fitted("to")
        device = torch.device(device)
        self.encoder_.to(device)
        self.decoder_.to(device)
        self.mean_ = self.mean_.to(device)
        self.scale_ = self.scale_.to(device)
        self._device_cache = {}
        return self

    # -- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, Tensor]:
        state = {f"encoder.{k}": v for k, v in self.encoder_.state_dict().items()}
        state.update({f"decoder.{k}": v for k, v in self.decoder_.state_dict().items()})
        state.update(
            mean_=self.mean_,
            scale_=self.scale_,
            loss_history_=self.loss_history_,
            reconstruction_history_=self.reconstruction_history_,
        )
        return state

    def _restore(self, state: dict[str, Tensor], meta: dict[str, Any], **options: Any) -> None:
        super()._restore(state, meta)
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        enc, dec = self._build(self.n_features_in_, device)
        enc.load_state_dict(_sub_state(state, "encoder."))
        dec.load_state_dict(_sub_state(state, "decoder."))
        enc.eval()
        dec.eval()
        for p in (*enc.parameters(), *dec.parameters()):
            p.requires_grad_(False)
        self.encoder_, self.decoder_ = enc, dec
        self.mean_ = state["mean_"].to(device)
        self.scale_ = state["scale_"].to(device)
        self.loss_history_ = state["loss_history_"]
        self.reconstruction_history_ = state["reconstruction_history_"]
        self._device_cache = {}
