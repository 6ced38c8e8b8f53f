"""Decision-tree state tying for context-dependent phones.

Follows Young, Odell & Woodland (1994), "Tree-based state tying for high accuracy acoustic
modelling", as done in Kaldi (``acc-tree-stats``, ``cluster-phones``, ``build-tree``;
Povey et al. 2011):

* :func:`accumulate_tree_stats`: sufficient statistics (count, sum, sum of squares) of the
  frames of every seen (left, centre, right, hmm-state) context, from an alignment.
* :func:`make_questions`: phone sets to ask about, obtained by top-down binary clustering
  of the phones' central-state Gaussians (Kaldi ``cluster-phones``): every node of the
  cluster tree is a question; plus the silence / non-silence question.
* :func:`grow_tree` / :func:`build_tree`: one root per centre phone shared by its hmm-states;
  greedy best-first splitting on "is the left/right phone in Q?" or "is the hmm-state in
  {0..k}?", the gain being the increase of the log-likelihood of the data under one diagonal
  Gaussian per node; splitting stops when the best gain falls to ``thresh`` or the leaves reach
  ``max_leaves`` (a cap the data may not reach); then leaves are clustered bottom-up. The tree
  is compiled into a dense :class:`~asr.hmm.context.ContextDependency` table: the questions
  route every (l, c, r), seen or not, to a leaf.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from asr.hmm.context import ContextDependency
from asr.hmm.topology import Topology

LEFT, RIGHT, STATE = 0, 2, 3  # columns of a (left, centre, right, hmm-state) context key


@dataclass
class TreeStats:
    """Gaussian statistics per seen context.

    keys: LongTensor (N, 4) of (left, centre, right, hmm-state), sorted, unique.
    count: (N,) float64 frames; sum: (N, D) float64; sumsq: (N, D) float64.
    """

    keys: Tensor
    count: Tensor
    sum: Tensor
    sumsq: Tensor

    @property
    def dim(self) -> int:
        return self.sum.shape[1]

    def __add__(self, other: "TreeStats") -> "TreeStats":
        """Merge statistics (e.g. from parallel jobs)."""
        return _reduce(torch.cat([self.keys, other.keys]), torch.cat([self.count, other.count]),
                       torch.cat([self.sum, other.sum]), torch.cat([self.sumsq, other.sumsq]))

    def to_dict(self) -> dict[str, Tensor]:
        return {"keys": self.keys, "count": self.count, "sum": self.sum, "sumsq": self.sumsq}

    @classmethod
    def from_dict(cls, d: dict[str, Tensor]) -> "TreeStats":
        return cls(d["keys"], d["count"], d["sum"], d["sumsq"])


def _reduce(keys: Tensor, count: Tensor, s: Tensor, ss: Tensor) -> TreeStats:
    uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
    n = uniq.shape[0]
    return TreeStats(uniq,
                     torch.zeros(n, dtype=torch.float64).index_add_(0, inv, count),
                     torch.zeros(n, s.shape[1], dtype=torch.float64).index_add_(0, inv, s),
                     torch.zeros(n, s.shape[1], dtype=torch.float64).index_add_(0, inv, ss))


def frame_contexts(phone_alis: Sequence[Tensor], state_alis: Sequence[Tensor]) -> Tensor:
    """(left, centre, right, hmm-state) of every frame of every utterance, concatenated.

    A new phone segment starts where the phone changes or the hmm-state index goes down
    (a repeated phone); left/right are the neighbouring segments' phones, 0 at utterance edges.

    Returns:
        LongTensor (sum T_i, 4).
    """
    if len(phone_alis) != len(state_alis):
        raise ValueError(f"{len(phone_alis)} phone alignments but {len(state_alis)} state alignments")
    lens = torch.tensor([int(p.numel()) for p in phone_alis], dtype=torch.long)
    for i, (p, s) in enumerate(zip(phone_alis, state_alis)):
        if p.numel() != s.numel():
            raise ValueError(f"utterance {i}: phone alignment has {p.numel()} frames, state alignment {s.numel()}")
    if int(lens.sum()) == 0:
        return torch.zeros(0, 4, dtype=torch.long)
    ph = torch.cat([p.reshape(-1).long() for p in phone_alis])
    st = torch.cat([s.reshape(-1).long() for s in state_alis])
    if int(ph.min()) < 1 or int(st.min()) < 0:
        bad = next(i for i, (p, s) in enumerate(zip(phone_alis, state_alis))
                   if p.numel() and (int(p.min()) < 1 or int(s.min()) < 0))
        raise ValueError(f"utterance {bad}: phone ids must be >= 1 and hmm-states >= 0")
    utt_start = torch.zeros(ph.numel(), dtype=torch.bool)
    utt_start[(torch.cumsum(lens, 0) - lens)[lens > 0]] = True
    seg_start = utt_start.clone()
    seg_start[1:] |= (ph[1:] != ph[:-1]) | (st[1:] < st[:-1])
    seg = torch.cumsum(seg_start.long(), 0) - 1
    seg_phone = ph[seg_start]
    seg_first = utt_start[seg_start]
    seg_last = torch.cat([seg_first[1:], torch.tensor([True])])
    zero = seg_phone.new_zeros(1)
    left = torch.where(seg_first, 0, torch.cat([zero, seg_phone[:-1]]))
    right = torch.where(seg_last, 0, torch.cat([seg_phone[1:], zero]))
    return torch.stack([left[seg], ph, right[seg], st], 1)


def accumulate_tree_stats(feats: Sequence[Tensor], phone_alis: Sequence[Tensor],
                          state_alis: Sequence[Tensor]) -> TreeStats:
    """Per-context single-Gaussian statistics (Kaldi ``acc-tree-stats``), vectorised.

    Args:
        feats: per utterance Tensor (T, D) features.
        phone_alis: per utterance LongTensor (T,) phone id per frame (1..P).
        state_alis: per utterance LongTensor (T,) hmm-state index per frame.
    Returns:
        :class:`TreeStats` over the seen (l, c, r, s) contexts.
    """
    if len(feats) != len(phone_alis):
        raise ValueError(f"{len(feats)} feature matrices but {len(phone_alis)} alignments")
    for i, (x, p) in enumerate(zip(feats, phone_alis)):
        if x.dim() != 2 or x.shape[0] != p.numel():
            raise ValueError(f"utterance {i}: features {tuple(x.shape)} do not match alignment of {p.numel()} frames")
    keys = frame_contexts(phone_alis, state_alis)
    if keys.shape[0] == 0:
        raise ValueError("no frames to accumulate tree statistics from")
    x = torch.cat([f.to(torch.float64) for f in feats])
    return _reduce(keys, torch.ones(x.shape[0], dtype=torch.float64), x, x * x)


def gaussian_loglik(count: Tensor, s: Tensor, ss: Tensor, var_floor: float = 0.01) -> Tensor:
    """Log-likelihood of data under its own ML diagonal Gaussian, from statistics (Kaldi
    ``GaussClusterable::Objf``).

    ``-0.5 * n * (D log 2 pi + sum_d log v'_d + sum_d v_d / v'_d)`` with ``v'`` the variance ``v``
    floored at ``var_floor`` (= ``-0.5 n (D (1 + log 2 pi) + sum_d log v_d)`` without flooring);
    0 where n = 0.

    Args:
        count: (...,); s, ss: (..., D).
    """
    n = count.clamp(min=1e-10).unsqueeze(-1)
    mean = s / n
    var = ss / n - mean * mean
    floored = var.clamp(min=var_floor)
    D = s.shape[-1]
    ll = -0.5 * count * (D * math.log(2 * math.pi) + floored.log().sum(-1) + (var / floored).sum(-1))
    return torch.where(count > 0, ll, torch.zeros_like(ll))


def _gauss_score(n: Tensor, s: Tensor, ss: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Expected log-likelihood of stats (P, ...) under Gaussians (K, D) -> (P, K)."""
    logdet = var.log().sum(-1)  # (K,)
    quad = (ss @ (1 / var).T) - 2 * (s @ (mean / var).T) + n.unsqueeze(1) * (mean * mean / var).sum(-1)
    return -0.5 * (n.unsqueeze(1) * (logdet + s.shape[1] * math.log(2 * math.pi)) + quad)


