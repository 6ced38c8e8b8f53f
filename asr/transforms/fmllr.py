"""fMLLR / constrained MLLR (Gales 1998; Kaldi ``FmllrDiagGmmAccs``).

A per-speaker affine transform ``W = [A b] (D, D+1)`` maps features ``y = A x + b`` into the
space of a diagonal-covariance GMM; the likelihood includes the Jacobian ``|det A|``
(M. J. F. Gales, "Maximum likelihood linear transformations for HMM-based speech
recognition", Computer Speech and Language 12, 1998, section 4). With extended frames
``xi = [x; 1]`` and Gaussian posteriors ``gamma_tj`` the sufficient statistics are

    beta = sum_tj gamma_tj
    K    (D, D+1):      k_i  = sum_tj gamma_tj mu_ji / s_ji xi_t^T
    G_i  (D+1, D+1):    G_i  = sum_tj gamma_tj / s_ji xi_t xi_t^T

and the auxiliary function (``fmllr_objective``, constant terms dropped) is

    Q(W) = beta log|det A| + sum_i ( w_i k_i^T - 1/2 w_i G_i w_i^T ).

``estimate_fmllr`` maximises it row by row: with ``p_i`` the cofactor row of ``A`` extended by a
zero, ``w_i = (alpha p_i + k_i) G_i^{-1}`` where ``alpha`` is the root of
``alpha^2 e1 + alpha e2 - beta = 0`` (``e1 = p_i G_i^{-1} p_i^T``, ``e2 = p_i G_i^{-1} k_i^T``)
maximising ``beta log|alpha e1 + e2| - alpha^2 e1 / 2`` (Gales 1998, eqs. 19-21).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from asr.transforms._post import check_features, check_gmm_params, check_ids, outer_sum_by_dim


class FmllrStats:
    """fMLLR statistics for one speaker: ``beta`` (float), ``k (D, D+1)``, ``g (D, D+1, D+1)``
    (float64)."""

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.beta = 0.0
        self.k = torch.zeros(dim, dim + 1, dtype=torch.float64)
        self.g = torch.zeros(dim, dim + 1, dim + 1, dtype=torch.float64)

    def accumulate(self, x: Tensor, post: Tensor, means: Tensor, vars: Tensor,
                   weights: Tensor | None = None) -> None:
        """Add frames ``x (T, D)`` for a diagonal GMM with ``means (J, D)`` and variances
        ``vars (J, D)``. Posteriors ``post``: soft ``(T, J)`` (dense or torch sparse COO), or a
        LongTensor ``(T,)`` of Gaussian ids (hard alignment) with optional ``weights (T,)``."""
        x = check_features(x, self.dim)
        t = x.shape[0]
        if means.dim() != 2 or means.shape[1] != self.dim or vars.shape != means.shape:
            raise ValueError(f"means and vars must both be (J, {self.dim}), got "
                             f"{tuple(means.shape)} and {tuple(vars.shape)}")
        j = means.shape[0]
        means, vars = means.to(torch.float64), vars.to(torch.float64)
        check_gmm_params(means, vars)
        inv_vars = 1.0 / vars
        if not post.is_sparse and post.dtype in (torch.int64, torch.int32) and post.dim() == 1:
            ids, w = check_ids(post, t, j, weights)
            q = w[:, None] * inv_vars[ids]                   # (T, D): sum_j gamma_tj / s_ji
            r = w[:, None] * (means * inv_vars)[ids]         # (T, D): sum_j gamma_tj mu_ji / s_ji
            total = float(w.sum())
        else:
            if weights is not None:
                raise ValueError("weights are only accepted with hard Gaussian ids")
            if post.shape != (t, j):
                raise ValueError(f"posteriors must be ({t}, {j}), got {tuple(post.shape)}")
            post = post.to(torch.float64)
            if post.is_sparse:
                post = post.coalesce()
                vals = post.values()
            else:
                vals = post
            if (vals < 0).any() or not torch.isfinite(vals).all():
                raise ValueError("posteriors must be finite and non-negative")
            mm = torch.sparse.mm if post.is_sparse else torch.mm
            q = mm(post, inv_vars)
            r = mm(post, means * inv_vars)
            total = float(vals.sum())
        self.accumulate_terms(x, q, r, total)

    def accumulate_terms(self, x: Tensor, q: Tensor, r: Tensor, total: float) -> None:
        """Add frames ``x (T, D)`` given their posterior-weighted model terms (float64):
        ``q[t, i] = sum_j gamma_tj / var_ji``, ``r[t, i] = sum_j gamma_tj mu_ji / var_ji`` and
        ``total = sum_tj gamma_tj`` (what :meth:`accumulate` derives from posteriors; a caller that
        has each frame's posteriors pdf by pdf computes them without a ``(T, J)`` matrix)."""
        x = check_features(x, self.dim).to(torch.float64)
        t = x.shape[0]
        if q.shape != (t, self.dim) or r.shape != (t, self.dim):
            raise ValueError(f"q and r must be ({t}, {self.dim}), got {tuple(q.shape)} and {tuple(r.shape)}")
        xi = torch.cat([x, torch.ones(t, 1, dtype=torch.float64)], dim=1)
        self.beta += float(total)
        self.k += r.to(torch.float64).T @ xi
        self.g += outer_sum_by_dim(q.to(torch.float64), xi, xi)

    def merge(self, other: "FmllrStats") -> None:
        """Add another accumulator of the same dimension."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge fMLLR stats of dim {other.dim} into dim {self.dim}")
        self.beta += other.beta
        self.k += other.k
        self.g += other.g


def identity_fmllr(dim: int) -> Tensor:
    """The transform ``[I 0]`` of shape ``(dim, dim+1)`` (float64)."""
    return torch.cat([torch.eye(dim, dtype=torch.float64), torch.zeros(dim, 1, dtype=torch.float64)], 1)


def fmllr_objective(w: Tensor, stats: FmllrStats) -> float:
    """Auxiliary function ``Q(W)`` (nats, summed over frames) of ``w (D, D+1)``."""
    d = stats.dim
    w = w.to(torch.float64)
    if w.shape != (d, d + 1):
        raise ValueError(f"W must be ({d}, {d + 1}), got {tuple(w.shape)}")
    _, logdet = torch.linalg.slogdet(w[:, :d])
    quad = torch.einsum("ia,iab,ib->", w, stats.g, w)
    return float(stats.beta * logdet + (w * stats.k).sum() - 0.5 * quad)


def estimate_fmllr(stats: FmllrStats, iters: int = 10, w0: Tensor | None = None,
                   min_count: float = 0.0) -> Tensor:
    """Estimate ``W = [A b] (D, D+1)`` (float64) by ``iters`` row-by-row sweeps from ``w0``
    (default ``[I 0]``). Returns ``[I 0]`` (or ``w0``) unchanged if ``beta <= min_count``."""
    d = stats.dim
    w = identity_fmllr(d) if w0 is None else w0.to(torch.float64).clone()
    if w.shape != (d, d + 1):
        raise ValueError(f"W0 must be ({d}, {d + 1}), got {tuple(w.shape)}")
    if stats.beta <= max(min_count, 0.0):
        return w
    g = 0.5 * (stats.g + stats.g.transpose(1, 2))
    try:
        g_inv = torch.linalg.inv(g)
    except RuntimeError as e:
        raise ValueError("fMLLR G statistics are singular (too little data for a full transform)") from e
    beta = stats.beta
    for _ in range(iters):
        for i in range(d):
            p = torch.zeros(d + 1, dtype=torch.float64)
            p[:d] = torch.linalg.inv(w[:, :d])[:, i]     # cofactor row of A divided by det(A)
            gp, gk = g_inv[i] @ p, g_inv[i] @ stats.k[i]
            e1, e2 = float(p @ gp), float(p @ gk)
            disc = math.sqrt(e2 * e2 + 4.0 * e1 * beta)
            roots = ((-e2 + disc) / (2 * e1), (-e2 - disc) / (2 * e1))
            alpha = max(roots, key=lambda a: beta * math.log(abs(a * e1 + e2)) - 0.5 * a * a * e1)
            w[i] = alpha * gp + gk
    return w


def apply_fmllr(x: Tensor, w: Tensor) -> Tensor:
    """``y = x A^T + b`` for ``x (T, D)`` and ``w = [A b] (D, D+1)``; result in the dtype of ``x``."""
    d = x.shape[-1]
    if w.shape != (d, d + 1):
        raise ValueError(f"fMLLR transform must be ({d}, {d + 1}), got {tuple(w.shape)}")
    w = w.to(torch.float64)
    return (x.to(torch.float64) @ w[:, :d].T + w[:, d]).to(x.dtype)
