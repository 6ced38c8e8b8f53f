"""Extended Baum-Welch for (boosted) MMI of GMMs: reduces to ML without denominator, keeps
variances positive, and raises the MMI objective on a toy two-class problem; the batch statistics
that score only the lattices' (frame, pdf) pairs equal the dense computation."""
from __future__ import annotations

import pytest
import torch

from asr.gmm.model import DiagGmmSet, GmmAccs
from asr.seqtrain.ebw import accumulate_batch, accumulate_den, ebw_update
from asr.seqtrain.lattice import expand_lattice, lattice_forward_backward, lattice_frame_accuracy
from test_seqtrain_lattice import PDF2PHONE, PDF2STATE, random_lattice

torch.set_num_threads(1)


def _toy(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # two overlapping classes in 2-D, one Gaussian each, initialised badly (ML on mixed data)
    x0 = torch.randn(400, 2, generator=g) * torch.tensor([1.0, 0.5]) + torch.tensor([0.0, 0.0])
    x1 = torch.randn(400, 2, generator=g) * torch.tensor([1.0, 0.5]) + torch.tensor([1.0, 0.3])
    x = torch.cat([x0, x1])
    y = torch.cat([torch.zeros(400, dtype=torch.long), torch.ones(400, dtype=torch.long)])
    gmm = DiagGmmSet(torch.tensor([[0.3, 0.05], [0.7, 0.25]]), torch.ones(2, 2), torch.zeros(2),
                     torch.arange(2), 2)
    return x, y, gmm


def mmi(gmm: DiagGmmSet, x: torch.Tensor, y: torch.Tensor) -> float:
    ll = gmm.loglikes(x).double()
    return float((ll[torch.arange(len(y)), y] - torch.logsumexp(ll, 1)).sum())


def _stats(gmm, x, y):
    num = GmmAccs.zeros(gmm.num_gauss, gmm.dim)
    den = GmmAccs.zeros(gmm.num_gauss, gmm.dim)
    gmm.accumulate(num, x, y)
    occ = torch.softmax(gmm.loglikes(x).double(), 1)
    accumulate_den(gmm, den, x, occ)
    return num, den


def test_without_denominator_ebw_is_the_ml_update():
    x, y, gmm = _toy()
    num, _ = _stats(gmm, x, y)
    zero = GmmAccs.zeros(gmm.num_gauss, gmm.dim)
    new, info = ebw_update(gmm, num, zero, E=2.0, tau=0.0)
    ml = gmm.update(num, remove_low_count=False)
    torch.testing.assert_close(new.means, ml.means, atol=1e-5, rtol=0)
    torch.testing.assert_close(new.vars, ml.vars, atol=1e-5, rtol=0)
    assert info["mean_D"] == 0.0


def test_ebw_raises_mmi_objective_and_keeps_variances_positive():
    x, y, gmm = _toy()
    before = mmi(gmm, x, y)
    objs = [before]
    for _ in range(4):
        num, den = _stats(gmm, x, y)
        assert torch.allclose(den.occ.sum(), torch.tensor(800.0, dtype=torch.float64))
        gmm, info = ebw_update(gmm, num, den, E=2.0, tau=0.0)
        assert bool((gmm.vars > 0).all())
        objs.append(mmi(gmm, x, y))
    assert all(b > a for a, b in zip(objs, objs[1:])), objs
    # a huge E keeps the model where it is (D -> infinity)
    num, den = _stats(gmm, x, y)
    same, _ = ebw_update(gmm, num, den, E=1e9, tau=0.0)
    torch.testing.assert_close(same.means, gmm.means, atol=1e-5, rtol=0)


def test_batch_statistics_over_used_pairs_equal_the_dense_computation():
    """accumulate_batch (only the lattice and reference pairs scored) against a dense (T, P)
    likelihood matrix, the dense lattice forward-backward and the per-utterance accumulators; a
    lattice whose total is not finite adds nothing."""
    g = torch.Generator().manual_seed(4)
    num_pdfs, dim = 4, 3
    comps = [1, 3, 2, 4]
    gauss2pdf = torch.repeat_interleave(torch.arange(num_pdfs), torch.tensor(comps))
    G = int(gauss2pdf.numel())
    gmm = DiagGmmSet(torch.randn(G, dim, generator=g), torch.rand(G, dim, generator=g) + 0.5,
                     torch.log_softmax(torch.randn(G, generator=g), 0), gauss2pdf, num_pdfs)
    lens = (5, 4, 6)
    refs = [torch.randint(0, num_pdfs, (t,), generator=g) for t in lens]
    lats = [expand_lattice(random_lattice(s, t_len=t), num_pdfs, PDF2PHONE, PDF2STATE, r)
            for s, (t, r) in enumerate(zip(lens, refs))]
    lats[2].final.fill_(float("-inf"))                         # no complete path: left out
    feats = [torch.randn(t, dim, generator=g) for t in lens]
    kappa = 0.3
    boost = [0.1 * lattice_frame_accuracy(la, r, "mpfe", PDF2PHONE) for la, r in zip(lats, refs)]
    num, den = GmmAccs.zeros(G, dim), GmmAccs.zeros(G, dim)
    logz, num_score = accumulate_batch(gmm, num, den, feats, refs, lats, kappa, boost)

    pad = torch.zeros(3, max(lens), num_pdfs, dtype=torch.float64)
    for k, x in enumerate(feats):
        pad[k, :lens[k]] = gmm.loglikes(x).double()
    fb = lattice_forward_backward(lats, kappa * pad, boost=boost)
    num_ref, den_ref = GmmAccs.zeros(G, dim), GmmAccs.zeros(G, dim)
    for k in range(2):
        gmm.accumulate(num_ref, feats[k], refs[k])
        accumulate_den(gmm, den_ref, feats[k], fb.occ[k, :lens[k]])
        score = kappa * pad[k, torch.arange(lens[k]), refs[k]].sum()
        assert float(num_score[k]) == pytest.approx(float(score), abs=1e-5)
    torch.testing.assert_close(logz[:2], fb.logz[:2], atol=1e-5, rtol=0)
    assert not torch.isfinite(logz[2])
    for got, want in ((num, num_ref), (den, den_ref)):
        assert float(want.occ.sum()) == pytest.approx(sum(lens[:2]), abs=1e-3)
        for f in ("occ", "x", "x2"):
            torch.testing.assert_close(getattr(got, f), getattr(want, f), atol=1e-5, rtol=1e-5)
    # the batch size is a speed setting only: one utterance at a time gives the same sums and
    # per-utterance totals (up to rounding: the pairs' likelihoods come from products of other shapes)
    num1, den1 = GmmAccs.zeros(G, dim), GmmAccs.zeros(G, dim)
    for k in range(3):
        lz, ns = accumulate_batch(gmm, num1, den1, feats[k:k + 1], refs[k:k + 1], lats[k:k + 1], kappa, boost[k:k + 1])
        assert bool(torch.isfinite(lz[0])) == bool(torch.isfinite(logz[k]))
        if torch.isfinite(lz[0]):
            torch.testing.assert_close(lz, logz[k:k + 1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ns, num_score[k:k + 1], atol=1e-6, rtol=1e-6)
    for got, want in ((num1, num), (den1, den)):
        for f in ("occ", "x", "x2"):
            torch.testing.assert_close(getattr(got, f), getattr(want, f), atol=1e-6, rtol=1e-6)
