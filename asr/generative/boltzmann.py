"""General (unrestricted) Boltzmann machine with binary units.

Model (Ackley, Hinton & Sejnowski, "A learning algorithm for Boltzmann machines", Cognitive
Science 9, 1985): units ``s = [v, h]`` in {0, 1}^N, ``N = n_visible + n_hidden``, symmetric
weights ``W (N, N)`` with zero diagonal and biases ``b (N,)``:

    E(s) = -1/2 s^T W s - b^T s,        p(s) = exp(-E(s)) / Z.

Every unit is connected to every other one, so no two units are conditionally independent:
Gibbs sampling must update one unit at a time, ``p(s_i = 1 | s_-i) = sigma(sum_j w_ij s_j + b_i)``
(:func:`gibbs_sweep`; vectorised over a batch of chains, sequential over units).

Learning (:func:`train_boltzmann`) follows the log-likelihood gradient
``d log p(v) / d w_ij = <s_i s_j>_data - <s_i s_j>_model``: the positive phase clamps the
visible units to a data vector and samples the hidden ones; the negative phase runs persistent
free chains (Tieleman 2008; Salakhutdinov & Hinton 2009, section 3). Models with at most ~24
units can be evaluated exactly by enumeration (:func:`exact_log_partition`,
:func:`exact_log_likelihood`, :func:`exact_moments`).

Shapes: data/visible states ``(B, n_visible)``, full states ``(B, N)``; float tensors of 0/1.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from asr.generative.checkpoint import register_module


def check_binary(x: Tensor, width: int, what: str = "data") -> None:
    """Raise ValueError unless ``x`` is a ``(B, width)`` tensor of zeros and ones."""
    if x.dim() != 2 or x.shape[1] != width:
        raise ValueError(f"{what} must have shape (B, {width}), got {tuple(x.shape)}")
    if not ((x == 0) | (x == 1)).all():
        bad = x[(x != 0) & (x != 1)][:3].tolist()
        raise ValueError(f"{what} must be binary (0/1); found values such as {bad} "
                         "(threshold the data first)")


@register_module
class BoltzmannMachine(nn.Module):
    """Fully connected Boltzmann machine over ``n_visible`` visible and ``n_hidden`` hidden units.

    Args:
        n_visible, n_hidden: unit counts (``n_hidden`` may be 0: a fully visible machine).
        init_std: standard deviation of the initial symmetric weights.
        generator: generator for the initial weights (default: CPU generator seeded 0).

    ``W`` is stored full ``(N, N)`` and kept symmetric with a zero diagonal by every update.
    """

    def __init__(self, n_visible: int, n_hidden: int = 0, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 0:
            raise ValueError(f"need n_visible >= 1 and n_hidden >= 0, got {n_visible}, {n_hidden}")
        self.n_visible, self.n_hidden, self.init_std = int(n_visible), int(n_hidden), float(init_std)
        n = self.n_units
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        w = torch.randn(n, n, generator=g, dtype=torch.float64) * init_std
        w = torch.triu(w, 1)
        self.W = nn.Parameter((w + w.T).float())
        self.b = nn.Parameter(torch.zeros(n))

    @property
    def n_units(self) -> int:
        return self.n_visible + self.n_hidden

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (see ``asr.generative.save``)."""
        return {"n_visible": self.n_visible, "n_hidden": self.n_hidden, "init_std": self.init_std}

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}"

    def energy(self, s: Tensor) -> Tensor:
        """``E(s) = -1/2 s^T W s - b^T s`` for states ``s (B, N)``; returns ``(B,)``."""
        return -0.5 * ((s @ self.W) * s).sum(1) - s @ self.b

    @torch.no_grad()
    def set_parameters(self, w: Tensor, b: Tensor) -> None:
        """Set ``W`` (symmetrised, diagonal zeroed) and ``b``."""
        n = self.n_units
        if w.shape != (n, n) or b.shape != (n,):
            raise ValueError(f"expected W ({n}, {n}) and b ({n},), got {tuple(w.shape)}, {tuple(b.shape)}")
        w = 0.5 * (w + w.T)
        self.W.copy_(w - torch.diag(torch.diagonal(w)))
        self.b.copy_(b)


@torch.no_grad()
def gibbs_sweep(bm: BoltzmannMachine, s: Tensor, generator: torch.Generator | None = None,
                units: Tensor | range | None = None) -> Tensor:
    """One sequential Gibbs sweep over ``units`` (default: all), in place on ``s (B, N)``.

    Unit ``i`` is resampled from ``sigma(s W[:, i] + b_i)`` using the current values of all
    other units (already-updated ones included); the batch of chains is updated together.
    """
    w, b = bm.W.detach(), bm.b.detach()
    order = range(bm.n_units) if units is None else units
    for i in order:
        p = torch.sigmoid(s @ w[:, i] + b[i])
        s[:, i] = torch.bernoulli(p, generator=generator)
    return s


