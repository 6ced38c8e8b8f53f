"""Decision-tree statistics, question clustering and greedy likelihood-gain splitting."""
from __future__ import annotations

import math

import pytest
import torch

from asr.hmm import Topology, chain_phones, chain_states
from asr.hmm.align import equal_align
from asr.hmm.tree import (LEFT, RIGHT, STATE, accumulate_tree_stats, build_tree, frame_contexts,
                          gaussian_loglik, grow_tree, make_questions, state_questions)

P = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tree building is many small matrix products: one thread, as the GMM stages run it
    (several threads on a shared 2-core machine are ~40x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def _leaf_objf(cd, stats):
    """Total single-Gaussian log-likelihood of the statistics pooled by the pdfs of a table."""
    key = stats.keys
    pdf = cd.table[key[:, 0], key[:, 1], key[:, 2], key[:, 3]]
    n = torch.zeros(cd.num_pdfs, dtype=torch.float64).index_add_(0, pdf, stats.count)
    s = torch.zeros(cd.num_pdfs, stats.dim, dtype=torch.float64).index_add_(0, pdf, stats.sum)
    ss = torch.zeros(cd.num_pdfs, stats.dim, dtype=torch.float64).index_add_(0, pdf, stats.sumsq)
    return float(gaussian_loglik(n, s, ss).sum())


def test_tree_splits_on_right_context_shared_root_and_gains_add_up():
    topo, feats, pa, sa = _synthetic()
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1]) + [frozenset([4, 5, 6])]
    n_roots = int(topo.num_states[1:].sum())
    tree = grow_tree(stats, qs, topo, max_leaves=n_roots + 3, thresh=0.0, cluster_thresh=0.0, ci_phones=[1])
    # the biggest context split is phone 2 on the right context {4,5,6}: made once, at the
    # phone's shared root, for all three of its states (3 one-state leaves more)
    ctx_splits = [(i, tree.nodes[i].split) for i in tree.split_nodes if tree.nodes[i].split[0] != STATE]
    assert len(ctx_splits) == 1
    i, (pos, yes) = ctx_splits[0]
    assert i == tree.roots[2] and pos == RIGHT
    assert yes & set(range(2, P + 1)) in ({4, 5, 6}, {2, 3})
    assert tree.num_leaves == n_roots + 3
    # every leaf covers one hmm-state; the state questions made the rest of the leaves
    assert all(len(tree.nodes[j].states) == 1 for j in tree.leaves())
    # total gain == split gains + forced state splits, recomputed independently from the leaves
    assert tree.leaf_loglik - tree.root_loglik >= sum(tree.split_gains) - 1e-6
    # silence (ci phone, one state) never split
    assert tree.nodes[tree.roots[1]].split is None

    cd = tree.to_context_dependency()
    assert cd.num_pdfs == n_roots + 3 and cd.context_width == 3 and cd.central_position == 1
    t = cd.table
    need = torch.arange(3).view(1, -1) < topo.num_states.view(-1, 1)  # (P+1, S)
    assert torch.equal(t >= 0, need.view(1, P + 1, 1, 3).expand_as(t))  # every (l, c, r) filled
    for s in range(3):  # phone 2: right in {4,5,6} vs not -> different pdfs, left does not matter
        assert (t[:, 2, 4, s] == t[0, 2, 5, s]).all() and (t[:, 2, 2, s] != t[:, 2, 5, s]).all()
        assert t[0, 2, 0, s] == t[3, 2, 3, s]  # edge right context routed to the "no" leaf
    assert len(set(t[:, 2, :, :].flatten().tolist())) == 6  # 3 states x 2 contexts, states never tied
    assert _leaf_objf(cd, stats) == pytest.approx(tree.leaf_loglik, rel=1e-9)


