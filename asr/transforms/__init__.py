"""Feature-space transforms for the GMM baseline: pure tensor math, float64 internally.

Public API (stable; every estimate is a float64 tensor, ``y = A x`` / ``y = A x + b``):

LDA (Kaldi ``est-lda``)                          -- ``asr.transforms.lda``
    LdaStats(dim, num_classes=0)
        .accumulate(x: (N, D), labels: Long (N,), weights: (N,) | None = None)
        .merge(other) ; .covariances() -> (total, between, within)
    estimate_lda(stats, out_dim) -> A (out_dim, D)     within-class cov -> I, rows by eigenvalue
    lda_eigen(stats) -> (eigenvalues (D,), full matrix (D, D))

MLLT / semi-tied covariance (Gales 1999, Kaldi ``est-mllt``)   -- ``asr.transforms.mllt``
    MlltStats(dim, num_gauss)
        .accumulate(x: (N, D), post: Long (N,) gauss ids | (N, J) soft, weights=None) ; .merge(other)
    MlltModelStats(means: (J, D), vars: (J, D))      Kaldi MlltAccs: O(D^3) memory, for big systems
        .accumulate(x: (N, D), post: Long (N,) | (N, J), weights=None) ; .merge(other) ; .g -> (D, D, D)
    estimate_mllt(stats, iters=10, a0=None, row_iters=1) -> A (D, D)
        (MlltStats: Gales' variance re-estimation each iteration; MlltModelStats: G fixed, Kaldi)
    mllt_objective(A, stats) -> float   (log-likelihood / auxiliary function; never decreases)

fMLLR (Gales 1998, Kaldi ``FmllrDiagGmmAccs``)   -- ``asr.transforms.fmllr``
    FmllrStats(dim)
        .accumulate(x: (T, D), post: (T, J) dense/sparse COO | Long (T,) ids, means: (J, D), vars: (J, D),
                    weights=None) ; .merge(other)
        attributes beta: float, k: (D, D+1), g: (D, D+1, D+1)
    estimate_fmllr(stats, iters=10, w0=None, min_count=0.0) -> W = [A b] (D, D+1)
    fmllr_objective(W, stats) -> float  (beta log|det A| + sum_i w_i k_i - 1/2 w_i G_i w_i)
    apply_fmllr(x: (T, D), W) -> (T, D) ; identity_fmllr(dim) -> [I 0]

Generic                                           -- ``asr.transforms.affine``
    apply_transform(x: (N, D), M: (D_out, D) or (D_out, D+1)) -> (N, D_out)
    compose_transforms(outer, inner, in_dim) -> M    (inner first, as Kaldi compose-transforms)
"""
from asr.transforms.affine import apply_transform, compose_transforms
from asr.transforms.fmllr import FmllrStats, apply_fmllr, estimate_fmllr, fmllr_objective, identity_fmllr
from asr.transforms.lda import LdaStats, estimate_lda, lda_eigen
from asr.transforms.mllt import MlltModelStats, MlltStats, estimate_mllt, mllt_objective

__all__ = [
    "LdaStats", "estimate_lda", "lda_eigen",
    "MlltStats", "MlltModelStats", "estimate_mllt", "mllt_objective",
    "FmllrStats", "estimate_fmllr", "fmllr_objective", "apply_fmllr", "identity_fmllr",
    "apply_transform", "compose_transforms",
]
