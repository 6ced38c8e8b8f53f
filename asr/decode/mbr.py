"""Minimum Bayes risk decoding of lattices, as Kaldi's scoring does it.

Kaldi's TIMIT scoring (``local/score.sh``) does not take the best path of each lattice: for every
LM weight LMWT it runs ``lattice-to-ctm-conf --acoustic-scale=1/LMWT``, i.e. ``MinimumBayesRisk``
(``src/lat/sausages.cc``; Xu, Povey, Mangu & Zhu 2011, "Minimum Bayes Risk decoding and system
combination based on a recursion for edit distance", Computer Speech and Language 25(4)), which
looks for the word sequence of least expected edit distance to the lattice's paths. Here:

1. ``word_lattice``: the word-level lattice Kaldi decodes from. Kaldi determinizes its lattices on
   words when it writes them (``DeterminizeLatticePruned`` at the decode acoustic scale, pruned at
   the lattice beam), keeping for every word sequence its best alignment's (graph, acoustic) costs.
   We do the same from the raw state-level lattice: epsilon removal in the tropical semiring
   (best epsilon path between word arcs), then determinization on words, one layer of the output
   (states reached after k words) at a time, pruned like Kaldi's (a transition is dropped when its
   best completion is more than ``beam`` worse than the best path). Costs stay (graph, acoustic)
   pairs, so one word lattice serves every LMWT.
2. ``mbr_decode_word_lattice``: for each LMWT, the arc log-likelihoods ``-(graph + acoustic/LMWT)``,
   forward probabilities, and Kaldi's ``MbrDecode``: starting from the lattice's best path R,
   ``AccStats`` runs the edit-distance recursion of Figure 4 of the paper (forward: for every state
   n and prefix R[1..q] the expected edit distance alpha'(n, q), each arc taking the cheapest of
   substitution/match, insertion and deletion from its source's averages) and the backward pass of
   Figure 5 (the occupancy of every (position q, word) pair, gamma), then every position of R takes
   its most likely word (epsilon = none), until nothing changes. Positions alternate epsilon/word,
   so a word can also be inserted or deleted.

Everything is vectorised over the arcs entering one layer of states (and over all LM weights at
once); the Python loops run over layers (about the number of words of an utterance) and iterations.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asr.decode.decoder import DecodeConfig, lattice_best_words
from asr.decode.lattice import LatticeArrays, lattice_to_arrays
from asr.decode.posteriors import _frontiers, _segment_logsumexp

DET_DELTA = 1.0 / 1024  # Kaldi's kDelta: determinized states whose residual costs agree to this merge
MBR_DELTA = 1e-5  # Kaldi's MinimumBayesRisk::delta(): extra cost of a second insertion in one slot
_TIE = 1e-9  # edit-distance values closer than this are ties (Kaldi's exact comparisons, rounding aside)
MAX_ITERS = 100  # Kaldi stops MbrDecode after 101 iterations


@dataclass
class WordLattice:
    """A deterministic word acceptor in layers: layer k holds the states reached after k words,
    every arc goes from layer k to k + 1, states are numbered layer by layer, start state 0.

    src, dst, word: (A,) int64 (word ids > 0); graph_cost, acoustic_cost: (A,) float64 (-ln,
    acoustic unscaled); final_graph, final_acoustic: (S,) float64, +inf where not final;
    layer: (S,) int64. A path's cost at LM weight w is sum(graph) + sum(acoustic) / w + final.
    """

    num_states: int
    src: np.ndarray
    dst: np.ndarray
    word: np.ndarray
    graph_cost: np.ndarray
    acoustic_cost: np.ndarray
    final_graph: np.ndarray
    final_acoustic: np.ndarray
    layer: np.ndarray


class _TooLarge(Exception):
    pass


def _by_source(src: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Arc order grouped by source and each source's first position in it (CSR of n states)."""
    order = np.argsort(src, kind="stable")
    return order, np.searchsorted(src[order], np.arange(n + 1))


