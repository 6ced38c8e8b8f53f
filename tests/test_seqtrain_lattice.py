"""Lattice MPE (Povey & Woodland approximate phone accuracy): segment expansion and the lattice
forward-backward against brute-force path enumeration, autograd and finite differences."""
from __future__ import annotations

import math

import pytest
import torch

from asr.decode.lattice import LatticeArrays
from asr.seqtrain.lattice import (approx_phone_accuracy, expand_lattice, lattice_objective, phone_segments)

torch.set_num_threads(1)

# 2 phones x 2 HMM states: pdf -> phone, pdf -> state
PDF2PHONE = torch.tensor([1, 1, 2, 2])
PDF2STATE = torch.tensor([0, 1, 0, 1])
P = 4
INF = float("inf")


def _acc_one(ph: int, s: int, e: int, ref: list[tuple[int, int, int]]) -> float:
    """Approximate accuracy of one hypothesis segment, written out plainly (test oracle)."""
    best = -1.0
    for rs, re_, rp in ref:
        ov = min(e, re_) - max(s, rs) + 1
        if ov <= 0:
            continue
        frac = ov / (re_ - rs + 1)
        best = max(best, -1 + 2 * frac if rp == ph else -1 + frac)
    return best


def test_approx_accuracy_values():
    rs, re_, rc = torch.tensor([0, 4]), torch.tensor([3, 9]), torch.tensor([1, 2])
    hyp = approx_phone_accuracy(torch.tensor([1, 2, 2, 1]), torch.tensor([0, 2, 4, 10]), torch.tensor([3, 5, 9, 12]),
                                rs, re_, rc)
    # exact match 1; half of "1" (-0.5) vs a third of "2" (-1/3); exact "2" 1; nothing overlapped -1
    assert torch.allclose(hyp, torch.tensor([1.0, -1 / 3, 1.0, -1.0], dtype=torch.float64))
    ign = approx_phone_accuracy(torch.tensor([1, 2]), torch.tensor([0, 0]), torch.tensor([3, 3]), rs, re_, rc,
                                ignore=torch.tensor([1]))
    assert ign.tolist() == [0.0, -1.0]        # ignored class scores 0; ref of that class is left out


def test_phone_segments_split_repeated_phones():
    ali = torch.tensor([0, 0, 1, 0, 1, 1, 2, 3])   # phone 1, phone 1 again, phone 2
    s, e, ph = phone_segments(ali, PDF2PHONE, PDF2STATE)
    assert s.tolist() == [0, 3, 6] and e.tolist() == [2, 5, 7] and ph.tolist() == [1, 1, 2]


def random_lattice(seed: int, t_len: int = 5, width: int = 2, num_pdfs: int = P) -> LatticeArrays:
    """Frame-synchronous random lattice over loop-marked labels (pdf + P = self-loop), with a few
    ε-arcs (pdf -1) that carry graph cost only."""
    g = torch.Generator().manual_seed(seed)
    nodes = [[0]]
    n = 1
    for _ in range(t_len):
        nodes.append(list(range(n, n + width)))
        n += width
    src, dst, pdf, gc = [], [], [], []
    for t in range(t_len):
        for s in nodes[t]:
            outs = torch.randperm(width, generator=g)[:2].tolist()
            for j, k in enumerate(outs):
                d = nodes[t + 1][k]
                if t == 0:
                    lab = [0, 2][j % 2]                       # a path begins with a phone's first state
                else:
                    lab = int(torch.randint(0, 2 * num_pdfs, (1,), generator=g))
                c = float(torch.rand(1, generator=g)) * 2
                if t == 2 and j == 0:                         # an ε arc in front of an emitting arc
                    mid = n
                    n += 1
                    src.append(s), dst.append(mid), pdf.append(-1), gc.append(0.3)
                    s_emit = mid
                else:
                    s_emit = s
                src.append(s_emit), dst.append(d), pdf.append(lab), gc.append(c)
    final = torch.full((n,), INF, dtype=torch.float64)
    for k, d in enumerate(nodes[t_len]):
        final[d] = 0.5 * k
    frame = torch.zeros(n, dtype=torch.long)
    for t, ns in enumerate(nodes):
        frame[ns] = t
    return LatticeArrays(num_states=n, start=0, final=final, frame=frame, src=torch.tensor(src),
                         dst=torch.tensor(dst), pdf=torch.tensor(pdf), word=torch.zeros(len(src), dtype=torch.long),
                         graph_cost=torch.tensor(gc, dtype=torch.float64),
                         acoustic_cost=torch.zeros(len(src), dtype=torch.float64), num_frames=t_len)


