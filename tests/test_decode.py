"""WFST decoding with kaldi_decoder: transcripts recovered, lattices consistent with 1-best,
lattice arrays checked against a direct dynamic programme, decode_and_score files."""
from __future__ import annotations

import functools
import math
import json
from pathlib import Path

import kaldifst
import numpy as np
import pytest
import torch

from asr.decode import (DecodeConfig, Graph, decode_and_score, decode_utts, lattice_best_words, lattice_to_arrays,
                        lattice_one, loglikes_from_dict, make_lattices)
from asr.hmm import ContextDependency, Topology, TransitionModel
from asr.jobs.stage import StageFailed
from asr.lang.graph import make_hclg
from asr.lang.langdir import make_phone_lang
from asr.lang.phones import load_phone_map, load_phone_set

from test_graph import PHONES, TEXT, _models


def synthetic_loglikes(pdfs: torch.Tensor, num_pdfs: int, seed: int, margin: float = 4.0) -> torch.Tensor:
    """(T, num_pdfs) noisy log-likelihoods whose per-frame argmax follows ``pdfs`` (random
    durations 1..4) by ``margin`` nats on average."""
    g = torch.Generator().manual_seed(seed)
    dur = torch.randint(1, 5, (pdfs.numel(),), generator=g)
    frames = torch.repeat_interleave(pdfs, dur)
    ll = -5.0 + torch.randn(frames.numel(), num_pdfs, generator=g)
    ll[torch.arange(frames.numel()), frames] += margin + 5.0
    return ll


@pytest.fixture(scope="module", params=["mono", "tri"])
def graph(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"g_{request.param}")
    (d / "text").write_text(TEXT)
    lang = make_phone_lang(d / "text", d / "lang", phones=PHONES)
    topo, ctx, trans = _models(request.param)
    make_hclg(lang, ctx, topo, trans, d / "graph")
    return d / "graph", topo, ctx


SENTS = {"u1": ["sil", "a", "b", "c", "sil"], "u2": ["sil", "c", "c", "a", "b", "sil"], "u3": ["b"]}


def _loglikes(topo, ctx, seed=0):
    out = {}
    for k, (u, s) in enumerate(SENTS.items()):
        ids = torch.tensor([PHONES.index(p) + 1 for p in s])
        out[u] = synthetic_loglikes(ctx.pdf_sequence(ids, topo), ctx.num_pdfs, seed + k)
    return out


def test_decode_recovers_transcripts(graph):
    gdir, topo, ctx = graph
    hyp = decode_utts(gdir, _loglikes(topo, ctx), DecodeConfig())
    assert hyp == SENTS


def test_decode_rejects_wrong_matrix(graph):
    gdir, topo, ctx = graph
    with pytest.raises(ValueError, match="uttx"):
        decode_utts(gdir, {"uttx": torch.zeros(5, ctx.num_pdfs + 1)}, DecodeConfig())


def test_lattice_best_path_equals_one_best_and_arrays_consistent(graph):
    gdir, topo, ctx = graph
    cfg = DecodeConfig(acwt=0.1, lattice_beam=8.0)
    # weak evidence so the lattice holds competing paths
    lls = {u: x * 0.3 for u, x in _loglikes(topo, ctx, seed=10).items()}
    one_best = decode_utts(gdir, lls, cfg)
    g = Graph(gdir)
    lats = make_lattices(gdir, lls, cfg)
    for u, ll in lls.items():
        lat = lattice_one(g, u, ll, cfg)
        assert g.word_strings(lattice_best_words(lat, 1.0 / cfg.acwt)) == one_best[u]
        la = lats[u]
        T = ll.shape[0]
        assert la.num_frames == T and la.start == 0
        assert bool((la.src < la.dst).all())  # topologically sorted
        emit = la.pdf >= 0
        assert torch.equal(la.frame[la.dst], la.frame[la.src] + emit.long())
        ac = -ll[la.frame[la.src[emit]], la.pdf[emit]].double()
        assert torch.allclose(la.acoustic_cost[emit], ac, atol=1e-3)
        assert bool((la.acoustic_cost[~emit] == 0).all())
        assert la.src.numel() > T  # more than a single path survived
        # best path cost by a DP over the arrays == kaldifst shortest path of the lattice
        cost = la.graph_cost + cfg.acwt * la.acoustic_cost
        best = torch.full((la.num_states,), float("inf"), dtype=torch.float64)
        best[0] = 0.0
        for s in range(la.num_states):  # tiny lattices: plain DP is the reference
            m = la.src == s
            best[la.dst[m]] = torch.minimum(best[la.dst[m]], best[s] + cost[m])
        dp = float((best + la.final).min())
        lat_s = lat.copy()
        kaldifst.scale_lattice([[1.0, 0.0], [0.0, cfg.acwt]], lat_s)
        ok, _, _, w = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(lat_s))
        assert ok and dp == pytest.approx(w.value1 + w.value2, abs=1e-3)