def _split_cluster(n: Tensor, s: Tensor, ss: Tensor, var_floor: float, iters: int = 10) -> Tensor:
    """Binary k-means of phones (stats rows) by Gaussian likelihood; returns bool (P,) side."""
    P = n.shape[0]
    mean = s / n.unsqueeze(1)
    w = n / n.sum()
    mu = (w.unsqueeze(1) * mean).sum(0)
    cov = ((mean - mu) * w.unsqueeze(1)).T @ (mean - mu)
    _, evecs = torch.linalg.eigh(cov)
    v = evecs[:, -1]
    v = v * torch.sign(v[torch.argmax(v.abs())])  # deterministic sign
    proj = (mean - mu) @ v
    side = proj > torch.median(proj)
    if bool(side.all()) or not bool(side.any()):
        side = torch.arange(P) >= P // 2
    for _ in range(iters):
        cm, cv = [], []
        for k in (False, True):
            m = side == k
            nk = n[m].sum()
            mk = s[m].sum(0) / nk
            cm.append(mk)
            cv.append((ss[m].sum(0) / nk - mk * mk).clamp(min=var_floor))
        score = _gauss_score(n, s, ss, torch.stack(cm), torch.stack(cv))
        new = score[:, 1] > score[:, 0]
        if bool(new.all()) or not bool(new.any()) or torch.equal(new, side):
            break
        side = new
    return side