def _out_arcs(states: np.ndarray, order: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, arc) for every arc leaving ``states[i]`` (arcs grouped by ``_by_source``)."""
    lo = starts[states]
    cnt = starts[states + 1] - lo
    item = np.repeat(np.arange(states.size), cnt)
    pos = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + lo[item]
    return item, order[pos]


def _argmin_per_key(key: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Index of the cheapest element of every distinct key, in ascending key order."""
    order = np.lexsort((cost, key))
    k = key[order]
    return order[np.r_[True, k[1:] != k[:-1]]] if k.size else order


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of uint64 values (hashing determinized subsets)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _remove_epsilons(la: LatticeArrays, acwt: float):
    """Tropical epsilon removal at cost ``graph + acwt * acoustic``, keeping the (graph, acoustic)
    pair of the best path. Nodes: the start state and every destination of a word arc (M of them,
    in state order, so node 0 is the start and arcs go from lower to higher nodes). Returns
    (M, arcs (u, v, word, graph, acoustic), final graph (M,), final acoustic (M,))."""
    S = int(la.num_states)
    src, dst = la.src.numpy().astype(np.int64), la.dst.numpy().astype(np.int64)
    word = la.word.numpy().astype(np.int64)
    g, a = la.graph_cost.numpy().astype(np.float64), la.acoustic_cost.numpy().astype(np.float64)
    final = la.final.numpy().astype(np.float64)
    entry = np.unique(np.r_[int(la.start), dst[word > 0]])
    M = entry.size
    node_of = np.full(S, -1, dtype=np.int64)
    node_of[entry] = np.arange(M)
    eps = np.flatnonzero(word == 0)
    e_order, e_starts = _by_source(src[eps], S)
    # closure: (node, state, graph, acoustic) of the best epsilon path, one path length at a time
    fu, fs = np.arange(M), entry
    fg, fa = np.zeros(M), np.zeros(M)
    parts = [(fu, fs, fg, fa)]
    for _ in range(S):
        it, k = _out_arcs(fs, e_order, e_starts)
        if not it.size:
            break
        arc = eps[k]
        nu, ns, ng, na = fu[it], dst[arc], fg[it] + g[arc], fa[it] + a[arc]
        keep = _argmin_per_key(nu * S + ns, ng + acwt * na)
        fu, fs, fg, fa = nu[keep], ns[keep], ng[keep], na[keep]
        parts.append((fu, fs, fg, fa))
    cu, cs, cg, ca = (np.concatenate(x) for x in zip(*parts))
    keep = _argmin_per_key(cu * S + cs, cg + acwt * ca)
    cu, cs, cg, ca = cu[keep], cs[keep], cg[keep], ca[keep]
    # word arcs leaving the closure
    wa = np.flatnonzero(word > 0)
    w_order, w_starts = _by_source(src[wa], S)
    it, k = _out_arcs(cs, w_order, w_starts)
    arc = wa[k]
    au, av, aw = cu[it], node_of[dst[arc]], word[arc]
    ag, aa = cg[it] + g[arc], ca[it] + a[arc]
    W = int(word.max()) + 1 if word.size else 1
    keep = _argmin_per_key((au * M + av) * W + aw, ag + acwt * aa)
    arcs = (au[keep], av[keep], aw[keep], ag[keep], aa[keep])
    # final costs
    fin = np.isfinite(final[cs])
    fu, fgv, fav = cu[fin], cg[fin] + final[cs[fin]], ca[fin]
    keep = _argmin_per_key(fu, fgv + acwt * fav)
    final_g, final_a = np.full(M, np.inf), np.full(M, np.inf)
    final_g[fu[keep]], final_a[fu[keep]] = fgv[keep], fav[keep]
    return M, arcs, final_g, final_a


def _best_to_end(M: int, u: np.ndarray, v: np.ndarray, c: np.ndarray, final_c: np.ndarray) -> np.ndarray:
    """Cost of the best path from every node of an acyclic graph (all nodes reachable from 0) to the end."""
    fronts = _frontiers(M, u, v, 0)
    level = np.empty(M, dtype=np.int64)
    for k, f in enumerate(fronts):
        level[f] = k
    order = np.argsort(level[u], kind="stable")
    u, v, c = u[order], v[order], c[order]
    bounds = np.searchsorted(level[u], np.arange(len(fronts) + 1))
    bwd = final_c.copy()
    for k in range(len(fronts) - 1, -1, -1):
        lo, hi = bounds[k], bounds[k + 1]
        np.minimum.at(bwd, u[lo:hi], c[lo:hi] + bwd[v[lo:hi]])
    return bwd


