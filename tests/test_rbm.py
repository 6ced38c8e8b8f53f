"""RBM tests against brute-force enumeration on tiny models."""
from __future__ import annotations

import math

import pytest
import torch

torch.set_num_threads(1)
from torch.nn import functional as F

from asr.generative import (RBM, RBMTrainConfig, TrainingDiverged, ais_log_z, base_rate_bias,
                            cd_gradient, exact_log_z, load, save, train_rbm)
from asr.generative.rbm import _all_binary

torch.set_default_dtype(torch.float32)


def tiny_rbm(visible: str = "bernoulli", D: int = 8, H: int = 6, scale: float = 1.0,
             seed: int = 1) -> RBM:
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(D, H, visible)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(D, H, generator=g) * scale)
        rbm.b.copy_(torch.randn(D, generator=g) * 0.5)
        rbm.c.copy_(torch.randn(H, generator=g) * 0.5)
    return rbm.double()


def brute_log_z_bernoulli(rbm: RBM) -> float:
    v = _all_binary(rbm.n_visible, torch.device("cpu"), torch.float64)
    h = _all_binary(rbm.n_hidden, torch.device("cpu"), torch.float64)
    W, b, c = rbm.W.detach(), rbm.b.detach(), rbm.c.detach()
    neg_e = (v @ b)[:, None] + (h @ c)[None, :] + v @ W @ h.t()
    return torch.logsumexp(neg_e.flatten(), 0).item()


def test_exact_log_z_matches_joint_enumeration():
    for D, H in [(8, 6), (5, 9)]:  # enumerates hidden, then visible, layer
        rbm = tiny_rbm(D=D, H=H)
        assert exact_log_z(rbm).item() == pytest.approx(brute_log_z_bernoulli(rbm), abs=1e-9)


def test_gaussian_log_z_matches_numerical_integration():
    rbm = tiny_rbm("gaussian", D=2, H=3, scale=0.7)
    grid = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    vv = torch.cartesian_prod(grid, grid)
    dv = (grid[1] - grid[0]).item() ** 2
    num = torch.logsumexp(-rbm.free_energy(vv), 0).item() + math.log(dv)
    assert exact_log_z(rbm).item() == pytest.approx(num, abs=1e-6)


def test_free_energy_and_energy_consistent():
    rbm = tiny_rbm()
    g = torch.Generator().manual_seed(0)
    v = torch.bernoulli(torch.full((5, 8), 0.5, dtype=torch.float64), generator=g)
    h = _all_binary(6, torch.device("cpu"), torch.float64)
    e = torch.stack([rbm.energy(v, hh.expand(5, 6)) for hh in h], 1)  # (5, 64)
    assert torch.allclose(rbm.free_energy(v), -torch.logsumexp(-e, 1), atol=1e-10)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_matches_exact_log_z(visible):
    rbm = tiny_rbm(visible, scale=0.8 if visible == "bernoulli" else 0.3)
    g = torch.Generator().manual_seed(3)
    data = rbm.sample(500, steps=200, generator=g)
    if visible == "bernoulli":
        data = torch.bernoulli(data, generator=g)
    res = ais_log_z(rbm, base_rate_bias(data, visible), n_chains=100, betas=2000, generator=g)
    exact = exact_log_z(rbm).item()
    assert abs(res.log_z - exact) < 0.05, (res.log_z, exact)
    assert res.log_z_low - 0.05 <= exact <= res.log_z_high + 0.05


def _exact_stats(rbm: RBM, v: torch.Tensor, weights: torch.Tensor):
    """sum_v w(v) [v p(h|v)^T, v, p(h|v)]."""
    ph = rbm.hidden_probs(v)
    return (v.t() @ (weights[:, None] * ph), weights @ v, weights @ ph)