def make_questions(stats: TreeStats, num_phones: int, silence: Sequence[int],
                   var_floor: float = 0.01) -> list[frozenset[int]]:
    """Phone-set questions by top-down binary clustering of the phones' central states.

    For every phone seen in ``stats`` the statistics of its central hmm-state (index
    ``max_state_of_phone // 2``), pooled over contexts, define one Gaussian; the set of
    phones is split recursively in two by likelihood-based k-means (Kaldi
    ``cluster-phones``), and every cluster-tree node (leaves included) becomes a question.
    The silence set and its complement are added. Duplicates are removed; order is
    deterministic (by size then sorted members).

    Args:
        stats: tree statistics.
        num_phones: P (phone ids 1..P).
        silence: silence phone ids.
    Returns:
        list of frozensets of phone ids.
    """
    keys = stats.keys
    c, s = keys[:, 1], keys[:, 3]
    max_state = torch.zeros(num_phones + 1, dtype=torch.long).scatter_reduce_(0, c, s, reduce="amax")
    central = s == max_state[c] // 2
    n = torch.zeros(num_phones + 1, dtype=torch.float64).index_add_(0, c[central], stats.count[central])
    su = torch.zeros(num_phones + 1, stats.dim, dtype=torch.float64).index_add_(0, c[central], stats.sum[central])
    sq = torch.zeros(num_phones + 1, stats.dim, dtype=torch.float64).index_add_(0, c[central], stats.sumsq[central])
    seen = [p for p in range(1, num_phones + 1) if float(n[p]) > 0]
    questions: set[frozenset[int]] = set()
    stack = [torch.tensor(seen, dtype=torch.long)] if seen else []
    while stack:
        members = stack.pop()
        questions.add(frozenset(members.tolist()))
        if members.numel() < 2:
            continue
        side = _split_cluster(n[members], su[members], sq[members], var_floor)
        stack.extend([members[side], members[~side]])
    sil = frozenset(int(p) for p in silence)
    if sil:
        questions.add(sil)
        rest = frozenset(range(1, num_phones + 1)) - sil
        if rest:
            questions.add(rest)
    return sorted(questions, key=lambda q: (len(q), sorted(q)))