def _determinize(M: int, arcs, final_g: np.ndarray, final_a: np.ndarray, acwt: float, beam: float,
                 max_states: int) -> WordLattice:
    """Pruned determinization on words (Kaldi ``DeterminizeLatticePruned``, lattice semiring:
    weights compared by ``graph + acwt * acoustic``) of the epsilon-free word graph, layer by
    layer. A determinized state is a set of (node, residual cost pair); sets equal to within
    ``DET_DELTA`` are one state."""
    au, av, aw, ag, aa = arcs
    ac = ag + acwt * aa
    final_c = final_g + acwt * final_a
    bwd = _best_to_end(M, au, av, ac, final_c)
    cutoff = bwd[0] + beam
    order, starts = _by_source(au, M)
    W = int(aw.max()) + 1 if aw.size else 1
    ed, ev = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    eg, ea = np.zeros(1), np.zeros(1)
    fwd = [np.zeros(1)]
    fwd_all = fwd[0]
    out_src, out_dst, out_w, out_g, out_a = [], [], [], [], []
    fin_id, fin_g, fin_a, layers = [], [], [], [np.zeros(1, dtype=np.int64)]
    n_states, layer = 1, 0
    while ed.size:
        ec = eg + acwt * ea
        fc = ec + final_c[ev]
        ok = np.flatnonzero(np.isfinite(fc))
        if ok.size:
            best = ok[_argmin_per_key(ed[ok], fc[ok])]
            within = fwd_all[ed[best]] + fc[best] <= cutoff
            best = best[within]
            fin_id.append(ed[best])
            fin_g.append(eg[best] + final_g[ev[best]])
            fin_a.append(ea[best] + final_a[ev[best]])
        it, k = _out_arcs(ev, order, starts)
        if not it.size:
            break
        d, w, v = ed[it], aw[k], av[k]
        g, a = eg[it] + ag[k], ea[it] + aa[k]
        c = g + acwt * a
        gkey = d * W + w
        # an element none of whose completions is within the beam is dropped (this drops every
        # transition Kaldi would not take, and keeps its subsets small)
        live = fwd_all[d] + c + bwd[v] <= cutoff
        d, w, v, g, a, c, gkey = d[live], w[live], v[live], g[live], a[live], c[live], gkey[live]
        if not d.size:
            break
        keep = _argmin_per_key(gkey * M + v, c)  # one element per (state, word, node), sorted
        d, w, v, g, a, c, gkey = d[keep], w[keep], v[keep], g[keep], a[keep], c[keep], gkey[keep]
        gstart = np.flatnonzero(np.r_[True, gkey[1:] != gkey[:-1]])
        G = gstart.size
        gid = np.cumsum(np.r_[True, gkey[1:] != gkey[:-1]]) - 1
        b = _argmin_per_key(gid, c)
        arc_g, arc_a, arc_c = g[b], a[b], c[b]
        rg, ra = g - arc_g[gid], a - arc_a[gid]
        qg = np.rint(rg / DET_DELTA).astype(np.int64)
        qa = np.rint(ra * acwt / DET_DELTA).astype(np.int64)
        h = _mix(_mix(v.astype(np.uint64)) + _mix(qg.view(np.uint64) ^ np.uint64(0x9E3779B97F4A7C15))
                 + _mix(qa.view(np.uint64) + np.uint64(0x632BE59BD9B4E019)))
        size = np.diff(np.r_[gstart, gid.size])
        gh = _mix(np.add.reduceat(h, gstart) + size.astype(np.uint64))
        _, first, inv = np.unique(gh, return_index=True, return_inverse=True)
        rep = first[inv.ravel()]
        # a hash collision must not merge different subsets: compare with the representative
        other = np.flatnonzero(rep != np.arange(G))
        if other.size:
            same_size = size[other] == size[rep[other]]
            rep[other[~same_size]] = other[~same_size]
            chk = other[same_size]
            if chk.size:
                cnt = size[chk]
                ei = np.repeat(np.arange(chk.size), cnt)
                offs = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                pos, rpos = gstart[chk][ei] + offs, gstart[rep[chk]][ei] + offs
                bad = (v[pos] != v[rpos]) | (qg[pos] != qg[rpos]) | (qa[pos] != qa[rpos])
                badg = np.unique(chk[ei[bad]])
                rep[badg] = badg
        is_rep = rep == np.arange(G)
        n_new = int(is_rep.sum())
        local = np.full(G, -1, dtype=np.int64)
        local[is_rep] = np.arange(n_new)
        target = local[rep]
        f_new = np.full(n_new, np.inf)
        gsrc = d[gstart]
        np.minimum.at(f_new, target, fwd_all[gsrc] + arc_c)
        out_src.append(gsrc)
        out_dst.append(n_states + target)
        out_w.append(w[gstart])
        out_g.append(arc_g)
        out_a.append(arc_a)
        layer += 1
        layers.append(np.full(n_new, layer, dtype=np.int64))
        fwd_all = np.concatenate([fwd_all, f_new])
        sel = is_rep[gid]
        ed, ev, eg, ea = n_states + target[gid[sel]], v[sel], rg[sel], ra[sel]
        n_states += n_new
        if n_states > max_states:
            raise _TooLarge
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt))
    src, dst, wrd = cat(out_src, np.int64), cat(out_dst, np.int64), cat(out_w, np.int64)
    gc, acst = cat(out_g, np.float64), cat(out_a, np.float64)
    fg_all, fa_all = np.full(n_states, np.inf), np.full(n_states, np.inf)
    fid = cat(fin_id, np.int64)
    fg_all[fid], fa_all[fid] = cat(fin_g, np.float64), cat(fin_a, np.float64)
    return _trim(WordLattice(n_states, src, dst, wrd, gc, acst, fg_all, fa_all, np.concatenate(layers)))


