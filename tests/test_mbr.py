"""Minimum Bayes risk decoding (asr.decode.mbr) against brute force on small lattices: path
enumeration with posteriors, Levenshtein distances, every candidate hypothesis."""
from __future__ import annotations

import itertools
import math

import kaldifst
import numpy as np
import pytest

from asr.decode.decoder import lattice_best_words
from asr.decode.mbr import (WordLattice, _MbrGraph, _normalize_eps, mbr_decode, mbr_decode_grid,
                            mbr_decode_with_risk, word_lattice)

from test_decode import SENTS, _loglikes, graph  # noqa: F401 (graph: a fixture)


def levenshtein(a, b) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def random_word_lattice(rng: np.random.Generator, layers: int, width: int, vocab: int, tree: bool,
                        extra: float = 0.6, scale: float = 1.0) -> WordLattice:
    """A deterministic word acceptor in layers; ``tree``: one arc into every state; costs up to
    ``scale`` x (2 graph, 20 acoustic) per arc."""
    layer_states, n = [[0]], 1
    src, dst, word = [], [], []
    used: dict[int, set] = {0: set()}

    def add(s, d):
        free = [w for w in range(1, vocab + 1) if w not in used[s]]
        if not free:
            return False
        w = int(rng.choice(free))
        used[s].add(w)
        src.append(s), dst.append(d), word.append(w)
        return True

    for k in range(1, layers + 1):
        new = []
        for _ in range(int(rng.integers(1, width + 1))):
            free = [s for s in layer_states[-1] if len(used[s]) < vocab]
            if not free:
                break
            d = n
            n += 1
            new.append(d)
            used[d] = set()
            add(int(rng.choice(free)), d)
            if not tree:
                for s in layer_states[-1]:
                    if rng.random() < extra / len(layer_states[-1]):
                        add(s, d)
        layer_states.append(new)
    src, dst, word = np.array(src), np.array(dst), np.array(word)
    final = np.zeros(n, dtype=bool)
    final[layer_states[-1]] = True
    final[np.setdiff1d(np.arange(n), src)] = True
    final |= rng.random(n) < 0.2
    layer = np.concatenate([np.full(len(s), k) for k, s in enumerate(layer_states)])
    fg = np.where(final, rng.uniform(0, 1, n), np.inf)
    fa = np.where(final, rng.uniform(0, 10, n), np.inf)
    return WordLattice(n, src, dst, word, scale * rng.uniform(0, 2, src.size),
                       scale * rng.uniform(0, 20, src.size), scale * fg, scale * fa, layer)


def paths(wl: WordLattice, lmwt: float) -> list[tuple[tuple[int, ...], float]]:
    """Every complete path: (words, posterior) at LM weight ``lmwt``."""
    out = []

    def walk(s, words, cost):
        if np.isfinite(wl.final_graph[s]):
            out.append((tuple(words), cost + wl.final_graph[s] + wl.final_acoustic[s] / lmwt))
        for a in np.flatnonzero(wl.src == s):
            walk(wl.dst[a], words + [int(wl.word[a])], cost + wl.graph_cost[a] + wl.acoustic_cost[a] / lmwt)
    walk(0, [], 0.0)
    m = min(c for _, c in out)
    z = sum(math.exp(m - c) for _, c in out)
    return [(w, math.exp(m - c) / z) for w, c in out]


def risk(ps, hyp) -> float:
    return sum(p * levenshtein(w, hyp) for w, p in ps)


def recursion_risk(wl: WordLattice, lmwt: float, hyp) -> tuple[float, np.ndarray]:
    """The recursion's expected edit distance of ``hyp`` and its occupancies (Q, V)."""
    mg = _MbrGraph(wl)
    ll = mg.loglikes(np.array([lmwt]))
    alpha = mg.forward(ll)
    post = np.exp(alpha[:, mg.u] + ll - alpha[:, mg.v]).T
    h = _normalize_eps(np.searchsorted(mg.vocab, np.asarray(hyp, dtype=np.int64)))
    r, gamma = mg.acc_stats(post, [h])
    return float(r[0]), gamma[0, 1:h.size + 1]


def one_best(ps):
    return max(ps, key=lambda x: x[1])[0]


