"""Tests of asr.gmm.model against direct computations on small random problems."""
from __future__ import annotations

import math

import torch

from asr.gmm.model import DiagGmmSet, GmmAccs, global_stats
from test_rbm import subnormals_kept  # noqa: F401  (fixture: flush-to-zero off for a test)


def _random_set(gen: torch.Generator, num_pdfs: int = 4, dim: int = 3, comps=(1, 3, 2, 4)) -> DiagGmmSet:
    g2p = torch.cat([torch.full((c,), p) for p, c in enumerate(comps)])
    G = g2p.numel()
    w = torch.rand(G, generator=gen) + 0.1
    wsum = torch.zeros(num_pdfs).index_add_(0, g2p, w)
    return DiagGmmSet(torch.randn(G, dim, generator=gen) * 2, torch.rand(G, dim, generator=gen) + 0.3,
                      torch.log(w / wsum[g2p]), g2p, num_pdfs)


def _direct_loglikes(m: DiagGmmSet, x: torch.Tensor) -> torch.Tensor:
    out = torch.full((x.shape[0], m.num_pdfs), -math.inf, dtype=torch.float64)
    for g in range(m.num_gauss):
        mu, v = m.means[g].double(), m.vars[g].double()
        lg = (-0.5 * (((x.double() - mu) ** 2) / v + torch.log(2 * math.pi * v)).sum(1)
              + m.log_weights[g].double())
        p = int(m.gauss2pdf[g])
        out[:, p] = torch.logaddexp(out[:, p], lg)
    return out


def test_loglikes_match_direct_per_gaussian_computation():
    gen = torch.Generator().manual_seed(0)
    m = _random_set(gen)
    x = torch.randn(50, 3, generator=gen) * 2
    ll = m.loglikes(x, chunk=17)
    assert ll.shape == (50, 4)
    torch.testing.assert_close(ll.double(), _direct_loglikes(m, x), rtol=1e-4, atol=1e-3)


