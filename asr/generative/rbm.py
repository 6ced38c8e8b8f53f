"""Restricted Boltzmann machines: Bernoulli-Bernoulli and Gaussian-Bernoulli.

Conventions (Hinton, "A practical guide to training restricted Boltzmann machines", UTML TR
2010-003, referred to as *the guide* below):

* ``W`` has shape ``(n_visible, n_hidden)``; ``b`` is the visible bias ``(n_visible,)``,
  ``c`` the hidden bias ``(n_hidden,)``. Hidden units are always binary.
* Bernoulli visible units: ``E(v, h) = -v.b - h.c - v W h``, data must lie in [0, 1]
  (probabilities are accepted, as in the guide section 3.2).
* Gaussian visible units assume **unit variance** (guide section 13.2): the caller normalises
  each input dimension to zero mean and unit variance, and
  ``E(v, h) = ||v - b||^2 / 2 - h.c - v W h``. Use a smaller learning rate (0.01 rather than
  0.1; :class:`RBMTrainConfig` picks that default when ``lr`` is ``None``).

Everything operates on batches: ``v`` is ``(B, n_visible)``, ``h`` is ``(B, n_hidden)``.
Randomness always comes from an explicit ``torch.Generator`` on the model's device.

Speed on CPU: stacked RBMs meet subnormal floats (off units' probabilities below 1.2e-38 and their
products), which x86 CPUs process on a slow path; a second RBM's epoch ran up to 5.6x slower for
it. The probabilities this module computes are floored at 2^-62 (:func:`stable_sigmoid`), so
neither they nor their pairwise products are subnormal, whether or not the process flushes
subnormals to zero (the ``asr`` commands also do that first).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from asr.generative.checkpoint import register_module

VISIBLE_TYPES = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2.0 * math.pi)


def sample_bernoulli(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary sample ``x ~ Bernoulli(p)`` elementwise, as ``torch.bernoulli(p, generator=generator)``.

    Computed as ``uniform < p`` from one ``torch.rand`` draw of ``p``'s shape: on CPU that is what
    ``torch.bernoulli`` does element by element with the same draws, so the sample *and* the
    generator's state afterwards are bit-identical to it (float32 and float64; tested), but
    ``torch.rand`` fills the tensor in a vectorised kernel: about 3.5x faster here (3.4 against
    12 ns per element), which is a quarter of a CD-1 step of a 512-unit RBM. Returns ``p``'s dtype.
    """
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return u.lt_(p)          # in place: 1.0 where u < p, else 0.0, in p's dtype


# ln of the smallest probability a sigmoid returns: twice the square root of the dtype's smallest
# normal number (2^-62 in float32 and bfloat16, 2^-510 in float64; twice, so that rounding cannot
# take a product of two below it), so a product of two probabilities is never subnormal either.
# See ``stable_sigmoid``.
_SIGMOID_FLOOR = {torch.float32: -62 * math.log(2.0), torch.bfloat16: -62 * math.log(2.0),
                  torch.float64: -510 * math.log(2.0)}


def stable_sigmoid(x: Tensor) -> Tensor:
    """``sigmoid(x)`` with ``x`` first clamped from below **in place** at ln 2^-62 ~ -43.0 (float32 and
    bfloat16; ln 2^-510 for float64), so that no probability, and no product of two of them, is a
    subnormal float.

    Why: units that are firmly off have sigmoids below float32's smallest normal number (1.2e-38,
    pre-activations under about -87), and products of small probabilities (a CD step's weight
    statistics, the next RBM's lifted input times its hidden probabilities) fall below it sooner;
    x86 cores compute with subnormal operands and results through a microcode assist. Measured
    here: a 100x512 by 512x512 product took 29 ms instead of 0.17 ms with subnormals in an
    operand, and CD-1 on uniform random data ran at 44 instead of 2.3 ms per step while 0.3-0.7 %
    of its hidden probabilities were subnormal. Flush-to-zero (``torch.set_flush_denormal``, which
    every ``asr`` command sets first) is process state that does not reach the worker threads of an
    already started thread pool, so a library cannot rely on it. What the floor changes is below
    2^-62 ~ 2.2e-19: such a probability becomes 2.2e-19, which vanishes next to any probability
    above ~1e-12 in a float32 sum; a Bernoulli sample ``u < p`` differs only where the uniform
    draw is exactly 0 and ``p`` was exactly 0. Other dtypes are not clamped."""
    floor = _SIGMOID_FLOOR.get(x.dtype)
    return torch.sigmoid(x if floor is None else x.clamp_(min=floor))


class TrainingDiverged(RuntimeError):
    """Training produced NaN/Inf. The model has been restored to the last good state.

    Attributes:
        step: global update step (1-based) at which the non-finite value appeared.
        epoch: epoch (1-based) of that step.
        state_dict: copy of the last finite parameters (already loaded back into the model).
        history: the per-epoch metrics recorded before the failure.
    """

    def __init__(self, message: str, step: int, epoch: int, state_dict: dict[str, Tensor],
                 history: list[dict[str, float]] | None = None):
        super().__init__(message)
        self.step = step
        self.epoch = epoch
        self.state_dict = state_dict
        self.history = history or []