@pytest.mark.parametrize("seed", range(12))
def test_recursion_is_the_expected_edit_distance_on_trees(seed):
    """On a tree every state has one history, so the recursion (Figure 4) is exact up to the
    MBR_DELTA (1e-5) penalty of second insertions; occupancies of every position sum to 1."""
    rng = np.random.default_rng(seed)
    wl = random_word_lattice(rng, layers=4, width=3, vocab=4, tree=True)
    for lmwt in (1.0, 6.0):
        ps = paths(wl, lmwt)
        for hyp in (list(one_best(ps)), list(rng.integers(1, 5, size=int(rng.integers(0, 5))))):
            hyp = [w for w in hyp if w in set(wl.word.tolist())]
            r, gamma = recursion_risk(wl, lmwt, hyp)
            assert r == pytest.approx(risk(ps, hyp), abs=1e-3)
            assert np.allclose(gamma.sum(axis=1), 1.0)


@pytest.mark.parametrize("seed", range(12))
def test_recursion_bounds_the_expected_edit_distance(seed):
    """With merging histories the recursion's value is an upper bound (the paper's Bayes-risk bound)."""
    rng = np.random.default_rng(100 + seed)
    wl = random_word_lattice(rng, layers=5, width=3, vocab=4, tree=False)
    for lmwt in (1.0, 6.0):
        ps = paths(wl, lmwt)
        hyp = list(one_best(ps))
        assert recursion_risk(wl, lmwt, hyp)[0] >= risk(ps, hyp) - 1e-9


def test_mbr_never_worse_than_one_best():
    """Over random lattices the MBR hypothesis's expected edit distance (brute force) is at most the
    1-best's; on trees this is the paper's guarantee (the bound decreases and is exact there)."""
    rng = np.random.default_rng(7)
    better = 0
    for k in range(60):
        tree = k % 2 == 0
        wl = random_word_lattice(rng, layers=5, width=3, vocab=4, tree=tree, scale=0.3)
        lmwts = [1.0, 4.0, 10.0]
        for lmwt, (hyp, r) in zip(lmwts, mbr_decode_with_risk(wl, lmwts)):
            ps = paths(wl, lmwt)
            r_mbr, r_best = risk(ps, hyp), risk(ps, one_best(ps))
            assert r_mbr <= r_best + 1e-4  # (ties within the MBR_DELTA penalties)
            if tree:
                assert r == pytest.approx(r_mbr, abs=1e-3)
            better += r_mbr < r_best - 1e-6
    assert better > 10  # MBR really differs from the best path on these lattices


def _lattice_from_paths(seqs: list[tuple[list[int], float]]) -> WordLattice:
    """A tree lattice of word sequences with the given costs (graph cost on the last arc)."""
    src, dst, word, layer, cost, final = [], [], [], [0], [], {}
    child: dict[tuple[int, int], int] = {}
    for words, c in seqs:
        s = 0
        for w in words:
            if (s, w) not in child:
                child[(s, w)] = len(layer)
                layer.append(layer[s] + 1)
                src.append(s), dst.append(child[(s, w)]), word.append(w), cost.append(0.0)
            s = child[(s, w)]
        final[s] = c
    n = len(layer)
    fg = np.array([final.get(s, np.inf) for s in range(n)])
    order = np.argsort(np.array(layer), kind="stable")  # number the states layer by layer
    new = np.empty(n, dtype=np.int64)
    new[order] = np.arange(n)
    a = np.argsort(new[np.array(src)], kind="stable")
    return WordLattice(n, new[np.array(src)][a], new[np.array(dst)][a], np.array(word)[a], np.array(cost)[a],
                       np.zeros(len(src)), fg[order], np.where(np.isfinite(fg[order]), 0.0, np.inf),
                       np.array(layer)[order])


def test_mbr_finds_the_optimum_the_best_path_misses():
    """A B C (0.4) against A D X, A D Y (0.3 each): the best path has 1.2 expected errors, A D C
    (never a path) 1.0, the minimum over every hypothesis of up to 4 words."""
    A, B, C, D, X, Y = 1, 2, 3, 4, 5, 6
    p = {(A, B, C): 0.4, (A, D, X): 0.3, (A, D, Y): 0.3}
    wl = _lattice_from_paths([(list(k), -math.log(v)) for k, v in p.items()])
    ps = paths(wl, 1.0)
    best = min(risk(ps, h) for n in range(5) for h in itertools.product(range(1, 7), repeat=n))
    assert best == pytest.approx(1.0)
    assert mbr_decode(wl, 1.0) == [A, D, C]
    assert lattice_best_words_of(wl, 1.0) == [A, B, C]


def lattice_best_words_of(wl: WordLattice, lmwt: float) -> list[int]:
    return list(one_best(paths(wl, lmwt)))