def test_split_stops_at_gain_threshold_below_the_cap():
    """With no real context effect, a threshold above the noise gains stops the tree at one leaf
    per (phone, state) although the cap allows 100 more; thresh 0 fills the cap."""
    topo, feats, pa, sa = _synthetic(right_matters=False)
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1])
    n_roots = int(topo.num_states[1:].sum())
    grown = grow_tree(stats, qs, topo, max_leaves=n_roots + 100, thresh=0.0, cluster_thresh=0.0)
    assert grown.num_leaves == n_roots + 100
    ctx_gains = [g for g, i in zip(grown.split_gains, grown.split_nodes) if grown.nodes[i].split[0] != STATE]
    state_gains = [g for g, i in zip(grown.split_gains, grown.split_nodes) if grown.nodes[i].split[0] == STATE]
    thresh = (max(ctx_gains) + min(state_gains)) / 2
    assert max(ctx_gains) < thresh < min(state_gains)  # noise splits are far below the real ones
    tree = grow_tree(stats, qs, topo, max_leaves=n_roots + 100, thresh=thresh)
    assert tree.num_leaves == n_roots and tree.num_pdfs == n_roots
    assert all(tree.nodes[i].split[0] == STATE for i in tree.split_nodes)
    # and with the right-context effect present, the threshold keeps exactly the real split
    topo, feats, pa, sa = _synthetic()
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1]) + [frozenset([4, 5, 6])]
    tree = grow_tree(stats, qs, topo, max_leaves=n_roots + 100, thresh=thresh)
    assert tree.num_leaves == n_roots + 3


def test_clustering_merges_leaves_cheaper_than_the_threshold():
    """Bottom-up clustering (Kaldi cluster_thresh = -1: the smallest split gain) merges leaves of
    the same (phone, state) whose merge costs less; the resulting table's objective equals the
    leaf objective minus the merge costs, and no merge crosses phones or states."""
    topo, feats, pa, sa = _synthetic(right_matters=False)
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1])
    n_roots = int(topo.num_states[1:].sum())
    tree = grow_tree(stats, qs, topo, max_leaves=n_roots + 40, thresh=0.0, cluster_thresh=-1.0)
    assert tree.num_leaves == n_roots + 40
    assert len(tree.cluster_costs) > 0 and max(tree.cluster_costs) < tree.smallest_split
    assert tree.num_pdfs == tree.num_leaves - len(tree.cluster_costs)
    cd = tree.to_context_dependency()
    assert cd.num_pdfs == tree.num_pdfs
    assert _leaf_objf(cd, stats) == pytest.approx(tree.leaf_loglik - sum(tree.cluster_costs), rel=1e-9)
    # each pdf belongs to one (phone, state)
    for pdf in range(cd.num_pdfs):
        cs = {(c, s) for c, s in torch.nonzero((cd.table == pdf).any(0).any(1)).tolist()}
        assert len(cs) == 1
    # no clustering: pdfs == leaves
    assert grow_tree(stats, qs, topo, max_leaves=n_roots + 40, thresh=0.0, cluster_thresh=0.0).num_pdfs \
        == n_roots + 40


def test_ci_phone_splits_on_state_only():
    """A context-independent phone with a strong context effect still never splits on context."""
    g = torch.Generator().manual_seed(5)
    topo = Topology(P, 3)
    feats, pa, sa = [], [], []
    for _ in range(40):
        phones = torch.cat([torch.tensor([1]), torch.randint(2, P + 1, (6,), generator=g), torch.tensor([1])])
        cp, cs = chain_phones(phones, topo), chain_states(phones, topo)
        pos = equal_align(cp.numel() * 4, cp.numel())
        ph, st = cp[pos], cs[pos]
        ctx = frame_contexts([ph], [st])
        mean = (ph.double() * 3 + st.double() * 8).unsqueeze(1).expand(-1, 2).clone()
        mean += ((ctx[:, 2] >= 4) | (ctx[:, 0] >= 4)).double().unsqueeze(1) * 10.0  # every phone, sil too
        feats.append(mean + torch.randn(mean.shape, generator=g, dtype=torch.float64))
        pa.append(ph)
        sa.append(st)
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1]) + [frozenset([4, 5, 6])]
    tree = grow_tree(stats, qs, topo, max_leaves=200, thresh=50.0, ci_phones=[1])
    sil = [i for i in tree.split_nodes if tree.nodes[i].split and i in _subtree(tree, tree.roots[1])]
    assert sil and all(tree.nodes[i].split[0] == STATE for i in sil)
    others = [i for i in tree.split_nodes if tree.nodes[i].split[0] != STATE]
    assert others  # the same effect is split on for the other phones
    cd = tree.to_context_dependency()
    assert torch.equal(cd.table[:, 1, :, :], cd.table[0, 1, 0, :].expand_as(cd.table[:, 1, :, :]))