def test_cd1_gradient_expectation_matches_enumeration():
    """Monte-Carlo mean of the CD-1 estimate == its exact expectation under the one-step
    Gibbs transition T(v1 | v0) = sum_h p(h | v0) p(v1 | h), computed by enumeration."""
    rbm = tiny_rbm(scale=0.7)
    Hs = _all_binary(6, torch.device("cpu"), torch.float64)
    g = torch.Generator().manual_seed(5)
    data = torch.bernoulli(torch.full((4, 8), 0.5, dtype=torch.float64), generator=g)
    ph0 = rbm.hidden_probs(data)                                   # (4, 64 configs below)
    p_h = torch.exp(Hs @ torch.log(ph0.t().clamp_min(1e-300))
                    + (1 - Hs) @ torch.log1p(-ph0.t()))            # (64, 4) p(h|v0)
    # CD uses the mean of p(v|h) as reconstruction: E[vm p(h|vm)] over h ~ p(h|v0)
    vm = rbm.visible_mean(Hs)                                      # (64, 8)
    phm = rbm.hidden_probs(vm)
    w = p_h.mean(1)                                                # average over the 4 data rows
    neg_W = vm.t() @ (w[:, None] * phm)
    pos_W = data.t() @ ph0 / 4
    exact_dW = pos_W - neg_W
    # Monte Carlo
    rep = data.repeat(20000, 1)
    (dW, db, dc), _ = cd_gradient(rbm, rep, 1, g)
    assert torch.allclose(dW, exact_dW, atol=6e-3), (dW - exact_dW).abs().max()
    assert torch.allclose(db, (data.mean(0) - w @ vm), atol=6e-3)
    assert torch.allclose(dc, ph0.mean(0) - w @ phm, atol=6e-3), (dc - (ph0.mean(0) - w @ phm)).abs().max()


def test_long_chain_cd_approaches_exact_gradient():
    """CD-k with many steps estimates the exact ML gradient E_data - E_model (enumeration)."""
    rbm = tiny_rbm(scale=0.4)
    V = _all_binary(8, torch.device("cpu"), torch.float64)
    g = torch.Generator().manual_seed(7)
    data = torch.bernoulli(torch.full((8, 8), 0.3, dtype=torch.float64), generator=g)
    logp = -rbm.free_energy(V)
    pv = torch.softmax(logp, 0)
    mW, mb, mc = _exact_stats(rbm, V, pv)
    dW_exact = data.t() @ rbm.hidden_probs(data) / 8 - mW
    rep = data.repeat(5000, 1)
    (dW, db, dc), _ = cd_gradient(rbm, rep, 30, g, sample_visible=True)
    assert torch.allclose(dW, dW_exact, atol=1e-2), (dW - dW_exact).abs().max()
    assert torch.allclose(db, data.mean(0) - mb, atol=1e-2)
    assert torch.allclose(dc, rbm.hidden_probs(data).mean(0) - mc, atol=1e-2)
    # and CD-1 points in a similar direction
    (d1, _, _), _ = cd_gradient(rbm, rep, 1, g)
    assert F.cosine_similarity(d1.flatten(), dW_exact.flatten(), 0) > 0.8


def test_sampled_hidden_means_match_mean_field():
    rbm = tiny_rbm()
    g = torch.Generator().manual_seed(0)
    v = torch.bernoulli(torch.full((3, 8), 0.5, dtype=torch.float64), generator=g)
    v_in = v.clone()
    p = rbm.hidden_probs(v)
    samples = torch.stack([rbm.sample_hidden(v, g)[1] for _ in range(4000)])
    assert torch.allclose(samples.mean(0), p, atol=0.03)
    assert torch.equal(v, v_in)  # input not modified


def test_exact_pll_matches_conditionals():
    rbm = tiny_rbm()
    V = _all_binary(8, torch.device("cpu"), torch.float64)
    logp = -rbm.free_energy(V)
    v = V[[3, 100, 200]]
    pll = rbm.pseudo_log_likelihood(v, exact=True)
    idx = [3, 100, 200]
    ref = []
    for n in idx:
        tot = 0.0
        for i in range(8):
            m = n ^ (1 << i)  # flip bit i (little-endian as in _all_binary)
            tot += (logp[n] - torch.logaddexp(logp[n], logp[m])).item()
        ref.append(tot)
    assert torch.allclose(pll, torch.tensor(ref, dtype=torch.float64), atol=1e-9)
    g = torch.Generator().manual_seed(0)
    est = torch.stack([rbm.pseudo_log_likelihood(v, g) for _ in range(3000)]).mean(0)
    assert torch.allclose(est, pll, atol=0.35)


