"""Mixed precision (bfloat16 products, float32 parameters) in RBM pretraining and CE training."""
from __future__ import annotations

import pytest
import torch

from asr.generative import RBM, RBMTrainConfig, exact_log_z, train_rbm
from asr.generative.rbm import _LowPrecisionProducts
from asr.jobs.device import PRECISIONS, choose_precision, native_bfloat16
from asr.nnet import CETrainConfig, HybridDNN, NetConfig, build_frame_data, pdf_log_priors, split_cv_speakers, train_ce
from asr.nnet.synthetic import synth_corpus

torch.set_num_threads(1)


def _rbm(visible: str, d: int = 40, h: int = 30, seed: int = 0) -> RBM:
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(d, h, visible)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(d, h, generator=g) * 0.3)
        rbm.b.copy_(torch.randn(d, generator=g) * 0.1)
        rbm.c.copy_(torch.randn(h, generator=g) * 0.1)
    return rbm


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_low_precision_products_are_the_float32_ones_to_bfloat16_rounding(visible):
    rbm = _rbm(visible)
    g = torch.Generator().manual_seed(1)
    v = torch.rand(64, 40, generator=g) if visible == "bernoulli" else torch.randn(64, 40, generator=g)
    low = _LowPrecisionProducts(rbm, torch.bfloat16)
    for got, ref in [(low.hidden_probs(v), rbm.hidden_probs(v)),
                     (low.visible_mean(rbm.hidden_probs(v)), rbm.visible_mean(rbm.hidden_probs(v)))]:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, atol=0.05, rtol=0.02)
        assert not torch.equal(got, ref)        # really computed in bfloat16
    # the weight statistics of a CD-1 step (negative phase: the mean-field reconstruction of a
    # hidden sample), as one product of the stacked batches: the GEMM's float32 accumulator takes
    # the difference of the positive and negative statistics, only the inputs and result are rounded
    ph0 = rbm.hidden_probs(v)
    vk = rbm.visible_mean(torch.bernoulli(ph0, generator=g))
    phk = rbm.hidden_probs(vk)
    ref = v.t() @ ph0 - vk.t() @ phk
    got = low.statistics(v, ph0, vk, phk, torch.empty_like(rbm.W))
    err = ((got - ref).norm() / ref.norm()).item()
    apart = (v.t() @ ph0).bfloat16().float() - (vk.t() @ phk).bfloat16().float()
    err_apart = ((apart - ref).norm() / ref.norm()).item()
    assert err < 0.02 and err < err_apart, (err, err_apart)


def test_bfloat16_cd_training_learns_as_float32_does_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    protos = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0, 1, 1], [1, 0, 1, 0, 1, 0, 1, 0]],
                          dtype=torch.float32)
    x = protos[torch.randint(0, 3, (300,), generator=g)]
    data = (x + torch.bernoulli(torch.full_like(x, 0.05), generator=g)) % 2
    lls, weights = {}, {}
    for dt in ("float32", "bfloat16", "bfloat16"):
        rbm = RBM(8, 6, "bernoulli", generator=torch.Generator().manual_seed(2))
        before = (-rbm.free_energy(data).mean() - exact_log_z(rbm)).item()
        train_rbm(rbm, data, RBMTrainConfig(epochs=30, batch_size=20, lr=0.1, matmul_dtype=dt),
                  torch.Generator().manual_seed(9))
        after = (-rbm.free_energy(data).mean() - exact_log_z(rbm)).item()
        assert after > before + 1.0, (dt, before, after)
        if dt in weights:
            assert torch.equal(weights[dt], rbm.W)       # same seed, same result
        weights[dt], lls[dt] = rbm.W.detach().clone(), after
        assert rbm.W.dtype == torch.float32
    assert not torch.equal(weights["float32"], weights["bfloat16"])
    assert abs(lls["bfloat16"] - lls["float32"]) < 0.5, lls
    with pytest.raises(ValueError, match="matmul_dtype"):
        train_rbm(RBM(8, 6), data, RBMTrainConfig(epochs=1, matmul_dtype="float16"))


def test_choose_precision():
    cpu = torch.device("cpu")
    assert choose_precision("float32", cpu) == "float32"
    assert choose_precision("bfloat16", cpu) == "bfloat16"
    assert choose_precision("auto", cpu) == ("bfloat16" if native_bfloat16(cpu) else "float32")
    assert choose_precision(None, cpu) == choose_precision("auto", cpu)
    assert set(PRECISIONS) == {"auto", "float32", "bfloat16"}
    with pytest.raises(ValueError, match="precision"):
        choose_precision("half", cpu)


def _ce_setup():
    feats, alis = synth_corpus(40, 6, 4, seed=0)
    tr, cv = split_cv_speakers({u: u.split("_")[0] for u in feats}, 0.2, seed=0)
    train = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=tr)
    cvd = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=cv)
    torch.manual_seed(0)
    model = HybridDNN(NetConfig(input_dim=4, num_pdfs=6, hidden=(32,), left=2, right=2))
    model.set_normalisation(*train.spliced_moments())
    model.log_priors.copy_(pdf_log_priors(train.targets, 6))
    return model, train, cvd


def test_bfloat16_ce_training_learns_keeps_float32_parameters_and_records_it(tmp_path):
    res, models = {}, {}
    for dt in ("float32", "bfloat16"):
        m, train, cv = _ce_setup()
        cfg = CETrainConfig(lr=0.5, batch_size=64, max_epochs=3, seed=5, precision=dt)
        res[dt] = train_ce(m, train, cv, cfg, tmp_path / dt, log=lambda s: None)
        models[dt] = m
        assert all(p.dtype == torch.float32 for p in m.parameters())
    best = {dt: max(h["cv_frame_acc"] for h in r.history if h["accepted"]) for dt, r in res.items()}
    assert best["bfloat16"] > 0.6 and abs(best["bfloat16"] - best["float32"]) < 0.05, best
    assert not torch.equal(next(models["float32"].parameters()), next(models["bfloat16"].parameters()))
    ck = torch.load(tmp_path / "bfloat16" / "final.pt", weights_only=False)
    assert ck["extra"]["config"]["precision"] == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        m, train, cv = _ce_setup()
        train_ce(m, train, cv, CETrainConfig(precision="float16"), tmp_path / "bad", log=lambda s: None)