def enumerate_paths(lat: LatticeArrays):
    """All complete paths as (list of emitting labels, graph score incl. final)."""
    out = []

    def walk(s: int, labs: list[int], score: float) -> None:
        if math.isfinite(float(lat.final[s])) and len(labs) == lat.num_frames:
            out.append((labs, score - float(lat.final[s])))
        for a in torch.nonzero(lat.src == s).flatten().tolist():
            lab = int(lat.pdf[a])
            walk(int(lat.dst[a]), labs + ([lab] if lab >= 0 else []), score - float(lat.graph_cost[a]))
    walk(0, [], 0.0)
    return out


def brute(lat: LatticeArrays, ll: torch.Tensor, ref_pdf: torch.Tensor, criterion: str, kappa: float):
    ref = list(zip(*[x.tolist() for x in phone_segments(ref_pdf, PDF2PHONE, PDF2STATE)]))
    scores, accs = [], []
    for labs, gscore in enumerate_paths(lat):
        pdfs = torch.tensor([x % P for x in labs])
        scores.append(gscore + kappa * ll[torch.arange(len(labs)), pdfs].sum())
        if criterion == "mpe":
            segs = []
            for t, lab in enumerate(labs):
                if lab < P and PDF2STATE[lab] == 0:
                    segs.append([int(PDF2PHONE[lab]), t, t])
                else:
                    segs[-1][2] = t
            accs.append(sum(_acc_one(ph, s, e, ref) for ph, s, e in segs))
        elif criterion == "smbr":
            accs.append(float((pdfs == ref_pdf).sum()))
        else:
            accs.append(float((PDF2PHONE[pdfs] == PDF2PHONE[ref_pdf]).sum()))
    sc = torch.stack(scores)
    return torch.logsumexp(sc, 0), (torch.softmax(sc, 0) * torch.tensor(accs, dtype=torch.float64)).sum()