@dataclass
class _Node:
    entries: Tensor  # indices into stats rows
    count: float
    loglik: float
    states: frozenset[int] = frozenset()  # hmm-states the node covers
    split: tuple[int, frozenset[int]] | None = None  # (position, yes-set of values)
    yes: int = -1
    no: int = -1
    best: tuple[float, int, frozenset[int]] | None = None  # (gain, position, yes-set)


@dataclass
class DecisionTree:
    """A grown and clustered tree.

    ``roots[c]`` -> node index of phone ``c`` (one root per phone, shared by its hmm-states);
    a node splits on position ``LEFT`` / ``RIGHT`` (the neighbouring phone is in the yes-set) or
    ``STATE`` (the hmm-state is in the yes-set). Every leaf covers exactly one hmm-state.
    ``leaf_pdf[node]`` -> pdf id after the bottom-up clustering of leaves (several leaves of one
    (phone, state) may share a pdf).

    ``split_gains`` / ``split_nodes``: likelihood gain and node of every split made on the gain
    (in the order made; forced per-state splits of leaves are not listed); ``root_loglik`` /
    ``leaf_loglik``: total single-Gaussian log-likelihood of the statistics at the roots / at the
    leaves before clustering (their difference is ``sum(split_gains)`` plus the gain of the forced
    state splits); ``cluster_costs``: likelihood lost by each merge of the clustering.
    """

    num_phones: int
    max_states: int
    questions: list[frozenset[int]]
    nodes: list[_Node]
    roots: dict[int, int]
    leaf_pdf: dict[int, int] = field(default_factory=dict)
    split_gains: list[float] = field(default_factory=list)
    split_nodes: list[int] = field(default_factory=list)
    cluster_costs: list[float] = field(default_factory=list)
    root_loglik: float = 0.0
    leaf_loglik: float = 0.0

    @property
    def num_leaves(self) -> int:
        """Leaves of the tree (before clustering)."""
        return sum(1 for nd in self.nodes if nd.split is None)

    @property
    def num_pdfs(self) -> int:
        """Pdfs after clustering."""
        return len(set(self.leaf_pdf.values()))

    @property
    def smallest_split(self) -> float:
        return min(self.split_gains) if self.split_gains else math.inf

    def leaves(self) -> list[int]:
        return [i for i, nd in enumerate(self.nodes) if nd.split is None]

    def to_context_dependency(self) -> ContextDependency:
        """Compile into a dense (P+1)^3 x S table, routing every (l, r) through the questions."""
        P1 = self.num_phones + 1
        table = torch.full((P1, P1, P1, self.max_states), -1, dtype=torch.long)
        for c, root in self.roots.items():
            for s in sorted(self.nodes[root].states):
                grid = torch.full((P1, P1), -1, dtype=torch.long)  # (left, right)
                stack = [(root, torch.ones(P1, P1, dtype=torch.bool))]
                while stack:
                    i, mask = stack.pop()
                    nd = self.nodes[i]
                    if nd.split is None:
                        grid[mask] = self.leaf_pdf[i]
                        continue
                    pos, yes_set = nd.split
                    if pos == STATE:
                        stack.append((nd.yes if s in yes_set else nd.no, mask))
                        continue
                    member = torch.zeros(P1, dtype=torch.bool)
                    member[sorted(yes_set)] = True
                    ans = member.view(-1, 1).expand(P1, P1) if pos == LEFT else member.view(1, -1).expand(P1, P1)
                    stack.append((nd.yes, mask & ans))
                    stack.append((nd.no, mask & ~ans))
                table[:, c, :, s] = grid
        return ContextDependency(table, 3, 1)


def state_questions(max_states: int) -> list[frozenset[int]]:
    """Questions about the hmm-state ("pdf-class"): ``{0}, {0,1}, ..., {0..S-2}`` (Kaldi
    ``compile-questions``)."""
    return [frozenset(range(i + 1)) for i in range(max_states - 1)]