@pytest.mark.parametrize("seed", range(6))
def test_mbr_reaches_the_brute_force_optimum_on_tiny_trees(seed):
    """On tiny trees the local search ends at the best hypothesis of all (every word sequence over
    the lattice's words up to one word longer than its longest path)."""
    rng = np.random.default_rng(300 + seed)
    wl = random_word_lattice(rng, layers=3, width=3, vocab=3, tree=True)
    for lmwt in (1.0, 10.0):
        ps = paths(wl, lmwt)
        vocab = sorted(set(wl.word.tolist()))
        cands = [h for n in range(int(wl.layer.max()) + 2) for h in itertools.product(vocab, repeat=n)]
        best = min(risk(ps, h) for h in cands)
        assert risk(ps, mbr_decode(wl, lmwt)) == pytest.approx(best, abs=1e-9)


def _raw_lattice(rng: np.random.Generator, frames: int, width: int, words: int, eps_arcs: float = 0.3):
    """A random state-level ``kaldifst.Lattice`` (frame-synchronous, input labels pdf+1 or 0 for
    the non-emitting arcs, output labels words or 0), every state on a complete path."""
    lat = kaldifst.Lattice()
    per = [[lat.add_state()]]
    lat.start = per[0][0]
    for t in range(frames):
        nxt = [lat.add_state() for _ in range(int(rng.integers(1, width + 1)))]
        for d in nxt:
            for s in per[-1]:
                if s == per[-1][0] or rng.random() < 0.6:
                    w = int(rng.integers(1, words + 1)) if rng.random() < 0.4 else 0
                    lat.add_arc(s, kaldifst.LatticeArc(int(rng.integers(1, 5)), w, kaldifst.LatticeWeight(
                        float(rng.uniform(0, 2)), float(rng.uniform(0, 20))), d))
        if rng.random() < eps_arcs and len(nxt) > 1:  # a non-emitting arc within the frame
            lat.add_arc(nxt[0], kaldifst.LatticeArc(0, int(rng.integers(0, words + 1)),
                                                     kaldifst.LatticeWeight(float(rng.uniform(0, 2)), 0.0), nxt[-1]))
        per.append(nxt)
    for s in per[-1]:
        lat.set_final(s, kaldifst.LatticeWeight(float(rng.uniform(0, 1)), 0.0))
    return lat


def _raw_best_per_sequence(lat, acwt: float) -> dict[tuple[int, ...], tuple[float, float]]:
    """Brute force: every path of a raw lattice; per word sequence the (graph, acoustic) costs of
    its best path at cost graph + acwt * acoustic."""
    arcs: dict[int, list] = {}
    finals = {}
    for line in lat.to_str().strip().splitlines():
        f = line.split()
        if len(f) >= 4:
            g, a = (float(x) for x in f[4].split(","))
            arcs.setdefault(int(f[0]), []).append((int(f[1]), int(f[3]), g, a))
        else:
            g, a = (float(x) for x in f[1].split(","))
            if math.isfinite(g + a):  # (a state without arcs is printed with weight Zero)
                finals[int(f[0])] = (g, a)
    best: dict[tuple[int, ...], tuple[float, float]] = {}

    def walk(s, words, g, a):
        if s in finals:
            key, gg, aa = tuple(words), g + finals[s][0], a + finals[s][1]
            if key not in best or gg + acwt * aa < best[key][0] + acwt * best[key][1]:
                best[key] = (gg, aa)
        for d, w, dg, da in arcs.get(s, []):
            walk(d, words + [w] if w else words, g + dg, a + da)
    walk(lat.start, [], 0.0, 0.0)
    return best


def _word_lattice_sequences(wl: WordLattice) -> dict[tuple[int, ...], tuple[float, float]]:
    out = {}

    def walk(s, words, g, a):
        if np.isfinite(wl.final_graph[s]):
            assert tuple(words) not in out  # deterministic: one path per word sequence
            out[tuple(words)] = (g + wl.final_graph[s], a + wl.final_acoustic[s])
        for k in np.flatnonzero(wl.src == s):
            walk(wl.dst[k], words + [int(wl.word[k])], g + wl.graph_cost[k], a + wl.acoustic_cost[k])
    walk(0, [], 0.0, 0.0)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_word_lattice_keeps_each_sequence_with_its_best_alignment(seed):
    """Epsilon removal + determinization: every word sequence of the raw lattice once, with the
    (graph, acoustic) costs of its best path at the decode scale (Kaldi's determinized lattices);
    with a finite beam every sequence within it is kept exactly and nothing else is invented."""
    rng = np.random.default_rng(500 + seed)
    lat = _raw_lattice(rng, frames=6, width=3, words=3)
    acwt = 0.1
    ref = _raw_best_per_sequence(lat, acwt)
    got = _word_lattice_sequences(word_lattice(lat, acwt, beam=1e9))
    assert got.keys() == ref.keys()
    for k, (g, a) in ref.items():
        assert got[k] == pytest.approx((g, a), rel=1e-5, abs=1e-4)   # reference read from the text form (6 significant digits)
    wl = word_lattice(lat, acwt, beam=1.0)
    got = _word_lattice_sequences(wl)
    cost = {k: g + acwt * a for k, (g, a) in ref.items()}
    best = min(cost.values())
    assert all(k in got for k, c in cost.items() if c <= best + 1.0 - 1e-4)
    for k, (g, a) in got.items():
        assert g + acwt * a >= cost[k] - 1e-4
        if cost[k] <= best + 1.0 - 1e-4:
            assert (g, a) == pytest.approx(ref[k], rel=1e-5, abs=1e-4)
    if max(cost.values()) > best + 5.0:
        assert len(got) < len(ref)  # the beam pruned something


