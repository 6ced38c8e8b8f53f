"""Lang dirs: lexicon disambiguation, Witten-Bell ARPA LMs, L.fst and G.fst."""
from __future__ import annotations

import itertools
import json
import math

import kaldifst
import pytest
import torch

from asr.lang.arpa import estimate_witten_bell, read_arpa, write_arpa
from asr.lang.fstarrays import arrays_to_fst, fst_to_arrays, read_fst
from asr.lang.langdir import make_phone_lang, make_word_lang
from asr.lang.lexicon import SymbolTable, add_disambig
from asr.lang.phones import load_phone_set

SENTS = [["a", "b", "a"], ["b", "c"], ["a", "a", "b", "c", "c"], ["c"]]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_arpa_normalises_for_every_history(tmp_path, order):
    lm = estimate_witten_bell(SENTS, ["a", "b", "c", "d"], order)
    write_arpa(lm, tmp_path / "lm.arpa")
    lm = read_arpa(tmp_path / "lm.arpa")
    ctx = ["<s>", "a", "b", "c", "d"]
    for h in itertools.product(ctx, repeat=order - 1):
        total = sum(10 ** lm.word_log10prob(w, h) for w in lm.vocab)
        assert total == pytest.approx(1.0, abs=2e-6), h
    assert "d" in lm.vocab and "</s>" in lm.vocab and "<s>" not in lm.vocab


def test_witten_bell_bigram_matches_formula():
    lm = estimate_witten_bell(SENTS, ["a", "b", "c", "d"], 2)
    # direct computation of interpolated Witten-Bell for p(b | a)
    toks = [t for s in SENTS for t in s + ["</s>"]]
    V = 5  # a b c d </s>
    N, types = len(toks), len(set(toks))
    p_b = (toks.count("b") + types / V) / (N + types)
    bigrams = [(x, y) for s in SENTS for x, y in zip(["<s>"] + s, s + ["</s>"])]
    after_a = [y for x, y in bigrams if x == "a"]
    c_ab, c_a, n1 = after_a.count("b"), len(after_a), len(set(after_a))
    expect = (c_ab + n1 * p_b) / (c_a + n1)
    assert 10 ** lm.word_log10prob("b", ("a",)) == pytest.approx(expect, rel=1e-9)
    # unseen bigram backs off with bow = n1 / (c + n1)
    p_d = (0 + types / V) / (N + types)
    assert 10 ** lm.word_log10prob("d", ("a",)) == pytest.approx(n1 / (c_a + n1) * p_d, rel=1e-9)


def test_add_disambig_homophones_and_prefixes():
    lex = [("x", ["a", "b"]), ("y", ["a", "b"]), ("z", ["a"]), ("w", ["b", "c"]), ("<unk>", ["sil"])]
    out, k = add_disambig(lex, reserved=[["sil"]])
    d = dict((w, p) for w, p in out)
    assert d["x"] == ["a", "b", "#1"] and d["y"] == ["a", "b", "#2"]
    assert d["z"] == ["a", "#1"]  # prefix of "a b"
    assert d["w"] == ["b", "c"]
    assert d["<unk>"] == ["sil", "#1"]  # same as the optional silence
    assert k == 2


def _g_cost(G: "kaldifst.StdVectorFst", word_ids: list[int], disambig: int) -> float:
    """Shortest-path cost of a word string through G, with #0 read as epsilon."""
    fa = fst_to_arrays(G)
    fa.ilabel = torch.where(fa.ilabel == disambig, torch.zeros_like(fa.ilabel), fa.ilabel)
    g = arrays_to_fst(fa)
    kaldifst.arcsort(g, "ilabel")
    lines = [f"{i} {i + 1} {w} {w}" for i, w in enumerate(word_ids)] + [f"{len(word_ids)}"]
    acc = kaldifst.compile("\n".join(lines) + "\n")
    best = kaldifst.shortest_path(kaldifst.compose(acc, g))
    ok, _, _, w = kaldifst.get_linear_symbol_sequence(best)
    assert ok
    return float(w.value)


