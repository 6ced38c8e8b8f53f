"""Extended Baum-Welch for (boosted) MMI of GMMs: reduces to ML without denominator, keeps
variances positive, and raises the MMI objective on a toy two-class problem."""
from __future__ import annotations

import torch

from asr.gmm.model import DiagGmmSet, GmmAccs
from asr.seqtrain.ebw import accumulate_den, ebw_update

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
