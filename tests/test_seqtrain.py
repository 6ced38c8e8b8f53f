"""Sequence training: forward-backward vs brute-force path enumeration and finite differences."""
from __future__ import annotations

import itertools

import pytest
import torch

from asr.seqtrain.fb import DenGraph, forward_backward
from asr.seqtrain.objective import sequence_objective

torch.set_num_threads(1)

ARCS = [(0, 0, 0), (0, 1, 1), (1, 1, 1), (1, 2, 2), (2, 2, 2), (0, 2, 2), (2, 0, 0), (1, 0, 0)]


def tiny_graph(seed: int = 0) -> DenGraph:
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor(ARCS)
    return DenGraph(num_states=3, src=a[:, 0], dst=a[:, 1], pdf=a[:, 2],
                    weight=torch.randn(len(ARCS), generator=g, dtype=torch.float64) * 0.5,
                    start=torch.tensor([0.0, -0.7, float("-inf")], dtype=torch.float64),
                    final=torch.tensor([float("-inf"), -0.3, 0.0], dtype=torch.float64))


PDF2PHONE = torch.tensor([1, 1, 2])          # pdfs 0,1 belong to phone 1, pdf 2 to phone 2


def brute(graph: DenGraph, ll: torch.Tensor, ref: torch.Tensor, criterion: str, kappa: float, boost: float = 0.0):
    """Enumerate every arc sequence; returns (den logZ, num logZ, expected accuracy) as autograd scalars of ll."""
    t_len = ll.shape[0]
    den, num, accs = [], [], []
    for path in itertools.product(range(graph.num_arcs), repeat=t_len):
        if any(int(graph.dst[path[i]]) != int(graph.src[path[i + 1]]) for i in range(t_len - 1)):
            continue
        s0, sf = float(graph.start[graph.src[path[0]]]), float(graph.final[graph.dst[path[-1]]])
        if s0 == float("-inf") or sf == float("-inf"):
            continue
        pdfs = graph.pdf[list(path)]
        score = s0 + sf + graph.weight[list(path)].sum() + kappa * ll[torch.arange(t_len), pdfs].sum()
        if criterion == "smbr":
            acc = float((pdfs == ref).sum())
        else:
            acc = float((PDF2PHONE[pdfs] == PDF2PHONE[ref]).sum())
        den.append(score - boost * acc)
        accs.append(acc)
        if torch.equal(pdfs, ref):
            num.append(score)
    den_t = torch.stack(den)
    logz = torch.logsumexp(den_t, 0)
    num_z = torch.logsumexp(torch.stack(num), 0) if num else torch.tensor(float("-inf"), dtype=torch.float64)
    exp_acc = (torch.softmax(den_t, 0) * torch.tensor(accs, dtype=torch.float64)).sum()
    return logz, num_z, exp_acc


def _case(seed: int, t_len: int = 5):
    g = torch.Generator().manual_seed(seed)
    ll = torch.randn(t_len, 3, generator=g, dtype=torch.float64) * 2
    ref = torch.tensor([0, 0, 1, 2, 2, 2][:t_len])
    return ll, ref