def test_decode_and_score_phone_mode(tmp_path):
    phones = load_phone_set()
    pmap = load_phone_map()
    sents = {"spka_s1": ["sil", "aa", "b", "ch", "sil"], "spka_s2": ["sil", "iy", "ix", "sil"],
             "spkb_s1": ["sil", "d", "dx", "zh", "sil"]}
    (tmp_path / "text").write_text("".join(f"{u} {' '.join(s)}\n" for u, s in sents.items()))
    lang = make_phone_lang(tmp_path / "text", tmp_path / "lang")
    topo = Topology(len(phones), 3)
    ctx = ContextDependency.monophone(topo)
    make_hclg(lang, ctx, topo, TransitionModel(ctx.num_pdfs), tmp_path / "graph")
    data = tmp_path / "data"
    data.mkdir()
    (data / "utt2spk").write_text("".join(f"{u} {u.split('_')[0]}\n" for u in sents))
    (data / "text.39").write_text("".join(
        f"{u} {' '.join(pmap.fold48to39[p] for p in s)}\n" for u, s in sents.items()))
    lls = {u: synthetic_loglikes(ctx.pdf_sequence(torch.tensor([phones.index(p) + 1 for p in s]), topo),
                                 ctx.num_pdfs, k) for k, (u, s) in enumerate(sents.items())}
    lls.pop("spkb_s1")  # an utterance without log-likelihoods: reported and scored as deletions
    job = functools.partial(loglikes_from_dict, lls)
    cfg = DecodeConfig(lmwt_grid=(2.0, 10.0))
    with pytest.warns(UserWarning, match="not decoded.*1: spkb_s1"):
        res = decode_and_score(tmp_path / "graph", data, tmp_path / "dec", job, cfg, nj=2)
    out = tmp_path / "dec"
    assert json.loads((out / "log" / "counts.json").read_text()) == {
        "not_decoded": {"count": 1, "utts": ["spkb_s1"]}, "partial_lattice": {"count": 0, "utts": []},
        "retry_beam": {"count": 0, "utts": []}}
    assert res.nref == 5 + 4 + 5 and res.dels == 5 and res.sub == 0 and res.ins == 0
    assert (out / "best_lmwt").read_text().strip() == "2"
    assert (out / "scoring").read_text().startswith("%WER 35.71 [ 5 / 14, 0 ins, 5 del, 0 sub ]")
    hyp = (out / "hyp.10.txt").read_text().splitlines()
    assert hyp == [f"{u} {' '.join(sents[u])}" for u in ("spka_s1", "spka_s2")]
    with pytest.warns(UserWarning, match="spkb_s1"):
        decode_and_score(tmp_path / "graph", data, tmp_path / "dec_t", job, cfg, nj=1, lmwt=10.0)
    assert sorted(p.name for p in (tmp_path / "dec_t").iterdir()) == [
        "best_lmwt", "hyp.10.txt", "log", "scoring", "wer_10"]
    # nothing decoded at all is a failed stage, not a 100 % error rate
    with pytest.raises(StageFailed, match="no utterance"), pytest.warns(UserWarning, match="not decoded"):
        decode_and_score(tmp_path / "graph", data, tmp_path / "dec_none", functools.partial(loglikes_from_dict, {}),
                         cfg, nj=1, lmwt=10.0)
    assert not (tmp_path / "dec_none" / "scoring").exists()


