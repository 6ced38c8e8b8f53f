"""MLLT / semi-tied covariance estimation (Gales 1999; Kaldi ``est-mllt``).

Model: every Gaussian ``j`` has a diagonal covariance in the space ``y = A x``, i.e. a
full covariance ``A^{-1} diag(s_j) A^{-T}`` in the original space (M. J. F. Gales,
"Semi-tied covariance matrices for hidden Markov models", IEEE TSAP 7(3), 1999).

Stats (``MlltStats``): per Gaussian the occupancy ``beta_j``, first-order sum and full
second-order scatter of the frames it owns, from which the full sample covariance ``W_j``.
With the diagonal variances set to their ML value ``s_jr = a_r W_j a_r^T`` the log-likelihood
of the data is

    L(A) = beta log|det A| - 1/2 sum_j beta_j sum_r log(a_r W_j a_r^T) - 1/2 beta D (1 + log 2 pi)

(``mllt_objective``). ``estimate_mllt`` maximises it by Gales' alternation: re-estimate the
variances, then update each row ``a_r = c_r G_r^{-1} sqrt(beta / (c_r G_r^{-1} c_r^T))`` with
``G_r = sum_j beta_j / s_jr W_j`` and ``c_r`` the cofactor row (Gales 1999, eqs. 19-22). Each
step is an exact coordinate maximisation, so the objective never decreases.

``MlltStats`` stores ``J x D x D`` numbers; for large systems use ``MlltModelStats`` (Kaldi
``MlltAccs``), which fixes the current GMM's means and variances and stores only
``G_r = sum_j 1/s_jr sum_t gamma_tj (x_t - mu_j)(x_t - mu_j)^T`` (``D x D x D``). With it
``estimate_mllt`` sweeps the rows with ``G`` fixed and ``mllt_objective`` is the auxiliary
function ``beta log|det A| - 1/2 sum_r a_r G_r a_r^T`` (Kaldi ``MlltAccs::Update``); the caller
re-estimates the variances by EM between MLLT updates, as in Kaldi's ``train_lda_mllt.sh``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from asr.transforms._post import (CHUNK, as_dense_posteriors, check_features, check_gmm_params, check_ids,
                                  outer_sum_by_dim)


class MlltStats:
    """Per-Gaussian statistics for MLLT: ``counts (J,)``, ``sums (J, D)``, ``scatter (J, D, D)``
    (float64). Frames are given in the feature space the transform will act on (e.g. after LDA).
    """

    def __init__(self, dim: int, num_gauss: int) -> None:
        if dim <= 0 or num_gauss <= 0:
            raise ValueError(f"dim and num_gauss must be positive, got {dim}, {num_gauss}")
        self.dim = dim
        self.num_gauss = num_gauss
        self.counts = torch.zeros(num_gauss, dtype=torch.float64)
        self.sums = torch.zeros(num_gauss, dim, dtype=torch.float64)
        self.scatter = torch.zeros(num_gauss, dim, dim, dtype=torch.float64)

    def accumulate(self, x: Tensor, post: Tensor, weights: Tensor | None = None) -> None:
        """Add frames ``x (N, D)`` with Gaussian posteriors ``post``.

        ``post`` is a LongTensor ``(N,)`` of Gaussian ids (optionally weighted by ``weights (N,)``),
        or soft posteriors ``(N, J)`` (dense or torch sparse COO).
        """
        x = check_features(x, self.dim)
        n = x.shape[0]
        if n == 0:
            return
        if not post.is_sparse and post.dtype in (torch.int64, torch.int32) and post.dim() == 1:
            ids, w = check_ids(post, n, self.num_gauss, weights)
            self.counts.index_add_(0, ids, w)
            self.sums.index_add_(0, ids, x * w[:, None])
            for lo in range(0, n, CHUNK):
                xs, ws = x[lo:lo + CHUNK], w[lo:lo + CHUNK]
                self.scatter.index_add_(0, ids[lo:lo + CHUNK], (xs * ws[:, None])[:, :, None] * xs[:, None, :])
            return
        p = as_dense_posteriors(post, n, self.num_gauss, weights)
        self.counts += p.sum(0)
        self.sums += p.T @ x
        frames, gauss = torch.nonzero(p, as_tuple=True)           # sparse (frame, Gaussian) pairs
        for lo in range(0, frames.numel(), CHUNK):
            f, j = frames[lo:lo + CHUNK], gauss[lo:lo + CHUNK]
            xw = x[f] * p[f, j][:, None]
            self.scatter.index_add_(0, j, xw[:, :, None] * x[f][:, None, :])

    def merge(self, other: "MlltStats") -> None:
        """Add another accumulator of the same shape."""
        if (other.dim, other.num_gauss) != (self.dim, self.num_gauss):
            raise ValueError("cannot merge MLLT stats of different shapes")
        self.counts += other.counts
        self.sums += other.sums
        self.scatter += other.scatter

    def covariances(self, min_count: float | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(beta (J',), W (J', D, D))`` over Gaussians with count >= ``min_count``
        (default ``D + 1``: below that a full covariance is singular, and the semi-tied
        likelihood is unbounded along its null space)."""
        keep = self.counts >= (self.dim + 1 if min_count is None else max(min_count, 1e-10))
        if not keep.any():
            raise ValueError(f"MLLT stats have no Gaussian with enough frames "
                             f"(max count {float(self.counts.max()):.1f})")
        beta = self.counts[keep]
        mean = self.sums[keep] / beta[:, None]
        cov = self.scatter[keep] / beta[:, None, None] - mean[:, :, None] * mean[:, None, :]
        return beta, 0.5 * (cov + cov.transpose(1, 2))