@torch.no_grad()
def sample_states(bm: BoltzmannMachine, n_chains: int, sweeps: int,
                  generator: torch.Generator | None = None, init: Tensor | None = None,
                  record: bool = False) -> Tensor:
    """Run ``n_chains`` free chains for ``sweeps`` sweeps from ``init (n_chains, N)`` (default:
    uniform random bits). Returns the final states ``(n_chains, N)``, or with ``record=True`` the
    states after every sweep ``(sweeps, n_chains, N)``."""
    n = bm.n_units
    s = (torch.bernoulli(torch.full((n_chains, n), 0.5), generator=generator) if init is None
         else init.clone().to(bm.W.dtype))
    if s.shape != (n_chains, n):
        raise ValueError(f"init must be ({n_chains}, {n}), got {tuple(s.shape)}")
    trace = []
    for _ in range(sweeps):
        gibbs_sweep(bm, s, generator)
        if record:
            trace.append(s.clone())
    return torch.stack(trace) if record else s


# --------------------------------------------------------------------------------------
# Exact evaluation by enumeration (tiny models)
# --------------------------------------------------------------------------------------

def all_binary_states(n: int) -> Tensor:
    """All ``2^n`` binary vectors as a float64 ``(2^n, n)`` tensor (bit ``i`` of the index)."""
    idx = torch.arange(2 ** n)
    return ((idx[:, None] >> torch.arange(n)) & 1).to(torch.float64)


def _check_enumerable(n: int, max_units: int) -> None:
    if n > max_units:
        raise ValueError(f"cannot enumerate 2^{n} states (max_units={max_units})")


def _neg_energy(w: Tensor, b: Tensor, s: Tensor) -> Tensor:
    return 0.5 * ((s @ w) * s).sum(1) + s @ b


@torch.no_grad()
def exact_log_partition(bm: BoltzmannMachine, max_units: int = 24, chunk: int = 1 << 16) -> Tensor:
    """``log Z = logsumexp_s -E(s)`` by enumerating all ``2^N`` states (float64 scalar)."""
    n = bm.n_units
    _check_enumerable(n, max_units)
    w, b = bm.W.detach().double(), bm.b.detach().double()
    parts = []
    idx = torch.arange(2 ** n)
    bits = torch.arange(n)
    for lo in range(0, 2 ** n, chunk):
        s = ((idx[lo:lo + chunk, None] >> bits) & 1).to(torch.float64)
        parts.append(torch.logsumexp(_neg_energy(w, b, s), 0))
    return torch.logsumexp(torch.stack(parts), 0)


@torch.no_grad()
def exact_log_likelihood(bm: BoltzmannMachine, v: Tensor, log_z: Tensor | float | None = None,
                         max_units: int = 24) -> Tensor:
    """``log p(v) = logsumexp_h -E(v, h) - log Z`` per row of binary ``v (B, n_visible)``;
    returns float64 ``(B,)``. Enumerates the ``2^n_hidden`` hidden states (and all states for Z)."""
    check_binary(v, bm.n_visible, "v")
    if log_z is None:
        log_z = exact_log_partition(bm, max_units)
    _check_enumerable(bm.n_hidden, max_units)
    w, b = bm.W.detach().double(), bm.b.detach().double()
    v = v.double()
    nv = bm.n_visible
    wvv, wvh, whh = w[:nv, :nv], w[:nv, nv:], w[nv:, nv:]
    base = 0.5 * ((v @ wvv) * v).sum(1) + v @ b[:nv]                   # (B,)
    h = all_binary_states(bm.n_hidden)                                 # (2^H, H)
    h_term = 0.5 * ((h @ whh) * h).sum(1) + h @ b[nv:]                # (2^H,)
    cross = v @ wvh @ h.T                                              # (B, 2^H)
    return base + torch.logsumexp(cross + h_term, 1) - torch.as_tensor(log_z, dtype=torch.float64)


@torch.no_grad()
def exact_moments(bm: BoltzmannMachine, max_units: int = 20) -> tuple[Tensor, Tensor]:
    """Exact model expectations ``(E[s] (N,), E[s s^T] (N, N))`` in float64 by enumeration."""
    n = bm.n_units
    _check_enumerable(n, max_units)
    s = all_binary_states(n)
    p = torch.softmax(_neg_energy(bm.W.detach().double(), bm.b.detach().double(), s), 0)
    return p @ s, (s * p[:, None]).T @ s


# --------------------------------------------------------------------------------------
# Learning: positive phase (clamped) minus negative phase (persistent free chains)
# --------------------------------------------------------------------------------------