def test_cli_lang_graph_decode(tmp_path, capsys):
    import kaldiio

    from asr.cli.main import main

    phones = load_phone_set()
    pmap = load_phone_map()
    sents = {"s1_a": ["sil", "ae", "t", "sil"], "s2_b": ["sil", "t", "ae", "sil"]}
    (tmp_path / "text").write_text("".join(f"{u} {' '.join(s)}\n" for u, s in sents.items()))
    assert main(["lang", "phones", "--text", str(tmp_path / "text"), "--out", str(tmp_path / "lang")]) == 0
    topo = Topology(len(phones), 3)
    ctx = ContextDependency.monophone(topo)
    trans = TransitionModel(ctx.num_pdfs)
    torch.save({"topo": topo.to_dict(), "ctx": ctx.to_dict(), "trans": trans.to_dict()}, tmp_path / "final.pt")
    assert main(["lang", "graph", "--lang", str(tmp_path / "lang"), "--model", str(tmp_path / "final.pt"),
                 "--out", str(tmp_path / "graph")]) == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "utt2spk").write_text("".join(f"{u} {u.split('_')[0]}\n" for u in sents))
    (data / "text.39").write_text("".join(f"{u} {' '.join(pmap.fold48to39[p] for p in s)}\n"
                                          for u, s in sents.items()))
    mats = {u: synthetic_loglikes(ctx.pdf_sequence(torch.tensor([phones.index(p) + 1 for p in s]), topo),
                                  ctx.num_pdfs, k).numpy() for k, (u, s) in enumerate(sents.items())}
    kaldiio.save_ark(str(tmp_path / "ll.ark"), mats, scp=str(tmp_path / "ll.scp"))
    rc = main(["decode", "loglikes", "--graph", str(tmp_path / "graph"), "--data", str(data),
               "--loglikes", str(tmp_path / "ll.scp"), "--out", str(tmp_path / "dec"),
               "--lmwt-grid", "5,10"])
    assert rc == 0
    # the lattice decoder has no cap on active states: the option is not offered (was ignored)
    with pytest.raises(SystemExit) as e:
        main(["decode", "loglikes", "--graph", str(tmp_path / "graph"), "--data", str(data),
              "--loglikes", str(tmp_path / "ll.scp"), "--out", str(tmp_path / "dec2"), "--max-active", "5"])
    assert e.value.code == 2
    with pytest.raises(TypeError):
        DecodeConfig(max_active=5)
    assert "%WER 0.00 [ 0 / 8, 0 ins, 0 del, 0 sub ]" in capsys.readouterr().out
    assert main(["decode", "loglikes", "--graph", str(tmp_path / "graph"), "--data", str(data),
                 "--loglikes", str(tmp_path / "missing.ark"), "--out", str(tmp_path / "d2")]) == 1


def test_decode_and_score_word_mode(tmp_path):
    from asr.lang.langdir import make_word_lang

    (tmp_path / "lexicon.txt").write_text("ab a b\nba b a\nabb a b b\ncc c c\n")
    (tmp_path / "train.wrd").write_text("t1 ab cc\nt2 ba abb\nt3 cc ab\nt4 ba ab cc\n")
    lang = make_word_lang(tmp_path / "lexicon.txt", tmp_path / "train.wrd", tmp_path / "lang", phones=PHONES)
    topo, ctx, trans = _models("tri")
    make_hclg(lang, ctx, topo, trans, tmp_path / "graph")
    data = tmp_path / "data"
    data.mkdir()
    (data / "utt2spk").write_text("s1_a s1\ns2_b s2\n")
    (data / "text.wrd").write_text("s1_a ba abb\ns2_b cc ab\n")
    phones = {"s1_a": ["sil", "b", "a", "a", "b", "b", "sil"], "s2_b": ["c", "c", "sil", "a", "b"]}
    lls = {u: synthetic_loglikes(ctx.pdf_sequence(torch.tensor([PHONES.index(p) + 1 for p in s]), topo),
                                 ctx.num_pdfs, k) for k, (u, s) in enumerate(phones.items())}
    res = decode_and_score(tmp_path / "graph", data, tmp_path / "dec", functools.partial(loglikes_from_dict, lls),
                           DecodeConfig(lmwt_grid=(8.0, 12.0)), mode="word")
    assert res.errors == 0 and res.nref == 4
    assert (tmp_path / "dec" / "hyp.8.txt").read_text() == "s1_a ba abb\ns2_b cc ab\n"


