"""Viterbi / forward-backward / forced alignment against brute force and hmmlearn."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from asr.hmm import TransitionModel
from asr.hmm.align import equal_align, forward_backward, viterbi, viterbi_align, viterbi_align_states


def _random_hmm(S: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    pi = torch.rand(S, generator=g, dtype=torch.float64) + 0.1
    A = torch.rand(S, S, generator=g, dtype=torch.float64) + 0.05
    pi, A = pi / pi.sum(), A / A.sum(1, keepdim=True)
    ll = torch.randn(T, S, generator=g, dtype=torch.float64) * 2
    return pi.log(), A.log(), ll


def _enumerate(log_pi, log_A, ll):
    T, S = ll.shape
    scores = {}
    for path in itertools.product(range(S), repeat=T):
        s = log_pi[path[0]] + ll[0, path[0]]
        for t in range(1, T):
            s = s + log_A[path[t - 1], path[t]] + ll[t, path[t]]
        scores[path] = float(s)
    return scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_backward_and_viterbi_vs_enumeration(seed):
    log_pi, log_A, ll = _random_hmm(3, 5, seed)
    scores = _enumerate(log_pi, log_A, ll)
    vals = torch.tensor(list(scores.values()), dtype=torch.float64)
    total = float(torch.logsumexp(vals, 0))
    gamma, lp = forward_backward(log_pi, log_A, ll)
    assert lp == pytest.approx(total, abs=1e-9)
    post = torch.zeros(5, 3, dtype=torch.float64)
    for path, s in scores.items():
        for t, st in enumerate(path):
            post[t, st] += math.exp(s - total)
    assert torch.allclose(gamma.exp(), post, atol=1e-10)
    best = max(scores, key=scores.get)
    path, score = viterbi(log_pi, log_A, ll)
    assert tuple(path.tolist()) == best
    assert score == pytest.approx(scores[best], abs=1e-9)


def test_forward_backward_and_viterbi_vs_hmmlearn():
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.RandomState(0)
    S, D, T = 4, 2, 40
    m = GaussianHMM(n_components=S, covariance_type="diag", init_params="", params="")
    m.startprob_ = rng.dirichlet(np.ones(S))
    m.transmat_ = rng.dirichlet(np.ones(S), size=S)
    m.means_ = rng.randn(S, D) * 2
    m.covars_ = rng.rand(S, D) + 0.5
    X, _ = m.sample(T, random_state=rng)
    ll = torch.from_numpy(m._compute_log_likelihood(X))
    gamma, lp = forward_backward(torch.from_numpy(np.log(m.startprob_)), torch.from_numpy(np.log(m.transmat_)), ll)
    assert lp == pytest.approx(m.score(X), rel=1e-10)
    assert np.allclose(gamma.exp().numpy(), m.predict_proba(X), atol=1e-8)
    vscore, vpath = m.decode(X, algorithm="viterbi")
    path, score = viterbi(torch.from_numpy(np.log(m.startprob_)), torch.from_numpy(np.log(m.transmat_)), ll)
    assert score == pytest.approx(vscore, rel=1e-10)
    assert path.tolist() == vpath.tolist()


def _chain_enumerate(ll, chain, loop, adv):
    """All monotone paths 0 -> S-1 with stay/advance steps; includes the final exit."""
    T, S = ll.shape[0], chain.numel()
    best, best_path = -math.inf, None
    for moves in itertools.product([0, 1], repeat=T - 1):
        if sum(moves) != S - 1:
            continue
        states = [0]
        for mv in moves:
            states.append(states[-1] + mv)
        s = sum(float(ll[t, chain[st]]) for t, st in enumerate(states))
        for t, mv in enumerate(moves):
            p = int(chain[states[t]])
            s += float(adv[p] if mv else loop[p])
        s += float(adv[int(chain[-1])])
        if s > best:
            best, best_path = s, states
    return best, best_path


def test_viterbi_align_vs_enumeration_batched():
    g = torch.Generator().manual_seed(3)
    num_pdfs = 6
    tm = TransitionModel(num_pdfs)
    tm.loop_prob = torch.rand(num_pdfs, generator=g, dtype=torch.float64) * 0.8 + 0.1
    specs = [(7, [0, 1, 2]), (9, [3, 4, 5, 0, 1]), (5, [2, 2, 3]), (8, [5]), (4, [0, 1, 2, 3]),
             (3, [1, 2, 3, 4]), (10, [1, 0, 5, 4])]
    lls = [torch.randn(T, num_pdfs, generator=g) * 3 for T, _ in specs]
    chains = [torch.tensor(c) for _, c in specs]
    for bs in (1, 3, 64):
        res = viterbi_align(lls, chains, tm, batch_size=bs)
        for (T, c), ll, chain, r in zip(specs, lls, chains, res):
            if T < len(c):
                assert r is None
                continue
            best, best_path = _chain_enumerate(ll.double(), chain, tm.loop_logprob, tm.next_logprob)
            assert r is not None
            assert r.score == pytest.approx(best, abs=1e-6)
            # ties are possible (chain [2, 2, 3]); the returned path must score the best
            st = r.states
            assert st[0] == 0 and st[-1] == len(c) - 1 and set(torch.diff(st).tolist()) <= {0, 1}
            own = float(ll.double()[torch.arange(T), chain[st]].sum())
            own += sum(float(tm.next_logprob[chain[a]] if b > a else tm.loop_logprob[chain[a]])
                       for a, b in zip(st[:-1].tolist(), st[1:].tolist()))
            own += float(tm.next_logprob[chain[-1]])
            assert own == pytest.approx(best, abs=1e-6)
            if len(set(c)) == len(c):
                assert st.tolist() == best_path
            assert torch.equal(r.pdfs, chain[r.states])


def test_viterbi_align_matches_general_viterbi():
    """The chain aligner equals general Viterbi on the equivalent HMM with an exit state."""
    g = torch.Generator().manual_seed(5)
    num_pdfs, T = 5, 30
    tm = TransitionModel(num_pdfs)
    tm.loop_prob = torch.rand(num_pdfs, generator=g, dtype=torch.float64) * 0.8 + 0.1
    chain = torch.tensor([0, 1, 2, 3, 4, 1, 2])
    ll = torch.randn(T, num_pdfs, generator=g, dtype=torch.float64)
    S = chain.numel()
    log_A = torch.full((S, S), -math.inf, dtype=torch.float64)
    idx = torch.arange(S)
    log_A[idx, idx] = tm.loop_logprob[chain]
    log_A[idx[:-1], idx[1:]] = tm.next_logprob[chain[:-1]]
    log_pi = torch.full((S,), -math.inf, dtype=torch.float64)
    log_pi[0] = 0
    em = ll[:, chain].clone()
    em[-1, :-1] = -math.inf  # must end in the last state
    path, score = viterbi(log_pi, log_A, em)
    r = viterbi_align([ll], [chain], tm)[0]
    assert r.states.tolist() == path.tolist()
    assert r.score == pytest.approx(score + float(tm.next_logprob[chain[-1]]), abs=1e-9)


def test_unalignable_and_bad_input():
    tm = TransitionModel(3)
    assert viterbi_align([torch.zeros(2, 3)], [torch.tensor([0, 1, 2])], tm) == [None]
    with pytest.raises(ValueError, match="utterance 0"):
        viterbi_align([torch.zeros(5, 3)], [torch.tensor([0, 7])], tm)
    with pytest.raises(ValueError):
        viterbi_align([torch.zeros(5, 3)], [], tm)


def test_state_emissions_give_the_alignment_of_pdf_loglikes():
    """viterbi_align_states on ``loglikes[:, chain]`` is viterbi_align, bit for bit; the GMM
    helper that builds those emissions gives the columns of the full per-pdf matrix."""
    from asr.gmm.model import DiagGmmSet
    from asr.gmm.train import chain_state_loglikes

    g = torch.Generator().manual_seed(5)
    P, D = 6, 3
    tm = TransitionModel(P)
    tm.loop_prob = torch.rand(P, generator=g, dtype=torch.float64) * 0.8 + 0.1
    gmm = DiagGmmSet(torch.randn(2 * P, D, generator=g), torch.rand(2 * P, D, generator=g) + 0.5,
                     torch.log(torch.full((2 * P,), 0.5)), torch.arange(P).repeat_interleave(2), P)
    chains = [torch.tensor(c) for c in ([0, 1, 2, 1], [3, 4, 5, 0, 1], [5], [2, 2, 3])]
    xs = [torch.randn(T, D, generator=g) for T in (9, 12, 4, 2)]
    bias = torch.randn(P, generator=g)
    full = [gmm.loglikes(x) + bias for x in xs]
    ems = [chain_state_loglikes(gmm, x, c, bias) for x, c in zip(xs, chains)]
    for e, f, c in zip(ems, full, chains):
        torch.testing.assert_close(e, f[:, c], rtol=1e-5, atol=1e-5)
    for a, b in zip(viterbi_align_states(ems, chains, tm, batch_size=2),
                    viterbi_align([_scatter(e, c, P) for e, c in zip(ems, chains)], chains, tm, batch_size=2)):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.states.tolist() == b.states.tolist() and a.score == b.score
    assert viterbi_align_states(ems[3:], chains[3:], tm) == [None]          # 2 frames, 3 states
    with pytest.raises(ValueError, match="utterance 0: emissions must be"):
        viterbi_align_states([ems[0][:, :2]], chains[:1], tm)
    with pytest.raises(ValueError, match="transition model"):
        viterbi_align_states([torch.zeros(5, 2)], [torch.tensor([0, 7])], tm)


def _scatter(e: torch.Tensor, chain: torch.Tensor, num_pdfs: int) -> torch.Tensor:
    """(T, S) state emissions back into a (T, num_pdfs) matrix (-inf for pdfs off the chain)."""
    out = torch.full((e.shape[0], num_pdfs), -math.inf)
    out[:, chain] = e
    return out


def test_equal_align():
    a = equal_align(10, 3)
    assert a.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    a = equal_align(7, 7)
    assert a.tolist() == list(range(7))
    counts = torch.bincount(equal_align(101, 9))
    assert counts.numel() == 9 and int(counts.max() - counts.min()) <= 1
    with pytest.raises(ValueError):
        equal_align(2, 3)


def test_transition_update_ml():
    tm = TransitionModel(3)
    # pdf 0 for 4 frames, pdf 1 for 2, pdf 0 again 2 frames (separate state by state_ali), pdf 2 for 1
    pdf = torch.tensor([0, 0, 0, 0, 1, 1, 0, 0, 2])
    st = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3])
    tm.update([pdf], [st], floor=0.01)
    # pdf0: 6 frames, 2 exits -> 4/6 ; pdf1: 2 frames 1 exit -> 0.5 ; pdf2: 1 frame 1 exit -> floor
    assert torch.allclose(tm.loop_prob, torch.tensor([4 / 6, 0.5, 0.01], dtype=torch.float64))
    assert torch.allclose(tm.loop_logprob.exp() + tm.next_logprob.exp(), torch.ones(3, dtype=torch.float64))
    tm2 = TransitionModel.from_dict(tm.to_dict())
    assert torch.equal(tm2.loop_prob, tm.loop_prob)


def test_frame_labels_from_alignment():
    from asr.hmm import ContextDependency, Topology
    from asr.hmm.align import frame_labels

    topo = Topology(4, 3, {1: 1})
    cd = ContextDependency.monophone(topo)
    phones = torch.tensor([1, 3, 2, 1])
    chain = cd.pdf_sequence(phones, topo)
    g = torch.Generator().manual_seed(0)
    ll = torch.randn(20, cd.num_pdfs, generator=g)
    r = viterbi_align([ll], [chain], TransitionModel(cd.num_pdfs))[0]
    ph, st = frame_labels(r.states, phones, topo)
    assert torch.equal(cd.table[0, ph, 0, st], r.pdfs)
    assert ph[0] == 1 and ph[-1] == 1 and st.max() == 2


def test_one_frame_labels_function():
    """There was a second ``frame_labels`` in asr.gmm.train taking (phones, ali) where
    asr.hmm.align's takes (states, phones); the GMM code now uses the one of asr.hmm.align."""
    import inspect

    import asr.gmm.stages as gs
    import asr.gmm.system as gsys
    import asr.gmm.train as gt
    from asr.hmm.align import frame_labels

    for mod in (gt, gs, gsys):
        assert getattr(mod, "frame_labels", frame_labels) is frame_labels, mod.__name__
    defs = [p for p in (gt, gs, gsys) if "def frame_labels" in inspect.getsource(p)]
    assert not defs
