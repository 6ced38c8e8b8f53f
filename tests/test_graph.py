"""HCLG construction: path costs against a direct computation, transcripts recovered."""
from __future__ import annotations

import math

import kaldifst
import pytest
import torch

from asr.hmm import ContextDependency, Topology, TransitionModel
from asr.lang.arpa import read_arpa
from asr.lang.fstarrays import FstArrays, read_fst
from asr.lang.graph import add_self_loops, make_hclg
from asr.lang.langdir import make_phone_lang, make_word_lang
from asr.lang.lexicon import SymbolTable

PHONES = ["a", "b", "c", "sil"]
TEXT = "u1 sil a b c sil\nu2 sil b a sil\nu3 sil c c a sil\nu4 sil a sil\n"


def tied_triphone_table(topo: Topology, seed: int = 0) -> ContextDependency:
    """Random tree-like tying: each (centre, state) has 1..3 leaves chosen by the contexts;
    pdf sets of different (centre, state) are disjoint, as with per-(phone, state) tree roots."""
    g = torch.Generator().manual_seed(seed)
    P, S = topo.num_phones, topo.max_states
    table = torch.full((P + 1, P + 1, P + 1, S), -1, dtype=torch.long)
    nxt = 0
    for c in range(1, P + 1):
        for s in range(int(topo.num_states[c])):
            k = int(torch.randint(1, 4, (1,), generator=g))
            ids = torch.randint(0, k, (P + 1, P + 1), generator=g)
            used = torch.unique(ids)
            remap = torch.full((k,), -1, dtype=torch.long)
            remap[used] = torch.arange(used.numel()) + nxt
            table[:, c, :, s] = remap[ids]
            nxt += used.numel()
    return ContextDependency(table, 3, 1)


def _models(ctx_kind: str):
    topo = Topology(len(PHONES), 3, {PHONES.index("sil") + 1: 2})
    ctx = ContextDependency.monophone(topo) if ctx_kind == "mono" else tied_triphone_table(topo)
    trans = TransitionModel(ctx.num_pdfs)
    g = torch.Generator().manual_seed(3)
    trans.loop_prob = 0.3 + 0.6 * torch.rand(ctx.num_pdfs, generator=g, dtype=torch.float64)
    return topo, ctx, trans


def _path(ctx, topo, phones: list[str], dur_seed: int = 1):
    ids = torch.tensor([PHONES.index(p) + 1 for p in phones])
    pdfs = ctx.pdf_sequence(ids, topo)
    dur = torch.randint(1, 4, (pdfs.numel(),), generator=torch.Generator().manual_seed(dur_seed))
    return pdfs, dur


@pytest.mark.parametrize("ctx_kind", ["mono", "tri"])
def test_hclg_path_cost_equals_lm_plus_transitions(tmp_path, ctx_kind):
    (tmp_path / "text").write_text(TEXT)
    lang = make_phone_lang(tmp_path / "text", tmp_path / "lang", phones=PHONES)
    topo, ctx, trans = _models(ctx_kind)
    sls = 0.1
    hclg = read_fst(make_hclg(lang, ctx, topo, trans, tmp_path / "graph", self_loop_scale=sls))
    words = SymbolTable.read(tmp_path / "graph" / "words.txt")
    lm = read_arpa(lang / "lm.arpa")
    for k, sent in enumerate((["sil", "a", "b", "c", "sil"], ["sil", "c", "b", "b", "sil"], ["a"])):
        pdfs, dur = _path(ctx, topo, sent, dur_seed=k)
        frames = torch.repeat_interleave(pdfs, dur)
        lines = [f"{t} {t + 1} {int(p) + 1} {int(p) + 1}" for t, p in enumerate(frames)] + [f"{frames.numel()}"]
        acc = kaldifst.compile("\n".join(lines) + "\n")
        best = kaldifst.shortest_path(kaldifst.compose(acc, hclg))
        ok, _, olabels, w = kaldifst.get_linear_symbol_sequence(best)
        assert ok and [words.symbols[o] for o in olabels] == sent
        loop = trans.loop_prob[pdfs]
        expect = -lm.sentence_logprob(sent) + float(
            (-(dur - 1) * sls * torch.log(loop) - sls * torch.log1p(-loop)).sum())
        assert float(w.value) == pytest.approx(expect, abs=2e-3)


