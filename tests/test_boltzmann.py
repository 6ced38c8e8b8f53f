"""General Boltzmann machine: sampler and learning rule against exact enumeration."""
from __future__ import annotations

import pytest
import torch

from asr.generative.boltzmann import (BMTrainConfig, BoltzmannMachine, all_binary_states,
                                      autocorrelation, exact_log_likelihood, exact_log_partition,
                                      exact_moments, integrated_autocorrelation_time,
                                      phase_statistics, sample_states, train_boltzmann)
from asr.generative.rbm import RBM, exact_log_z


def _random_bm(nv: int, nh: int, scale: float, seed: int) -> BoltzmannMachine:
    g = torch.Generator().manual_seed(seed)
    bm = BoltzmannMachine(nv, nh)
    n = nv + nh
    bm.set_parameters(scale * torch.randn(n, n, generator=g), 0.5 * torch.randn(n, generator=g))
    return bm


def test_weights_symmetric_zero_diagonal():
    bm = BoltzmannMachine(5, 3, init_std=0.1)
    torch.testing.assert_close(bm.W, bm.W.T)
    assert torch.all(torch.diagonal(bm.W) == 0)


def test_log_partition_matches_rbm_and_brute_force():
    # a BM without visible-visible and hidden-hidden weights is an RBM: independent reference
    g = torch.Generator().manual_seed(1)
    rbm = RBM(6, 4)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(6, 4, generator=g))
        rbm.b.copy_(torch.randn(6, generator=g))
        rbm.c.copy_(torch.randn(4, generator=g))
    bm = BoltzmannMachine(6, 4)
    w = torch.zeros(10, 10)
    w[:6, 6:] = rbm.W.detach()
    bm.set_parameters(w + w.T, torch.cat([rbm.b.detach(), rbm.c.detach()]))
    assert float(exact_log_partition(bm, chunk=100)) == pytest.approx(float(exact_log_z(rbm)), abs=1e-9)
    # log p(v) sums to one over all visible vectors
    bm2 = _random_bm(4, 3, 1.0, 2)
    ll = exact_log_likelihood(bm2, all_binary_states(4).float())
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-9)
    # explicit energy of one state
    s = torch.tensor([[1.0, 0, 1, 1, 0, 1, 0]])
    w2, b2 = bm2.W.detach().double(), bm2.b.detach().double()
    e = -sum(float(w2[i, j]) for i in range(7) for j in range(i + 1, 7) if s[0, i] and s[0, j]) - float(s.double() @ b2)
    assert float(bm2.energy(s).detach()) == pytest.approx(e, abs=1e-5)


def test_sequential_gibbs_marginals_match_enumeration():
    bm = _random_bm(4, 2, 0.8, 3)
    gen = torch.Generator().manual_seed(4)
    trace = sample_states(bm, n_chains=400, sweeps=60, generator=gen, record=True)[10:]
    s = trace.reshape(-1, 6).double()
    mean, second = exact_moments(bm)
    assert (s.mean(0) - mean).abs().max() < 0.02
    assert ((s.T @ s) / len(s) - second).abs().max() < 0.02


def test_sampled_gradient_matches_exact_gradient():
    # fully visible: the positive phase is exact, the negative phase sampled
    bm = _random_bm(5, 0, 0.5, 5)
    gen = torch.Generator().manual_seed(6)
    data = torch.bernoulli(torch.full((200, 5), 0.3), generator=gen)
    cfg = BMTrainConfig(neg_sweeps=1)
    chains = sample_states(bm, 2000, 30, gen)
    dw, db, _ = phase_statistics(bm, data, chains, cfg, gen)
    w = bm.W.detach().double().clone().requires_grad_(True)
    b = bm.b.detach().double().clone().requires_grad_(True)
    s = all_binary_states(5)
    neg_e = lambda x: 0.5 * ((x @ w) * x).sum(1) + x @ b  # noqa: E731
    ll = neg_e(data.double()).mean() - torch.logsumexp(neg_e(s), 0)
    ll.backward()
    # autograd counts w_ij and w_ji separately: d/dw_ij of the symmetric model = 2 * grad_ij
    off = ~torch.eye(5, dtype=torch.bool)                 # the diagonal is not a parameter
    assert (dw.double() - 2 * w.grad)[off].abs().max() < 0.04
    assert torch.all(torch.diagonal(dw) == 0)
    assert (db.double() - b.grad).abs().max() < 0.04


def test_learning_increases_exact_likelihood_towards_the_true_model():
    true = _random_bm(6, 2, 1.0, 7)
    gen = torch.Generator().manual_seed(8)
    data = sample_states(true, 1000, 40, gen)[:, :6]
    bm = BoltzmannMachine(6, 2, init_std=0.1, generator=torch.Generator().manual_seed(9))
    before = float(exact_log_likelihood(bm, data).mean())
    hist = train_boltzmann(bm, data, BMTrainConfig(epochs=30, batch_size=50, lr=0.05, n_chains=100,
                                                   lr_decay=0.1), torch.Generator().manual_seed(10))
    after = float(exact_log_likelihood(bm, data).mean())
    truth = float(exact_log_likelihood(true, data).mean())
    assert len(hist) == 30 and hist[-1]["seconds_per_update"] > 0
    assert after > before + 0.2
    assert after > truth - 0.1, (before, after, truth)


def test_training_is_deterministic_given_seed():
    data = torch.bernoulli(torch.full((60, 4), 0.4), generator=torch.Generator().manual_seed(0))
    out = []
    for _ in range(2):
        bm = BoltzmannMachine(4, 2)
        train_boltzmann(bm, data, BMTrainConfig(epochs=2), torch.Generator().manual_seed(3))
        out.append(bm.W.detach().clone())
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_autocorrelation_of_ar1_chain():
    gen = torch.Generator().manual_seed(11)
    phi, t = 0.8, 20000
    eps = torch.randn(t, 4, generator=gen, dtype=torch.float64)
    x = torch.zeros(t, 4, dtype=torch.float64)
    for k in range(1, t):
        x[k] = phi * x[k - 1] + eps[k]
    rho = autocorrelation(x, 5)
    torch.testing.assert_close(rho, phi ** torch.arange(6, dtype=torch.float64), atol=0.03, rtol=0)
    assert integrated_autocorrelation_time(rho) > 4.0


def test_bad_input():
    bm = BoltzmannMachine(4, 1)
    with pytest.raises(ValueError, match="binary"):
        train_boltzmann(bm, torch.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="shape"):
        exact_log_likelihood(bm, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="enumerate"):
        exact_log_partition(BoltzmannMachine(30, 0))


def test_checkpoint_round_trip(tmp_path):
    from asr.generative.checkpoint import load, save
    bm = _random_bm(3, 2, 1.0, 12)
    save(bm, tmp_path / "bm.pt")
    back = load(tmp_path / "bm.pt")
    assert isinstance(back, BoltzmannMachine) and back.n_hidden == 2
    torch.testing.assert_close(back.W, bm.W)
    assert float(exact_log_partition(back)) == pytest.approx(float(exact_log_partition(bm)))