class MlltModelStats:
    """Kaldi-style MLLT statistics relative to a diagonal GMM with ``means (J, D)`` and
    ``vars (J, D)`` (features in the current space). Memory ``O(D^3 + J D)``.

    Attributes (float64): ``beta`` (total count), ``counts (J,)``, ``sums (J, D)`` and
    ``quad (D, D, D)`` = ``sum_t q_tr x_t x_t^T`` with ``q_tr = sum_j gamma_tj / s_jr``; the
    property ``g`` assembles ``G (D, D, D)`` from them.
    """

    def __init__(self, means: Tensor, vars: Tensor) -> None:
        if means.dim() != 2 or vars.shape != means.shape:
            raise ValueError(f"means and vars must both be (J, D), got {tuple(means.shape)}, {tuple(vars.shape)}")
        check_gmm_params(means, vars)
        self.means, self.vars = means.to(torch.float64), vars.to(torch.float64)
        self.num_gauss, self.dim = self.means.shape
        self.counts = torch.zeros(self.num_gauss, dtype=torch.float64)
        self.sums = torch.zeros(self.num_gauss, self.dim, dtype=torch.float64)
        self.quad = torch.zeros(self.dim, self.dim, self.dim, dtype=torch.float64)

    @property
    def beta(self) -> float:
        return float(self.counts.sum())

    def accumulate(self, x: Tensor, post: Tensor, weights: Tensor | None = None) -> None:
        """Add frames ``x (N, D)`` with Gaussian posteriors: LongTensor ids ``(N,)`` (optionally
        weighted by ``weights (N,)``) or soft ``(N, J)`` (dense or torch sparse COO)."""
        x = check_features(x, self.dim)
        n = x.shape[0]
        if n == 0:
            return
        inv_vars = 1.0 / self.vars
        if not post.is_sparse and post.dtype in (torch.int64, torch.int32) and post.dim() == 1:
            ids, w = check_ids(post, n, self.num_gauss, weights)
            q = w[:, None] * inv_vars[ids]                                  # (N, D)
            self.counts.index_add_(0, ids, w)
            self.sums.index_add_(0, ids, x * w[:, None])
        else:
            p = as_dense_posteriors(post, n, self.num_gauss, weights)
            q = p @ inv_vars
            self.counts += p.sum(0)
            self.sums += p.T @ x
        self.quad += outer_sum_by_dim(q, x, x)

    def accumulate_pairs(self, x: Tensor, rows: Tensor, ids: Tensor, weights: Tensor) -> None:
        """Add (frame, Gaussian) pairs: frame ``x[rows[k]]`` on Gaussian ``ids[k]`` with posterior
        ``weights[k]``, for frames ``x (T, D)``. The same statistics as :meth:`accumulate` of the
        pairs' frames, but ``quad`` is summed over frames, not pairs (a frame's pairs share its
        outer product: ``q_tr`` adds up over them first), which is several times less work when
        frames have several Gaussians each."""
        x = check_features(x, self.dim)
        if rows.shape != ids.shape or weights.shape != ids.shape or rows.dim() != 1:
            raise ValueError(f"rows, ids and weights must be equal 1-D shapes, got {tuple(rows.shape)}, "
                             f"{tuple(ids.shape)}, {tuple(weights.shape)}")
        if ids.numel() == 0:
            return
        _, w = check_ids(ids, ids.numel(), self.num_gauss, weights)
        if int(rows.min()) < 0 or int(rows.max()) >= x.shape[0]:
            raise ValueError(f"frame indices must lie in [0, {x.shape[0]})")
        ids = ids.long()
        inv_vars = 1.0 / self.vars
        q = torch.zeros(x.shape[0], self.dim, dtype=torch.float64)
        for lo in range(0, ids.numel(), CHUNK * 8):         # bounds the (pairs, D) temporaries
            sl = slice(lo, lo + CHUNK * 8)
            r, g, wk = rows[sl], ids[sl], w[sl]
            q.index_add_(0, r, wk[:, None] * inv_vars[g])
            self.counts.index_add_(0, g, wk)
            self.sums.index_add_(0, g, x[r] * wk[:, None])
        used = torch.unique(rows)
        self.quad += outer_sum_by_dim(q[used], x[used], x[used])

    def merge(self, other: "MlltModelStats") -> None:
        """Add another accumulator made with the same model."""
        if other.means.shape != self.means.shape or not torch.equal(other.means, self.means) \
                or not torch.equal(other.vars, self.vars):
            raise ValueError("cannot merge MLLT stats accumulated with different models")
        self.counts += other.counts
        self.sums += other.sums
        self.quad += other.quad

    @property
    def g(self) -> Tensor:
        """``G (D, D, D)``: ``G_r = sum_j 1/s_jr sum_t gamma_tj (x_t - mu_j)(x_t - mu_j)^T``."""
        iv, mu = 1.0 / self.vars, self.means
        # one (D, J) @ (J, D) product per output dimension keeps memory at O(J D)
        cross = torch.stack([(self.sums * iv[:, r, None]).T @ mu for r in range(self.dim)])
        const = torch.stack([(mu * (iv[:, r] * self.counts)[:, None]).T @ mu for r in range(self.dim)])
        g = self.quad - cross - cross.transpose(1, 2) + const
        return 0.5 * (g + g.transpose(1, 2))


