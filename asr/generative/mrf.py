"""Binary image denoising with an Ising Markov random field.

Model (Bishop, *Pattern Recognition and Machine Learning*, 2006, section 8.3.3): latent pixels
``x_i`` and observed noisy pixels ``y_i`` in {-1, +1} on a 4-connected grid,

    E(x, y) = h sum_i x_i - beta sum_{i~j} x_i x_j - eta sum_i x_i y_i,   p(x | y) ~ exp(-E).

The 4-neighbour grid is bipartite (a checkerboard): given the white pixels the black ones are
conditionally independent, so every algorithm updates all pixels of one colour at once,
vectorised over the grid and a batch of images:

* :func:`icm` — iterated conditional modes (Besag 1986): each pixel takes the sign of its
  local field ``a_i = -h + beta sum_{j~i} x_j + eta y_i``; the energy never increases.
* :func:`mean_field` — naive mean field, ``m_i = tanh(a_i(m))``; returns ``q(x_i = +1)``.
* :func:`gibbs` — Gibbs sampling, ``p(x_i = +1 | rest) = sigma(2 a_i)``; returns the posterior
  marginals estimated from the samples after burn-in (MPM estimate by thresholding at 1/2).

Images in the public API are binary ``{0, 1}`` tensors ``(B, H, W)`` (or ``(H, W)``); 1 maps to
spin +1. Anything else is rejected with a ValueError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass(frozen=True)
class IsingParams:
    """Ising denoising prior and data weights (Bishop's defaults: h=0, beta=1, eta=2.1)."""

    beta: float = 1.0
    eta: float = 2.1
    h: float = 0.0

    @classmethod
    def for_flip_rate(cls, rate: float, beta: float = 1.0, h: float = 0.0) -> "IsingParams":
        """Data weight matched to independent flip noise of probability ``rate``:
        ``p(y | x) ~ exp(eta x y)`` with ``eta = 1/2 log((1 - rate) / rate)``."""
        if not 0.0 < rate < 0.5:
            raise ValueError(f"flip rate must be in (0, 0.5), got {rate}")
        return cls(beta=beta, eta=0.5 * math.log((1.0 - rate) / rate), h=h)


def check_binary_images(y: Tensor, what: str = "image") -> Tensor:
    """Validate binary ``{0,1}`` images ``(H, W)`` or ``(B, H, W)``; return spins ``(B, H, W)``
    float32 in {-1, +1}."""
    if y.dim() == 2:
        y = y[None]
    if y.dim() != 3 or y.shape[1] < 1 or y.shape[2] < 1:
        raise ValueError(f"{what} must have shape (H, W) or (B, H, W), got {tuple(y.shape)}")
    if y.is_floating_point() and not torch.isfinite(y).all():
        raise ValueError(f"{what} contains NaN or inf")
    if not ((y == 0) | (y == 1)).all():
        bad = y[(y != 0) & (y != 1)][:3].tolist()
        raise ValueError(f"{what} must be binary with values 0/1; found {bad} (threshold it first)")
    return 2.0 * y.float() - 1.0


def to_binary(spins: Tensor) -> Tensor:
    """Spins in {-1, +1} (or real magnetisations) -> {0, 1} float images (sign, ties -> 1)."""
    return (spins >= 0).float()


def checkerboard(h: int, w: int) -> Tensor:
    """Bool mask ``(H, W)``, True where ``(row + col)`` is even."""
    return (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0


def neighbour_sum(x: Tensor) -> Tensor:
    """Sum of the 4 neighbours of every pixel of ``x (B, H, W)`` (zero outside the grid)."""
    p = F.pad(x[:, None], (1, 1, 1, 1))[:, 0]
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]


def local_field(x: Tensor, y: Tensor, params: IsingParams) -> Tensor:
    """``a_i = -h + beta sum_{j~i} x_j + eta y_i`` for spins ``x, y (B, H, W)``."""
    return -params.h + params.beta * neighbour_sum(x) + params.eta * y


def ising_energy(x: Tensor, y: Tensor, params: IsingParams) -> Tensor:
    """``E(x, y)`` per image for spins ``x, y (B, H, W)``; returns ``(B,)`` (each edge once)."""
    pair = (x[:, 1:, :] * x[:, :-1, :]).sum((1, 2)) + (x[:, :, 1:] * x[:, :, :-1]).sum((1, 2))
    return params.h * x.sum((1, 2)) - params.beta * pair - params.eta * (x * y).sum((1, 2))


def icm(y: Tensor, params: IsingParams = IsingParams(), max_sweeps: int = 20) -> tuple[Tensor, int]:
    """Iterated conditional modes from ``x = y``. Returns ``(denoised {0,1} (B, H, W), sweeps)``;
    stops when a full sweep changes no pixel."""
    ys = check_binary_images(y)
    x = ys.clone()
    black = checkerboard(*ys.shape[1:])
    for sweep in range(1, max_sweeps + 1):
        old = x.clone()
        for mask in (black, ~black):
            a = local_field(x, ys, params)
            new = torch.where(a > 0, 1.0, torch.where(a < 0, -1.0, x))  # ties keep the state
            x = torch.where(mask, new, x)
        if torch.equal(old, x):
            return to_binary(x), sweep
    return to_binary(x), max_sweeps


def mean_field(y: Tensor, params: IsingParams = IsingParams(), iters: int = 50,
               tol: float = 1e-6) -> Tensor:
    """Naive mean field with checkerboard (block-coordinate) updates ``m_i = tanh(a_i(m))``.
    Returns ``q(x_i = 1)`` ``(B, H, W)`` in [0, 1]."""
    ys = check_binary_images(y)
    m = ys.clone()
    black = checkerboard(*ys.shape[1:])
    for _ in range(iters):
        old = m.clone()
        for mask in (black, ~black):
            m = torch.where(mask, torch.tanh(local_field(m, ys, params)), m)
        if (m - old).abs().max() < tol:
            break
    return 0.5 * (m + 1.0)


def gibbs(y: Tensor, params: IsingParams = IsingParams(), sweeps: int = 50, burn_in: int = 10,
          generator: torch.Generator | None = None, init: Tensor | None = None) -> Tensor:
    """Checkerboard Gibbs sampling of ``p(x | y)`` started from ``init`` spins (default ``y``).
    Returns the posterior marginals ``p(x_i = 1 | y)`` ``(B, H, W)`` averaged over the
    ``sweeps - burn_in`` samples after burn-in (Rao-Blackwellised: the conditional
    probabilities of each update are averaged rather than the 0/1 samples)."""
    if not 0 <= burn_in < sweeps:
        raise ValueError(f"need 0 <= burn_in < sweeps, got {burn_in}, {sweeps}")
    ys = check_binary_images(y)
    x = ys.clone() if init is None else init.clone().float()
    black = checkerboard(*ys.shape[1:])
    acc = torch.zeros_like(ys)
    for sweep in range(sweeps):
        for mask in (black, ~black):
            p = torch.sigmoid(2.0 * local_field(x, ys, params))
            if sweep >= burn_in:
                acc += torch.where(mask, p, 0.0)
            s = 2.0 * torch.bernoulli(p, generator=generator) - 1.0
            x = torch.where(mask, s, x)
    return acc / (sweeps - burn_in)


def flip_noise(images: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Flip each pixel of binary ``images`` independently with probability ``rate``."""
    check_binary_images(images)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"flip rate must be in [0, 1], got {rate}")
    flips = torch.bernoulli(torch.full(images.shape, rate), generator=generator)
    return (images.float() + flips) % 2


def pixel_error(a: Tensor, b: Tensor) -> float:
    """Fraction of pixels where the binary images ``a`` and ``b`` differ."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.float() != b.float()).float().mean())


__all__ = ["IsingParams", "icm", "mean_field", "gibbs", "ising_energy", "local_field",
           "neighbour_sum", "checkerboard", "check_binary_images", "to_binary", "flip_noise",
           "pixel_error"]
