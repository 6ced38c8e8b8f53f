"""Decision-tree state tying for context-dependent phones.

Follows Young, Odell & Woodland (1994), "Tree-based state tying for high accuracy acoustic
modelling", as done in Kaldi (``acc-tree-stats``, ``cluster-phones``, ``build-tree``;
Povey et al. 2011):

* :func:`accumulate_tree_stats`: sufficient statistics (count, sum, sum of squares) of the
  frames of every seen (left, centre, right, hmm-state) context, from an alignment.
* :func:`make_questions`: phone sets to ask about, obtained by top-down binary clustering
  of the phones' central-state Gaussians (Kaldi ``cluster-phones``): every node of the
  cluster tree is a question; plus the silence / non-silence question.
* :func:`grow_tree` / :func:`build_tree`: one root per (centre phone, hmm-state); greedy
  best-first splitting on "is the left/right phone in Q?", the gain being the increase of
  the log-likelihood of the data under one diagonal Gaussian per node; stops at
  ``num_leaves`` or when no split leaves ``min_count`` frames on both sides. The tree is
  compiled into a dense :class:`~asr.hmm.context.ContextDependency` table: the questions
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

LEFT, RIGHT = 0, 2  # positions in the (l, c, r) context window


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
    """Log-likelihood of data under its own ML diagonal Gaussian, from statistics.

    ``-0.5 * n * (D * (1 + log 2 pi) + sum_d log var_d)`` with var floored; 0 where n = 0.

    Args:
        count: (...,); s, ss: (..., D).
    """
    n = count.clamp(min=1e-10).unsqueeze(-1)
    mean = s / n
    var = (ss / n - mean * mean).clamp(min=var_floor)
    D = s.shape[-1]
    ll = -0.5 * count * (D * (1.0 + math.log(2 * math.pi)) + var.log().sum(-1))
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
    split: tuple[int, int] | None = None  # (position, question index)
    yes: int = -1
    no: int = -1
    best: tuple[float, int, int] | None = None  # (gain, position, question)


@dataclass
class DecisionTree:
    """A grown tree: ``roots[(c, s)]`` -> node index; leaves numbered in ``leaf_pdf``.

    ``split_gains`` / ``split_nodes``: log-likelihood gain and node of every split, in the order made;
    ``root_loglik`` / ``leaf_loglik``: total single-Gaussian log-likelihood of the
    statistics at the roots / leaves (their difference is ``sum(split_gains)``).
    """

    num_phones: int
    max_states: int
    questions: list[frozenset[int]]
    nodes: list[_Node]
    roots: dict[tuple[int, int], int]
    split_gains: list[float] = field(default_factory=list)
    split_nodes: list[int] = field(default_factory=list)
    root_loglik: float = 0.0
    leaf_loglik: float = 0.0

    @property
    def num_leaves(self) -> int:
        return sum(1 for nd in self.nodes if nd.split is None)

    def leaf_pdfs(self) -> dict[int, int]:
        """Node index -> pdf id, phone-major (roots in (c, s) order), yes-branch first."""
        out: dict[int, int] = {}
        for key in sorted(self.roots):
            stack = [self.roots[key]]
            while stack:
                i = stack.pop()
                nd = self.nodes[i]
                if nd.split is None:
                    out[i] = len(out)
                else:
                    stack.extend([nd.no, nd.yes])
        return out

    def to_context_dependency(self) -> ContextDependency:
        """Compile into a dense (P+1)^3 x S table, routing every (l, r) through the questions."""
        P1 = self.num_phones + 1
        table = torch.full((P1, P1, P1, self.max_states), -1, dtype=torch.long)
        pdf_of = self.leaf_pdfs()
        member = torch.zeros(len(self.questions), P1, dtype=torch.bool)
        for qi, q in enumerate(self.questions):
            member[qi, sorted(q)] = True
        for (c, s), root in self.roots.items():
            grid = torch.full((P1, P1), -1, dtype=torch.long)  # (left, right)
            stack = [(root, torch.ones(P1, P1, dtype=torch.bool))]
            while stack:
                i, mask = stack.pop()
                nd = self.nodes[i]
                if nd.split is None:
                    grid[mask] = pdf_of[i]
                    continue
                pos, qi = nd.split
                ans = member[qi].view(-1, 1).expand(P1, P1) if pos == LEFT else member[qi].view(1, -1).expand(P1, P1)
                stack.append((nd.yes, mask & ans))
                stack.append((nd.no, mask & ~ans))
            table[:, c, :, s] = grid
        return ContextDependency(table, 3, 1)


def grow_tree(stats: TreeStats, questions: Sequence[frozenset[int]], topo: Topology, num_leaves: int,
              min_count: float = 100.0, ci_phones: Sequence[int] = (), var_floor: float = 0.01) -> DecisionTree:
    """Greedy best-first likelihood-gain splitting (Young, Odell & Woodland 1994).

    Args:
        stats: tree statistics (contexts of phones outside the topology raise ValueError).
        questions: phone sets asked about the left and the right context.
        topo: the HMM topology (one root per (phone, hmm-state)).
        num_leaves: target number of leaves (pdfs); must be >= the number of roots.
        min_count: minimum frames on each side of a split.
        ci_phones: phones kept context-independent (e.g. silence): their roots are never split.
        var_floor: variance floor of the node Gaussians.
    Returns:
        :class:`DecisionTree`.
    """
    P = topo.num_phones
    keys = stats.keys
    if keys.numel() and (int(keys[:, :3].max()) > P or int(keys[:, 1].min()) < 1):
        raise ValueError(f"tree statistics hold phone ids outside 0..{P}")
    if keys.numel() and bool((keys[:, 3] >= topo.num_states[keys[:, 1]]).any()):
        raise ValueError("tree statistics hold hmm-states beyond the topology")
    roots_keys = [(c, s) for c in range(1, P + 1) for s in range(int(topo.num_states[c]))]
    if num_leaves < len(roots_keys):
        raise ValueError(f"num_leaves={num_leaves} is smaller than the {len(roots_keys)} (phone, state) roots")
    qs = list(questions)
    member = torch.zeros(len(qs), P + 1, dtype=torch.float64)
    for qi, q in enumerate(qs):
        if any(not 0 <= p <= P for p in q):
            raise ValueError(f"question {qi} holds phone ids outside 0..{P}")
        member[qi, sorted(q)] = 1.0
    ci = {int(p) for p in ci_phones}
    order = torch.argsort(keys[:, 1] * (topo.max_states + 1) + keys[:, 3], stable=True)
    nodes: list[_Node] = []
    roots: dict[tuple[int, int], int] = {}
    grouped: dict[tuple[int, int], list[int]] = {}
    for i in order.tolist():
        grouped.setdefault((int(keys[i, 1]), int(keys[i, 3])), []).append(i)

    def make_node(entries: Tensor) -> int:
        n = stats.count[entries].sum()
        ll = gaussian_loglik(n, stats.sum[entries].sum(0), stats.sumsq[entries].sum(0), var_floor)
        nodes.append(_Node(entries, float(n), float(ll)))
        return len(nodes) - 1

    def best_split(i: int) -> None:
        nd = nodes[i]
        e = nd.entries
        if e.numel() < 2 or nd.count < 2 * min_count or not qs:
            return
        n, s, ss = stats.count[e], stats.sum[e], stats.sumsq[e]
        best = None
        for pos in (LEFT, RIGHT):
            yes = member[:, keys[e, pos]]  # (Q, E)
            ny = yes @ n
            sy, ssy = yes @ s, yes @ ss
            nn, sn, ssn = nd.count - ny, s.sum(0) - sy, ss.sum(0) - ssy
            gain = gaussian_loglik(ny, sy, ssy, var_floor) + gaussian_loglik(nn, sn, ssn, var_floor) - nd.loglik
            ok = (ny >= max(min_count, 1e-6)) & (nn >= max(min_count, 1e-6))
            gain = torch.where(ok, gain, torch.full_like(gain, -math.inf))
            g, qi = gain.max(0)
            if math.isfinite(float(g)) and (best is None or float(g) > best[0]):
                best = (float(g), pos, int(qi))
        nd.best = best

    heap: list[tuple[float, int]] = []
    for key in roots_keys:
        e = torch.tensor(grouped.get(key, []), dtype=torch.long)
        i = make_node(e)
        roots[key] = i
        if key[0] not in ci:
            best_split(i)
            if nodes[i].best is not None:
                heapq.heappush(heap, (-nodes[i].best[0], i))
    tree = DecisionTree(P, topo.max_states, qs, nodes, roots)
    tree.root_loglik = sum(nd.loglik for nd in nodes)
    leaves = len(roots_keys)
    while leaves < num_leaves and heap:
        _, i = heapq.heappop(heap)
        nd = nodes[i]
        gain, pos, qi = nd.best
        yes_mask = member[qi, keys[nd.entries, pos]] > 0
        nd.split = (pos, qi)
        nd.yes = make_node(nd.entries[yes_mask])
        nd.no = make_node(nd.entries[~yes_mask])
        tree.split_gains.append(gain)
        tree.split_nodes.append(i)
        leaves += 1
        for child in (nd.yes, nd.no):
            best_split(child)
            if nodes[child].best is not None:
                heapq.heappush(heap, (-nodes[child].best[0], child))
    tree.leaf_loglik = sum(nd.loglik for nd in nodes if nd.split is None)
    return tree


def build_tree(stats: TreeStats, questions: Sequence[frozenset[int]], topo: Topology, num_leaves: int,
               min_count: float = 100.0, ci_phones: Sequence[int] = (), var_floor: float = 0.01) -> ContextDependency:
    """Grow a tree (:func:`grow_tree`) and compile it to a triphone :class:`ContextDependency`
    (context_width 3, central_position 1), its table filled for every (l, c, r)."""
    return grow_tree(stats, questions, topo, num_leaves, min_count, ci_phones, var_floor).to_context_dependency()