def grow_tree(stats: TreeStats, questions: Sequence[frozenset[int]], topo: Topology, max_leaves: int,
              thresh: float = 300.0, cluster_thresh: float = -1.0, ci_phones: Sequence[int] = (),
              min_count: float = 0.0, var_floor: float = 0.01) -> DecisionTree:
    """Kaldi ``build-tree``: greedy likelihood-gain splitting, then bottom-up clustering of leaves.

    Young, Odell & Woodland (1994), as in Kaldi's ``BuildTree`` (``src/tree/build-tree.cc``):

    * one root per phone, shared by its hmm-states (Kaldi ``roots.txt``: ``shared split``); a node
      may split on the left or right phone (``questions``) or on the hmm-state
      (:func:`state_questions`);
    * best-first: the leaf whose best split gains most is split, while that gain exceeds
      ``thresh`` (log-likelihood units; Kaldi's default 300) and the tree has fewer than
      ``max_leaves`` leaves — so ``max_leaves`` is a cap the data may not reach;
    * ``ci_phones`` (e.g. silence) are context-independent: their roots split on the hmm-state only;
    * every leaf covers one hmm-state: a leaf still covering several states when splitting stops is
      split by state (this keeps each pdf tied to one (phone, state), which the segment logic of
      sequence training and the transition model rely on; Kaldi may leave such leaves for phones
      with almost no data);
    * then, within each (phone, hmm-state), leaves are merged bottom-up while the cheapest merge
      loses less than ``cluster_thresh`` (Kaldi ``ClusterEventMapRestrictedByMap``; ``-1`` = the
      smallest gain of the splitting phase, Kaldi's ``--cluster-thresh=-1``; ``0`` = no clustering).

    The node objective is Kaldi's ``GaussClusterable::Objf`` (:func:`gaussian_loglik`).
    ``min_count`` (frames on each side of a split; Kaldi has none, default 0) can forbid tiny leaves.
    """
    P = topo.num_phones
    keys = stats.keys
    if keys.numel() and (int(keys[:, :3].max()) > P or int(keys[:, 1].min()) < 1):
        raise ValueError(f"tree statistics hold phone ids outside 0..{P}")
    if keys.numel() and bool((keys[:, 3] >= topo.num_states[keys[:, 1]]).any()):
        raise ValueError("tree statistics hold hmm-states beyond the topology")
    n_states = [int(topo.num_states[c]) for c in range(P + 1)]
    min_leaves = sum(n_states[1:])
    if max_leaves < min_leaves:
        raise ValueError(f"max_leaves={max_leaves} is smaller than the {min_leaves} (phone, state) roots")
    qs = list(questions)
    for qi, q in enumerate(qs):
        if any(not 0 <= p <= P for p in q):
            raise ValueError(f"question {qi} holds phone ids outside 0..{P}")
    S = topo.max_states
    member = {pos: torch.zeros(len(sets), size, dtype=torch.float64)
              for pos, sets, size in ((LEFT, qs, P + 1), (RIGHT, qs, P + 1), (STATE, state_questions(S), S))}
    sets_of = {LEFT: qs, RIGHT: qs, STATE: state_questions(S)}
    for pos, sets in sets_of.items():
        for qi, q in enumerate(sets):
            member[pos][qi, sorted(q)] = 1.0
    ci = {int(p) for p in ci_phones}
    by_phone: dict[int, list[int]] = {}
    for i in torch.argsort(keys[:, 1], stable=True).tolist():
        by_phone.setdefault(int(keys[i, 1]), []).append(i)

    nodes: list[_Node] = []

    def make_node(entries: Tensor, states: frozenset[int]) -> int:
        n = stats.count[entries].sum()
        ll = gaussian_loglik(n, stats.sum[entries].sum(0), stats.sumsq[entries].sum(0), var_floor)
        nodes.append(_Node(entries, float(n), float(ll), states))
        return len(nodes) - 1

    def best_split(i: int, phone: int) -> None:
        nd = nodes[i]
        e = nd.entries
        if e.numel() < 2:
            return
        n, s, ss = stats.count[e], stats.sum[e], stats.sumsq[e]
        best = None
        for pos in ((STATE,) if phone in ci else (LEFT, RIGHT, STATE)):
            if pos == STATE and len(nd.states) < 2:
                continue
            yes = member[pos][:, keys[e, pos]]  # (Q, E)
            ny = yes @ n
            sy, ssy = yes @ s, yes @ ss
            nn, sn, ssn = nd.count - ny, s.sum(0) - sy, ss.sum(0) - ssy
            gain = (gaussian_loglik(ny, sy, ssy, var_floor) + gaussian_loglik(nn, sn, ssn, var_floor)
                    - nd.loglik)
            ok = (ny >= max(min_count, 1e-6)) & (nn >= max(min_count, 1e-6))
            gain = torch.where(ok, gain, torch.full_like(gain, -math.inf))
            g, qi = gain.max(0)
            if math.isfinite(float(g)) and (best is None or float(g) > best[0]):
                best = (float(g), pos, sets_of[pos][int(qi)])
        nd.best = best

    def do_split(i: int, pos: int, yes_set: frozenset[int]) -> tuple[int, int]:
        nd = nodes[i]
        vals = keys[nd.entries, pos]
        if pos == STATE:
            yes_mask = torch.isin(vals, torch.tensor(sorted(yes_set), dtype=torch.long))
            ys, ns = nd.states & yes_set, nd.states - yes_set
        else:  # both sides keep every state: unseen contexts are routed through them too
            yes_mask = torch.isin(vals, torch.tensor(sorted(yes_set), dtype=torch.long))
            ys = ns = nd.states
        nd.split = (pos, frozenset(yes_set))
        nd.yes = make_node(nd.entries[yes_mask], ys)
        nd.no = make_node(nd.entries[~yes_mask], ns)
        return nd.yes, nd.no

    roots: dict[int, int] = {}
    phone_of: dict[int, int] = {}
    heap: list[tuple[float, int]] = []
    for c in range(1, P + 1):
        i = make_node(torch.tensor(by_phone.get(c, []), dtype=torch.long), frozenset(range(n_states[c])))
        roots[c] = i
        phone_of[i] = c
        best_split(i, c)
        if nodes[i].best is not None:
            heapq.heappush(heap, (-nodes[i].best[0], i))
    tree = DecisionTree(P, S, qs, nodes, roots)
    tree.root_loglik = sum(nodes[i].loglik for i in roots.values())
    # leaves are counted as the one-state leaves they end up as: a context split of a node covering
    # k states adds k of them, a state split none
    n_leaves = min_leaves
    while heap:
        _, i = heapq.heappop(heap)
        nd = nodes[i]
        gain, pos, yes_set = nd.best
        if gain <= thresh:
            break
        added = 0 if pos == STATE else len(nd.states)
        if n_leaves + added > max_leaves:
            continue  # would overshoot the cap; a state split may still fit
        y, n = do_split(i, pos, yes_set)
        n_leaves += added
        tree.split_gains.append(gain)
        tree.split_nodes.append(i)
        for child in (y, n):
            phone_of[child] = phone_of[i]
            best_split(child, phone_of[i])
            if nodes[child].best is not None:
                heapq.heappush(heap, (-nodes[child].best[0], child))
    # force one hmm-state per leaf
    stack = [i for i in range(len(nodes)) if nodes[i].split is None]
    while stack:
        i = stack.pop()
        if len(nodes[i].states) > 1:
            y, n = do_split(i, STATE, frozenset([min(nodes[i].states)]))
            phone_of[y] = phone_of[n] = phone_of[i]
            stack.extend([y, n])
    tree.leaf_loglik = sum(nd.loglik for nd in nodes if nd.split is None)
    thr = tree.smallest_split if cluster_thresh < 0 else cluster_thresh
    _cluster_leaves(tree, stats, phone_of, thr if math.isfinite(thr) else 0.0, var_floor)
    return tree


