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
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from asr.transforms._post import as_dense_posteriors, check_features, check_ids


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
            self.scatter.index_add_(0, ids, (x * w[:, None])[:, :, None] * x[:, None, :])
            return
        p = as_dense_posteriors(post, n, self.num_gauss, weights)
        self.counts += p.sum(0)
        self.sums += p.T @ x
        active = torch.nonzero(p.sum(0) > 0).squeeze(1)
        pa = p[:, active]
        self.scatter[active] += torch.einsum("nj,nd,ne->jde", pa, x, x)

    def merge(self, other: "MlltStats") -> None:
        """Add another accumulator of the same shape."""
        if (other.dim, other.num_gauss) != (self.dim, self.num_gauss):
            raise ValueError("cannot merge MLLT stats of different shapes")
        self.counts += other.counts
        self.sums += other.sums
        self.scatter += other.scatter

    def covariances(self, min_count: float = 1e-10) -> tuple[Tensor, Tensor]:
        """Return ``(beta (J',), W (J', D, D))`` over Gaussians with count > ``min_count``."""
        keep = self.counts > min_count
        if not keep.any():
            raise ValueError("MLLT stats are empty")
        beta = self.counts[keep]
        mean = self.sums[keep] / beta[:, None]
        cov = self.scatter[keep] / beta[:, None, None] - mean[:, :, None] * mean[:, None, :]
        return beta, 0.5 * (cov + cov.transpose(1, 2))


def _diag_vars(a: Tensor, cov: Tensor, floor: float) -> Tensor:
    """ML diagonal variances ``(J, D)``: ``s_jr = a_r W_j a_r^T``."""
    return torch.einsum("rd,jde,re->jr", a, cov, a).clamp_min(floor)


def mllt_objective(a: Tensor, stats: MlltStats, var_floor: float = 1e-10) -> float:
    """Log-likelihood ``L(A)`` (total over frames, nats) of the stats under semi-tied covariances
    with transform ``a (D, D)`` and ML diagonal variances (see module docstring)."""
    a = a.to(torch.float64)
    if a.shape != (stats.dim, stats.dim):
        raise ValueError(f"A must be ({stats.dim}, {stats.dim}), got {tuple(a.shape)}")
    beta, cov = stats.covariances()
    total = float(beta.sum())
    _, logdet = torch.linalg.slogdet(a)
    logvar = _diag_vars(a, cov, var_floor).log()
    return float(total * logdet - 0.5 * (beta[:, None] * logvar).sum()
                 - 0.5 * total * stats.dim * (1.0 + math.log(2 * math.pi)))


def estimate_mllt(stats: MlltStats, iters: int = 10, a0: Tensor | None = None,
                  row_iters: int = 1, var_floor: float = 1e-10) -> Tensor:
    """Estimate the semi-tied transform ``A (D, D)`` (float64), starting from ``a0`` (default I).

    ``iters`` outer iterations, each re-estimating the diagonal variances and then sweeping the
    rows ``row_iters`` times. The returned ``A`` is applied to features as ``y = A x``; model
    means become ``A mu_j`` and variances ``diag(A W_j A^T)``.
    """
    d = stats.dim
    a = torch.eye(d, dtype=torch.float64) if a0 is None else a0.to(torch.float64).clone()
    if a.shape != (d, d):
        raise ValueError(f"A0 must be ({d}, {d}), got {tuple(a.shape)}")
    if abs(float(torch.linalg.det(a))) == 0.0:
        raise ValueError("A0 is singular")
    beta, cov = stats.covariances()
    total = float(beta.sum())
    for _ in range(iters):
        inv_vars = 1.0 / _diag_vars(a, cov, var_floor)                      # (J, D)
        g = torch.einsum("jr,jde->rde", beta[:, None] * inv_vars, cov)       # (D, D, D)
        g = 0.5 * (g + g.transpose(1, 2))
        g_inv = torch.linalg.inv(g)
        for _ in range(row_iters):
            for r in range(d):
                c = torch.linalg.inv(a)[:, r]          # cofactor row up to the factor det(A)
                cg = c @ g_inv[r]
                a[r] = cg * math.sqrt(total / float(cg @ c))
    return a