def test_lattice_retries_with_wider_beam(graph):
    gdir, topo, ctx = graph
    ids = torch.tensor([PHONES.index(p) + 1 for p in ["sil", "a", "b"]])
    frames = torch.repeat_interleave(ctx.pdf_sequence(ids, topo), 4)[:-5]  # cut inside the last phone
    ll = torch.full((frames.numel(), ctx.num_pdfs), -100.0)
    ll[torch.arange(frames.numel()), frames] = 0.0
    g = Graph(gdir)
    with pytest.warns(UserWarning, match="retry beam 40"):
        lat = lattice_one(g, "cut", ll, DecodeConfig(beam=2.0))
    assert g.word_strings(lattice_best_words(lat, 10.0))[:2] == ["sil", "a"]
    with pytest.warns(UserWarning, match="no final state reached"):
        lat = lattice_one(g, "cut", ll, DecodeConfig(beam=2.0, retry_beam=3.0))
    assert lat is not None and lattice_to_arrays(lat).num_frames == frames.numel()


def _posteriors_by_loops(la, acwt):
    """Reference forward-backward: plain loops over the (topologically sorted) states."""
    cost = (la.graph_cost + acwt * la.acoustic_cost).tolist()
    src, dst, pdf = la.src.tolist(), la.dst.tolist(), la.pdf.tolist()
    n = la.num_states

    def lae(a, b):  # log(exp a + exp b) in double precision
        if a == -math.inf:
            return b
        if b == -math.inf:
            return a
        m = max(a, b)
        return m + math.log(math.exp(a - m) + math.exp(b - m))

    alpha = [-math.inf] * n
    alpha[0] = 0.0
    for a in sorted(range(len(src)), key=lambda a: src[a]):
        alpha[dst[a]] = lae(alpha[dst[a]], alpha[src[a]] - cost[a])
    beta = [-f if math.isfinite(f) else -math.inf for f in la.final.tolist()]
    for a in sorted(range(len(src)), key=lambda a: -dst[a]):
        beta[src[a]] = lae(beta[src[a]], beta[dst[a]] - cost[a])
    post = torch.zeros(la.num_frames, int(la.pdf.max()) + 1, dtype=torch.float64)
    for a in range(len(src)):
        if pdf[a] >= 0:
            post[int(la.frame[src[a]]), pdf[a]] += math.exp(alpha[src[a]] - cost[a] + beta[dst[a]] - beta[0])
    return post, beta[0]


def _posteriors_by_paths(la, acwt):
    """Reference by enumerating every path (small lattices only)."""
    cost = (la.graph_cost + acwt * la.acoustic_cost).tolist()
    src, dst, pdf, final = la.src.tolist(), la.dst.tolist(), la.pdf.tolist(), la.final.tolist()
    out = {}
    for a, s in enumerate(src):
        out.setdefault(s, []).append(a)
    paths = []

    def walk(state, w, labels):
        if math.isfinite(final[state]):
            paths.append((w - final[state], labels))
        for a in out.get(state, []):
            walk(dst[a], w - cost[a], labels + [pdf[a]] if pdf[a] >= 0 else labels)

    walk(0, 0.0, [])
    lw = torch.tensor([w for w, _ in paths], dtype=torch.float64)
    p = torch.softmax(lw, 0)
    post = torch.zeros(la.num_frames, int(la.pdf.max()) + 1, dtype=torch.float64)
    for k, (_, labels) in enumerate(paths):
        assert len(labels) == la.num_frames
        post[torch.arange(la.num_frames), torch.tensor(labels)] += p[k]
    return post, len(paths)