def test_phone_lang_and_g_matches_arpa(tmp_path):
    phones = load_phone_set()
    (tmp_path / "text").write_text("u1 sil aa b sil\nu2 sil b aa iy sil\nu3 sil iy sil\n")
    lang = make_phone_lang(tmp_path / "text", tmp_path / "lang")
    psyms = SymbolTable.read(lang / "phones.txt")
    wsyms = SymbolTable.read(lang / "words.txt")
    assert psyms.symbols[1:49] == phones and psyms.symbols[49] == "#0"
    assert [psyms[p] for p in phones] == list(range(1, 49))
    assert [wsyms[p] for p in phones] == list(range(1, 49))  # phone mode: word id == phone id
    L = read_fst(lang / "L.fst")
    fa = fst_to_arrays(L)
    assert fa.num_states == 1 and int((fa.ilabel == 49).sum()) == 1  # #0 loop
    lm = read_arpa(lang / "lm.arpa")
    G = read_fst(lang / "G.fst")
    for sent in (["sil", "aa", "b", "sil"], ["sil", "iy", "aa", "sil"], ["b"]):
        cost = _g_cost(G, [wsyms[w] for w in sent], wsyms["#0"])
        assert cost == pytest.approx(-lm.sentence_logprob(sent), abs=1e-3)


def test_phone_lang_leaves_unseen_phones_out_of_g(tmp_path):
    """A phone absent from the training transcripts (no acoustic data either) gets no G arc, is
    named in a warning and in lang.json; the seen phones keep a proper distribution."""
    (tmp_path / "text").write_text("u1 sil aa b sil\nu2 sil b aa iy sil\n")
    with pytest.warns(UserWarning, match=r"44 of the 48 phones never occur.*\bcl\b"):
        lang = make_phone_lang(tmp_path / "text", tmp_path / "lang")
    info = json.loads((lang / "lang.json").read_text())
    assert set(info["unseen_phones"]) == set(load_phone_set()) - {"sil", "aa", "b", "iy"}
    wsyms = SymbolTable.read(lang / "words.txt")
    G = fst_to_arrays(read_fst(lang / "G.fst"))
    labels = set(G.ilabel.tolist())
    assert {wsyms[p] for p in ("sil", "aa", "b", "iy")} <= labels
    assert not labels & {wsyms[p] for p in info["unseen_phones"]}
    lm = read_arpa(lang / "lm.arpa")
    assert sum(10 ** lm.word_log10prob(w, ("aa",)) for w in lm.vocab) == pytest.approx(1.0, abs=1e-6)


def test_phone_lang_rejects_unknown_phone(tmp_path):
    (tmp_path / "text").write_text("u1 sil aa xx sil\n")
    with pytest.raises(ValueError, match="u1"):
        make_phone_lang(tmp_path / "text", tmp_path / "lang")


def test_word_lang_oov_and_lexicon_fst(tmp_path):
    (tmp_path / "lexicon.txt").write_text("cat k ae t\ncab k ae b\nca k ae\nkat k ae t\n")
    (tmp_path / "text.wrd").write_text("u1 cat ca\nu2 dog cat\nu3 kat cab zebra\n")
    with pytest.warns(UserWarning, match="2 OOV tokens"):
        lang = make_word_lang(tmp_path / "lexicon.txt", tmp_path / "text.wrd", tmp_path / "lang")
    import json

    info = json.loads((lang / "lang.json").read_text())
    assert info["oov_tokens"] == 2 and info["oov_types"] == 2
    lex = (lang / "lexicon.txt").read_text().splitlines()
    assert "cat k ae t #1" in lex and "kat k ae t #2" in lex and "ca k ae #1" in lex
    assert "<unk> sil #1" in lex
    lm = read_arpa(lang / "lm.arpa")
    assert "<unk>" in lm.vocab
    # L o (word acceptor) recovers the pronunciation with optional silence costs
    L = read_fst(lang / "L.fst")
    psyms = SymbolTable.read(lang / "phones.txt")
    wsyms = SymbolTable.read(lang / "words.txt")
    acc = kaldifst.compile(f"0 1 {wsyms['cab']} {wsyms['cab']}\n1\n")
    kaldifst.arcsort(L, "olabel")
    Lw = kaldifst.compose(L, acc)
    best = kaldifst.shortest_path(Lw)
    ok, isyms, osyms, w = kaldifst.get_linear_symbol_sequence(best)
    assert [psyms.symbols[i] for i in isyms] == ["k", "ae", "b"]
    assert float(w.value) == pytest.approx(2 * -math.log(0.5), abs=1e-4)  # no sil before / after


def test_lexicon_rejects_bad_entries(tmp_path):
    (tmp_path / "lex1").write_text("cat k ae t\ndog d ao gg\n")
    with pytest.raises(ValueError, match="lex1:2"):
        make_word_lang(tmp_path / "lex1", tmp_path / "lex1", tmp_path / "l1")
    (tmp_path / "lex2").write_text("#0 k\n")
    with pytest.raises(ValueError, match="reserved"):
        make_word_lang(tmp_path / "lex2", tmp_path / "lex2", tmp_path / "l2")