def _toy_data(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1],
                           [1, 0, 1, 0, 1, 0, 1, 0]], dtype=torch.float32)
    x = protos[torch.randint(0, 3, (n,), generator=g)]
    flip = torch.bernoulli(torch.full_like(x, 0.05), generator=g)
    return (x + flip) % 2


def test_training_increases_exact_log_likelihood_and_is_deterministic():
    data = _toy_data()
    cfg = RBMTrainConfig(epochs=30, batch_size=20, lr=0.1)
    lls = []
    params = []
    for _ in range(2):
        rbm = RBM(8, 6, "bernoulli", generator=torch.Generator().manual_seed(2))
        before = (-rbm.free_energy(data).mean() - exact_log_z(rbm)).item()
        hist = train_rbm(rbm, data, cfg, torch.Generator().manual_seed(9))
        after = (-rbm.free_energy(data).mean() - exact_log_z(rbm)).item()
        lls.append((before, after))
        params.append(rbm.W.detach().clone())
    assert torch.equal(params[0], params[1])
    before, after = lls[0]
    assert after > before + 1.0, (before, after)
    assert hist[-1]["recon_error"] < hist[0]["recon_error"]
    assert len(hist) == 30 and hist[-1]["momentum"] == 0.9


def test_pcd_and_streaming_sources():
    data = _toy_data()
    rbm = RBM(8, 6, generator=torch.Generator().manual_seed(2))
    before = (-rbm.free_energy(data).mean() - exact_log_z(rbm)).item()
    batches = list(data.split(20))
    hist = train_rbm(rbm, lambda: iter(batches),
                     RBMTrainConfig(epochs=20, persistent=True, lr=0.05, k=1),
                     torch.Generator().manual_seed(0))
    after = (-rbm.free_energy(data).mean() - exact_log_z(rbm)).item()
    assert after > before + 1.0 and hist[0]["batches"] == 20
    # a one-shot iterator is exhausted after one epoch: clear error instead of silent no-op
    with pytest.raises(ValueError, match="yielded no batches"):
        train_rbm(rbm, iter(batches), RBMTrainConfig(epochs=2))


def test_bad_input_raises():
    rbm = RBM(8, 6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_rbm(rbm, torch.rand(10, 8) * 2, RBMTrainConfig(epochs=1))
    with pytest.raises(ValueError, match="shape"):
        train_rbm(rbm, torch.rand(10, 7), RBMTrainConfig(epochs=1))
    x = torch.rand(10, 8)
    x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="row 3: contains NaN"):      # checked once, the row named
        train_rbm(rbm, x, RBMTrainConfig(epochs=1))
    x[3, 2], x[7, 1] = 0.5, 1.5
    with pytest.raises(ValueError, match=r"row 7: .*\[0, 1\]"):
        train_rbm(rbm, x, RBMTrainConfig(epochs=1))
    # a streamed source is checked batch by batch
    with pytest.raises(ValueError, match=r"epoch 1 batch 2: .*\[0, 1\]"):
        train_rbm(rbm, lambda: iter([torch.rand(5, 8), x]), RBMTrainConfig(epochs=1))
    with pytest.raises(ValueError, match="visible"):
        RBM(3, 3, "poisson")


def test_divergence_restores_last_good_state():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(200, 8, generator=g) * 50
    rbm = RBM(8, 16, "gaussian")
    with pytest.raises(TrainingDiverged) as ei:
        train_rbm(rbm, data, RBMTrainConfig(epochs=50, lr=5.0, weight_decay=0.0), g)
    e = ei.value
    assert e.step >= 1 and "step" in str(e)
    for k, v in rbm.state_dict().items():
        assert torch.isfinite(v).all()
        assert torch.equal(v, e.state_dict[k])