def test_lattice_pdf_posteriors_equal_reference_forward_backward(graph):
    """Frame-level pdf posteriors (lattice-to-post) of real lattices equal a plain per-state
    forward-backward, and, on a lattice small enough (thousands of paths), the posteriors from
    enumerating every path; at two acoustic scales; each frame's posteriors sum to one."""
    from asr.decode.posteriors import lattice_pdf_posteriors

    gdir, topo, ctx = graph
    lls = {u: x * 0.5 for u, x in _loglikes(topo, ctx, seed=10).items()}
    lats = make_lattices(gdir, lls, DecodeConfig(acwt=0.1, lattice_beam=3.0))
    for u, la in lats.items():
        for acwt in (0.1, 1.0 / 12):
            fr, pd, post, total = lattice_pdf_posteriors(la, acwt)
            got = torch.zeros(la.num_frames, int(la.pdf.max()) + 1, dtype=torch.float64)
            got[fr, pd] = post
            ref, ref_total = _posteriors_by_loops(la, acwt)
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
            assert total == pytest.approx(ref_total, rel=1e-12)
            torch.testing.assert_close(got.sum(1), torch.ones(la.num_frames, dtype=torch.float64))
            assert int((got > 1e-6).sum()) > la.num_frames  # competing hypotheses present
            if u == "u3":
                by_paths, n_paths = _posteriors_by_paths(la, acwt)
                assert 100 < n_paths < 20_000
                torch.testing.assert_close(got, by_paths, rtol=1e-9, atol=1e-12)
def test_decode_and_score_counts_retry_beam_and_partial_lattices(graph, tmp_path):
    """Utterances decoded with the retry beam, or whose lattice never reached a final state, are
    named in a warning and counted in the decode dir's log/counts.json (they were silent)."""
    gdir, topo, ctx = graph
    ids = torch.tensor([PHONES.index(p) + 1 for p in ["sil", "a", "b"]])
    frames = torch.repeat_interleave(ctx.pdf_sequence(ids, topo), 4)[:-5]  # cut inside the last phone
    cut = torch.full((frames.numel(), ctx.num_pdfs), -100.0)
    cut[torch.arange(frames.numel()), frames] = 0.0
    lls = {"s1_cut": cut, "s2_ok": _loglikes(topo, ctx)["u1"]}
    data = tmp_path / "data"
    data.mkdir()
    (data / "utt2spk").write_text("s1_cut s1\ns2_ok s2\n")
    (data / "text.wrd").write_text("s1_cut sil a b\ns2_ok " + " ".join(SENTS["u1"]) + "\n")
    job = functools.partial(loglikes_from_dict, lls)
    with pytest.warns(UserWarning, match="retry beam.*: 1: s1_cut"):
        decode_and_score(gdir, data, tmp_path / "d1", job, DecodeConfig(beam=2.0, lmwt_grid=(10.0,)), mode="word")
    c = json.loads((tmp_path / "d1" / "log" / "counts.json").read_text())
    assert c["retry_beam"] == {"count": 1, "utts": ["s1_cut"]} and c["partial_lattice"]["count"] == 0
    with pytest.warns(UserWarning, match="no final state reached.*1: s1_cut"):
        decode_and_score(gdir, data, tmp_path / "d2", job, DecodeConfig(beam=2.0, retry_beam=3.0, lmwt_grid=(10.0,)),
                         mode="word")
    c = json.loads((tmp_path / "d2" / "log" / "counts.json").read_text())
    assert c["partial_lattice"] == {"count": 1, "utts": ["s1_cut"]} and c["retry_beam"]["count"] == 0
    assert c["not_decoded"]["count"] == 0