@dataclass
class BMTrainConfig:
    """Hyper-parameters of :func:`train_boltzmann`.

    Attributes:
        epochs: passes over the data.
        batch_size: data vectors per update (each gets its own clamped chain).
        lr: learning rate on the average gradient.
        n_chains: persistent negative chains.
        pos_sweeps: Gibbs sweeps over the hidden units with visibles clamped (0 hidden: exact).
        neg_sweeps: Gibbs sweeps of the free chains per update.
        weight_decay: L2 penalty on ``W``.
        lr_decay: the learning rate at epoch e is ``lr / (1 + lr_decay * (e - 1))``.
    """

    epochs: int = 20
    batch_size: int = 50
    lr: float = 0.05
    n_chains: int = 100
    pos_sweeps: int = 2
    neg_sweeps: int = 1
    weight_decay: float = 0.0
    lr_decay: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def phase_statistics(bm: BoltzmannMachine, v: Tensor, chains: Tensor, cfg: BMTrainConfig,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sampled gradient of the mean log-likelihood of ``v (B, n_visible)``.

    Positive phase: ``[v, h]`` with ``h`` from ``cfg.pos_sweeps`` clamped sweeps (started at
    random). Negative phase: ``cfg.neg_sweeps`` sweeps of the persistent ``chains (C, N)``,
    updated in place. Returns ``(dW (N, N) with zero diagonal, db (N,), chains)``.
    """
    nv, n = bm.n_visible, bm.n_units
    pos = torch.cat([v.to(bm.W.dtype), torch.bernoulli(
        torch.full((v.shape[0], bm.n_hidden), 0.5), generator=generator)], 1)
    hidden = range(nv, n)
    for _ in range(cfg.pos_sweeps if bm.n_hidden else 0):
        gibbs_sweep(bm, pos, generator, hidden)
    for _ in range(cfg.neg_sweeps):
        gibbs_sweep(bm, chains, generator)
    dw = pos.T @ pos / pos.shape[0] - chains.T @ chains / chains.shape[0]
    dw.fill_diagonal_(0.0)
    db = pos.mean(0) - chains.mean(0)
    return dw, db, chains


def train_boltzmann(bm: BoltzmannMachine, data: Tensor, cfg: BMTrainConfig | None = None,
                    generator: torch.Generator | None = None,
                    callback: Callable[[int, dict[str, float], BoltzmannMachine], None] | None = None
                    ) -> list[dict[str, float]]:
    """Train ``bm`` in place on binary ``data (N_data, n_visible)`` by stochastic gradient ascent
    with sampled positive/negative statistics (:func:`phase_statistics`).

    Returns one dict per epoch: ``epoch``, ``lr``, ``updates``, ``seconds``,
    ``seconds_per_update``. Raises ValueError on non-binary data.
    """
    cfg = cfg or BMTrainConfig()
    check_binary(data, bm.n_visible)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    data = data.to(bm.W.dtype)
    chains = torch.bernoulli(torch.full((cfg.n_chains, bm.n_units), 0.5), generator=g)
    history: list[dict[str, float]] = []
    with torch.no_grad():
        for epoch in range(1, cfg.epochs + 1):
            lr = cfg.lr / (1.0 + cfg.lr_decay * (epoch - 1))
            t0 = time.perf_counter()
            perm = torch.randperm(data.shape[0], generator=g)
            updates = 0
            for lo in range(0, data.shape[0], cfg.batch_size):
                dw, db, chains = phase_statistics(bm, data[perm[lo:lo + cfg.batch_size]], chains, cfg, g)
                if cfg.weight_decay:
                    dw -= cfg.weight_decay * bm.W
                bm.W += lr * dw
                bm.b += lr * db
                updates += 1
            if not (torch.isfinite(bm.W).all() and torch.isfinite(bm.b).all()):
                raise FloatingPointError(f"Boltzmann machine training diverged in epoch {epoch} (lr={lr})")
            sec = time.perf_counter() - t0
            m = {"epoch": epoch, "lr": lr, "updates": updates, "seconds": sec,
                 "seconds_per_update": sec / max(updates, 1)}
            history.append(m)
            if callback is not None:
                callback(epoch, m, bm)
    return history


def autocorrelation(trace: Tensor, max_lag: int) -> Tensor:
    """Normalised autocorrelation of scalar chains ``trace (T, C)`` at lags ``0..max_lag``,
    averaged over the ``C`` chains (each centred by its own mean); returns ``(max_lag + 1,)``."""
    if trace.dim() != 2 or not 0 <= max_lag < trace.shape[0]:
        raise ValueError(f"trace must be (T, C) with T > max_lag, got {tuple(trace.shape)}, {max_lag}")
    x = trace.double() - trace.double().mean(0)
    var = (x * x).mean(0)
    t = x.shape[0]
    ac = torch.stack([(x[: t - k] * x[k:]).mean(0) for k in range(max_lag + 1)])
    ok = var > 0
    return (ac[:, ok] / var[ok]).mean(1) if ok.any() else torch.ones(max_lag + 1, dtype=torch.float64)


def integrated_autocorrelation_time(rho: Tensor) -> float:
    """``tau = 1 + 2 sum_k rho_k`` summed until the first non-positive lag (initial positive
    sequence, Geyer 1992): the number of sweeps per effectively independent sample."""
    tau = 1.0
    for r in rho[1:].tolist():
        if r <= 0:
            break
        tau += 2.0 * r
    return tau


__all__ = ["BoltzmannMachine", "BMTrainConfig", "train_boltzmann", "phase_statistics", "gibbs_sweep",
           "sample_states", "exact_log_partition", "exact_log_likelihood", "exact_moments",
           "all_binary_states", "check_binary", "autocorrelation", "integrated_autocorrelation_time"]

