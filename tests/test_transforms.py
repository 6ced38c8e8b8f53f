"""LDA / MLLT / fMLLR against independent references on small synthetic problems."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from asr.transforms import (FmllrStats, LdaStats, MlltStats, apply_fmllr, apply_transform,
                            compose_transforms, estimate_fmllr, estimate_lda, estimate_mllt,
                            fmllr_objective, identity_fmllr, lda_eigen, mllt_objective)


def _classes(gen: torch.Generator, n_per: int = 300, c: int = 5, d: int = 6):
    means = 3.0 * torch.randn(c, d, generator=gen, dtype=torch.float64)
    mix = torch.randn(d, d, generator=gen, dtype=torch.float64)
    labels = torch.arange(c).repeat_interleave(n_per)
    x = means[labels] + torch.randn(c * n_per, d, generator=gen, dtype=torch.float64) @ mix
    return x, labels


# ----------------------------------------------------------------------------------------- LDA
def test_lda_matches_sklearn_eigen_solver():
    gen = torch.Generator().manual_seed(0)
    x, labels = _classes(gen)
    stats = LdaStats(6)
    for chunk in torch.arange(len(x)).split(137):        # streaming over "utterances"
        stats.accumulate(x[chunk].float(), labels[chunk])
    evals, full = lda_eigen(stats)
    a = estimate_lda(stats, 3)
    assert a.shape == (3, 6) and a.dtype == torch.float64

    sk = LinearDiscriminantAnalysis(solver="eigen").fit(x.numpy(), labels.numpy())
    k = 4                                                  # C - 1 non-zero eigenvalues
    ratio = (evals[:k] / evals.sum()).numpy()
    np.testing.assert_allclose(ratio, sk.explained_variance_ratio_[:k], rtol=1e-5)
    # same directions, same scale (generalised eigenvectors normalised by v^T W v = 1), up to sign
    ref = torch.from_numpy(sk.scalings_[:, :3]).T
    for row, r in zip(a, ref):
        cos = float(row @ r / (row.norm() * r.norm()))
        assert abs(abs(cos) - 1) < 1e-6
        assert abs(float(row.norm() / r.norm()) - 1) < 1e-5
    assert evals[k:].abs().max() < 1e-8 and torch.all(evals[:-1] >= evals[1:])


def test_lda_whitens_within_class_and_diagonalises_between():
    gen = torch.Generator().manual_seed(1)
    x, labels = _classes(gen, c=4, d=5)
    stats = LdaStats(5)
    stats.accumulate(x, labels)
    evals, full = lda_eigen(stats)
    y = apply_transform(x, full)
    within = sum(torch.cov(y[labels == c].T, correction=0) * (labels == c).sum() for c in range(4)) / len(y)
    torch.testing.assert_close(within, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    mu = torch.stack([y[labels == c].mean(0) for c in range(4)]) - y.mean(0)
    between = mu.T @ mu * (len(y) // 4) / len(y)
    torch.testing.assert_close(between, torch.diag(evals), atol=1e-8, rtol=0)


def test_lda_weights_and_merge_equal_repeated_frames():
    gen = torch.Generator().manual_seed(2)
    x, labels = _classes(gen, n_per=20, c=3, d=4)
    s1 = LdaStats(4)
    s1.accumulate(x, labels, weights=torch.full((len(x),), 2.0))
    s2, s3 = LdaStats(4), LdaStats(4)
    s2.accumulate(x, labels)
    s3.accumulate(x[labels < 2], labels[labels < 2])
    s3.accumulate(x[labels == 2], labels[labels == 2])
    s2.merge(s3)
    torch.testing.assert_close(estimate_lda(s1, 2), estimate_lda(s2, 2))


def test_lda_bad_input():
    stats = LdaStats(3)
    with pytest.raises(ValueError, match="shape"):
        stats.accumulate(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        stats.accumulate(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        stats.accumulate(torch.full((2, 3), float("nan")), torch.zeros(2, dtype=torch.long))
    stats.accumulate(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="two classes"):
        estimate_lda(stats, 2)
    with pytest.raises(ValueError, match="out_dim"):
        estimate_lda(stats, 4)


# ---------------------------------------------------------------------------------------- MLLT
def _semitied_data(gen: torch.Generator, d: int = 4, j: int = 6, n_per: int = 2000):
    """Frames whose Gaussians are diagonal in the space z = R x."""
    r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    r = r @ torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.5][:d], dtype=torch.float64))
    means = 2.0 * torch.randn(j, d, generator=gen, dtype=torch.float64)
    logstd = 1.2 * torch.randn(j, d, generator=gen, dtype=torch.float64)
    ids = torch.arange(j).repeat_interleave(n_per)
    z = means[ids] + torch.randn(len(ids), d, generator=gen, dtype=torch.float64) * logstd.exp()[ids]
    x = torch.linalg.solve(r, z.T).T
    return x, ids, r


def test_mllt_objective_matches_direct_loglik():
    gen = torch.Generator().manual_seed(3)
    x, ids, _ = _semitied_data(gen, n_per=200)
    stats = MlltStats(4, 6)
    stats.accumulate(x, ids)
    a = torch.randn(4, 4, generator=gen, dtype=torch.float64) + 2 * torch.eye(4, dtype=torch.float64)
    y = x @ a.T
    direct = 0.0
    for j in range(6):
        yj = y[ids == j]
        var = yj.var(0, unbiased=False)
        dist = torch.distributions.Normal(yj.mean(0), var.sqrt())
        direct += float(dist.log_prob(yj).sum()) + len(yj) * float(torch.linalg.slogdet(a)[1])
    assert mllt_objective(a, stats) == pytest.approx(direct, rel=1e-9)


def test_mllt_objective_never_decreases_and_is_stationary():
    gen = torch.Generator().manual_seed(4)
    x, ids, _ = _semitied_data(gen, n_per=300)
    post = torch.softmax(torch.randn(len(ids), 6, generator=gen, dtype=torch.float64) + 4 * torch.nn.functional.one_hot(ids, 6), 1)
    stats = MlltStats(4, 6)
    stats.accumulate(x, post)
    a = torch.eye(4, dtype=torch.float64)
    objs = [mllt_objective(a, stats)]
    for _ in range(15):
        a = estimate_mllt(stats, iters=1, a0=a)
        objs.append(mllt_objective(a, stats))
    assert all(b >= o - 1e-9 * abs(o) for o, b in zip(objs, objs[1:]))
    assert objs[-1] > objs[0] + 100
    a = estimate_mllt(stats, iters=200, a0=a)
    best = mllt_objective(a, stats)
    for _ in range(20):                                   # a local maximum: no small step improves
        pert = a + 1e-3 * torch.randn(4, 4, generator=gen, dtype=torch.float64)
        assert mllt_objective(pert, stats) <= best + 1e-9 * abs(best)


def test_mllt_recovers_known_rotation():
    gen = torch.Generator().manual_seed(5)
    x, ids, r = _semitied_data(gen)
    stats = MlltStats(4, 6)
    for chunk in torch.arange(len(x)).split(1000):
        stats.accumulate(x[chunk], ids[chunk])
    a = estimate_mllt(stats, iters=100)
    m = a @ torch.linalg.inv(r)                  # should be a scaled permutation
    m = m / m.abs().max(1, keepdim=True).values
    assert sorted(m.abs().argmax(1).tolist()) == [0, 1, 2, 3]
    off = m.abs().sort(1).values[:, :-1]
    assert off.max() < 0.05, m
    assert mllt_objective(a, stats) >= mllt_objective(r, stats) - 1e-6 * abs(mllt_objective(r, stats))


def test_mllt_soft_one_hot_equals_hard_ids():
    gen = torch.Generator().manual_seed(6)
    x, ids, _ = _semitied_data(gen, n_per=50)
    s_hard, s_soft = MlltStats(4, 6), MlltStats(4, 6)
    s_hard.accumulate(x, ids)
    s_soft.accumulate(x, torch.nn.functional.one_hot(ids, 6).double().to_sparse())
    torch.testing.assert_close(s_hard.scatter, s_soft.scatter)
    torch.testing.assert_close(estimate_mllt(s_hard, 3), estimate_mllt(s_soft, 3))
    with pytest.raises(ValueError, match="ids"):
        s_hard.accumulate(x[:2], torch.tensor([0, 6]))


# --------------------------------------------------------------------------------------- fMLLR
def _gmm(gen: torch.Generator, j: int = 5, d: int = 3):
    means = 3.0 * torch.randn(j, d, generator=gen, dtype=torch.float64)
    vars = (0.5 * torch.randn(j, d, generator=gen, dtype=torch.float64)).exp()
    return means, vars


def _sample(gen, means, vars, n):
    ids = torch.randint(len(means), (n,), generator=gen)
    z = means[ids] + torch.randn(n, means.shape[1], generator=gen, dtype=torch.float64) * vars[ids].sqrt()
    return z, ids


def _posteriors(y, means, vars):
    ll = torch.distributions.Normal(means, vars.sqrt()).log_prob(y[:, None, :]).sum(-1)
    return torch.softmax(ll, dim=1)


def test_fmllr_recovers_known_affine_distortion():
    gen = torch.Generator().manual_seed(7)
    means, vars = _gmm(gen)
    z, ids = _sample(gen, means, vars, 20000)
    a_true = torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(3, 3, generator=gen, dtype=torch.float64)
    b_true = torch.randn(3, generator=gen, dtype=torch.float64)
    x = torch.linalg.solve(a_true, (z - b_true).T).T       # so that z = A x + b
    w_true = torch.cat([a_true, b_true[:, None]], 1)
    post = torch.nn.functional.one_hot(ids, 5).double()
    stats = FmllrStats(3)
    for chunk in torch.arange(len(x)).split(4096):
        stats.accumulate(x[chunk].float(), post[chunk], means, vars)
    w = estimate_fmllr(stats, iters=20)
    assert (w - w_true).abs().max() < 0.05, (w, w_true)
    hard = FmllrStats(3)                                   # Gaussian ids == one-hot posteriors
    hard.accumulate(x, ids, means, vars)
    torch.testing.assert_close(hard.g, stats.g)
    torch.testing.assert_close(hard.k, stats.k)
    assert (apply_fmllr(x, w) - z).abs().mean() < 0.05


def test_fmllr_objective_increases_and_matches_direct_loglik():
    gen = torch.Generator().manual_seed(8)
    means, vars = _gmm(gen, j=4, d=3)
    z, _ = _sample(gen, means, vars, 2000)
    x = z @ torch.tensor([[1.2, 0.3, 0.0], [0.1, 0.8, 0.2], [0.0, -0.4, 1.1]], dtype=torch.float64).T + 0.7
    post = _posteriors(x, means, vars)                     # posteriors of the unadapted model
    stats = FmllrStats(3)
    stats.accumulate(x, post.to_sparse(), means, vars)
    w = identity_fmllr(3)
    objs = [fmllr_objective(w, stats)]
    for _ in range(10):
        w = estimate_fmllr(stats, iters=1, w0=w)
        objs.append(fmllr_objective(w, stats))
    assert all(b >= o - 1e-9 * abs(o) for o, b in zip(objs, objs[1:]))
    assert objs[-1] > objs[0] + 100

    def direct(wm):                                        # sum_tj gamma log N(W xi; mu_j, s_j) + beta log|A|
        y = apply_fmllr(x, wm)
        ll = torch.distributions.Normal(means, vars.sqrt()).log_prob(y[:, None, :]).sum(-1)
        return float((post * ll).sum() + post.sum() * torch.linalg.slogdet(wm[:, :3])[1])
    assert objs[-1] - objs[0] == pytest.approx(direct(w) - direct(identity_fmllr(3)), rel=1e-8)

    wg = estimate_fmllr(stats, iters=200, w0=w).requires_grad_(True)   # stationary point of Q
    y = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1) @ wg.T
    q = (post * torch.distributions.Normal(means, vars.sqrt()).log_prob(y[:, None, :]).sum(-1)).sum() \
        + post.sum() * torch.linalg.slogdet(wg[:, :3])[1]
    q.backward()
    assert wg.grad.abs().max() < 1e-6 * len(x)


def test_fmllr_identity_when_data_match_and_bad_input():
    gen = torch.Generator().manual_seed(9)
    means, vars = _gmm(gen)
    z, ids = _sample(gen, means, vars, 20000)
    stats = FmllrStats(3)
    stats.accumulate(z, _posteriors(z, means, vars), means, vars)
    w = estimate_fmllr(stats)
    assert (w - identity_fmllr(3)).abs().max() < 0.04
    with pytest.raises(ValueError, match="posteriors"):
        stats.accumulate(z[:5], torch.ones(5, 4), means, vars)
    with pytest.raises(ValueError, match="variances"):
        stats.accumulate(z[:5], torch.ones(5, 5), means, -vars)
    empty = FmllrStats(3)
    torch.testing.assert_close(estimate_fmllr(empty, min_count=10.0), identity_fmllr(3))


def test_compose_transforms_equals_sequential_application():
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    lda = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mllt = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    fmllr = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    both = compose_transforms(mllt, lda, in_dim=5)
    assert both.shape == (3, 5)
    torch.testing.assert_close(apply_transform(x, both), apply_transform(apply_transform(x, lda), mllt))
    all3 = compose_transforms(fmllr, both, in_dim=5)
    assert all3.shape == (3, 6)
    torch.testing.assert_close(apply_transform(x, all3), apply_fmllr(apply_transform(x, both), fmllr))
    aff = compose_transforms(mllt, all3, in_dim=5)
    torch.testing.assert_close(apply_transform(x, aff), apply_transform(apply_transform(x, all3), mllt))
    assert not math.isnan(float(aff.sum()))


def test_mllt_model_stats_match_full_stats_and_increase_aux():
    from asr.transforms import MlltModelStats
    gen = torch.Generator().manual_seed(11)
    x, ids, _ = _semitied_data(gen, n_per=300)
    full = MlltStats(4, 6)
    full.accumulate(x, ids)
    # the GMM whose means / variances are the per-Gaussian ML values at A = I
    beta, cov = full.covariances()
    means = full.sums / full.counts[:, None]
    model = MlltModelStats(means, torch.diagonal(cov, dim1=1, dim2=2))
    for chunk in torch.arange(len(x)).split(700):
        model.accumulate(x[chunk], ids[chunk])
    g_direct = torch.stack([sum(((x[ids == j] - means[j]).T @ (x[ids == j] - means[j])) / model.vars[j, r]
                                for j in range(6)) for r in range(4)])
    torch.testing.assert_close(model.g, g_direct)
    # one Gales iteration from I equals one Kaldi sweep with these stats
    torch.testing.assert_close(estimate_mllt(full, iters=1), estimate_mllt(model, iters=1))
    soft = MlltModelStats(means, model.vars)
    soft.accumulate(x, torch.nn.functional.one_hot(ids, 6).double())
    torch.testing.assert_close(soft.g, model.g)
    a = torch.eye(4, dtype=torch.float64)
    objs = [mllt_objective(a, model)]
    for _ in range(8):
        a = estimate_mllt(model, iters=1, a0=a)
        objs.append(mllt_objective(a, model))
    assert all(b >= o - 1e-9 * abs(o) for o, b in zip(objs, objs[1:])) and objs[-1] > objs[0]
    with pytest.raises(ValueError, match="variances"):
        MlltModelStats(means, -model.vars)


def test_mllt_ignores_gaussians_with_singular_covariance():
    gen = torch.Generator().manual_seed(12)
    x, ids, _ = _semitied_data(gen, n_per=200)
    stats = MlltStats(4, 7)
    stats.accumulate(x, ids)
    ref = estimate_mllt(stats, iters=5)
    stats.accumulate(torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.full((3,), 6))  # 3 < D+1 frames
    torch.testing.assert_close(estimate_mllt(stats, iters=5), ref)
    assert math.isfinite(mllt_objective(ref, stats))
    with pytest.raises(ValueError, match="enough frames"):
        estimate_mllt(stats, min_count=1e6)


def test_mllt_pair_statistics_equal_those_of_repeated_frames():
    """``accumulate_pairs`` (a frame's (frame, Gaussian) pairs summed before its outer product) gives
    the statistics of ``accumulate`` on the frames repeated once per pair, and ``outer_sum_by_dim``
    (one GEMM per chunk) equals its einsum definition across a chunk boundary."""
    from asr.transforms import MlltModelStats
    from asr.transforms._post import CHUNK, outer_sum_by_dim

    g = torch.Generator().manual_seed(8)
    T, D, J = 40, 3, 6
    x = torch.randn(T, D, generator=g, dtype=torch.float64)
    rows = torch.randint(0, T - 5, (120,), generator=g)          # the last frames have no pair
    ids = torch.randint(0, J, (120,), generator=g)
    w = torch.rand(120, generator=g, dtype=torch.float64)
    means, vars_ = torch.randn(J, D, generator=g), 0.5 + torch.rand(J, D, generator=g)
    a, b = MlltModelStats(means, vars_), MlltModelStats(means, vars_)
    a.accumulate(x[rows], ids, w)
    b.accumulate_pairs(x, rows, ids, w)
    torch.testing.assert_close(a.counts, b.counts)
    torch.testing.assert_close(a.sums, b.sums)
    torch.testing.assert_close(a.g, b.g)
    with pytest.raises(ValueError, match="frame indices"):
        b.accumulate_pairs(x, rows + T, ids, w)
    n = CHUNK + 7
    q, y = torch.rand(n, 2, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(outer_sum_by_dim(q, y, y), torch.einsum("nr,na,nb->rab", q, y, y))