def _subtree(tree, root):
    out, stack = set(), [root]
    while stack:
        i = stack.pop()
        out.add(i)
        nd = tree.nodes[i]
        if nd.split is not None:
            stack.extend([nd.yes, nd.no])
    return out


def test_greedy_gain_is_best_single_split():
    """Brute force: the first split made is the best over all phone roots, positions (left,
    right, hmm-state) and questions."""
    topo, feats, pa, sa = _synthetic(seed=3, n_utts=30)
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1])
    tree = grow_tree(stats, qs, topo, max_leaves=10_000, thresh=0.0, min_count=10)
    best = -math.inf
    k = stats.keys
    for c in range(1, P + 1):
        m = k[:, 1] == c
        L = gaussian_loglik(stats.count[m].sum(), stats.sum[m].sum(0), stats.sumsq[m].sum(0))
        cands = [(pos, q) for pos in (LEFT, RIGHT) for q in qs]
        cands += [(STATE, q) for q in state_questions(3)]
        for pos, q in cands:
            y = m & torch.tensor([int(p) in q for p in k[:, pos].tolist()])
            nn = m & ~y
            if stats.count[y].sum() < 10 or stats.count[nn].sum() < 10:
                continue
            g = (gaussian_loglik(stats.count[y].sum(), stats.sum[y].sum(0), stats.sumsq[y].sum(0))
                 + gaussian_loglik(stats.count[nn].sum(), stats.sum[nn].sum(0), stats.sumsq[nn].sum(0)) - L)
            best = max(best, float(g))
    assert tree.split_gains[0] == pytest.approx(best, rel=1e-9)


def test_max_leaves_respected_and_min_count():
    topo, feats, pa, sa = _synthetic(right_matters=False)
    stats = accumulate_tree_stats(feats, pa, sa)
    qs = make_questions(stats, P, silence=[1])
    n_roots = int(topo.num_states[1:].sum())
    cd = build_tree(stats, qs, topo, max_leaves=n_roots + 12, thresh=0.0, min_count=30)
    assert cd.num_pdfs <= n_roots + 12
    tree = grow_tree(stats, qs, topo, max_leaves=10_000, thresh=0.0, min_count=30)
    for i in tree.split_nodes:
        nd = tree.nodes[i]
        assert tree.nodes[nd.yes].count >= 30 and tree.nodes[nd.no].count >= 30
    with pytest.raises(ValueError, match="roots"):
        build_tree(stats, qs, topo, max_leaves=3)


def test_stats_merge_equals_joint_accumulation():
    topo, feats, pa, sa = _synthetic(seed=4, n_utts=10)
    a = accumulate_tree_stats(feats[:4], pa[:4], sa[:4]) + accumulate_tree_stats(feats[4:], pa[4:], sa[4:])
    b = accumulate_tree_stats(feats, pa, sa)
    assert torch.equal(a.keys, b.keys)
    assert torch.allclose(a.count, b.count) and torch.allclose(a.sum, b.sum) and torch.allclose(a.sumsq, b.sumsq)
