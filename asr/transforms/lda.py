"""Linear discriminant analysis with Kaldi ``est-lda`` semantics.

Stats: per-class zeroth/first order sums and the total second-order scatter, accumulated
streaming over utterances. Estimation (Kaldi ``LdaEstimate::Estimate``): with total covariance
``T``, between-class covariance ``B`` and within-class covariance ``W = T - B``, factor
``W = L L^T`` (Cholesky), eigen-decompose ``L^{-1} B L^{-T} = U diag(lambda) U^T`` and return the
rows of ``U^T L^{-1}`` belonging to the ``out_dim`` largest eigenvalues. The projected
within-class covariance is the identity and the projected between-class covariance is
``diag(lambda)`` (Fukunaga, *Introduction to Statistical Pattern Recognition*, 1990, ch. 10).
"""
from __future__ import annotations

import torch
from torch import Tensor

from asr.transforms._post import _check_weights, check_features


class LdaStats:
    """Streaming LDA statistics for ``dim``-dimensional features.

    The number of classes grows with the largest label seen (``num_classes`` may preset it).
    Attributes: ``counts (C,)``, ``sums (C, D)``, ``scatter (D, D)`` (sum of w x x^T), all float64.
    """

    def __init__(self, dim: int, num_classes: int = 0) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.sums = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def total_count(self) -> float:
        return float(self.counts.sum())

    def accumulate(self, x: Tensor, labels: Tensor, weights: Tensor | None = None) -> None:
        """Add frames ``x (N, D)`` with class ids ``labels (N,)`` and optional ``weights (N,)``."""
        x = check_features(x, self.dim)
        n = x.shape[0]
        if labels.shape != (n,) or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"labels must be an integer tensor of shape ({n},), got "
                             f"{labels.dtype} {tuple(labels.shape)}")
        if n == 0:
            return
        labels = labels.long()
        if int(labels.min()) < 0:
            raise ValueError("class labels must be non-negative")
        w = torch.ones(n, dtype=torch.float64) if weights is None else _check_weights(weights, n)
        need = int(labels.max()) + 1
        if need > self.num_classes:
            grow = need - self.num_classes
            self.counts = torch.cat([self.counts, torch.zeros(grow, dtype=torch.float64)])
            self.sums = torch.cat([self.sums, torch.zeros(grow, self.dim, dtype=torch.float64)])
        self.counts.index_add_(0, labels, w)
        self.sums.index_add_(0, labels, x * w[:, None])
        self.scatter += (x * w[:, None]).T @ x

    def merge(self, other: "LdaStats") -> None:
        """Add another accumulator (e.g. from a parallel job) into this one."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge LDA stats of dim {other.dim} into dim {self.dim}")
        c = max(self.num_classes, other.num_classes)
        for s in (self, other):
            if s.num_classes < c:
                g = c - s.num_classes
                s.counts = torch.cat([s.counts, torch.zeros(g, dtype=torch.float64)])
                s.sums = torch.cat([s.sums, torch.zeros(g, s.dim, dtype=torch.float64)])
        self.counts += other.counts
        self.sums += other.sums
        self.scatter += other.scatter

    def covariances(self) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(total, between, within)`` covariances ``(D, D)`` normalised by the total count."""
        n = self.total_count
        if n <= 0:
            raise ValueError("LDA stats are empty")
        mean = self.sums.sum(0) / n
        total = self.scatter / n - torch.outer(mean, mean)
        seen = self.counts > 0
        class_means = self.sums[seen] / self.counts[seen, None]
        centred = class_means - mean
        between = (centred * self.counts[seen, None]).T @ centred / n
        within = total - between
        return total, between, within


def lda_eigen(stats: LdaStats) -> tuple[Tensor, Tensor]:
    """Full LDA solution: eigenvalues ``(D,)`` in decreasing order and the matrix ``(D, D)``
    whose row ``k`` is the discriminant direction of eigenvalue ``k`` (float64)."""
    if int((stats.counts > 0).sum()) < 2:
        raise ValueError("LDA needs frames from at least two classes")
    _, between, within = stats.covariances()
    within = 0.5 * (within + within.T)
    try:
        chol = torch.linalg.cholesky(within)
    except RuntimeError as e:  # torch raises _LinAlgError, a RuntimeError subclass
        raise ValueError("within-class covariance is not positive definite "
                         "(too few frames or linearly dependent feature dimensions)") from e
    linv = torch.linalg.solve_triangular(chol, torch.eye(stats.dim, dtype=torch.float64), upper=False)
    bprime = linv @ between @ linv.T
    evals, evecs = torch.linalg.eigh(0.5 * (bprime + bprime.T))
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order], evecs[:, order]
    return evals, evecs.T @ linv


def estimate_lda(stats: LdaStats, out_dim: int) -> Tensor:
    """Estimate the LDA projection ``A (out_dim, D)`` (float64) so that ``y = A x``.

    Rows are sorted by decreasing discriminant eigenvalue; ``A W A^T = I`` for the within-class
    covariance ``W``. ``out_dim`` may not exceed ``D``.
    """
    if not 0 < out_dim <= stats.dim:
        raise ValueError(f"out_dim must be in [1, {stats.dim}], got {out_dim}")
    _, mat = lda_eigen(stats)
    return mat[:out_dim].contiguous()