@register_module
class RBM(nn.Module):
    """Restricted Boltzmann machine with binary hidden units.

    Args:
        n_visible: number of visible units D.
        n_hidden: number of hidden units H.
        visible: ``"bernoulli"`` (data in [0, 1]) or ``"gaussian"`` (unit-variance, zero-mean
            normalised real-valued data).
        init_std: standard deviation of the initial weights (guide section 8: 0.01).
        generator: generator for the initial weights (default: a CPU generator seeded 0).

    Biases start at zero; :func:`train_rbm` can set the visible bias from data marginals
    (guide section 8, ``log p / (1 - p)``).
    """

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "bernoulli",
                 init_std: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        if visible not in VISIBLE_TYPES:
            raise ValueError(f"visible must be one of {VISIBLE_TYPES}, got {visible!r}")
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"RBM sizes must be positive, got {n_visible}x{n_hidden}")
        self.n_visible = int(n_visible)
        self.n_hidden = int(n_hidden)
        self.visible = visible
        self.init_std = float(init_std)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden, generator=g) * init_std)
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.zeros(n_hidden))

    # -- checkpoint support -------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments needed to rebuild this module (see ``asr.generative.save``)."""
        return {"n_visible": self.n_visible, "n_hidden": self.n_hidden,
                "visible": self.visible, "init_std": self.init_std}

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, visible={self.visible!r}"

    # -- energies -------------------------------------------------------------------------
    def _check_v(self, v: Tensor, what: str = "v") -> None:
        if v.dim() != 2 or v.shape[1] != self.n_visible:
            raise ValueError(f"{what} must have shape (B, {self.n_visible}), got {tuple(v.shape)}")

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """Joint energy E(v, h), shape ``(B,)``."""
        self._check_v(v)
        inter = ((v @ self.W) * h).sum(1)
        if self.visible == "bernoulli":
            vis = -(v @ self.b)
        else:
            vis = 0.5 * ((v - self.b) ** 2).sum(1)
        return vis - h @ self.c - inter

    def free_energy(self, v: Tensor) -> Tensor:
        """Free energy F(v) = -log sum_h exp(-E(v, h)), shape ``(B,)``; p(v) = exp(-F(v)) / Z."""
        self._check_v(v)
        hid = F.softplus(v @ self.W + self.c).sum(1)
        if self.visible == "bernoulli":
            return -(v @ self.b) - hid
        return 0.5 * ((v - self.b) ** 2).sum(1) - hid

    # -- conditionals and sampling -----------------------------------------------------
    def hidden_probs(self, v: Tensor) -> Tensor:
        """p(h_j = 1 | v) = sigmoid(c_j + v W_:j), shape ``(B, H)``."""
        return stable_sigmoid(v @ self.W + self.c)

    def visible_mean(self, h: Tensor) -> Tensor:
        """E[v | h], shape ``(B, D)``: sigmoid(b + W h) (Bernoulli) or b + W h (Gaussian)."""
        a = h @ self.W.t() + self.b
        return stable_sigmoid(a) if self.visible == "bernoulli" else a

    def sample_hidden(self, v: Tensor, generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Return ``(p(h|v), h ~ p(h|v))``, both ``(B, H)``."""
        p = self.hidden_probs(v)
        return p, sample_bernoulli(p, generator)

    def sample_visible(self, h: Tensor, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
        """Return ``(E[v|h], v ~ p(v|h))``, both ``(B, D)``."""
        m = self.visible_mean(h)
        if self.visible == "bernoulli":
            return m, sample_bernoulli(m, generator)
        return m, m + torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)

    @torch.no_grad()
    def gibbs(self, v: Tensor, steps: int = 1, generator: torch.Generator | None = None
              ) -> tuple[Tensor, Tensor]:
        """Run ``steps`` block-Gibbs sweeps v -> h -> v from ``v`` ``(B, D)``.

        Returns ``(v_mean, v_sample)`` of the last sweep (each ``(B, D)``).
        """
        self._check_v(v)
        mean = v
        for _ in range(steps):
            _, h = self.sample_hidden(v, generator)
            mean, v = self.sample_visible(h, generator)
        return mean, v

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None,
               init: Tensor | None = None) -> Tensor:
        """Draw ``n`` visible vectors by a block-Gibbs chain of ``steps`` sweeps.

        The chain starts from ``init`` ``(n, D)`` or from uniform noise (Bernoulli) /
        standard normal (Gaussian) noise. Returns the mean of p(v|h) of the last sweep, ``(n, D)``.
        """
        dev, dt = self.W.device, self.W.dtype
        if init is None:
            if self.visible == "bernoulli":
                init = torch.bernoulli(torch.full((n, self.n_visible), 0.5, device=dev, dtype=dt),
                                       generator=generator)
            else:
                init = torch.randn(n, self.n_visible, generator=generator, device=dev, dtype=dt)
        mean, _ = self.gibbs(init.to(dev, dt), steps, generator)
        return mean

    # -- monitoring ------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruction_error(self, v: Tensor) -> Tensor:
        """Mean squared error per element between v and E[v | h = p(h|v)] (mean-field), scalar."""
        self._check_v(v)
        return ((self.visible_mean(self.hidden_probs(v)) - v) ** 2).mean()

    @torch.no_grad()
    def pseudo_log_likelihood(self, v: Tensor, generator: torch.Generator | None = None,
                              exact: bool = False) -> Tensor:
        """Pseudo-log-likelihood sum_i log p(v_i | v_-i) per sample, shape ``(B,)``.

        Bernoulli visible units only (binary data; probabilities are rounded). With
        ``exact=False`` one random coordinate per sample is flipped and the result scaled
        by D (stochastic estimate as in scikit-learn's ``BernoulliRBM.score_samples``);
        ``exact=True`` sums over all D coordinates (D free-energy evaluations per sample).
        """
        if self.visible != "bernoulli":
            raise ValueError("pseudo-log-likelihood is defined here for Bernoulli visible units only")
        self._check_v(v)
        v = (v > 0.5).to(self.W.dtype)
        fe = self.free_energy(v)
        if not exact:
            idx = torch.randint(0, self.n_visible, (v.shape[0],), generator=generator,
                                device=v.device)
            vf = v.clone()
            rows = torch.arange(v.shape[0], device=v.device)
            vf[rows, idx] = 1.0 - vf[rows, idx]
            return self.n_visible * F.logsigmoid(self.free_energy(vf) - fe)
        total = torch.zeros_like(fe)
        for i in range(self.n_visible):  # D vectorised evaluations over the batch
            vf = v.clone()
            vf[:, i] = 1.0 - vf[:, i]
            total += F.logsigmoid(self.free_energy(vf) - fe)
        return total


# ---------------------------------------------------------------------------------------
# Partition function: exact enumeration and annealed importance sampling
# ---------------------------------------------------------------------------------------

def _all_binary(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """All 2^n binary vectors, ``(2^n, n)``."""
    idx = torch.arange(2 ** n, device=device)
    return ((idx[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


@torch.no_grad()
def exact_log_z(rbm: RBM, max_units: int = 22) -> Tensor:
    """Exact log partition function by enumerating the hidden configurations (float64 scalar).

    log Z = logsumexp_h [ h.c + sum_i softplus(b_i + W_i h) ]                 (Bernoulli)
    log Z = logsumexp_h [ h.c + ||b + W h||^2 / 2 - ||b||^2 / 2 ] + D/2 log 2 pi  (Gaussian)

    Feasible only for ``n_hidden <= max_units`` (Bernoulli models with fewer visible units
    enumerate the visible layer instead).
    """
    W, b, c = (t.detach().double() for t in (rbm.W, rbm.b, rbm.c))
    if rbm.visible == "bernoulli" and rbm.n_visible < rbm.n_hidden:
        if rbm.n_visible > max_units:
            raise ValueError(f"too many units to enumerate ({rbm.n_visible} visible)")
        v = _all_binary(rbm.n_visible, W.device, W.dtype)
        return torch.logsumexp(v @ b + F.softplus(v @ W + c).sum(1), 0)
    if rbm.n_hidden > max_units:
        raise ValueError(f"too many hidden units to enumerate ({rbm.n_hidden})")
    h = _all_binary(rbm.n_hidden, W.device, W.dtype)
    a = h @ W.t() + b
    if rbm.visible == "bernoulli":
        return torch.logsumexp(h @ c + F.softplus(a).sum(1), 0)
    return (torch.logsumexp(h @ c + 0.5 * (a ** 2).sum(1) - 0.5 * (b @ b), 0)
            + 0.5 * rbm.n_visible * _LOG_2PI)


@dataclass
class AISResult:
    """Output of :func:`ais_log_z`: estimate of log Z and a +-3 std-error band."""

    log_z: float
    log_z_low: float
    log_z_high: float
    log_weights: Tensor  # (n_chains,) float64


def base_rate_bias(data: Tensor, visible: str, eps: float = 1e-3) -> Tensor:
    """Visible bias of the base-rate model from data marginals (Salakhutdinov & Murray 2008).

    Bernoulli: ``log p / (1 - p)`` of the per-unit mean (clamped to [eps, 1 - eps]);
    Gaussian: the data mean. ``data`` is ``(N, D)``; returns ``(D,)``.
    """
    m = data.double().mean(0)
    if visible == "bernoulli":
        m = m.clamp(eps, 1 - eps)
        return torch.log(m) - torch.log1p(-m)
    return m


@torch.no_grad()
def ais_log_z(rbm: RBM, base_bias: Tensor | None = None, n_chains: int = 100,
              betas: int | Tensor = 10000, generator: torch.Generator | None = None) -> AISResult:
    """Annealed importance sampling estimate of log Z (Salakhutdinov & Murray, ICML 2008).

    The base model A has no weights, visible bias ``base_bias`` (from
    :func:`base_rate_bias`, zeros if None) and H hidden units with zero bias, so
    ``log Z_A = H log 2 + sum softplus(b_A)`` (Bernoulli) or ``H log 2 + D/2 log 2 pi``
    (Gaussian, unit variance). Intermediate distributions
    ``p_k(v, h) ∝ exp(-(1 - beta_k) E_A(v) - beta_k E_B(v, h))`` are bridged by block Gibbs
    transitions; all chains run in parallel in float64.

    Args:
        betas: number of intermediate temperatures (uniformly spaced in [0, 1]) or the
            increasing schedule itself (starting at 0, ending at 1).
        n_chains: number of independent AIS runs M.
    Returns:
        :class:`AISResult` with ``log_z = log mean_m w_m + log Z_A``.
    """
    dev = rbm.W.device
    W, b, c = (t.detach().double() for t in (rbm.W, rbm.b, rbm.c))
    D, H = W.shape
    bA = (torch.zeros(D, dtype=torch.float64, device=dev) if base_bias is None
          else base_bias.to(dev, torch.float64))
    if isinstance(betas, int):
        betas = torch.linspace(0.0, 1.0, betas, dtype=torch.float64)
    betas = betas.to(torch.float64).tolist()
    if betas[0] != 0.0 or betas[-1] != 1.0:
        raise ValueError("AIS schedule must start at 0 and end at 1")
    gauss = rbm.visible == "gaussian"

    def log_p_star(v: Tensor, beta: float) -> Tensor:
        # unnormalised log marginal of v at temperature beta, (M,)
        hid = F.softplus(beta * (v @ W + c)).sum(1)
        if gauss:
            return (-0.5 * (1 - beta) * ((v - bA) ** 2).sum(1)
                    - 0.5 * beta * ((v - b) ** 2).sum(1) + hid)
        return (1 - beta) * (v @ bA) + beta * (v @ b) + hid

    def sample_v_given_h(h: Tensor, beta: float) -> Tensor:
        a = (1 - beta) * bA + beta * (b + h @ W.t())
        if gauss:
            return a + torch.randn(a.shape, generator=generator, device=dev, dtype=a.dtype)
        return sample_bernoulli(torch.sigmoid(a), generator)

    # exact sample from the base model
    if gauss:
        v = bA + torch.randn(n_chains, D, generator=generator, device=dev, dtype=torch.float64)
        log_za = H * math.log(2.0) + 0.5 * D * _LOG_2PI
    else:
        v = torch.bernoulli(torch.sigmoid(bA).expand(n_chains, D).contiguous(), generator=generator)
        log_za = H * math.log(2.0) + F.softplus(bA).sum().item()
    log_w = torch.zeros(n_chains, dtype=torch.float64, device=dev)
    for k in range(1, len(betas)):
        log_w += log_p_star(v, betas[k]) - log_p_star(v, betas[k - 1])
        if k < len(betas) - 1:
            beta = betas[k]
            h = sample_bernoulli(torch.sigmoid(beta * (v @ W + c)), generator)
            v = sample_v_given_h(h, beta)
    lse = torch.logsumexp(log_w, 0) - math.log(n_chains)
    # +-3 standard errors of the mean weight, in log space
    wm = torch.exp(log_w - log_w.max())
    mean = wm.mean()
    se = wm.std() / math.sqrt(n_chains) if n_chains > 1 else torch.zeros((), dtype=torch.float64)
    off = log_w.max().item() + log_za
    low = math.log(max((mean - 3 * se).item(), 1e-300)) + off
    high = math.log((mean + 3 * se).item()) + off
    return AISResult(log_z=lse.item() + log_za, log_z_low=low, log_z_high=high, log_weights=log_w)


@torch.no_grad()
def log_likelihood(rbm: RBM, v: Tensor, log_z: float | Tensor) -> Tensor:
    """log p(v) = -F(v) - log Z per sample, shape ``(B,)`` (float64)."""
    return -rbm.free_energy(v).double() - torch.as_tensor(log_z, dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# Training: contrastive divergence (CD-k) and persistent CD
# ---------------------------------------------------------------------------------------

@dataclass
class RBMTrainConfig:
    """Hyper-parameters of :func:`train_rbm` (defaults follow the guide).

    Attributes:
        epochs: passes over the data.
        batch_size: minibatch size when ``data`` is a tensor (guide section 4: 10-100).
        lr: learning rate on the batch-mean gradient; ``None`` means 0.1 for Bernoulli and
            0.01 for Gaussian visible units.
        momentum: final momentum (guide section 9: 0.9).
        initial_momentum: momentum for the first ``momentum_epochs`` epochs (0.5); with the
            ``"kaldi"`` schedule the start of the linear ramp.
        momentum_epochs: number of epochs at ``initial_momentum`` (``"epochs"`` schedule).
        schedule: ``"epochs"`` (the guide: ``initial_momentum`` then ``momentum``, constant lr)
            or ``"kaldi"`` (nnet1 ``rbm-train-cd1-frmshuff``: the ramped momentum
            m_t = initial_momentum + n (momentum - initial_momentum) / momentum_steps, with
            n = frames seen / momentum_step_frames capped at momentum_steps, scales the learning
            rate to ``lr (1 - m_t)`` "to keep the effective learning rate constant", while the
            velocity uses ``momentum`` from the start, as Kaldi's default ``--with-bug=true``
            does; e.g. Kaldi's Bernoulli lr 0.4 is applied as 0.2 with momentum 0.9 for the
            first 500k frames).
        momentum_steps, momentum_step_frames: the ramp of the ``"kaldi"`` schedule (Kaldi: 40
            steps of 500 000 frames).
        weight_decay: L2 penalty coefficient on W (guide section 10 suggests 1e-2 .. 1e-5).
        k: number of Gibbs steps in the negative phase (CD-k).
        persistent: persistent CD (Tieleman 2008): negative chains carry over between updates.
        sample_visible: negative statistics from sampled (not mean) visible states.
        init_visible_bias: set b from the data marginals before training (``log p/(1-p)`` /
            mean; of the whole tensor when ``data`` is a tensor, else of the first minibatch);
            set False to continue training an already trained RBM.
        variance_guard: Gaussian visible units only: Kaldi's anti-weight-explosion check
            (``nnet-rbm.h``): when the reconstruction's standard deviation exceeds twice the
            data's, W, b and c are scaled by their ratio, the learning rate by 0.9 (restored at
            the next momentum step of the ``"kaldi"`` schedule), the velocities are reset and
            the minibatch's update is skipped.
        rows_per_epoch: with a tensor source, train each epoch on this many rows of its
            shuffle (subsampling large data); None = all rows.
        check_input: verify every minibatch is finite and, for Bernoulli units, in [0, 1].
        matmul_dtype: ``"float32"`` (exact: the products in the model's dtype) or ``"bfloat16"``
            (mixed precision, as ``torch.autocast``: the five matrix products of a CD-1 step take
            bfloat16 inputs, accumulate in float32 inside the GEMM and come back in the model's
            dtype; the weights, velocities and every elementwise step stay float32). On a CPU with
            native bfloat16 instructions (AVX512-BF16, AMX) or a GPU the products run ~2.2x faster,
            a CD-1 step ~1.5x; elsewhere bfloat16 is emulated and slower.
    """

    epochs: int = 10
    batch_size: int = 100
    lr: float | None = None
    momentum: float = 0.9
    initial_momentum: float = 0.5
    momentum_epochs: int = 5
    schedule: str = "epochs"
    momentum_steps: int = 40
    momentum_step_frames: int = 500_000
    weight_decay: float = 2e-4
    k: int = 1
    persistent: bool = False
    sample_visible: bool = False
    init_visible_bias: bool = True
    variance_guard: bool = False
    rows_per_epoch: int | None = None
    check_input: bool = True
    matmul_dtype: str = "float32"

    def learning_rate(self, visible: str) -> float:
        """The base learning rate for an RBM with ``visible`` units."""
        if self.lr is not None:
            return self.lr
        return 0.1 if visible == "bernoulli" else 0.01

    def step_settings(self, epoch: int, frames_seen: int) -> tuple[float, float, int]:
        """(learning-rate factor, momentum, ramp step) for a minibatch of ``epoch`` (1-based)
        after ``frames_seen`` training frames of this RBM."""
        if self.schedule == "epochs":
            return 1.0, (self.initial_momentum if epoch <= self.momentum_epochs else self.momentum), 0
        if self.schedule != "kaldi":
            raise ValueError(f"schedule must be 'epochs' or 'kaldi', got {self.schedule!r}")
        n = min(frames_seen // max(1, self.momentum_step_frames), self.momentum_steps)
        ramp = self.initial_momentum + n * (self.momentum - self.initial_momentum) / max(1, self.momentum_steps)
        return 1.0 - ramp, self.momentum, n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DataSource = Tensor | Callable[[], Iterable[Tensor]] | Iterable[Tensor]


def iter_minibatches(data: DataSource, batch_size: int, generator: torch.Generator | None,
                     rows: int | None = None) -> Iterator[Tensor]:
    """One epoch of minibatches from a tensor (shuffled with ``generator``; the first ``rows``
    of the shuffle when given), a callable returning an iterable of batches, or a re-iterable
    of batches."""
    if isinstance(data, Tensor):
        if data.dim() != 2:
            raise ValueError(f"data must be a 2-D tensor (N, D), got shape {tuple(data.shape)}")
        perm = torch.randperm(data.shape[0], generator=generator,
                              device=generator.device if generator is not None else "cpu")
        if rows is not None:
            perm = perm[:rows]
        for i in range(0, len(perm), batch_size):
            yield data[perm[i:i + batch_size].to(data.device)]
    elif callable(data):
        yield from data()
    else:
        yield from data


def check_data(rbm: RBM, data: Tensor, chunk: int = 65536) -> None:
    """:func:`check_batch` for a whole data tensor ``(N, D)``, in chunks of rows; the error names the
    first bad row."""
    if data.dim() != 2 or data.shape[1] != rbm.n_visible:
        raise ValueError(f"data: expected shape (N, {rbm.n_visible}), got {tuple(data.shape)}")
    for start in range(0, data.shape[0], chunk):
        c = data[start:start + chunk]
        lo, hi = (float(x) for x in torch.aminmax(c))    # one pass; NaN propagates into both
        if math.isfinite(lo) and math.isfinite(hi) and (rbm.visible != "bernoulli" or (lo >= 0.0 and hi <= 1.0)):
            continue
        bad = ~torch.isfinite(c).all(1)
        if rbm.visible == "bernoulli":
            bad |= (c < 0).any(1) | (c > 1).any(1)
        row = start + int(bad.nonzero()[0, 0])
        check_batch(rbm, data[row:row + 1], where=f"data row {row}")


def check_batch(rbm: RBM, v: Tensor, where: str = "data") -> None:
    """Raise ValueError if ``v`` has the wrong shape, non-finite values, or (Bernoulli
    visible units) values outside [0, 1]."""
    if v.dim() != 2 or v.shape[1] != rbm.n_visible:
        raise ValueError(f"{where}: expected batches of shape (B, {rbm.n_visible}), "
                         f"got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{where}: contains NaN or Inf")
    if rbm.visible == "bernoulli":
        lo, hi = v.min().item(), v.max().item()
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{where}: Bernoulli visible units need values in [0, 1], "
                             f"got range [{lo:.4g}, {hi:.4g}] (normalise the data, or use "
                             f"visible='gaussian' for real-valued features)")


MATMUL_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


class _LowPrecisionProducts:
    """The matrix products of one CD step with inputs rounded to ``low`` (bfloat16) and results
    returned in the model's dtype (``RBMTrainConfig.matmul_dtype``). W is rounded once per step.
    The weight statistics ``v0' p(h|v0) - vk' p(h|vk)`` are one product of the stacked batches, so
    the GEMM's float32 accumulator takes the difference and only the result is rounded (positive
    and negative statistics rounded apart would lose the small difference to cancellation)."""

    def __init__(self, rbm: RBM, low: torch.dtype):
        self.rbm, self.low, self.dtype = rbm, low, rbm.W.dtype
        self.W = rbm.W.to(low)

    def hidden_pre(self, v: Tensor) -> Tensor:
        """v W + c, (B, H)."""
        return (v.to(self.low) @ self.W).to(self.dtype).add_(self.rbm.c)

    def hidden_probs(self, v: Tensor) -> Tensor:
        return stable_sigmoid(self.hidden_pre(v))

    def visible_mean(self, h: Tensor) -> Tensor:
        a = (h.to(self.low) @ self.W.t()).to(self.dtype).add_(self.rbm.b)
        return stable_sigmoid(a) if self.rbm.visible == "bernoulli" else a

    def sample_visible(self, h: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        m = self.visible_mean(h)
        if self.rbm.visible == "bernoulli":
            return m, sample_bernoulli(m, generator)
        return m, m + torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)

    def statistics(self, v0: Tensor, ph0: Tensor, vk: Tensor, phk: Tensor, out: Tensor | None) -> Tensor:
        """v0' ph0 - vk' phk, (D, H), in the model's dtype (into ``out`` when given)."""
        a = torch.cat([v0, vk]).to(self.low)
        b = torch.cat([ph0, phk.neg()]).to(self.low)
        prod = a.t() @ b
        return out.copy_(prod) if out is not None else prod.to(self.dtype)


@dataclass
class _Phases:
    """The positive and negative phase of one CD-k / PCD step (all ``(B, .)``)."""
    pre0: Tensor        # positive hidden pre-activations v0 W + c (clamped as ``stable_sigmoid`` does)
    ph0: Tensor         # p(h | v0)
    chain_end: Tensor   # sampled visible state of the chain (the mean when it was not drawn)
    recon: Tensor       # visible state the negative statistics use
    phk: Tensor         # p(h | recon)


@dataclass
class _CDStep:
    grads: tuple[Tensor, Tensor, Tensor]   # dW (D, H), db (D,), dc (H,), batch means
    chain_end: Tensor                      # sampled visible state of the chain, (B, D)
    recon: Tensor                          # visible state the negative statistics used, (B, D)
    pre0: Tensor                           # positive hidden pre-activations v0 W + c, (B, H)


@torch.no_grad()
def _phases(rbm: RBM, v0: Tensor, k: int, generator: torch.Generator | None, chain: Tensor | None,
            sample_visible: bool, need_chain_end: bool = True, low: torch.dtype | None = None) -> _Phases:
    """The Gibbs chain of one CD-k / PCD step. ``need_chain_end=False`` (plain CD, whose chain is not
    carried): the last sweep's visible *sample* is not drawn when the statistics use the mean, so
    ``chain_end`` is then that mean. Skipping the draw saves a (B, D) uniform (Bernoulli) or normal
    (Gaussian) draw per step and changes which random numbers later steps get, not the algorithm.
    ``low``: the dtype of the matrix products (None: the model's; see ``RBMTrainConfig.matmul_dtype``)."""
    if low is None:
        pre0 = torch.addmm(rbm.c, v0, rbm.W)
        hidden_probs, sample_vis, visible_mean = rbm.hidden_probs, rbm.sample_visible, rbm.visible_mean
    else:
        prods = _LowPrecisionProducts(rbm, low)
        pre0 = prods.hidden_pre(v0)
        hidden_probs, sample_vis, visible_mean = prods.hidden_probs, prods.sample_visible, prods.visible_mean
    ph0 = stable_sigmoid(pre0)                # clamps pre0 too: the monitor's free energy reads it
    v = v0 if chain is None else chain
    vs = v
    vm = v
    h = sample_bernoulli(ph0 if chain is None else hidden_probs(v), generator)
    for step in range(k):
        if step == k - 1 and not (need_chain_end or sample_visible):
            vm = vs = visible_mean(h)
            break
        vm, vs = sample_vis(h, generator)
        if step < k - 1:
            h = sample_bernoulli(hidden_probs(vs), generator)
    if sample_visible:
        vm = vs
    return _Phases(pre0, ph0, vs, vm, hidden_probs(vm))


@torch.no_grad()
def _cd_step(rbm: RBM, v0: Tensor, k: int, generator: torch.Generator | None,
             chain: Tensor | None, sample_visible: bool, need_chain_end: bool = True,
             low: torch.dtype | None = None) -> _CDStep:
    """One CD-k / PCD gradient estimate (batch means) from :func:`_phases`."""
    ph = _phases(rbm, v0, k, generator, chain, sample_visible, need_chain_end, low)
    return _CDStep(_gradients(rbm, v0, ph, low), ph.chain_end, ph.recon, ph.pre0)


def _gradients(rbm: RBM, v0: Tensor, ph: _Phases, low: torch.dtype | None,
               dw_out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-mean CD statistics ``(dW (D, H), db (D,), dc (H,))`` of the phases ``ph`` of ``v0``.
    ``dw_out``: a (D, H) buffer dW is written into (the same numbers as a fresh tensor, whose 1 MB
    would be a fresh mapping of the allocator's, with its page faults, at every step)."""
    n = v0.shape[0]
    if low is None:
        dW = torch.mm(v0.t(), ph.ph0, out=dw_out) if dw_out is not None else v0.t() @ ph.ph0
        dW.addmm_(ph.recon.t(), ph.phk, alpha=-1.0).div_(n)      # in place: no (D, H) copy
    else:
        dW = _LowPrecisionProducts(rbm, low).statistics(v0, ph.ph0, ph.recon, ph.phk, dw_out).div_(n)
    return dW, (v0 - ph.recon).mean(0), (ph.ph0 - ph.phk).mean(0)


@torch.no_grad()
def cd_gradient(rbm: RBM, v0: Tensor, k: int = 1, generator: torch.Generator | None = None,
                chain: Tensor | None = None, sample_visible: bool = False
                ) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
    """CD-k (or PCD when ``chain`` is given) estimate of the log-likelihood gradient.

    Positive statistics use ``p(h|v0)``; the negative chain starts at ``v0`` (CD) or at the
    persistent ``chain`` state, runs ``k`` block-Gibbs sweeps sampling binary hidden states,
    and its final visible state is the mean of p(v|h) (guide section 3.2; less sampling
    noise) or, with ``sample_visible``, a sample (unbiased as k -> infinity). Negative
    statistics use that state and its hidden probabilities.

    Returns ``((dW (D, H), db (D,), dc (H,)), v_k)`` where the gradient is averaged over the
    batch and ``v_k`` is the sampled chain end (to carry for PCD).
    """
    st = _cd_step(rbm, v0, k, generator, chain, sample_visible)
    return st.grads, st.chain_end


FREE_ENERGY_EVERY = 8
""":func:`train_rbm` monitors the free energy on minibatches 1, 9, 17, ... of an epoch (a monitor: its
8 elementwise passes over a (B, H) batch cost ~6 % of a 512-unit CD-1 step when taken every time)."""


def _update_velocities(rbm: RBM, vel: list[Tensor], v0: Tensor, ph: _Phases, lr: float, mom: float,
                       weight_decay: float, low: torch.dtype | None, bufs: tuple[Tensor, Tensor]) -> None:
    """``vel = mom * vel + lr * (grad - weight_decay * W)`` (weight decay on W only) for W, b, c in
    place, with ``grad`` the batch-mean CD statistics of ``ph`` (:func:`_gradients`). ``bufs``: two
    (D, H) buffers for the weight gradient and its decay term."""
    dw_buf, wd_buf = bufs
    grads = _gradients(rbm, v0, ph, low, dw_buf)
    if weight_decay:
        grads[0].sub_(torch.mul(rbm.W, weight_decay, out=wd_buf))
    for g, u in zip(grads, vel):
        u.mul_(mom).add_(g, alpha=lr)


def _free_energy_from_pre(rbm: RBM, v: Tensor, pre: Tensor) -> Tensor:
    """Mean free energy of ``v`` given its hidden pre-activations ``pre = v W + c`` (no GEMM)."""
    # softplus(x) = max(x, 0) + log(1 + exp(-|x|)) from vectorised exp/log: 2.5 against F.softplus's
    # 6.6 ns per element here (its log1p is scalar); equal to 5e-7 absolute, a monitor only
    hid = torch.exp(-pre.abs()).add_(1.0).log_().add_(pre.clamp(min=0.0)).sum(1)
    vis = -(v @ rbm.b) if rbm.visible == "bernoulli" else 0.5 * ((v - rbm.b) ** 2).sum(1)
    return (vis - hid).mean()


def train_rbm(rbm: RBM, data: DataSource, cfg: RBMTrainConfig | None = None,
              generator: torch.Generator | None = None,
              callback: Callable[[int, dict[str, float], RBM], None] | None = None
              ) -> list[dict[str, float]]:
    """Train ``rbm`` in place by CD-k or persistent CD with momentum and weight decay.

    Update (guide sections 9-10; Kaldi ``nnet-rbm.h`` ``RbmUpdate``):
    ``vel = m * vel + lr_t * (grad - wd * W)``, ``theta += vel`` (weight decay on W only),
    with ``grad`` the batch mean and ``lr_t``/``m`` from :meth:`RBMTrainConfig.step_settings`.
    Minibatches are moved to the model's device. The monitoring costs no extra matrix
    product: the reconstruction error is that of the negative phase (as Kaldi's
    ``rbm-train-cd1-frmshuff`` reports) and the free energy comes from the positive
    pre-activations, both under the parameters before the minibatch's update.

    Args:
        data: ``Tensor (N, D)`` (shuffled each epoch with ``generator``), a callable
            returning an iterable of ``(B, D)`` batches (called once per epoch, for streaming
            large data), or a re-iterable of batches.
        generator: source of all randomness (shuffling and Gibbs sampling); it must live on
            the model's device. Default: a fresh generator seeded 0.
        callback: called after every epoch as ``callback(epoch, metrics, rbm)``.
    Returns:
        One dict per epoch: ``epoch``, ``recon_error`` (mean over batches of the mean squared
        error between the data and its CD reconstruction), ``free_energy`` (mean F(v) of the
        data, over minibatches 1, 1 + ``FREE_ENERGY_EVERY``, ...), ``lr`` and ``momentum`` (of the
        epoch's last update), ``guard`` (variance-guard interventions), ``batches``, ``frames``,
        ``seconds`` (wall), ``cpu_seconds`` (process).
    Raises:
        ValueError: bad input (shape, NaN, Bernoulli data outside [0, 1]).
        TrainingDiverged: a non-finite update (NaN/Inf in the velocities or the monitors, which
            any NaN/Inf in the parameters reaches), detected before it is applied: ``rbm`` keeps
            the last good state. (A finite update that overflows finite parameters to Inf, i.e.
            weights near 3e38, is detected one step later.)
    """
    cfg = cfg or RBMTrainConfig()
    dev = rbm.W.device
    if cfg.matmul_dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {sorted(MATMUL_DTYPES)}, got {cfg.matmul_dtype!r}")
    low = MATMUL_DTYPES[cfg.matmul_dtype]
    if low == rbm.W.dtype:
        low = None
    if generator is None:
        generator = torch.Generator(device=dev).manual_seed(0)
    base_lr = cfg.learning_rate(rbm.visible)
    cfg.step_settings(1, 0)  # validates the schedule name
    guard = cfg.variance_guard and rbm.visible == "gaussian"
    params = (rbm.W, rbm.b, rbm.c)
    vel_W, vel_b, vel_c = vel = [torch.zeros_like(p) for p in params]
    if isinstance(data, Tensor) and cfg.check_input:
        check_data(rbm, data)            # once, not per minibatch
    per_batch_check = cfg.check_input and not isinstance(data, Tensor)
    chain: Tensor | None = None
    history: list[dict[str, float]] = []
    step = frames_seen = 0
    guard_scale, ramp_step = 1.0, -1
    first = cfg.init_visible_bias
    bufs = (torch.empty_like(rbm.W), torch.empty_like(rbm.W))
    with torch.no_grad():
        for epoch in range(1, cfg.epochs + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            rec_sum: Tensor | float = 0.0
            fe_sum: Tensor | float = 0.0
            nb = frames = n_guard = n_fe = 0
            lr = mom = 0.0
            for v0 in iter_minibatches(data, cfg.batch_size, generator, cfg.rows_per_epoch):
                v0 = v0.to(dev, rbm.W.dtype)
                if per_batch_check:
                    check_batch(rbm, v0, where=f"epoch {epoch} batch {nb + 1}")
                if first:  # after the first batch passed the checks
                    marg = v0 if not isinstance(data, Tensor) else torch.stack(
                        [c.to(dev, torch.float64).sum(0) for c in data.split(65536)]).sum(0, keepdim=True) / len(data)
                    rbm.b.copy_(base_rate_bias(marg, rbm.visible).to(rbm.b.dtype))
                    first = False
                step += 1
                lr_factor, mom, n_ramp = cfg.step_settings(epoch, frames_seen)
                if n_ramp != ramp_step:          # Kaldi restores the guard-lowered lr at each ramp step
                    ramp_step, guard_scale = n_ramp, 1.0
                lr = base_lr * lr_factor * guard_scale
                if cfg.persistent and (chain is None or chain.shape[0] != v0.shape[0]):
                    chain = v0.clone()
                ph = _phases(rbm, v0, cfg.k, generator, chain if cfg.persistent else None,
                             cfg.sample_visible, need_chain_end=cfg.persistent, low=low)
                if cfg.persistent:
                    chain = ph.chain_end
                rec_t = F.mse_loss(ph.recon, v0)
                monitor_fe = nb % FREE_ENERGY_EVERY == 0
                fe_t = _free_energy_from_pre(rbm, v0, ph.pre0) if monitor_fe else None
                guarded = False
                if guard:
                    pos_std, neg_std = v0.std(unbiased=False), ph.recon.std(unbiased=False)
                    guarded = bool(2 * pos_std < neg_std)
                if guarded:
                    scale = pos_std / neg_std
                    for p, u in zip(params, vel):
                        p.mul_(scale)
                        u.zero_()
                    guard_scale *= 0.9
                    n_guard += 1
                    check = rec_t + sum(p.sum() for p in params)
                else:
                    _update_velocities(rbm, vel, v0, ph, lr, mom, cfg.weight_decay, low, bufs)
                    check = rec_t + vel_W.sum() + vel_b.sum() + vel_c.sum()
                if fe_t is not None:
                    check = check + fe_t
                # one host sync per step, before the parameters move: NaN/Inf anywhere in them or in
                # the data reaches the velocities (and the monitors), so the model is left at the
                # last good state
                if not torch.isfinite(check).item():
                    state = {k: t.detach().clone() for k, t in rbm.state_dict().items()}
                    raise TrainingDiverged(
                        f"RBM training diverged at step {step} (epoch {epoch}): non-finite "
                        f"update or reconstruction error (lr={lr:.4g}); the parameters are left at the "
                        f"last good state", step=step, epoch=epoch, state_dict=state, history=history)
                if not guarded:
                    for p, u in zip(params, vel):
                        p.add_(u)
                rec_sum = rec_sum + rec_t
                if fe_t is not None:
                    fe_sum = fe_sum + fe_t
                    n_fe += 1
                nb += 1
                frames += v0.shape[0]
                frames_seen += v0.shape[0]
            if nb == 0:
                raise ValueError(f"epoch {epoch}: the data source yielded no batches "
                                 "(pass a tensor or a callable that returns a fresh iterable)")
            m = {"epoch": epoch, "recon_error": float(rec_sum) / nb, "free_energy": float(fe_sum) / max(1, n_fe),
                 "lr": lr, "momentum": mom, "guard": n_guard, "batches": nb, "frames": frames,
                 "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
            history.append(m)
            if callback is not None:
                callback(epoch, m, rbm)
    return history


def clone_rbm(rbm: RBM) -> RBM:
    """Deep copy of an RBM (e.g. to keep a snapshot before training)."""
    return copy.deepcopy(rbm)