@pytest.mark.parametrize("criterion", ["smbr", "mpfe"])
def test_expected_accuracy_and_gradient_match_bruteforce(criterion):
    graph = tiny_graph(1)
    kappa = 0.7
    ll, ref = _case(2)
    res = sequence_objective(graph, ll.unsqueeze(0).float(), torch.tensor([5]), ref.unsqueeze(0),
                             criterion=criterion, kappa=kappa, pdf2phone=PDF2PHONE)
    llv = ll.clone().requires_grad_(True)
    _, _, exp_acc = brute(graph, llv, ref, criterion, kappa)
    exp_acc.backward()
    torch.testing.assert_close(res.objective.double(), exp_acc.detach().view(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.grad[0].double(), llv.grad, atol=1e-5, rtol=1e-4)
    # finite differences on one entry, independently of autograd
    eps = 1e-5
    for (t, s) in [(0, 0), (2, 1), (4, 2)]:
        lp, lm = ll.clone(), ll.clone()
        lp[t, s] += eps
        lm[t, s] -= eps
        fd = (brute(graph, lp, ref, criterion, kappa)[2] - brute(graph, lm, ref, criterion, kappa)[2]) / (2 * eps)
        assert abs(float(fd) - float(res.grad[0, t, s])) < 1e-4


@pytest.mark.parametrize("boost", [0.0, 0.5])
def test_mmi_objective_is_num_minus_den_loglik(boost):
    graph = tiny_graph(3)
    ll, ref = _case(4)
    crit = "bmmi" if boost else "mmi"
    res = sequence_objective(graph, ll.unsqueeze(0).float(), torch.tensor([5]), ref.unsqueeze(0),
                             criterion=crit, kappa=0.5, boost=boost, pdf2phone=PDF2PHONE)
    llv = ll.clone().requires_grad_(True)
    den, num, _ = brute(graph, llv, ref, "mpfe", 0.5, boost=boost)
    (num - den).backward()
    torch.testing.assert_close(res.objective.double(), (num - den).detach().view(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.grad[0].double(), llv.grad, atol=1e-5, rtol=1e-4)


def test_batched_variable_lengths_equal_single_utterances():
    graph = tiny_graph(5)
    la, ra = _case(6, 5)
    lb, rb = _case(7, 3)
    ll = torch.zeros(2, 5, 3)
    ll[0], ll[1, :3] = la.float(), lb.float()
    ref = torch.zeros(2, 5, dtype=torch.long)
    ref[0], ref[1, :3] = ra, rb
    res = sequence_objective(graph, ll, torch.tensor([5, 3]), ref, criterion="smbr", kappa=1.0, pdf2phone=PDF2PHONE)
    for i, (l1, r1, n) in enumerate([(la, ra, 5), (lb, rb, 3)]):
        one = sequence_objective(graph, l1.unsqueeze(0).float(), torch.tensor([n]), r1.unsqueeze(0),
                                 criterion="smbr", kappa=1.0, pdf2phone=PDF2PHONE)
        torch.testing.assert_close(res.objective[i], one.objective[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(res.grad[i, :n], one.grad[0], atol=1e-6, rtol=0)
        assert float(res.grad[i, n:].abs().sum()) == 0.0
        _, _, exp_acc = brute(graph, l1, r1, "smbr", 1.0)
        assert abs(float(exp_acc) - float(res.objective[i])) < 1e-6


def test_occupancies_sum_to_one_and_no_num_path_flagged():
    graph = tiny_graph(0)
    ll, _ = _case(8)
    fb = forward_backward(graph, ll.unsqueeze(0), torch.tensor([5]))
    torch.testing.assert_close(fb.occ[0].sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-9, rtol=0)
    impossible = torch.tensor([[2, 1, 1, 1, 1]])   # from state 2, pdf 1 is unreachable in one step... pdf 2->1 has no arc
    res = sequence_objective(graph, ll.unsqueeze(0).float(), torch.tensor([5]), impossible, criterion="mpfe",
                             pdf2phone=PDF2PHONE)
    assert bool(res.no_num_path[0]) and float(res.grad.abs().sum()) == 0.0


FST_TXT = """0 1 1 11 0.5
0 2 0 0 0.3
2 1 2 12 0.2
2 3 0 0 1.0
1 1 2 0 0.7
1 3 3 13 0.1
3 1 1 0 0.4
3 3 3 0 0.9
3 0 1 0 2.0
1 0.5
3 0.25
"""


def _paths_with_eps(arcs, finals, start, ll, kappa):
    """All paths of the ε-FST emitting exactly len(ll) labels (ε-chains bounded by depth)."""
    t_len = ll.shape[0]
    out = []

    def rec(state, t, score, depth):
        if t == t_len and state in finals:
            out.append(score - finals[state])
        if depth > 12:
            return
        for s, d, i, c in arcs:
            if s != state:
                continue
            if i == 0:
                rec(d, t, score - c, depth + 1)
            elif t < t_len:
                rec(d, t + 1, score - c + kappa * float(ll[t, i - 1]), depth + 1)

    rec(start, 0, 0.0, 0)
    return torch.logsumexp(torch.tensor(out, dtype=torch.float64), 0)


def test_epsilon_removal_preserves_path_sums(tmp_path):
    import kaldifst

    from asr.seqtrain.graph import den_graph_from_fst

    fst = kaldifst.compile(FST_TXT, acceptor=False)
    fst.write(str(tmp_path / "HCLG.fst"))
    g = den_graph_from_fst(tmp_path / "HCLG.fst")
    assert g.num_arcs > 0 and int(g.pdf.min()) >= 0
    arcs, finals = [], {}
    for line in FST_TXT.strip().splitlines():
        f = line.split()
        if len(f) == 5:
            arcs.append((int(f[0]), int(f[1]), int(f[2]), float(f[4])))
        else:
            finals[int(f[0])] = float(f[1])
    gen = torch.Generator().manual_seed(0)
    for t_len in (1, 3, 4):
        ll = torch.randn(t_len, 3, generator=gen, dtype=torch.float64)
        ref = _paths_with_eps(arcs, finals, 0, ll, 0.8)
        fb = forward_backward(g, 0.8 * ll.unsqueeze(0), torch.tensor([t_len]))
        assert abs(float(fb.logz[0]) - float(ref)) < 1e-6, t_len


def test_epsilon_cycle_is_reported(tmp_path):
    import kaldifst

    from asr.seqtrain.graph import den_graph_from_fst

    kaldifst.compile("0 1 0 0 0.1\n1 0 0 0 0.1\n0 0 1 1 0.0\n0 0.0\n", acceptor=False).write(str(tmp_path / "c.fst"))
    with pytest.raises(ValueError, match="epsilon cycle"):
        den_graph_from_fst(tmp_path / "c.fst")


def _ce_model(tmp_path):
    from asr.nnet import (CETrainConfig, HybridDNN, NetConfig, build_frame_data, pdf_log_priors,
                          split_cv_speakers, train_ce)
    from asr.nnet.synthetic import synth_corpus

    feats, alis = synth_corpus(40, 6, 4, seed=0, noise=1.5)
    u2s = {u: u.split("_")[0] for u in feats}
    tr, cv = split_cv_speakers(u2s, 0.2, seed=0)
    train = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=tr)
    cvd = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=cv)
    torch.manual_seed(0)
    m = HybridDNN(NetConfig(input_dim=4, num_pdfs=6, hidden=(16,), left=2, right=2))
    m.set_normalisation(*train.spliced_moments())
    m.log_priors.copy_(pdf_log_priors(train.targets, 6))
    train_ce(m, train, cvd, CETrainConfig(max_epochs=1, batch_size=64), tmp_path / "ce", log=lambda s: None)
    return m, train, cvd


@pytest.mark.parametrize("criterion", ["mpfe", "mmi"])
def test_sequence_training_raises_objective_resumes_and_skips(tmp_path, criterion):
    from asr.nnet import load_model
    from asr.seqtrain import SeqTrainConfig, pdf_loop_graph, train_sequence

    m, train, cv = _ce_model(tmp_path)
    graph = pdf_loop_graph(6)
    p2p = torch.tensor([1, 1, 2, 2, 3, 3])
    cfg = SeqTrainConfig(criterion=criterion, epochs=3, lr=0.05, batch_utts=8, ce_smoothing=0.0)
    h = train_sequence(m, train, cv, graph, cfg, tmp_path / "full", pdf2phone=p2p, log=lambda s: None)
    objs = [r["objective"] for r in h[1:]]
    assert objs[-1] > objs[0] and h[-1]["no_num_path"] == 0
    assert (tmp_path / "full" / "log" / "train_curve.json").is_file()
    # resume: a run stopped after epoch 2 (epochs=2) then continued to 3 equals the full run
    m2 = load_model(tmp_path / "ce" / "final.pt")
    train_sequence(m2, train, cv, graph, SeqTrainConfig(**{**cfg.__dict__, "epochs": 2}), tmp_path / "part",
                   pdf2phone=p2p, log=lambda s: None)
    m3 = load_model(tmp_path / "ce" / "final.pt")
    train_sequence(m3, train, cv, graph, cfg, tmp_path / "part", pdf2phone=p2p, log=lambda s: None)
    for (k, a), b in zip(m.state_dict().items(), m3.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)


def test_reference_without_den_path_is_skipped_with_count(tmp_path):
    from asr.seqtrain import DenGraph, SeqTrainConfig, train_sequence

    m, train, cv = _ce_model(tmp_path)
    # a graph without pdf 5: every utterance whose reference uses pdf 5 has no numerator path
    a = torch.arange(5)
    graph = DenGraph(num_states=2, src=torch.cat([torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)]),
                     dst=torch.ones(10, dtype=torch.long), pdf=torch.cat([a, a]),
                     weight=torch.zeros(10, dtype=torch.float64),
                     start=torch.tensor([0.0, float("-inf")], dtype=torch.float64),
                     final=torch.tensor([float("-inf"), 0.0], dtype=torch.float64))
    msgs = []
    h = train_sequence(m, train, cv, graph, SeqTrainConfig(criterion="smbr", epochs=1, lr=0.01), tmp_path / "s",
                       log=msgs.append)
    starts = torch.cumsum(train.lengths, 0) - train.lengths
    expect = sum(int((train.targets[s:s + n] == 5).any()) for s, n in zip(starts.tolist(), train.lengths.tolist()))
    assert expect > 0 and h[-1]["no_num_path"] == expect
    assert any("no path" in s for s in msgs)


@pytest.mark.parametrize("criterion", ["smbr", "mpfe", "mmi", "bmmi"])
def test_pdf_hmm_denominator_equals_generic_graph_and_bruteforce(criterion):
    from asr.seqtrain.pdfhmm import PdfHmmDen

    gen = torch.Generator().manual_seed(1)
    alis = [torch.randint(0, 3, (int(n),), generator=gen) for n in (5, 7, 4, 6)]
    alis.append(torch.tensor([0, 0, 1, 1, 2]))
    den = PdfHmmDen.from_alignments(alis, 3)
    assert den.num_arcs > 0
    graph = den.to_den_graph()
    ll = torch.randn(2, 5, 3, generator=gen)
    ref = torch.stack([alis[-1], torch.tensor([2, 1, 0, 0, 0])])
    ref[1, 3:] = 0
    lengths = torch.tensor([5, 3])
    kw = dict(criterion=criterion, kappa=0.6, boost=0.4, pdf2phone=PDF2PHONE)
    a = sequence_objective(den, ll, lengths, ref, **kw)
    b = sequence_objective(graph, ll, lengths, ref, **kw)
    assert torch.equal(a.no_num_path, b.no_num_path)
    torch.testing.assert_close(a.objective.double(), b.objective.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)
    if criterion in ("smbr", "mpfe"):   # and the graph form against enumeration of all paths
        _, _, exp_acc = brute(graph, ll[0].double(), ref[0], criterion, 0.6)
        assert abs(float(exp_acc) - float(a.objective[0])) < 1e-5


def test_no_import_cycle_between_recursions():
    """fb (arc-level recursion) imports neither pdfhmm (state-level) nor objective, which uses
    both: no import cycle to dodge with a function-local import."""
    import ast
    from pathlib import Path

    import asr.seqtrain.fb as fb

    tree = ast.parse(Path(fb.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("asr.seqtrain")}, imported