def test_mstep_equals_closed_form_weighted_mean_and_variance():
    gen = torch.Generator().manual_seed(1)
    m = _random_set(gen)
    x = torch.randn(400, 3, generator=gen) * 1.5
    pdfs = torch.randint(0, 4, (400,), generator=gen)
    accs = GmmAccs.zeros(m.num_gauss, 3)
    m.accumulate(accs, x, pdfs)
    new = m.update(accs, min_var=1e-6, min_count=0.0, remove_low_count=False)
    # Direct: responsibilities within each frame's pdf, then weighted mean / variance.
    comp = torch.stack([_gauss_ll(m, g, x) for g in range(m.num_gauss)], 1)     # (T, G)
    mask = m.gauss2pdf[None, :] == pdfs[:, None]
    comp = comp.masked_fill(~mask, -math.inf)
    r = torch.softmax(comp, 1)                                                   # (T, G)
    occ = r.sum(0)
    mean = (r.T @ x.double()) / occ[:, None]
    var = (r.T @ x.double() ** 2) / occ[:, None] - mean ** 2
    torch.testing.assert_close(new.means.double(), mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(new.vars.double(), var, rtol=1e-4, atol=1e-4)
    pdf_occ = torch.zeros(4, dtype=torch.float64).index_add_(0, m.gauss2pdf, occ)
    torch.testing.assert_close(new.log_weights.double(), torch.log(occ / pdf_occ[m.gauss2pdf]),
                               rtol=1e-4, atol=1e-4)


def _gauss_ll(m: DiagGmmSet, g: int, x: torch.Tensor) -> torch.Tensor:
    mu, v = m.means[g].double(), m.vars[g].double()
    return (-0.5 * (((x.double() - mu) ** 2) / v + torch.log(2 * math.pi * v)).sum(1)
            + m.log_weights[g].double())


def test_em_steps_increase_log_likelihood_and_splitting_helps():
    gen = torch.Generator().manual_seed(2)
    # Data: two pdfs, each a 3-component mixture in 2-D.
    centres = torch.tensor([[[0., 0.], [4., 0.], [0., 4.]], [[-3., -3.], [3., 3.], [-3., 3.]]])
    pdfs = torch.randint(0, 2, (3000,), generator=gen)
    comp = torch.randint(0, 3, (3000,), generator=gen)
    x = centres[pdfs, comp] + 0.5 * torch.randn(3000, 2, generator=gen)
    mean, var = global_stats([x])
    m = DiagGmmSet.single(mean, var, 2)
    prev = -math.inf
    for it in range(40):
        accs = GmmAccs.zeros(m.num_gauss, 2)
        ll = m.accumulate(accs, x, pdfs) / x.shape[0]
        assert ll >= prev - 1e-5, (it, ll, prev)   # EM never decreases the likelihood
        m = m.update(accs, min_count=1.0)
        prev = ll
        if it in (2, 6):                            # mixing up may lower it once; restart the check
            m = m.split(6, accs.pdf_occupancy(m.gauss2pdf, 2), gen)
            prev = -math.inf
    assert m.num_gauss >= 6
    # True model: 2 x 0.726 nats (N(0, 0.25 I) entropy) + log 3 = 2.55 nats/frame.
    assert prev > -2.6
    single = DiagGmmSet.single(mean, var, 2)
    assert prev > single.gauss_posteriors(x, pdfs)[2].mean().item() + 0.5


def test_split_reaches_target_and_is_deterministic():
    gen = torch.Generator().manual_seed(3)
    m = _random_set(gen)
    occ = torch.tensor([1000.0, 100.0, 5000.0, 2000.0])
    a = m.split(30, occ, torch.Generator().manual_seed(7))
    b = m.split(30, occ, torch.Generator().manual_seed(7))
    assert abs(a.num_gauss - 30) <= 3 and a.num_gauss > m.num_gauss
    torch.testing.assert_close(a.means, b.means)
    # Weights still normalised per pdf; counts never drop; min_count cap respected (pdf 1: 100/20 = 5).
    w = torch.zeros(4).index_add_(0, a.gauss2pdf, a.log_weights.exp())
    torch.testing.assert_close(w, torch.ones(4))
    assert bool((a.num_comp >= m.num_comp).all()) and int(a.num_comp[1]) <= 5
    # The split pair straddles the parent mean: their weighted mean is unchanged per pdf.
    def pdf_mean(s):
        wm = s.log_weights.exp()[:, None] * s.means
        return torch.zeros(4, 3).index_add_(0, s.gauss2pdf, wm)
    torch.testing.assert_close(pdf_mean(a), pdf_mean(m), rtol=1e-4, atol=1e-4)


def test_low_count_gaussians_removed_and_variance_floored():
    gen = torch.Generator().manual_seed(4)
    m = DiagGmmSet(torch.tensor([[0.0], [10.0], [100.0]]), torch.ones(3, 1), torch.log(torch.full((3,), 1 / 3)),
                   torch.zeros(3, dtype=torch.long), 1)
    x = torch.cat([torch.zeros(50, 1), 10 + 0.001 * torch.randn(50, 1, generator=gen)])
    accs = GmmAccs.zeros(3, 1)
    m.accumulate(accs, x, torch.zeros(100, dtype=torch.long))
    new = m.update(accs, min_var=0.01, min_count=5.0)
    assert new.num_gauss == 2                      # the Gaussian at 100 got no data
    assert float(new.vars.min()) == torch.tensor(0.01).item()


def test_serialisation_round_trip():
    gen = torch.Generator().manual_seed(5)
    m = _random_set(gen)
    m2 = DiagGmmSet.from_dict(m.to_dict())
    x = torch.randn(10, 3, generator=gen)
    torch.testing.assert_close(m.loglikes(x), m2.loglikes(x))


def test_loglikes_of_a_pdf_subset_match_the_full_matrix():
    gen = torch.Generator().manual_seed(6)
    m = _random_set(gen)
    x = torch.randn(20, 3, generator=gen)
    sub = torch.tensor([3, 1])
    torch.testing.assert_close(m.loglikes_pdfs(x, sub), m.loglikes(x)[:, sub])


def test_gauss_posteriors_of_the_aligned_pdf_match_direct_computation():
    """Per-frame posteriors over the components of each frame's aligned pdf (grouped-by-pdf
    products) equal the direct per-Gaussian computation; padding slots are -1 / 0."""
    gen = torch.Generator().manual_seed(3)
    m = _random_set(gen)
    x = torch.randn(60, 3, generator=gen) * 2
    pdfs = torch.randint(0, 4, (60,), generator=gen)
    gauss, post, ll = m.gauss_posteriors(x, pdfs)
    torch.testing.assert_close(ll.double(), _direct_loglikes(m, x)[torch.arange(60), pdfs], rtol=1e-4, atol=1e-3)
    for t in range(60):
        gs = torch.nonzero(m.gauss2pdf == pdfs[t]).flatten()
        mu, v = m.means[gs].double(), m.vars[gs].double()
        lg = (-0.5 * (((x[t].double() - mu) ** 2) / v + torch.log(2 * math.pi * v)).sum(1)
              + m.log_weights[gs].double())
        want = torch.softmax(lg, 0)
        k = gs.numel()
        assert torch.equal(gauss[t, :k], gs) and bool((gauss[t, k:] == -1).all())
        torch.testing.assert_close(post[t, :k].double(), want, rtol=1e-4, atol=1e-5)
        assert float(post[t, k:].abs().sum()) == 0.0


def test_component_loglikes_row_buckets_match_the_dense_table():
    """Only the requested (frame, pdf) pairs are evaluated, each row in exactly one bucket; they
    equal the dense (T, P, M) table's rows, padding (-inf) included, over pdfs of several
    component-count buckets."""
    from asr.gmm.model import DiagGmmSet

    g = torch.Generator().manual_seed(0)
    P, D = 30, 5
    counts = torch.randint(1, 6, (P,), generator=g)
    g2p = torch.repeat_interleave(torch.arange(P), counts)
    G = g2p.numel()
    m = DiagGmmSet(torch.randn(G, D, generator=g), torch.rand(G, D, generator=g) + 0.5,
                   torch.log_softmax(torch.randn(G, generator=g), 0), g2p, P)
    x = torch.randn(50, D, generator=g)
    fr, pd = torch.randint(0, 50, (300,), generator=g), torch.randint(0, P, (300,), generator=g)
    dense = m.component_loglikes(x)[fr, pd]
    rows = torch.full_like(dense, float("nan"))
    for sel, comp in m.component_loglikes_row_buckets(x, fr, pd):
        assert bool(torch.isnan(rows[sel]).all())                    # no row in two buckets
        rows[sel] = -math.inf
        rows[sel, :comp.shape[1]] = comp
    assert not bool(torch.isnan(rows).any())                         # every row in one bucket
    pad = torch.isinf(dense)
    assert torch.equal(pad, torch.isinf(rows)) and pad.any()
    torch.testing.assert_close(rows[~pad], dense[~pad], rtol=1e-5, atol=1e-5)


def test_soft_gauss_posteriors_share_each_rows_weight_among_its_pdfs_gaussians():
    """Kaldi gmm-post-to-gpost: row r's weight goes to pdf[r]'s Gaussians in proportion to their
    posteriors for x[frame[r]]; pdfs of very different sizes (one large, as silence after mixing
    up) are evaluated bucket by bucket, and rows on the same frame add up."""
    from asr.gmm.fmllr_decode import soft_gauss_posteriors
    from asr.gmm.model import DiagGmmSet

    g = torch.Generator().manual_seed(3)
    P, D, T = 12, 4, 20
    counts = torch.randint(1, 5, (P,), generator=g)
    counts[0] = 60
    g2p = torch.repeat_interleave(torch.arange(P), counts)
    G = g2p.numel()
    m = DiagGmmSet(torch.randn(G, D, generator=g), torch.rand(G, D, generator=g) + 0.5,
                   torch.log_softmax(torch.randn(G, generator=g), 0), g2p, P)
    x = torch.randn(T, D, generator=g)
    fr, pd = torch.randint(0, T, (40,), generator=g), torch.randint(0, P, (40,), generator=g)
    pd[:5] = 0
    w = torch.rand(40, generator=g)
    got = soft_gauss_posteriors(m, x, fr, pd, w).to_dense()
    ref = torch.zeros(T, G, dtype=torch.float64)
    comp = m.component_loglikes(x)                                   # (T, P, M)
    first = torch.cumsum(counts, 0) - counts
    for r in range(40):
        p, t = int(pd[r]), int(fr[r])
        post = torch.softmax(comp[t, p, :int(counts[p])].double(), 0)
        ref[t, first[p]:first[p] + counts[p]] += float(w[r]) * post
    assert got.shape == (T, G)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    empty = soft_gauss_posteriors(m, x, fr[:0], pd[:0], w[:0])
    assert empty.shape == (T, G) and empty._nnz() == 0


def test_shortened_schedule_keeps_mixing_up_inside_it():
    from asr.gmm.stages import STAGE_CONFIGS

    for name, cls in STAGE_CONFIGS.items():
        cfg = cls()
        short = cfg.with_iters(10)
        assert type(short) is cls and short.num_iters == 10, name
        assert short.max_iter_inc == min(cfg.max_iter_inc, 7), name
        assert short.total_gauss == cfg.total_gauss and short.realign_iters == cfg.realign_iters, name
        assert cfg.with_iters(cfg.num_iters).max_iter_inc == cfg.max_iter_inc, name


def _tensor_floats(obj) -> int:
    """Float elements held by an object's tensor attributes (incl. the buckets' matrices)."""
    n = sum(v.numel() for v in vars(obj).values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    return n + sum(w.numel() for _, _, w in getattr(obj, "_buckets", []))


def test_decoding_never_builds_the_matrices_padded_to_the_largest_pdf():
    # one pdf with 300 components (silence after mixing up), 199 with 2: padding everything to 300
    # would be ~150x the model; decoding (loglikes) and alignment (loglikes_pdfs) must stay compact
    gen = torch.Generator().manual_seed(5)
    comps = (300,) + (2,) * 199
    m = _random_set(gen, num_pdfs=200, dim=3, comps=comps)
    x = torch.randn(40, 3, generator=gen)
    ll = m.loglikes(x)
    sub = m.loglikes_pdfs(x, torch.tensor([0, 3, 150]))
    compact = m.num_gauss * (2 * 3 + 1)
    assert _tensor_floats(m) < 6 * compact, _tensor_floats(m)
    torch.testing.assert_close(ll.double(), _direct_loglikes(m, x), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(sub, ll[:, [0, 3, 150]], rtol=0, atol=1e-4)
    # the training E-step builds the (P, M, 2D+1) table once, with the same numbers
    _, _, lp = m.gauss_posteriors(x, torch.zeros(40, dtype=torch.long))
    torch.testing.assert_close(lp, ll[:, 0], rtol=0, atol=1e-4)
    assert m._params_pdf.shape == (200, 300, 7)
    assert torch.equal(m._params_pdf[0], m._pdf_rows(torch.tensor([0]), 300)[0])


def test_floored_logsumexp_equals_the_plain_one_bit_for_bit():
    """The log-likelihoods raise exp() arguments below EXP_FLOOR (underflowing terms, a slow path of
    the CPU's exp) to the floor; the result must not change: components hundreds of nats apart,
    -inf padding, rows with one finite entry."""
    from asr.gmm.model import EXP_FLOOR, logsumexp_last

    g = torch.Generator().manual_seed(0)
    c = torch.randn(300, 40, 24, generator=g) * torch.tensor([1.0, 30.0, 300.0]).repeat(8)
    c[:, :, 20:] = float("-inf")
    c[:7, :5, 1:] = float("-inf")
    assert bool((c - c.amax(-1, keepdim=True) < EXP_FLOOR).any())
    assert torch.equal(logsumexp_last(c.clone()), torch.logsumexp(c, -1))


def test_exp_normal_min_is_where_torch_exp_stops_being_normal(subnormals_kept):
    """EXP_NORMAL_MIN: exp of it is a normal float32, exp of the next float below is not (vectorised
    and scalar kernels); exp_flushed_ is torch.exp except that those subnormals are 0, and NaN/-inf
    pass through. (With flush-to-zero kept off for the test: an earlier test's in-process ``asr``
    command may have turned it on, and then torch.exp returns no subnormals to compare with.)"""
    import numpy as np

    from asr.gmm.model import EXP_NORMAL_MIN, exp_flushed_

    tiny = torch.finfo(torch.float32).tiny
    c = np.float32(EXP_NORMAL_MIN)
    below = np.nextafter(c, np.float32(-np.inf))
    for n in (1, 64):                                   # scalar tail and vectorised body
        assert torch.exp(torch.full((n,), float(c))).min() >= tiny
        assert torch.exp(torch.full((n,), float(below))).max() < tiny
    a = torch.cat([torch.linspace(-120.0, 5.0, 5001), torch.tensor([float(c), float(below), float("-inf"),
                                                                    float("nan")])])
    ref, got = torch.exp(a), exp_flushed_(a.clone())
    normal = ref >= tiny
    assert torch.equal(got[normal], ref[normal]) and bool((got[~normal & ~a.isnan()] == 0).all())
    assert bool(got[-1].isnan()) and bool((ref[~normal & ~a.isnan()] > 0).any())   # the case is real


def test_component_posteriors_and_statistics_equal_the_plain_exp(subnormals_kept):
    """The E-step's posteriors skip exp's slow underflow path: the log-likelihoods, the float64
    statistics and every posterior above 1.2e-38 are those of torch.logsumexp / torch.exp."""
    from asr.gmm.model import DiagGmmSet, GmmAccs, component_posteriors

    g = torch.Generator().manual_seed(3)
    sel = torch.randn(500, 40, generator=g) * 60.0
    lse, post = component_posteriors(sel)
    ref_lse = torch.logsumexp(sel, 1)
    ref_post = torch.exp(sel - ref_lse[:, None])
    tiny = torch.finfo(torch.float32).tiny
    assert torch.equal(lse, ref_lse) and bool(((ref_post > 0) & (ref_post < tiny)).any())
    assert torch.equal(post[ref_post >= tiny], ref_post[ref_post >= tiny]) and bool((post[ref_post < tiny] == 0).all())
    # a model whose components lie far apart: the E-step's statistics equal those of the plain exp
    P, D = 8, 5
    g2p = torch.repeat_interleave(torch.arange(P), 12)
    G = g2p.numel()
    m = DiagGmmSet(torch.randn(G, D, generator=g) * 8, torch.rand(G, D, generator=g) * 0.3 + 0.05,
                   torch.log_softmax(torch.randn(G, generator=g), 0), g2p, P)
    x = torch.randn(600, D, generator=g) * 8
    pdfs = torch.randint(0, P, (600,), generator=g)
    accs = GmmAccs.zeros(G, D)
    ll = m.accumulate(accs, x, pdfs)
    ref = GmmAccs.zeros(G, D)
    ref_ll = torch.zeros((), dtype=torch.float64)
    underflow = False
    for p, rows, a, sel in m.components_by_pdf(x, pdfs):           # the E-step as it was written before
        lse = torch.logsumexp(sel, 1)
        ref_ll += lse.double().sum()
        q = torch.exp(sel - lse[:, None])
        underflow |= bool(((q > 0) & (q < tiny)).any())
        st = q.double().T @ a.double()
        gi = m.pdf_gauss[p, :sel.shape[1]]
        ref.x2.index_add_(0, gi, st[:, :D])
        ref.x.index_add_(0, gi, st[:, D:2 * D])
        ref.occ.index_add_(0, gi, st[:, 2 * D])
    assert underflow and ll == float(ref_ll)
    assert torch.equal(accs.occ, ref.occ) and torch.equal(accs.x, ref.x) and torch.equal(accs.x2, ref.x2)


def test_loglikes_at_requested_pairs_equal_the_dense_loglikes():
    """``loglikes_at`` (lattice rescoring) evaluates only the requested (frame, pdf) pairs, repeated
    pairs included, and gives the dense matrix's entries."""
    from asr.gmm.model import DiagGmmSet

    g = torch.Generator().manual_seed(0)
    P, D, T = 7, 5, 30
    gauss2pdf = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 4, 5, 6, 6])
    G = gauss2pdf.numel()
    lw = torch.log(torch.rand(G, generator=g) + 0.1)
    lw = lw - torch.logsumexp(torch.full((P, G), float("-inf")).scatter(0, gauss2pdf[None], lw[None]), 1)[gauss2pdf]
    gmm = DiagGmmSet(torch.randn(G, D, generator=g), torch.rand(G, D, generator=g) + 0.5, lw, gauss2pdf, P)
    x = torch.randn(T, D, generator=g)
    frames = torch.randint(0, T, (200,), generator=g)
    pdfs = torch.randint(0, P, (200,), generator=g)
    dense = gmm.loglikes(x)
    torch.testing.assert_close(gmm.loglikes_at(x, frames, pdfs), dense[frames, pdfs], rtol=1e-5, atol=1e-4)
    assert gmm.loglikes_at(x, frames[:0], pdfs[:0]).shape == (0,)