def _cluster_leaves(tree: DecisionTree, stats: TreeStats, phone_of: dict[int, int], thresh: float,
                    var_floor: float) -> None:
    """Bottom-up merging of the leaves of each (phone, hmm-state) while the cheapest merge loses less
    than ``thresh`` (Kaldi ``ClusterBottomUp``); fills ``tree.leaf_pdf`` (pdfs numbered by phone,
    then state, then first leaf) and ``tree.cluster_costs``."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i in tree.leaves():
        nd = tree.nodes[i]
        groups.setdefault((phone_of[i], min(nd.states)), []).append(i)
    pdf = 0
    for key in sorted(groups):
        leaves = groups[key]
        n = torch.tensor([tree.nodes[i].count for i in leaves], dtype=torch.float64)
        D = stats.sum.shape[1]
        s = torch.stack([stats.sum[tree.nodes[i].entries].sum(0) if tree.nodes[i].entries.numel()
                         else torch.zeros(D, dtype=torch.float64) for i in leaves])
        ss = torch.stack([stats.sumsq[tree.nodes[i].entries].sum(0) if tree.nodes[i].entries.numel()
                          else torch.zeros(D, dtype=torch.float64) for i in leaves])
        cluster = list(range(len(leaves)))  # cluster id of each leaf
        alive = torch.ones(len(leaves), dtype=torch.bool)
        if bool((n > 0).any()):  # leaves without data (unseen contexts) share the biggest leaf's pdf
            big = int(torch.argmax(n))
            for k in torch.nonzero(n <= 0).flatten().tolist():
                cluster[k] = big
                alive[k] = False
        if thresh > 0 and len(leaves) > 1:
            ll = gaussian_loglik(n, s, ss, var_floor)
            cost = ll[:, None] + ll[None, :] - gaussian_loglik(n[:, None] + n[None, :], s[:, None] + s[None, :],
                                                              ss[:, None] + ss[None, :], var_floor)
            cost.fill_diagonal_(math.inf)
            while True:
                c = torch.where(alive[:, None] & alive[None, :], cost, torch.full_like(cost, math.inf))
                k = int(torch.argmin(c))
                a, b = divmod(k, len(leaves))
                if not float(c[a, b]) < thresh:
                    break
                tree.cluster_costs.append(float(c[a, b]))
                n[a], s[a], ss[a] = n[a] + n[b], s[a] + s[b], ss[a] + ss[b]
                alive[b] = False
                cluster = [a if x == b else x for x in cluster]
                ll[a] = gaussian_loglik(n[a], s[a], ss[a], var_floor)
                row = ll[a] + ll - gaussian_loglik(n[a] + n, s[a] + s, ss[a] + ss, var_floor)
                row[a] = math.inf
                cost[a], cost[:, a] = row, row
        ids: dict[int, int] = {}
        for leaf, cl in zip(leaves, cluster):
            if cl not in ids:
                ids[cl] = pdf
                pdf += 1
            tree.leaf_pdf[leaf] = ids[cl]


def build_tree(stats: TreeStats, questions: Sequence[frozenset[int]], topo: Topology, max_leaves: int,
               thresh: float = 300.0, cluster_thresh: float = -1.0, ci_phones: Sequence[int] = (),
               min_count: float = 0.0, var_floor: float = 0.01) -> ContextDependency:
    """Grow and cluster a tree (:func:`grow_tree`) and compile it to a triphone
    :class:`ContextDependency` (context_width 3, central_position 1), its table filled for every
    (l, c, r)."""
    return grow_tree(stats, questions, topo, max_leaves, thresh, cluster_thresh, ci_phones, min_count,
                     var_floor).to_context_dependency()