def test_save_load_roundtrip_and_errors(tmp_path):
    rbm = tiny_rbm("gaussian").float()
    p = save(rbm, tmp_path / "m.pt", meta={"image_shape": [2, 4]})
    assert not (tmp_path / "m.pt.tmp").exists()
    r2 = load(p)
    assert isinstance(r2, RBM) and r2.visible == "gaussian"
    v = torch.randn(4, 8)
    assert torch.allclose(r2.free_energy(v), rbm.free_energy(v))
    with pytest.raises(ValueError, match="expected a DBN"):
        load(p, expect="DBN")
    blob = torch.load(p, weights_only=True)
    blob["config"]["n_hidden"] = 7
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="shape"):
        load(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(ValueError):
        load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.pt")


def test_kaldi_schedule_scales_lr_by_ramped_momentum():
    """rbm-train-cd1-frmshuff: lr (1 - m_t), m_t = 0.5 + n * 0.4 / 40 every 500k frames (capped),
    velocity momentum 0.9 from the start (--with-bug=true)."""
    cfg = RBMTrainConfig(lr=0.4, schedule="kaldi")
    assert cfg.step_settings(1, 0) == (0.5, 0.9, 0)
    f, m, n = cfg.step_settings(1, 1_000_000)
    assert n == 2 and abs(f - (1 - 0.52)) < 1e-12 and m == 0.9
    f, _, n = cfg.step_settings(3, 10 ** 9)
    assert n == 40 and abs(f - 0.1) < 1e-12
    hist = train_rbm(RBM(8, 6), _toy_data(), RBMTrainConfig(epochs=2, lr=0.4, schedule="kaldi"),
                     torch.Generator().manual_seed(0))
    assert [(h["lr"], h["momentum"]) for h in hist] == [(0.2, 0.9), (0.2, 0.9)] and hist[0]["frames"] == 400
    with pytest.raises(ValueError, match="schedule"):
        train_rbm(RBM(8, 6), _toy_data(), RBMTrainConfig(epochs=1, schedule="newbob"))


def test_variance_guard_rescales_an_exploding_gaussian_rbm():
    """Kaldi's anti-weight-explosion check: reconstruction std > 2x data std -> scale the
    parameters by the ratio, lr x 0.9, reset momentum, skip the update."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(400, 8, generator=g)
    rbm = RBM(8, 16, "gaussian", init_std=2.0, generator=torch.Generator().manual_seed(1))
    W0 = rbm.W.detach().clone()
    cfg = RBMTrainConfig(epochs=1, batch_size=400, lr=0.0, variance_guard=True, init_visible_bias=False)
    with torch.no_grad():
        ph = rbm.hidden_probs(data)
        recon = torch.bernoulli(ph, generator=torch.Generator().manual_seed(0)) @ rbm.W.t()
    assert 2 * data.std() < recon.std()                 # the guard's condition holds
    hist = train_rbm(rbm, data, cfg, torch.Generator().manual_seed(0))
    assert hist[0]["guard"] == 1
    ratio = (rbm.W / W0).flatten()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio)) and 0 < ratio[0] < 0.5
    # without the guard the same (lr 0) step leaves the weights alone
    rbm2 = RBM(8, 16, "gaussian", init_std=2.0, generator=torch.Generator().manual_seed(1))
    h2 = train_rbm(rbm2, data, RBMTrainConfig(epochs=1, batch_size=400, lr=0.0, init_visible_bias=False),
                   torch.Generator().manual_seed(0))
    assert h2[0]["guard"] == 0 and torch.equal(rbm2.W, W0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_bernoulli_is_torch_bernoulli_bit_for_bit(dtype):
    """The fast sampler must draw exactly what torch.bernoulli draws and leave the generator where
    it would, so switching to it changed no trained model (CPU)."""
    from asr.generative.rbm import sample_bernoulli
    p = torch.rand(37, 129, dtype=dtype, generator=torch.Generator().manual_seed(3))
    p[0, :5] = torch.tensor([0.0, 1.0, 0.5, 1e-8, 1 - 1e-8], dtype=dtype)
    for probs in (p, p.t()):                       # contiguous and transposed
        g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        ref, got = torch.bernoulli(probs, generator=g1), sample_bernoulli(probs, g2)
        assert got.dtype == dtype and got.shape == probs.shape
        assert torch.equal(ref, got)
        assert torch.equal(torch.rand(8, generator=g1), torch.rand(8, generator=g2))


def test_monitored_free_energy_equals_the_model_free_energy():
    from asr.generative.rbm import _free_energy_from_pre
    g = torch.Generator().manual_seed(2)
    for visible in ("bernoulli", "gaussian"):
        rbm = RBM(20, 30, visible=visible)
        rbm.W.data.normal_(0.0, 4.0, generator=g)  # pre-activations well beyond +-20 as well
        v = torch.rand(50, 20, generator=g)
        pre = torch.addmm(rbm.c, v, rbm.W)
        assert pre.abs().max() > 25
        torch.testing.assert_close(_free_energy_from_pre(rbm, v, pre), rbm.free_energy(v).mean(),
                                   rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_plain_cd1_draws_only_the_hidden_sample_per_step(visible):
    """Plain CD-1 uses the mean of p(v | h) for its negative statistics and carries no chain, so the
    visible sample is never drawn: the generator advances by the epoch's shuffle and one (B, H)
    uniform per minibatch, nothing else (a replay of exactly those draws ends in the same state)."""
    n, d, h, b = 250, 6, 5, 100
    data = torch.rand(n, d) if visible == "bernoulli" else torch.randn(n, d)
    rbm = RBM(d, h, visible=visible, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    train_rbm(rbm, data, RBMTrainConfig(epochs=2, batch_size=b), g)
    replay = torch.Generator().manual_seed(3)
    for _ in range(2):
        torch.randperm(n, generator=replay)
        for start in range(0, n, b):
            torch.rand((min(b, n - start), h), generator=replay)
    assert torch.equal(g.get_state(), replay.get_state())
    # PCD carries its chain: there the visible sample is drawn
    g2 = torch.Generator().manual_seed(3)
    train_rbm(RBM(d, h, visible=visible), data, RBMTrainConfig(epochs=2, batch_size=b, persistent=True), g2)
    assert not torch.equal(g2.get_state(), replay.get_state())


@pytest.fixture
def subnormals_kept():
    """Keep subnormal results on this thread for the test (an ``asr`` command run in-process by an
    earlier test turns flush-to-zero on; there is no getter, so the state is probed)."""
    flushing = (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0
    torch.set_flush_denormal(False)
    yield
    if flushing:
        torch.set_flush_denormal(True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probabilities_of_saturated_units_are_never_subnormal(dtype, subnormals_kept):
    """x86 cores compute with subnormal operands ~100x slower (a CD-1 step of 44 instead of 2.3 ms
    on random data), so no probability the RBM computes, nor a product of two, may be one: sigmoids
    are floored at 2^-62 (float32) / 2^-510 (float64) and are torch.sigmoid's exactly above it."""
    from asr.generative.rbm import _cd_step, stable_sigmoid
    tiny, floor = torch.finfo(dtype).tiny, (2.0 ** -62 if dtype == torch.float32 else 2.0 ** -510)
    lo = -120.0 if dtype == torch.float32 else -760.0

    def subnormal(t):
        return bool(((t != 0) & (t.abs() < tiny)).any())

    x = torch.linspace(lo, 30.0, 4001, dtype=dtype)
    ref, got = torch.sigmoid(x), stable_sigmoid(x.clone())
    assert subnormal(ref)                       # the case is real
    assert not subnormal(got) and got.min() >= floor * (1 - 1e-5)
    assert not subnormal(got[:, None] * got[None, :])        # nor any product of two
    keep = x > math.log(floor) + 1e-3
    assert torch.equal(got[keep], ref[keep])
    # an RBM whose hidden and visible units saturate far below the floor
    g = torch.Generator().manual_seed(5)
    rbm = RBM(40, 30, generator=g).to(dtype)
    with torch.no_grad():
        rbm.W.normal_(0.0, 8.0 if dtype == torch.float32 else 60.0, generator=g)
        rbm.c.fill_(lo / 2)
        rbm.b.fill_(lo / 2)
    v0 = (torch.rand(64, 40, generator=g, dtype=dtype) < 0.5).to(dtype)
    assert subnormal(torch.sigmoid(v0 @ rbm.W + rbm.c))
    st = _cd_step(rbm, v0, 1, g, None, False)
    assert not subnormal(rbm.hidden_probs(v0)) and not subnormal(st.recon)
    assert not subnormal(st.grads[0] * v0.shape[0])          # the weight statistics
    assert not subnormal(rbm.visible_mean(torch.ones(64, 30, dtype=dtype)))