@pytest.mark.parametrize("criterion", ["mpe", "mpfe", "smbr"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lattice_expected_accuracy_and_gradient_match_bruteforce(criterion, seed):
    lat = random_lattice(seed)
    ref = torch.tensor([0, 1, 1, 2, 3])
    g = torch.Generator().manual_seed(seed + 10)
    ll = (torch.randn(5, P, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    kappa = 0.7
    den = expand_lattice(lat, P, PDF2PHONE, PDF2STATE, ref)
    so = lattice_objective([den], ll.detach().unsqueeze(0), torch.tensor([5]), ref.unsqueeze(0), criterion,
                           kappa=kappa, pdf_class=PDF2PHONE)
    logz, exp_acc = brute(lat, ll, ref, criterion, kappa)
    assert so.den_logz.item() == pytest.approx(logz.item(), abs=1e-5)
    assert so.objective.item() == pytest.approx(exp_acc.item(), abs=1e-5)
    exp_acc.backward()
    assert torch.allclose(so.grad[0].double(), ll.grad, atol=1e-5)


def test_lattice_mpe_gradient_matches_finite_differences():
    lat = random_lattice(5, t_len=6, width=3)
    ref = torch.tensor([0, 0, 1, 2, 3, 3])
    den = expand_lattice(lat, P, PDF2PHONE, PDF2STATE, ref)
    ll = torch.randn(1, 6, P, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    f = lambda x: lattice_objective([den], x, torch.tensor([6]), ref.unsqueeze(0), "mpe", kappa=0.5).objective  # noqa: E731
    so = lattice_objective([den], ll, torch.tensor([6]), ref.unsqueeze(0), "mpe", kappa=0.5)
    eps = 1e-5
    for t, p in [(0, 0), (2, 1), (3, 2), (5, 3)]:
        d = torch.zeros_like(ll)
        d[0, t, p] = eps
        fd = (f(ll + d) - f(ll - d)).item() / (2 * eps)
        assert so.grad[0, t, p].item() == pytest.approx(fd, abs=1e-6)


def test_lattice_mmi_is_reference_score_minus_lattice_logz_and_batching_is_exact():
    lats = [random_lattice(s, t_len=t) for s, t in ((0, 5), (1, 4))]
    refs = [torch.tensor([0, 1, 1, 2, 3]), torch.tensor([2, 3, 0, 1])]
    dens = [expand_lattice(la, P, PDF2PHONE, PDF2STATE, r) for la, r in zip(lats, refs)]
    ll = torch.randn(2, 5, P, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = torch.zeros(2, 5, dtype=torch.long)
    ref[0], ref[1, :4] = refs[0], refs[1]
    lengths = torch.tensor([5, 4])
    so = lattice_objective(dens, ll, lengths, ref, "mmi", kappa=0.5)
    for k in range(2):
        logz, _ = brute(lats[k], ll[k, :int(lengths[k])], refs[k], "smbr", 0.5)
        num = 0.5 * ll[k, torch.arange(int(lengths[k])), refs[k]].sum()
        assert so.objective[k].item() == pytest.approx((num - logz).item(), abs=1e-5)
        one = lattice_objective([dens[k]], ll[k:k + 1, :int(lengths[k])], lengths[k:k + 1], refs[k].unsqueeze(0),
                                "mpe", kappa=0.5)
        both = lattice_objective(dens, ll, lengths, ref, "mpe", kappa=0.5)
        assert both.objective[k].item() == pytest.approx(one.objective.item(), abs=1e-5)
        assert torch.allclose(both.grad[k, :int(lengths[k])], one.grad[0], atol=1e-6)
        assert both.grad[k, int(lengths[k]):].abs().sum() == 0


def test_decoded_lattice_keeps_path_sum_and_finds_reference_phones(tmp_path):
    """A real lattice (kaldi-decoder over a loop-marked tiny triphone HCLG): ε-removal and
    segment expansion keep the total path score, and at a sharp acoustic scale the expected
    MPE accuracy is the reference's phone count (every segment found with its exact times)."""
    from test_decode import synthetic_loglikes
    from test_graph import PHONES, TEXT, _models

    from asr.decode import DecodeConfig, Graph, lattice_one, lattice_to_arrays
    from asr.lang.graph import make_hclg
    from asr.lang.langdir import make_phone_lang
    from asr.seqtrain.lattice import loop_marked_graph

    (tmp_path / "text").write_text(TEXT)
    lang = make_phone_lang(tmp_path / "text", tmp_path / "lang", phones=PHONES)
    topo, ctx, trans = _models("tri")
    make_hclg(lang, ctx, topo, trans, tmp_path / "graph")
    n = ctx.num_pdfs
    loops = loop_marked_graph(tmp_path / "graph" / "HCLG.fst", tmp_path / "loops.fst", n)
    g = Graph(tmp_path / "graph", fst=loops, num_pdfs=2 * n)
    ids = torch.tensor([PHONES.index(p) + 1 for p in ["sil", "a", "b", "c", "c", "sil"]])
    pdfs = ctx.pdf_sequence(ids, topo)
    gen = torch.Generator().manual_seed(0)
    dur = torch.randint(1, 4, (pdfs.numel(),), generator=gen)
    ref = torch.repeat_interleave(pdfs, dur)
    ll = -5.0 + torch.randn(ref.numel(), n, generator=gen)
    ll[torch.arange(ref.numel()), ref] += 5.0 + 2.0      # weak margin: the lattice has competitors
    cfg = DecodeConfig(acwt=0.1, lattice_beam=8.0)
    la = lattice_to_arrays(lattice_one(g, "u", torch.cat([ll, ll], 1), cfg))
    den = expand_lattice(la, n, ctx.pdf2phone, ctx.pdf2state, ref)
    assert den.num_arcs > la.src.numel() / 2 and den.num_frames == ref.numel()
    # log-sum over the raw lattice's paths (with its ε arcs) at scale kappa, by a plain DP
    kappa = 0.1
    score = -la.graph_cost - kappa * la.acoustic_cost
    fwd = torch.full((la.num_states,), float("-inf"), dtype=torch.float64)
    fwd[0] = 0.0
    for s in range(la.num_states):
        m = la.src == s
        fwd[la.dst[m]] = torch.logaddexp(fwd[la.dst[m]], fwd[s] + score[m])
    logz = torch.logsumexp(fwd - la.final, 0)
    so = lattice_objective([den], ll.unsqueeze(0), torch.tensor([ref.numel()]), ref.unsqueeze(0), "mmi", kappa=kappa)
    assert so.den_logz.item() == pytest.approx(logz.item(), abs=1e-3)
    sharp = lattice_objective([den], 50 * ll.unsqueeze(0), torch.tensor([ref.numel()]), ref.unsqueeze(0), "mpe",
                              kappa=1.0)
    assert sharp.objective.item() == pytest.approx(6.0, abs=1e-6)
    soft = lattice_objective([den], ll.unsqueeze(0), torch.tensor([ref.numel()]), ref.unsqueeze(0), "mpe", kappa=0.1)
    assert soft.objective.item() < 6.0 - 0.1       # competing hypotheses lower the expectation


def test_lattice_mpe_training_raises_objective_and_skips_utterances_without_lattice(tmp_path):
    from test_seqtrain import _ce_model

    from asr.seqtrain import SeqTrainConfig, train_sequence

    m, train, cv = _ce_model(tmp_path)           # 6 pdfs: 3 phones x 2 states
    p2p, p2s = torch.tensor([1, 1, 2, 2, 3, 3]), torch.tensor([0, 1, 0, 1, 0, 1])
    starts = torch.cumsum(train.lengths, 0) - train.lengths
    lats = {}
    for k, (u, s, n) in enumerate(zip(train.utts, starts.tolist(), train.lengths.tolist())):
        if k == 0:
            continue                              # no lattice for the first utterance
        ref = train.targets[s:s + n]
        lats[u] = expand_lattice(random_lattice(k, t_len=n, width=3, num_pdfs=6), 6, p2p, p2s, ref)
    msgs: list[str] = []
    h = train_sequence(m, train, cv, lats, SeqTrainConfig(criterion="mpe", epochs=3, lr=0.5, ce_smoothing=0.0),
                       tmp_path / "mpe", pdf2phone=p2p, log=msgs.append)
    objs = [r["objective"] for r in h[1:]]
    assert objs[-1] > objs[0]
    assert h[-1]["utterances"] == len(train.utts) - 1
    assert any("no denominator lattice" in x and train.utts[0] in x for x in msgs)


def expand_per_frame(lat: LatticeArrays, num_pdfs: int, pdf2phone, pdf2state, ref_pdf, segments: bool = True,
                     cls=None):
    """The previous implementation of ``expand_lattice`` (a loop over frames), kept as the oracle
    of the vectorised one: nodes are split frame by frame by (state, segment start, phone)."""
    from asr.seqtrain.graph import csr_index, out_arcs, remove_epsilons
    from asr.seqtrain.lattice import DenLattice

    t_len = int(lat.num_frames)
    cls = torch.arange(int(pdf2phone.max()) + 1) if cls is None else cls
    g = remove_epsilons(int(lat.num_states), int(lat.start), lat.src.long(), lat.dst.long(),
                        lat.pdf.long() + 1, -lat.graph_cost.double(), -lat.final.double())
    n_ph = int(pdf2phone.max()) + 2
    order, first, counts = csr_index(g.src, g.num_states)
    cur_node = torch.nonzero(torch.isfinite(g.start)).flatten()
    cur_s, cur_ph = torch.tensor([-1]), torch.tensor([-1])
    n_nodes = 1
    parts = {k: [] for k in ("frame", "src", "dst", "pdf", "weight", "close")}
    close_ph, close_s, close_e = [], [], []
    for t in range(t_len):
        li, arc = out_arcs(cur_node, first, counts, order)
        if arc.numel() == 0:
            raise ValueError(f"lattice has no arcs at frame {t}")
        lab = g.pdf[arc]
        pdf = lab % num_pdfs
        starts = (lab < num_pdfs) & (pdf2state[pdf] == 0)
        ps, pph = cur_s[li], cur_ph[li]
        if bool((~starts & (ps < 0)).any()):
            raise ValueError("lattice path does not begin with the first HMM state of a phone")
        new_s = torch.where(starts, torch.full_like(ps, t), ps)
        new_ph = torch.where(starts, pdf2phone[pdf], pph)
        closes = starts & (ps >= 0)
        if not segments:
            new_s, new_ph, closes = torch.zeros_like(new_s), torch.zeros_like(new_ph), torch.zeros_like(closes)
        uk, inv = torch.unique((g.dst[arc] * (t_len + 1) + new_s) * n_ph + new_ph, return_inverse=True)
        for k, v in zip(parts, (torch.full_like(arc, t), n_nodes - cur_node.numel() + li, n_nodes + inv, pdf,
                                g.weight[arc], closes)):
            parts[k].append(v)
        close_ph.append(pph[closes]), close_s.append(ps[closes])
        close_e.append(torch.full((int(closes.sum()),), t - 1, dtype=torch.long))
        n_nodes += uk.numel()
        cur_node, cur_s, cur_ph = uk // ((t_len + 1) * n_ph), (uk // n_ph) % (t_len + 1), uk % n_ph
    arcs = {k: torch.cat(v) for k, v in parts.items()}
    rs, re_, rph = phone_segments(ref_pdf, pdf2phone, pdf2state)
    seg_acc = torch.zeros(arcs["src"].numel(), dtype=torch.float64)
    seg_acc[arcs["close"]] = approx_phone_accuracy(cls[torch.cat(close_ph)], torch.cat(close_s), torch.cat(close_e),
                                                   rs, re_, cls[rph])
    final = torch.full((n_nodes,), float("-inf"), dtype=torch.float64)
    final_acc = torch.zeros(n_nodes, dtype=torch.float64)
    last = torch.arange(n_nodes - cur_node.numel(), n_nodes)
    final[last] = g.final[cur_node]
    if segments:
        final_acc[last] = approx_phone_accuracy(cls[cur_ph], cur_s, torch.full_like(cur_s, t_len - 1), rs, re_,
                                                cls[rph])
    return DenLattice(num_nodes=n_nodes, num_frames=t_len, frame=arcs["frame"].int(), src=arcs["src"].int(),
                      dst=arcs["dst"].int(), pdf=arcs["pdf"].int(), weight=arcs["weight"].float(),
                      seg_acc=seg_acc.float(), final=final, final_acc=final_acc.float())


def _assert_same_lattice(a, b) -> None:
    for k in a.__dataclass_fields__:
        x, y = getattr(a, k), getattr(b, k)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), k
        else:
            assert x == y, k


@pytest.mark.parametrize("segments", [True, False])
def test_vectorised_expansion_is_identical_to_the_per_frame_loop_on_random_lattices(segments):
    for seed in range(24):
        t = 3 + seed % 9
        lat = random_lattice(seed, t_len=t, width=2 + seed % 4)
        ref = torch.randint(0, P, (t,), generator=torch.Generator().manual_seed(seed))
        try:
            want = expand_per_frame(lat, P, PDF2PHONE, PDF2STATE, ref, segments)
        except ValueError as e:
            with pytest.raises(ValueError, match=str(e)):
                expand_lattice(lat, P, PDF2PHONE, PDF2STATE, ref, segments=segments)
            continue
        _assert_same_lattice(expand_lattice(lat, P, PDF2PHONE, PDF2STATE, ref, segments=segments), want)


def test_vectorised_expansion_is_identical_to_the_per_frame_loop_on_decoded_lattices(tmp_path):
    """Decoder lattices (kaldi-decoder over a loop-marked triphone HCLG, weak acoustics so they
    are wide; arrays from ``lattice_to_arrays``): same nodes, arcs, weights and accuracies."""
    from test_graph import PHONES, TEXT, _models

    from asr.decode import DecodeConfig, Graph, lattice_one, lattice_to_arrays
    from asr.lang.graph import make_hclg
    from asr.lang.langdir import make_phone_lang
    from asr.seqtrain.lattice import loop_marked_graph

    (tmp_path / "text").write_text(TEXT)
    lang = make_phone_lang(tmp_path / "text", tmp_path / "lang", phones=PHONES)
    topo, ctx, trans = _models("tri")
    make_hclg(lang, ctx, topo, trans, tmp_path / "graph")
    n = ctx.num_pdfs
    g = Graph(tmp_path / "graph", fst=loop_marked_graph(tmp_path / "graph" / "HCLG.fst", tmp_path / "l.fst", n),
              num_pdfs=2 * n)
    gen = torch.Generator().manual_seed(1)
    arcs = 0
    for _ in range(2):
        ids = torch.randint(1, len(PHONES) + 1, (8,), generator=gen)
        ids[0] = ids[-1] = PHONES.index("sil") + 1
        pdfs = ctx.pdf_sequence(ids, topo)
        ref = torch.repeat_interleave(pdfs, torch.randint(1, 6, (pdfs.numel(),), generator=gen))
        ll = -5.0 + torch.randn(ref.numel(), n, generator=gen)
        ll[torch.arange(ref.numel()), ref] += 6.0
        la = lattice_to_arrays(lattice_one(g, "u", torch.cat([ll, ll], 1), DecodeConfig(lattice_beam=8.0)))
        cls = torch.arange(len(PHONES) + 1) // 2            # pairs of phones share a scoring class
        for segments in (True, False):
            want = expand_per_frame(la, n, ctx.pdf2phone, ctx.pdf2state, ref, segments, cls)
            got = expand_lattice(la, n, ctx.pdf2phone, ctx.pdf2state, ref, cls, segments=segments)
            _assert_same_lattice(got, want)
        arcs += want.num_arcs
    assert arcs > 2 * 700           # wide lattices, many segments per frame