def _diag_vars(a: Tensor, cov: Tensor, floor: float) -> Tensor:
    """ML diagonal variances ``(J, D)``: ``s_jr = a_r W_j a_r^T``."""
    return torch.einsum("rd,jde,re->jr", a, cov, a).clamp_min(floor)


def mllt_objective(a: Tensor, stats: MlltStats | MlltModelStats, var_floor: float = 1e-10,
                   min_count: float | None = None) -> float:
    """For ``MlltStats``: log-likelihood ``L(A)`` (total over frames, nats) of the stats under
    semi-tied covariances with transform ``a (D, D)`` and ML diagonal variances. For
    ``MlltModelStats``: the auxiliary function ``beta log|det A| - 1/2 sum_r a_r G_r a_r^T``
    (see module docstring). ``min_count`` selects Gaussians as in ``MlltStats.covariances``."""
    a = a.to(torch.float64)
    if a.shape != (stats.dim, stats.dim):
        raise ValueError(f"A must be ({stats.dim}, {stats.dim}), got {tuple(a.shape)}")
    if isinstance(stats, MlltModelStats):
        _, logdet = torch.linalg.slogdet(a)
        return float(stats.beta * logdet - 0.5 * torch.einsum("rd,rde,re->", a, stats.g, a))
    beta, cov = stats.covariances(min_count)
    total = float(beta.sum())
    _, logdet = torch.linalg.slogdet(a)
    logvar = _diag_vars(a, cov, var_floor).log()
    return float(total * logdet - 0.5 * (beta[:, None] * logvar).sum()
                 - 0.5 * total * stats.dim * (1.0 + math.log(2 * math.pi)))


def _row_sweep(a: Tensor, g_inv: Tensor, total: float) -> None:
    """One pass of Gales' row update over all rows of ``a``, in place."""
    for r in range(a.shape[0]):
        c = torch.linalg.inv(a)[:, r]          # cofactor row up to the factor det(A)
        cg = c @ g_inv[r]
        a[r] = cg * math.sqrt(total / float(cg @ c))


def _invert_g(g: Tensor) -> Tensor:
    try:
        return torch.linalg.inv(g)
    except RuntimeError as e:
        raise ValueError("MLLT G statistics are singular (too little data)") from e


def estimate_mllt(stats: MlltStats | MlltModelStats, iters: int = 10, a0: Tensor | None = None,
                  row_iters: int = 1, var_floor: float = 1e-10, min_count: float | None = None) -> Tensor:
    """Estimate the semi-tied transform ``A (D, D)`` (float64), starting from ``a0`` (default I).

    ``MlltStats``: ``iters`` outer iterations, each re-estimating the diagonal variances and then
    sweeping the rows ``row_iters`` times; model means become ``A mu_j`` and variances
    ``diag(A W_j A^T)``. ``MlltModelStats``: ``iters`` row sweeps with ``G`` fixed (Kaldi);
    transform the means with ``A`` and re-estimate the variances afterwards.
    The returned ``A`` is applied to features as ``y = A x``. ``min_count`` (``MlltStats`` only):
    Gaussians with fewer frames are left out (default ``D + 1``, see ``MlltStats.covariances``).
    """
    d = stats.dim
    a = torch.eye(d, dtype=torch.float64) if a0 is None else a0.to(torch.float64).clone()
    if a.shape != (d, d):
        raise ValueError(f"A0 must be ({d}, {d}), got {tuple(a.shape)}")
    if abs(float(torch.linalg.det(a))) == 0.0:
        raise ValueError("A0 is singular")
    if isinstance(stats, MlltModelStats):
        if stats.beta <= 0:
            raise ValueError("MLLT stats are empty")
        g_inv = _invert_g(stats.g)
        for _ in range(iters):
            _row_sweep(a, g_inv, stats.beta)
        return a
    beta, cov = stats.covariances(min_count)
    total = float(beta.sum())
    for _ in range(iters):
        inv_vars = 1.0 / _diag_vars(a, cov, var_floor)                      # (J, D)
        g = torch.einsum("jr,jde->rde", beta[:, None] * inv_vars, cov)       # (D, D, D)
        g = 0.5 * (g + g.transpose(1, 2))
        g_inv = _invert_g(g)
        for _ in range(row_iters):
            _row_sweep(a, g_inv, total)
    return a
