"""Decision-tree statistics, question clustering and greedy likelihood-gain splitting."""
from __future__ import annotations

import math

import pytest
import torch

from asr.hmm import Topology, chain_phones, chain_states
from asr.hmm.align import equal_align
from asr.hmm.tree import (accumulate_tree_stats, frame_contexts, gaussian_loglik, grow_tree,
                          make_questions, build_tree)

P = 6


def _synthetic(seed: int = 0, n_utts: int = 60, right_matters: bool = True):
    """Utterances of random phone strings; frame means depend on (centre, state) and, for
    centre phone 2 only, on whether the right phone is in {4, 5, 6}."""
    g = torch.Generator().manual_seed(seed)
    topo = Topology(P, 3, {1: 1})  # phone 1 ('silence') has 1 state
    base = torch.randn(P + 1, 3, 2, generator=g, dtype=torch.float64) * 3
    feats, pa, sa = [], [], []
    for _ in range(n_utts):
        phones = torch.randint(2, P + 1, (8,), generator=g)
        phones = torch.cat([torch.tensor([1]), phones, torch.tensor([1])])
        cp, cs = chain_phones(phones, topo), chain_states(phones, topo)
        pos = equal_align(cp.numel() * 4, cp.numel())
        ph, st = cp[pos], cs[pos]
        ctx = frame_contexts([ph], [st])
        mean = base[ph, st]
        if right_matters:
            shift = (ph == 2) & (ctx[:, 2] >= 4)
            mean = mean + shift.unsqueeze(1) * 8.0
        feats.append(mean + torch.randn(mean.shape, generator=g, dtype=torch.float64) * 0.5)
        pa.append(ph)
        sa.append(st)
    return topo, feats, pa, sa


def test_frame_contexts_and_stats_vs_direct():
    ph = [torch.tensor([3, 3, 4, 4, 4, 3, 3]), torch.tensor([5, 5, 5, 5])]
    st = [torch.tensor([0, 1, 0, 1, 2, 0, 1]), torch.tensor([0, 1, 0, 1])]  # 2nd: repeated phone 5
    ctx = frame_contexts(ph, st)
    assert ctx.tolist() == [[0, 3, 4, 0], [0, 3, 4, 1], [3, 4, 3, 0], [3, 4, 3, 1], [3, 4, 3, 2],
                            [4, 3, 0, 0], [4, 3, 0, 1],
                            [0, 5, 5, 0], [0, 5, 5, 1], [5, 5, 0, 0], [5, 5, 0, 1]]
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(7, 3, generator=g), torch.randn(4, 3, generator=g)]
    stats = accumulate_tree_stats(feats, ph, st)
    x = torch.cat(feats).double()
    for k, key in enumerate(stats.keys.tolist()):
        rows = [i for i, c in enumerate(ctx.tolist()) if c == key]
        assert stats.count[k] == len(rows)
        assert torch.allclose(stats.sum[k], x[rows].sum(0))
        assert torch.allclose(stats.sumsq[k], (x[rows] ** 2).sum(0))
    assert float(stats.count.sum()) == 11
    with pytest.raises(ValueError, match="utterance 1"):
        accumulate_tree_stats([feats[0], feats[1][:3]], ph, st)


def test_gaussian_loglik_matches_direct():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64) * 2 + 1
    mean, var = x.mean(0), x.var(0, unbiased=False)
    direct = torch.distributions.Normal(mean, var.sqrt()).log_prob(x).sum()
    ll = gaussian_loglik(torch.tensor(50.0, dtype=torch.float64), x.sum(0), (x * x).sum(0))
    assert float(ll) == pytest.approx(float(direct), rel=1e-10)


def test_questions_partition_and_silence():
    topo, feats, pa, sa = _synthetic()
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1])
    assert frozenset([1]) in qs and frozenset(range(2, P + 1)) in qs
    assert frozenset(range(1, P + 1)) in qs  # the cluster-tree root
    for p in range(1, P + 1):
        assert frozenset([p]) in qs  # cluster-tree leaves
    assert len(qs) == len(set(qs))