def test_hclg_rejects_mismatched_models(tmp_path):
    (tmp_path / "text").write_text(TEXT)
    lang = make_phone_lang(tmp_path / "text", tmp_path / "lang", phones=PHONES)
    topo, ctx, _ = _models("mono")
    with pytest.raises(ValueError, match="pdfs"):
        make_hclg(lang, ctx, topo, TransitionModel(ctx.num_pdfs + 1), tmp_path / "g")


def test_add_self_loops_splits_states_by_incoming_pdf():
    # two arcs with different pdfs enter state 1; state 1 must be split into two looped copies
    fa = FstArrays(3, 0, torch.tensor([0, 0, 1]), torch.tensor([1, 1, 2]), torch.tensor([1, 2, 0]),
                   torch.tensor([5, 6, 7]), torch.zeros(3, dtype=torch.float64),
                   torch.tensor([math.inf, math.inf, 0.0], dtype=torch.float64))
    loop = torch.log(torch.tensor([0.5, 0.8], dtype=torch.float64))
    out = add_self_loops(fa, loop, torch.log1p(-loop.exp()), self_loop_scale=1.0)
    assert out.num_states == 4
    loops = out.src == out.dst
    assert sorted(out.ilabel[loops].tolist()) == [1, 2]
    assert sorted(out.weight[loops].tolist()) == pytest.approx(sorted((-loop).tolist()))
    exits = (out.olabel == 7)
    assert exits.sum() == 2  # the exit arc was copied for both split states
    assert sorted(out.weight[exits].tolist()) == pytest.approx([-math.log(0.5), -math.log(0.2)])


def test_word_graph_path(tmp_path):
    # "a b" is a prefix of "a b b" (needs #1); homophones "cc"/"kk"; <unk> is pronounced "sil"
    (tmp_path / "lexicon.txt").write_text("ab a b\nba b a\nabb a b b\ncc c c\nkk c c\n")
    (tmp_path / "text.wrd").write_text("u1 ab cc\nu2 ba abb\nu3 cc ab\nu4 ba ab cc\n")
    lang = make_word_lang(tmp_path / "lexicon.txt", tmp_path / "text.wrd", tmp_path / "lang",
                          phones=PHONES)
    topo, ctx, trans = _models("tri")
    hclg = read_fst(make_hclg(lang, ctx, topo, trans, tmp_path / "graph"))
    words = SymbolTable.read(tmp_path / "graph" / "words.txt")
    for phones, sent in ((["a", "b", "c", "c"], ["ab", "cc"]),  # kk is unseen: cc wins
                         (["sil", "b", "a", "sil", "a", "b", "b"], ["ba", "abb"]),
                         (["b", "a", "a", "b", "sil", "c", "c", "sil"], ["ba", "ab", "cc"])):
        pdfs, dur = _path(ctx, topo, phones)
        frames = torch.repeat_interleave(pdfs, dur)
        lines = [f"{t} {t + 1} {int(p) + 1} {int(p) + 1}" for t, p in enumerate(frames)] + [f"{frames.numel()}"]
        best = kaldifst.shortest_path(kaldifst.compose(kaldifst.compile("\n".join(lines) + "\n"), hclg))
        ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
        assert ok and [words.symbols[o] for o in olabels] == sent


def test_connected_states_matches_a_fixed_point_on_graphs_with_cycles():
    """``connected_states`` (two BFS) = the fixed point of arc-by-arc reachability, on random
    graphs with cycles, several initial states and unreachable parts."""
    import numpy as np

    from asr.decode.lattice import connected_states

    rng = np.random.default_rng(0)
    for _ in range(20):
        n, e = int(rng.integers(2, 30)), int(rng.integers(0, 60))
        src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
        initial, final = rng.random(n) < 0.15, rng.random(n) < 0.15

        def fixed_point(seed, a, b):
            r = seed.copy()
            while True:
                nr = r.copy()
                nr[b[r[a]]] = True
                if (nr == r).all():
                    return r
                r = nr

        want = fixed_point(initial, src, dst) & fixed_point(final, dst, src)
        assert (connected_states(n, src, dst, initial, final) == want).all()