def _trim(wl: WordLattice) -> WordLattice:
    """Drop the states (and their arcs) from which no final state is reachable; keep the order."""
    co = np.isfinite(wl.final_graph)
    order = np.argsort(-wl.layer[wl.src], kind="stable")
    lay = wl.layer[wl.src][order]
    bounds = np.flatnonzero(np.r_[True, lay[1:] != lay[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = order[lo:hi]
        co[wl.src[sel]] |= co[wl.dst[sel]]
    if not co[0]:
        raise ValueError("word lattice has no complete path")
    new = np.cumsum(co) - 1
    ka = co[wl.src] & co[wl.dst]
    return WordLattice(int(co.sum()), new[wl.src[ka]], new[wl.dst[ka]], wl.word[ka], wl.graph_cost[ka],
                       wl.acoustic_cost[ka], wl.final_graph[co], wl.final_acoustic[co], wl.layer[co])


def word_lattice(lat, acwt: float = 0.1, beam: float = 6.0, max_states: int = 200_000) -> WordLattice:
    """The determinized word lattice of a raw state-level lattice (``kaldifst.Lattice`` or
    ``LatticeArrays``), as Kaldi writes lattices: every word sequence whose best path is within
    ``beam`` of the best (costs ``graph + acwt * acoustic``, ``acwt`` the decode acoustic scale),
    with that best path's (graph, acoustic) costs. When the result would pass ``max_states``
    states the beam is halved (with a warning), as Kaldi retries with a narrower beam."""
    la = lat if isinstance(lat, LatticeArrays) else lattice_to_arrays(lat)
    M, arcs, final_g, final_a = _remove_epsilons(la, acwt)
    b = beam
    while True:
        try:
            return _determinize(M, arcs, final_g, final_a, acwt, b, max_states)
        except _TooLarge:
            b *= 0.5
            warnings.warn(f"word lattice over {max_states} states at beam {2 * b:g}; retrying with beam {b:g}",
                          UserWarning, stacklevel=2)


class _Levels:
    """Arcs of an acyclic graph (every node reachable from node 0) grouped for level sweeps:
    ``fwd[k]`` = (arc indices sorted by destination, segment starts, destinations) of the arcs
    entering level k; ``bwd[k]`` the same for the arcs leaving level k, grouped by source."""

    def __init__(self, n: int, u: np.ndarray, v: np.ndarray, level: np.ndarray | None = None) -> None:
        if level is None:
            level = np.empty(n, dtype=np.int64)
            for k, f in enumerate(_frontiers(n, u, v, 0)):
                level[f] = k
        self.level = level
        K = int(level.max()) + 1 if n else 0
        self.fwd = self._groups(level[v], v, K)
        self.bwd = self._groups(level[u], u, K)
        # the arcs of fwd[k] again, grouped by source: (positions in fwd[k][0], starts, sources)
        self.fwd_src = []
        for idx, _, _ in self.fwd:
            o = np.argsort(u[idx], kind="stable")
            su = u[idx][o]
            first = np.flatnonzero(np.r_[True, su[1:] != su[:-1]]) if o.size else o
            self.fwd_src.append((o, first, su[first]))

    @staticmethod
    def _groups(lev: np.ndarray, key: np.ndarray, K: int) -> list:
        order = np.lexsort((key, lev))
        bounds = np.searchsorted(lev[order], np.arange(K + 1))
        out = []
        for k in range(K):
            idx = order[bounds[k]:bounds[k + 1]]
            kk = key[idx]
            first = np.flatnonzero(np.r_[True, kk[1:] != kk[:-1]]) if idx.size else idx
            out.append((idx, first, kk[first]))
        return out


def _forward_backward(lv: _Levels, u: np.ndarray, v: np.ndarray, ll: np.ndarray, final_ll: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log forward and backward scores (L, n) of every node and arc posteriors (L, A) for arc
    log-likelihoods ``ll`` (L, A) and final log-likelihoods ``final_ll`` (L, n), one row per LM weight."""
    L, n = final_ll.shape
    alpha = np.full((L, n), -np.inf)
    alpha[:, 0] = 0.0
    for idx, first, nodes in lv.fwd:
        if idx.size:
            alpha[:, nodes] = _segment_logsumexp(alpha[:, u[idx]] + ll[:, idx], first)
    beta = final_ll.copy()
    for idx, first, nodes in reversed(lv.bwd):
        if idx.size:
            beta[:, nodes] = np.logaddexp(beta[:, nodes], _segment_logsumexp(ll[:, idx] + beta[:, v[idx]], first))
    with np.errstate(invalid="ignore"):
        post = np.exp(alpha[:, u] + ll + beta[:, v] - beta[:, :1])
    return alpha, beta, np.nan_to_num(post)


def _normalize_eps(words: Sequence[int]) -> np.ndarray:
    """Kaldi ``NormalizeEps``: epsilon (0) before, between and after the words."""
    w = np.asarray([x for x in words if x != 0], dtype=np.int64)
    out = np.zeros(2 * w.size + 1, dtype=np.int64)
    out[1::2] = w
    return out


class _MbrGraph:
    """A word lattice prepared for the recursions: one super-final state N (= num_states) reached
    from every final state by an epsilon arc carrying the final cost, arcs grouped by level
    (layers of the word lattice, N on a level of its own), words as indices into ``vocab``
    (index 0 = epsilon)."""

    def __init__(self, wl: WordLattice) -> None:
        S = wl.num_states
        fin = np.flatnonzero(np.isfinite(wl.final_graph))
        self.N = S
        self.u = np.r_[wl.src, fin]
        self.v = np.r_[wl.dst, np.full(fin.size, S)]
        w = np.r_[wl.word, np.zeros(fin.size, dtype=np.int64)]
        self.g = np.r_[wl.graph_cost, wl.final_graph[fin]]
        self.a = np.r_[wl.acoustic_cost, wl.final_acoustic[fin]]
        self.vocab = np.unique(np.r_[0, w])
        self.wc = np.searchsorted(self.vocab, w)
        top = int(wl.layer.max()) + 1 if S else 0
        self.lv = _Levels(S + 1, self.u, self.v, np.r_[wl.layer, top])

    def loglikes(self, lmwts: np.ndarray) -> np.ndarray:
        """(L, A) arc log-likelihoods ``-(graph + acoustic / lmwt)`` (Kaldi ``lattice-scale``)."""
        return -(self.g[None, :] + self.a[None, :] / lmwts[:, None])

    def forward(self, ll: np.ndarray) -> np.ndarray:
        """(L, N+1) log forward scores."""
        alpha = np.full((ll.shape[0], self.N + 1), -np.inf)
        alpha[:, 0] = 0.0
        for idx, first, nodes in self.lv.fwd:
            if idx.size:
                alpha[:, nodes] = _segment_logsumexp(alpha[:, self.u[idx]] + ll[:, idx], first)
        return alpha

    def best_paths(self, ll: np.ndarray) -> list[list[int]]:
        """The words of the best path under every row of ``ll`` (Viterbi; ties: the first arc)."""
        L = ll.shape[0]
        score = np.full((L, self.N + 1), -np.inf)
        score[:, 0] = 0.0
        back = np.zeros((L, self.N + 1), dtype=np.int64)
        for idx, first, nodes in self.lv.fwd:
            if not idx.size:
                continue
            vals = score[:, self.u[idx]] + ll[:, idx]
            m = np.maximum.reduceat(vals, first, axis=1)
            seg = np.diff(np.r_[first, idx.size])
            pos = np.where(vals == np.repeat(m, seg, axis=1), np.arange(idx.size), idx.size)
            score[:, nodes] = m
            back[:, nodes] = idx[np.minimum.reduceat(pos, first, axis=1)]
        out = []
        for r in range(L):
            words, n = [], self.N
            while n != 0:
                arc = back[r, n]
                if self.wc[arc]:
                    words.append(int(self.vocab[self.wc[arc]]))
                n = self.u[arc]
            out.append(words[::-1])
        return out

    def acc_stats(self, post: np.ndarray, hyps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Kaldi ``AccStats`` for several hypotheses at once (one per column of ``post``).

        post: (A, B) probability of each arc given its destination state, exp(alpha(src) + ll -
            alpha(dst)); hyps: B epsilon-normalised hypotheses (``_normalize_eps``), words as
            indices into ``vocab``.
        Returns (risk (B,), gamma (B, Qmax + 1, V)): the recursion's expected edit distance
        (Figure 4; an upper bound on the true one, equal to it on a tree-shaped lattice up to the
        ``MBR_DELTA`` terms) and, for every position q = 1..Q of each hypothesis, the occupancy of
        every word (index 0 = epsilon) aligned to it (Figure 5). Tables are laid out
        (state or arc, hypothesis, position).
        """
        B, N, u, v, wc = len(hyps), self.N, self.u, self.v, self.wc
        Q = np.array([h.size for h in hyps])
        Qm = int(Q.max())
        rq = np.zeros((B, Qm + 1), dtype=np.int64)
        for r, h in enumerate(hyps):
            rq[r, 1:h.size + 1] = h
        c = (rq != 0).astype(np.float64)  # l(0, r_q): deleting r_q costs 1 unless it is epsilon
        C = np.cumsum(c, axis=1)
        ad = np.empty((N + 1, B, Qm + 1))  # alpha'(n, q)
        ad[0] = C
        # the choice of every arc at q = 1..Q: substitution/match (a1) or deletion of r_q (a3);
        # neither = insertion of the arc's word (a2)
        is_sub = np.empty((u.size, B, Qm), dtype=bool)
        is_del = np.empty((u.size, B, Qm), dtype=bool)
        for idx, first, nodes in self.lv.fwd:
            if idx.size:
                x = self._arc_recursion(ad[u[idx]], wc[idx], rq, c, C, is_sub, is_del, idx)
                x *= post[idx, :, None]
                ad[nodes] = np.add.reduceat(x, first, axis=0)
        risk = ad[N, np.arange(B), Q]
        bd = np.zeros((N + 1, B, Qm + 1))  # beta'(n, q)
        bd[N, np.arange(B), Q] = 1.0
        V = self.vocab.size
        gamma = np.zeros(B * (Qm + 1) * V)
        base = (np.arange(B)[None, :, None] * (Qm + 1) + np.arange(1, Qm + 1)[None, None, :]) * V
        g_eps = np.zeros((B, Qm))
        for (idx, first, nodes), (o, sfirst, srcs) in zip(self.lv.fwd[::-1], self.lv.fwd_src[::-1]):
            if not idx.size:
                continue
            sub_k, del_k = is_sub[idx], is_del[idx]
            vin = bd[v[idx]]
            vin *= post[idx, :, None]
            ba = self._arc_flow(vin, del_k)
            sub = ba[..., 1:] * sub_k
            dele = ba[..., 1:] * del_k
            ba[..., 1:] -= sub  # what is left at q goes to the source's q (insertion) ...
            ba[..., 1:] -= dele
            ba[..., :-1] += sub  # ... a substitution/match takes it to the source's q - 1
            bd[srcs] += np.add.reduceat(ba[o], sfirst, axis=0)
            gamma += np.bincount((base + wc[idx][:, None, None]).ravel(), weights=sub.ravel(),
                                 minlength=gamma.size)
            g_eps += dele.sum(axis=0)
        g_eps += np.cumsum(bd[0, :, :0:-1], axis=1)[:, ::-1]  # the start state: deletions up to q
        gamma = gamma.reshape(B, Qm + 1, V)
        gamma[:, 1:, 0] += g_eps
        return risk, gamma

    @staticmethod
    def _arc_recursion(A: np.ndarray, w: np.ndarray, rq: np.ndarray, c: np.ndarray, C: np.ndarray,
                       is_sub: np.ndarray, is_del: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Lines 14-18 of Figure 4 for a batch of arcs: A (K, B, Q+1) alpha' of the arcs' sources
        (overwritten), w (K,) their words. Returns alpha'_arc (K, B, Q+1) and writes the choice at
        q = 1..Q into ``is_sub[idx]`` (a1: w against r_q) and ``is_del[idx]`` (a3: r_q deleted),
        a2 (w inserted) otherwise; near-ties go to the first (Kaldi's order). The scan a3(q) =
        alpha'_arc(q-1) + l(0, r_q) is a running minimum: alpha'_arc(q) = C(q) + min_{k<=q}
        (b(k) - C(k)), b = min(a1, a2), C the cumulative deletion cost."""
        ins = np.where(w != 0, 1.0 + MBR_DELTA, 0.0)[:, None, None]  # l(w, 0, penalize)
        a1 = A[..., :-1] + (w[:, None, None] != rq[None, :, 1:])
        A += ins
        a2 = A[..., 1:]
        x = A.copy()
        np.minimum(a1, a2, out=x[..., 1:])
        x -= C
        np.minimum.accumulate(x, axis=2, out=x)
        x += C
        a3 = x[..., :-1] + c[:, 1:]
        m = np.minimum(a2, a3)
        m += _TIE
        sub = a1 <= m
        is_sub[idx] = sub
        a3 += _TIE
        is_del[idx] = (a2 > a3) & ~sub
        return x

    @staticmethod
    def _arc_flow(vin: np.ndarray, dele: np.ndarray) -> np.ndarray:
        """beta'_arc of Figure 5 (lines 19-25): beta_arc(q) = vin(q) + [deletion at q+1] *
        beta_arc(q+1), i.e. the sum of vin over q..e(q), e(q) the first position >= q not
        followed by a deletion. vin (K, B, Q+1), dele (K, B, Q) (the deletions at q = 1..Q)."""
        Qp = vin.shape[-1]
        end = np.empty(vin.shape, dtype=np.int64)
        end[...] = np.arange(1, Qp + 1)
        end[..., :-1][dele] = Qp + 1  # q is continued by q + 1
        end = np.minimum.accumulate(end[..., ::-1], axis=-1)[..., ::-1]
        rows = vin.size // Qp
        end += (np.arange(rows) * (Qp + 1)).reshape(vin.shape[:-1] + (1,))
        suf = np.zeros(vin.shape[:-1] + (Qp + 1,))
        np.cumsum(vin[..., ::-1], axis=-1, out=suf[..., -2::-1])
        return suf[..., :-1] - suf.reshape(-1)[end]


def _mbr_rows(mg: _MbrGraph, ll: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Kaldi ``MbrDecode`` for every row of ``ll`` (LM weights): start from the best path, then
    repeat ``AccStats`` and give every position its most likely word (ties: the higher word id,
    as Kaldi's sort) until the bound on the change of expected errors is 0. Returns the
    hypotheses (word ids, epsilons removed) and their expected edit distances (Kaldi's L)."""
    B = ll.shape[0]
    alpha = mg.forward(ll)
    with np.errstate(invalid="ignore"):
        post = np.ascontiguousarray(np.nan_to_num(np.exp(alpha[:, mg.u] + ll - alpha[:, mg.v])).T)
    R = [np.searchsorted(mg.vocab, np.asarray(h, dtype=np.int64)) for h in mg.best_paths(ll)]
    risks = np.zeros(B)
    active = list(range(B))
    for it in range(MAX_ITERS + 1):
        hyps = [_normalize_eps(R[r]) for r in active]
        risk, gamma = mg.acc_stats(post[:, active], hyps)
        still = []
        for j, r in enumerate(active):
            h = hyps[j]
            gm = gamma[j, 1:h.size + 1]
            best = gm.shape[1] - 1 - np.argmax(gm[:, ::-1], axis=1)
            rows = np.arange(h.size)
            delta_q = float((gm[rows, h] - gm[rows, best]).sum())
            R[r] = best[best != 0]
            risks[r] = risk[j]
            if delta_q != 0.0:
                still.append(r)
        active = still
        if not active:
            break
    else:
        warnings.warn(f"MBR decoding did not converge in {MAX_ITERS + 1} iterations", UserWarning, stacklevel=3)
    return [mg.vocab[r].tolist() for r in R], risks


def _as_word_lattice(lat, acwt: float, beam: float) -> WordLattice:
    return lat if isinstance(lat, WordLattice) else word_lattice(lat, acwt, beam)


def mbr_decode_grid(lat, lmwts: Sequence[float], acwt: float = 0.1, beam: float = 6.0,
                    max_cells: int = 1 << 23) -> list[list[int]]:
    """MBR word ids of a lattice for every LM weight of ``lmwts`` (Kaldi ``lattice-to-ctm-conf
    --acoustic-scale=1/LMWT --lm-scale=1``; see the module docstring).

    lat: a raw ``kaldifst.Lattice``, its ``LatticeArrays`` or a ``WordLattice``; ``acwt`` and
    ``beam``: the decode acoustic scale and lattice beam (determinization, ``word_lattice``).
    LM weights are processed together, in batches of at most ``max_cells`` (state x position)
    cells per table."""
    return [h for h, _ in mbr_decode_with_risk(lat, lmwts, acwt, beam, max_cells)]


def mbr_decode_with_risk(lat, lmwts: Sequence[float], acwt: float = 0.1, beam: float = 6.0,
                         max_cells: int = 1 << 23) -> list[tuple[list[int], float]]:
    """``mbr_decode_grid`` with each hypothesis's expected edit distance (Kaldi's Bayes risk)."""
    wl = _as_word_lattice(lat, acwt, beam)
    mg = _MbrGraph(wl)
    lm = np.asarray(lmwts, dtype=np.float64)
    if lm.size == 0 or (lm <= 0).any():
        raise ValueError(f"LM weights must be positive, got {list(lmwts)}")
    q_est = 2 * (int(wl.layer.max()) + 2) + 1
    step = max(1, max_cells // ((mg.N + 1) * q_est))
    out: list[tuple[list[int], float]] = []
    for lo in range(0, lm.size, step):
        hyps, risks = _mbr_rows(mg, mg.loglikes(lm[lo:lo + step]))
        out.extend(zip(hyps, risks.tolist()))
    return out


def mbr_decode(lat, lmwt: float, acwt: float = 0.1, beam: float = 6.0) -> list[int]:
    """MBR word ids of one lattice at LM weight ``lmwt`` (see ``mbr_decode_grid``)."""
    return mbr_decode_grid(lat, [lmwt], acwt, beam)[0]


def lattice_words(lat, grid: Sequence[float], cfg: DecodeConfig) -> list[list[int]]:
    """The word ids a lattice is scored with at every LM weight of ``grid``: its MBR hypothesis
    (``cfg.mbr``, as Kaldi's ``score.sh``) or its best path (``lattice_best_words``)."""
    if not cfg.mbr:
        return [lattice_best_words(lat, w) for w in grid]
    beam = cfg.lattice_beam if cfg.mbr_beam is None else cfg.mbr_beam
    return mbr_decode_grid(lat, grid, acwt=cfg.acwt, beam=beam)