def _text_form_arcs(lat) -> tuple[list, list]:
    """Oracle from the lattice's OpenFst text form (6 significant digits), by plain Python:
    trimmed arcs as (frame of source, frame of destination, pdf, word, graph, acoustic), sorted,
    and the sorted final costs (frames by a walk from the start)."""
    arcs, finals = [], {}
    for line in lat.to_str().splitlines():
        f = line.replace(",", " ").split()
        if len(f) >= 4:
            w = (float(f[4]), float(f[5])) if len(f) == 6 else (0.0, 0.0)
            arcs.append((int(f[0]), int(f[1]), int(f[2]) - 1, int(f[3]), *w))
        elif f:
            finals[int(f[0])] = float(f[1]) + float(f[2]) if len(f) == 3 else 0.0
    out, inn = {}, {}
    for a in arcs:
        out.setdefault(a[0], []).append(a)
        inn.setdefault(a[1], []).append(a)

    def closure(seed, step):
        seen, todo = set(seed), list(seed)
        while todo:
            for nxt in step(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    live = (closure([lat.start], lambda s: [a[1] for a in out.get(s, [])])
            & closure(list(finals), lambda s: [a[0] for a in inn.get(s, [])]))
    frame, todo = {lat.start: 0}, [lat.start]
    while todo:
        s = todo.pop()
        for a in out.get(s, []):
            if a[1] in live and a[1] not in frame:
                frame[a[1]] = frame[s] + (a[2] >= 0)
                todo.append(a[1])
    out = sorted((frame[a[0]], frame[a[1]], a[2], a[3], a[4], a[5]) for a in arcs if a[0] in live and a[1] in live)
    return out, sorted(finals[s] for s in finals if s in live)


def test_lattice_arrays_read_from_the_binary_form_match_the_text_form(graph):
    """``lattice_to_arrays`` reads the decoder's lattice without its text form: the same arcs
    (frames, pdfs, words) and costs as the text form up to its 6 printed digits."""
    gdir, topo, ctx = graph
    g = Graph(gdir)
    for u, ll in _loglikes(topo, ctx, seed=3).items():
        lat = lattice_one(g, u, ll * 0.5, DecodeConfig())
        la = lattice_to_arrays(lat)
        want, want_final = _text_form_arcs(lat)
        got = sorted(zip(la.frame[la.src].tolist(), la.frame[la.dst].tolist(), la.pdf.tolist(), la.word.tolist(),
                         la.graph_cost.tolist(), la.acoustic_cost.tolist()))
        assert [a[:4] for a in got] == [a[:4] for a in want] and len(got) > ll.shape[0]
        # sorting ties between equal integer fields may order near-equal costs differently
        assert sorted(a[4] for a in got) == pytest.approx(sorted(a[4] for a in want), rel=1e-5, abs=1e-5)
        assert sorted(a[5] for a in got) == pytest.approx(sorted(a[5] for a in want), rel=1e-5, abs=1e-5)
        fin = la.final[torch.isfinite(la.final)].tolist()
        assert sorted(fin) == pytest.approx(want_final, rel=1e-5, abs=1e-5)
        assert la.frame.tolist() == sorted(la.frame.tolist())      # states in frame order


def test_raw_lattice_arrays_trims_and_rejects_what_is_no_state_level_lattice(graph):
    from asr.decode.lattice import _parse_vector_lattice, _read_raw_lattice, raw_lattice_arrays

    gdir, topo, ctx = graph
    ll = _loglikes(topo, ctx, seed=4)["u1"] * 0.3
    lat = lattice_one(Graph(gdir), "u1", ll, DecodeConfig(lattice_beam=8.0))
    n, start, arcs, finals = _read_raw_lattice(lat)
    clean = raw_lattice_arrays(n, start, arcs, finals)
    # a dead end (state n, not final) and an unreachable state n + 1 with an arc into the lattice
    extra = np.array([[arcs[0, 0], n, 1, 0, 1.0, 1.0], [n + 1, arcs[0, 1], 1, 0, 1.0, 1.0]])
    fin2 = np.vstack([finals, [[np.inf, np.inf], [np.inf, np.inf]]])
    trimmed = raw_lattice_arrays(n + 2, start, np.vstack([arcs, extra]), fin2)
    for k in clean.__dataclass_fields__:
        a, b = getattr(clean, k), getattr(trimmed, k)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, k
    # an ε-arc next to an emitting one: paths of different lengths into one state
    e = arcs[arcs[:, 2] > 0][0]
    skip = np.array([[e[0], e[1], 0, 0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="state-level"):
        raw_lattice_arrays(n, start, np.vstack([arcs, skip]), finals)
    path = Path(gdir).parent / "x.lat"
    lat.write(str(path))
    with pytest.raises(ValueError, match="corrupt"):
        _parse_vector_lattice(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="OpenFst"):
        _parse_vector_lattice(b"\0" * 64)


def test_best_paths_of_a_whole_lmwt_grid_equal_openfst_shortest_paths(graph):
    """The batched dynamic programme over all lattices and LM weights gives OpenFst's shortest
    path of every (lattice, LM weight) — here on lattices whose best path changes with the weight."""
    from asr.decode.lattice import iter_best_paths, lattice_best_paths

    gdir, topo, ctx = graph
    g = Graph(gdir)
    grid = [0.5, 1.0, 2.0, 3.5, 5.0, 8.0, 12.0, 20.0, 40.0]
    lats = [lattice_one(g, u, ll * 0.15, DecodeConfig(lattice_beam=10.0))
            for seed in (5, 6) for u, ll in _loglikes(topo, ctx, seed=seed).items()]
    want = [[lattice_best_words(lat, w) for w in grid] for lat in lats]
    assert sum(len({tuple(x) for x in row}) > 1 for row in want) >= 2   # the weight matters
    assert lattice_best_paths(lats, grid) == want
    assert [p for _, p in iter_best_paths(enumerate(lats), grid, chunk=4)] == want
    assert [p for _, p in iter_best_paths(enumerate(lats), grid[:1])] == [w[:1] for w in want]


def test_best_paths_hand_exact_ties_to_openfst():
    """Two paths of exactly equal costs: which one OpenFst keeps depends on its visiting order
    (here even on the LM weight); the batched programme flags the tie and defers to OpenFst."""
    from asr.decode.lattice import _best_paths, _read_raw_lattice, _sorted_lattice, lattice_best_paths

    lat = kaldifst.Lattice()
    for _ in range(4):
        lat.add_state()
    lat.start = 0
    w = kaldifst.LatticeWeight
    lat.add_arc(0, kaldifst.LatticeArc(1, 6, w(1.0, 1.0), 1))
    lat.add_arc(0, kaldifst.LatticeArc(1, 5, w(1.0, 1.0), 2))
    lat.add_arc(1, kaldifst.LatticeArc(2, 0, w(1.0, 1.0), 3))
    lat.add_arc(2, kaldifst.LatticeArc(2, 0, w(1.0, 1.0), 3))
    lat.set_final(3, w(0.5, 0.0))
    grid = [1.0, 2.0, 3.0]
    want = [lattice_best_words(lat, x) for x in grid]
    raw, tied = _best_paths([_sorted_lattice(*_read_raw_lattice(lat))], grid)
    assert tied.all() and raw[0] != want           # the programme alone would differ somewhere
    assert lattice_best_paths([lat], grid) == [want]


def test_rescored_lattice_has_the_new_acoustic_costs_and_the_same_graph(graph):
    """``rescore_lattice`` (Kaldi ``gmm-rescore-lattice``): every emitting arc's acoustic cost is
    ``-loglikes[t, pdf]`` of the new matrix at the frame it consumes, graph costs, labels and
    states unchanged; rescoring with the matrix the lattice came from gives its costs back."""
    from asr.decode.lattice import rescore_lattice

    gdir, topo, ctx = graph
    g = Graph(gdir)
    lls = _loglikes(topo, ctx, seed=7)
    ll = lls["u1"] * 0.3
    lat = lattice_one(g, "u1", ll, DecodeConfig(lattice_beam=10.0))
    before = lattice_to_arrays(lat)
    other = torch.randn(ll.shape, generator=torch.Generator().manual_seed(3)) * 2.0 - 4.0
    res = lattice_to_arrays(rescore_lattice(lat, other))
    for k in ("num_states", "start", "final", "frame", "src", "dst", "pdf", "word", "graph_cost", "num_frames"):
        a, b = getattr(before, k), getattr(res, k)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, k
    emit = res.pdf >= 0
    want = -other[res.frame[res.src[emit]], res.pdf[emit]].double()
    torch.testing.assert_close(res.acoustic_cost[emit], want)
    assert bool((res.acoustic_cost[~emit] == 0).all())
    back = lattice_to_arrays(rescore_lattice(lat, ll))
    torch.testing.assert_close(back.acoustic_cost, before.acoustic_cost, rtol=1e-5, atol=1e-4)
    # a per-frame constant added to every log-likelihood shifts every path alike: same best words
    shift = ll + torch.randn(ll.shape[0], 1, generator=torch.Generator().manual_seed(5)) * 10
    for w in (1.0, 4.0):
        assert lattice_best_words(rescore_lattice(lat, shift), w) == lattice_best_words(lat, w)
    with pytest.raises(ValueError, match="log-likelihoods"):
        rescore_lattice(lat, ll[:3])