def test_tree_splits_on_right_context_and_gains_add_up():
    topo, feats, pa, sa = _synthetic()
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1]) + [frozenset([4, 5, 6])]
    n_roots = int(topo.num_states[1:].sum())
    tree = grow_tree(stats, qs, topo, num_leaves=n_roots + 5, min_count=20, ci_phones=[1])
    # the first and biggest split is centre phone 2 on the right context {4,5,6}
    first = [i for i, nd in enumerate(tree.nodes) if nd.split is not None]
    assert len(tree.split_gains) == 5 and tree.num_leaves == n_roots + 5
    top = max(range(len(tree.split_gains)), key=lambda i: tree.split_gains[i])
    roots_of_2 = {tree.roots[(2, s)] for s in range(3)}
    split_roots = [i for i in roots_of_2 if tree.nodes[i].split is not None]
    assert len(split_roots) == 3
    for i in split_roots:
        pos, qi = tree.nodes[i].split
        # right context; among the phones that follow phone 2 in training (2..6) the
        # question separates exactly {4, 5, 6} from {2, 3}
        assert pos == 2 and tree.questions[qi] & set(range(2, P + 1)) in ({4, 5, 6}, {2, 3})
    assert tree.split_gains[top] > 1000 and tree.split_nodes[top] in roots_of_2
    assert sorted(tree.split_nodes) == first
    # total gain == sum of split gains, recomputed independently from the leaves
    assert tree.leaf_loglik - tree.root_loglik == pytest.approx(sum(tree.split_gains), rel=1e-9)
    # silence (ci phone) never split
    assert tree.nodes[tree.roots[(1, 0)]].split is None

    cd = tree.to_context_dependency()
    assert cd.num_pdfs == n_roots + 5 and cd.context_width == 3 and cd.central_position == 1
    t = cd.table
    need = torch.arange(3).view(1, -1) < topo.num_states.view(-1, 1)  # (P+1, S)
    valid = t >= 0
    assert torch.equal(valid, need.view(1, P + 1, 1, 3).expand_as(t))  # every (l, c, r) filled
    # phone 2: right in {4,5,6} vs not -> different pdfs, left does not matter
    assert (t[:, 2, 4, 1] == t[0, 2, 5, 1]).all() and (t[:, 2, 2, 1] != t[:, 2, 5, 1]).all()
    assert t[0, 2, 0, 1] == t[3, 2, 3, 1]  # unseen-in-training edge right context routed to the "no" leaf
    # leaf statistics recomputed from the routed table agree with the tree's leaf log-likelihood
    key = stats.keys
    pdf = t[key[:, 0], key[:, 1], key[:, 2], key[:, 3]]
    n = torch.zeros(cd.num_pdfs, dtype=torch.float64).index_add_(0, pdf, stats.count)
    s = torch.zeros(cd.num_pdfs, 2, dtype=torch.float64).index_add_(0, pdf, stats.sum)
    ss = torch.zeros(cd.num_pdfs, 2, dtype=torch.float64).index_add_(0, pdf, stats.sumsq)
    assert float(gaussian_loglik(n, s, ss).sum()) == pytest.approx(tree.leaf_loglik, rel=1e-9)


def test_greedy_gain_is_best_single_split():
    """Brute force: the first split made is the best over all roots, positions and questions."""
    topo, feats, pa, sa = _synthetic(seed=3, n_utts=30)
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1])
    n_roots = int(topo.num_states[1:].sum())
    tree = grow_tree(stats, qs, topo, num_leaves=n_roots + 1, min_count=10)
    best = -math.inf
    k = stats.keys
    for c in range(1, P + 1):
        for s in range(int(topo.num_states[c])):
            m = (k[:, 1] == c) & (k[:, 3] == s)
            L = gaussian_loglik(stats.count[m].sum(), stats.sum[m].sum(0), stats.sumsq[m].sum(0))
            for pos in (0, 2):
                for q in qs:
                    y = m & torch.tensor([int(p) in q for p in k[:, pos].tolist()])
                    nn = m & ~y
                    if stats.count[y].sum() < 10 or stats.count[nn].sum() < 10:
                        continue
                    g = (gaussian_loglik(stats.count[y].sum(), stats.sum[y].sum(0), stats.sumsq[y].sum(0))
                         + gaussian_loglik(stats.count[nn].sum(), stats.sum[nn].sum(0), stats.sumsq[nn].sum(0)) - L)
                    best = max(best, float(g))
    assert tree.split_gains[0] == pytest.approx(best, rel=1e-9)


def test_num_leaves_respected_and_min_count():
    topo, feats, pa, sa = _synthetic(right_matters=False)
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1])
    n_roots = int(topo.num_states[1:].sum())
    cd = build_tree(stats, qs, topo, num_leaves=n_roots + 12, min_count=30)
    assert cd.num_pdfs <= n_roots + 12
    tree = grow_tree(stats, qs, topo, num_leaves=10_000, min_count=30)
    for nd in tree.nodes:
        if nd.entries.numel():
            assert nd.count >= 30
    with pytest.raises(ValueError, match="roots"):
        build_tree(stats, qs, topo, num_leaves=3)


def test_stats_merge_equals_joint_accumulation():
    topo, feats, pa, sa = _synthetic(seed=4, n_utts=10)
    a = accumulate_tree_stats(feats[:4], pa[:4], sa[:4]) + accumulate_tree_stats(feats[4:], pa[4:], sa[4:])
    b = accumulate_tree_stats(feats, pa, sa)
    assert torch.equal(a.keys, b.keys)
    assert torch.allclose(a.count, b.count) and torch.allclose(a.sum, b.sum) and torch.allclose(a.sumsq, b.sumsq)