def test_single_path_lattice_gives_that_path():
    lat = kaldifst.Lattice()
    s = [lat.add_state() for _ in range(5)]
    lat.start = s[0]
    for i, (il, ol) in enumerate([(3, 0), (1, 7), (0, 0), (2, 9)]):
        lat.add_arc(s[i], kaldifst.LatticeArc(il, ol, kaldifst.LatticeWeight(0.5, 3.0), s[i + 1]))
    lat.set_final(s[-1], kaldifst.LatticeWeight(0.0, 0.0))
    assert mbr_decode_grid(lat, [1.0, 10.0, 20.0]) == [[7, 9]] * 3
    assert lattice_best_words(lat, 10.0) == [7, 9]


def test_mbr_rejects_bad_lm_weights():
    rng = np.random.default_rng(0)
    wl = random_word_lattice(rng, layers=2, width=2, vocab=3, tree=True)
    with pytest.raises(ValueError, match="positive"):
        mbr_decode_grid(wl, [0.0])


@pytest.mark.parametrize("graph", ["mono"], indirect=True)
def test_decode_and_score_lmwt_grid_with_and_without_mbr(graph, tmp_path):
    """decode_and_score scores every LM weight of the grid with the MBR hypothesis of each lattice
    (``mbr=True``) or its best path (the default); ``asr decode loglikes --mbr`` / ``--no-mbr`` too."""
    import functools

    import kaldiio

    from asr.cli.main import main
    from asr.decode import DecodeConfig, Graph, decode_and_score, lattice_one, loglikes_from_dict

    gdir, topo, ctx = graph
    lls = {u: x * 0.15 for u, x in _loglikes(topo, ctx, seed=10).items()}  # weak evidence: competing paths
    data = tmp_path / "data"
    data.mkdir()
    (data / "utt2spk").write_text("".join(f"{u} {u}\n" for u in SENTS))
    (data / "text.wrd").write_text("".join(f"{u} {' '.join(s)}\n" for u, s in SENTS.items()))
    grid = (2.0, 6.0, 10.0)
    g = Graph(gdir)
    lats = {u: lattice_one(g, u, ll, DecodeConfig()) for u, ll in lls.items()}
    job = functools.partial(loglikes_from_dict, lls)
    differ = 0
    for mbr in (True, False):
        out = tmp_path / f"dec_{mbr}"
        decode_and_score(gdir, data, out, job, DecodeConfig(lmwt_grid=grid, mbr=mbr), nj=2, mode="word")
        for k, w in enumerate(grid):
            want = {u: (mbr_decode_grid(lat, grid)[k] if mbr else lattice_best_words(lat, w)) for u, lat in lats.items()}
            lines = (out / f"hyp.{w:g}.txt").read_text().splitlines()
            assert lines == [f"{u} {' '.join(g.word_strings(want[u]))}".strip() for u in sorted(lats)]
            differ += mbr and any(want[u] != lattice_best_words(lats[u], w) for u in lats)
    assert differ > 0  # the grid really was scored with MBR hypotheses
    kaldiio.save_ark(str(tmp_path / "ll.ark"), {u: x.numpy() for u, x in lls.items()})
    for flag, ref_dir in (([], "dec_False"), (["--no-mbr"], "dec_False"), (["--mbr"], "dec_True")):
        out = tmp_path / f"cli{'_'.join(flag)}"
        assert main(["decode", "loglikes", "--graph", str(gdir), "--data", str(data), "--loglikes",
                     str(tmp_path / "ll.ark"), "--out", str(out), "--lmwt-grid", "2,6,10", "--mode", "word"] + flag) == 0
        assert (out / "hyp.6.txt").read_text() == (tmp_path / ref_dir / "hyp.6.txt").read_text()
