"""Hybrid DNN: splicing, frame data, priors, CE training (chance, determinism, resume, NaN)."""
from __future__ import annotations

import math

import pytest
import torch

from asr.nnet import (CETrainConfig, HybridDNN, NetConfig, build_frame_data, frame_accuracy, load_model,
                      pdf_log_priors, splice, splice_index, split_cv_speakers, train_ce)

from asr.nnet.synthetic import synth_corpus

torch.set_num_threads(1)


def brute_splice(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    t = x.shape[0]
    rows = []
    for i in range(t):
        rows.append(torch.cat([x[min(max(i + k, 0), t - 1)] for k in range(-left, right + 1)]))
    return torch.stack(rows)


def test_splice_edges_match_bruteforce_and_stay_in_utterance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 2, generator=g), torch.randn(7, 2, generator=g)
    assert torch.equal(splice(a, 5, 5), brute_splice(a, 5, 5))
    assert torch.equal(splice(b, 2, 1), brute_splice(b, 2, 1))
    idx = splice_index(torch.tensor([3, 7]), 5, 5)
    both = torch.cat([a, b])
    assert torch.equal(both[idx].reshape(10, -1), torch.cat([brute_splice(a, 5, 5), brute_splice(b, 5, 5)]))
    assert int(idx[:3].max()) == 2 and int(idx[3:].min()) == 3


def test_spliced_moments_exact():
    feats, alis = synth_corpus(6, 4, 3, seed=1)
    fd = build_frame_data(feats, alis, 2, 2)
    full = fd.spliced(torch.arange(fd.num_frames)).double()
    mean, var = fd.spliced_moments()
    torch.testing.assert_close(mean.double(), full.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(var.double(), full.var(0, unbiased=False), atol=1e-4, rtol=1e-4)


def test_length_mismatch_skipped_and_bad_pdf_rejected():
    feats, alis = synth_corpus(4, 4, 3, seed=2)
    us = sorted(feats)
    alis[us[0]] = alis[us[0]][:-1]                      # 1 frame short: kept, trimmed
    alis[us[1]] = torch.cat([alis[us[1]], torch.zeros(5, dtype=torch.long)])  # 5 frames long: skipped
    del alis[us[2]]
    fd = build_frame_data(feats, alis, 1, 1, num_pdfs=4)
    assert set(fd.skipped) == {us[1], us[2]} and "length mismatch" in fd.skipped[us[1]]
    assert fd.utts == [us[0], us[3]] and int(fd.lengths[0]) == feats[us[0]].shape[0] - 1
    with pytest.raises(ValueError, match=us[0]):
        build_frame_data(feats, alis, 1, 1, num_pdfs=2)


def test_cv_split_by_speaker_deterministic():
    u2s = {f"s{i % 10}_{i}": f"s{i % 10}" for i in range(50)}
    tr, cv = split_cv_speakers(u2s, 0.1, seed=3)
    assert split_cv_speakers(u2s, 0.1, seed=3) == (tr, cv)
    assert len({u2s[u] for u in cv}) == 1 and not {u2s[u] for u in cv} & {u2s[u] for u in tr}
    assert sorted(tr + cv) == sorted(u2s)


def test_priors_are_kaldi_relative_frequencies_and_unseen_pdfs_are_disabled():
    from asr.nnet.frames import DISABLED_LOG_PRIOR

    targets = torch.tensor([0, 0, 0, 1, 2, 2])             # pdf 3 never aligned
    lp = pdf_log_priors(targets, 4)
    p = torch.tensor([3, 1, 2, 0], dtype=torch.float64) / 6
    torch.testing.assert_close(lp[:3].double(), p[:3].log(), atol=1e-6, rtol=0)
    assert lp[3] == DISABLED_LOG_PRIOR                      # Kaldi PdfPrior: sqrt(FLT_MAX)
    model = HybridDNN(NetConfig(input_dim=2, num_pdfs=4, hidden=(5,), left=1, right=1))
    model.log_priors.copy_(lp)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    ll = model.loglikes(x)
    post = torch.softmax(model(splice(x, 1, 1)), -1)
    # seen pdfs: p(x|s) ∝ p(s|x)/p(s), so exp(ll) * p(s) renormalised over them is the posterior
    back = ll[:, :3].exp() * p[:3].float()
    torch.testing.assert_close(back / back.sum(-1, keepdim=True), post[:, :3] / post[:, :3].sum(-1, keepdim=True),
                               atol=1e-5, rtol=1e-4)
    # the unseen pdf is switched off, not boosted (a floored prior of 1e-8 would add 18 nats)
    assert torch.isfinite(ll).all() and (ll[:, 3] < -1e18).all()
    assert (ll[:, 3] < ll[:, :3].min(1).values).all()


def test_newbob_follows_kaldi_train_scheduler():
    """Decisions of steps/nnet/train_scheduler.sh (defaults) on given CV losses, worked by hand."""
    from asr.nnet.train import newbob_update

    def run(losses, **kw):
        cfg = CETrainConfig(lr=1.0, **kw)
        st = {"best_loss": losses[0], "lr": 1.0, "halving": False, "done": False, "stop_reason": "", "epoch": 0}
        out = []
        for e, loss in enumerate(losses[1:], 1):
            lr = st["lr"]
            acc, _ = newbob_update(st, e, loss, cfg)
            out.append((acc, lr))
            if st["done"]:
                break
        return out, st

    # 1.395 improves by 0.36 % < 1 %: halving starts; the worse 1.40 is rejected -> stop
    out, st = run([2.0, 1.5, 1.4, 1.395, 1.40, 1.0])
    assert out == [(True, 1.0), (True, 1.0), (True, 1.0), (False, 0.5)]
    assert st["stop_reason"] == "converged" and st["best_loss"] == 1.395
    # a rejected epoch starts the halving; while halving, a 0.007 % gain ends training
    out, st = run([2.0, 1.5, 1.6, 1.45, 1.4499, 1.0])
    assert out == [(True, 1.0), (False, 1.0), (True, 0.5), (True, 0.25)] and st["stop_reason"] == "converged"
    # still improving by 10 % per epoch at the cap
    out, st = run([2.0, 1.8, 1.62, 1.458], max_epochs=3)
    assert [a for a, _ in out] == [True] * 3 and st["stop_reason"] == "max_epochs" and not st["halving"]
    # min_epochs: a worse epoch is accepted; keep_lr_epochs: lr fixed and no stop
    out, st = run([2.0, 1.5, 1.6, 1.59], min_epochs=2)
    assert out[:2] == [(True, 1.0), (True, 1.0)] and out[2][1] == 0.5
    out, st = run([2.0, 2.1, 2.2, 2.3], keep_lr_epochs=3, max_epochs=3)
    assert out == [(True, 1.0)] * 3 and st["stop_reason"] == "max_epochs"


def test_kaldi_proto_init_statistics():
    from asr.nnet.model import init_kaldi_proto

    m = HybridDNN(NetConfig(input_dim=40, num_pdfs=300, hidden=(512, 512), left=5, right=5))
    init_kaldi_proto(m, torch.Generator().manual_seed(0))
    l0, l1, l2 = [x for x in m.body if isinstance(x, torch.nn.Linear)]
    glorot = lambda a, b: 0.1 * 35 * math.sqrt(2 / (a + b))  # noqa: E731
    assert abs(l0.weight.std().item() / (glorot(440, 512) * math.sqrt(1 / 12)) - 1) < 0.02
    assert abs(l1.weight.std().item() / glorot(512, 512) - 1) < 0.02
    assert abs(l2.weight.std().item() / glorot(512, 300) - 1) < 0.02
    assert -4 <= l1.bias.min() and l1.bias.max() <= 0 and abs(l1.bias.mean().item() + 2) < 0.3
    assert torch.equal(l2.bias, torch.zeros(300))


def _setup(seed=0, hidden=(32,), init_seed=None):
    feats, alis = synth_corpus(40, 6, 4, seed=seed)
    u2s = {u: u.split("_")[0] for u in feats}
    tr, cv = split_cv_speakers(u2s, 0.2, seed=seed)
    train = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=tr)
    cvd = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=cv)
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = HybridDNN(NetConfig(input_dim=4, num_pdfs=6, hidden=hidden, left=2, right=2))
    model.set_normalisation(*train.spliced_moments())
    model.log_priors.copy_(pdf_log_priors(train.targets, 6))
    return model, train, cvd


def test_train_beats_chance_and_is_deterministic(tmp_path):
    cfg = CETrainConfig(lr=0.5, batch_size=64, max_epochs=3, seed=5)
    m1, train, cv = _setup()
    res = train_ce(m1, train, cv, cfg, tmp_path / "a", log=lambda s: None)
    acc = res.history[-1]["cv_frame_acc"] if res.history[-1]["accepted"] else max(
        h["cv_frame_acc"] for h in res.history)
    assert acc > 0.6 > 1 / 6 and res.history[0]["cv_frame_acc"] < 0.5
    m2, train, cv = _setup()
    train_ce(m2, train, cv, cfg, tmp_path / "b", log=lambda s: None)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    loaded = load_model(tmp_path / "a")
    x = torch.randn(9, 4)
    torch.testing.assert_close(loaded.loglikes(x), m1.loglikes(x))
    assert (tmp_path / "a" / "log" / "train_curve.json").is_file()


def test_resume_after_interrupted_epoch_equals_uninterrupted(tmp_path):
    cfg = CETrainConfig(lr=0.3, batch_size=64, max_epochs=3, seed=9, start_halving_impr=-1.0)
    m1, train, cv = _setup(seed=4)
    train_ce(m1, train, cv, cfg, tmp_path / "full", log=lambda s: None)
    steps_per_epoch = math.ceil(train.num_frames / 64)
    m2, train, cv = _setup(seed=4)
    train_ce(m2, train, cv, cfg, tmp_path / "killed", log=lambda s: None,
             stop_after_steps=steps_per_epoch + 3)       # killed 3 steps into epoch 2
    assert not (tmp_path / "killed" / "final.pt").exists()
    m3, train, cv = _setup(seed=4, init_seed=11)                    # fresh process: different init, resumes
    msgs = []
    train_ce(m3, train, cv, cfg, tmp_path / "killed", log=msgs.append)
    assert any("resuming" in m for m in msgs)
    for (k, a), b in zip(m1.state_dict().items(), m3.state_dict().values()):
        assert torch.equal(a, b), k


def test_nan_fails_names_the_epoch_and_keeps_last_good_model(tmp_path):
    import json

    from asr.nnet.train import CETrainingError

    cfg = CETrainConfig(lr=0.5, batch_size=64, max_epochs=3, seed=5)
    m, train, cv = _setup()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    train.feats[5, 0] = float("nan")
    with pytest.raises(CETrainingError, match="non-finite loss at epoch 1") as ei:
        train_ce(m, train, cv, cfg, tmp_path, log=lambda s: None)
    assert ei.value.epoch == 1
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    kept = load_model(tmp_path / "final.pt")
    for k, v in kept.state_dict().items():
        assert torch.equal(v, before[k]), k
    curve = json.loads((tmp_path / "log" / "train_curve.json").read_text())
    assert curve["stop_reason"] == "diverged" and [e["epoch"] for e in curve["epochs"]] == [0]


def test_newbob_run_converges_and_records_the_curve(tmp_path):
    import json

    m, train, cv = _setup(seed=1)
    res = train_ce(m, train, cv, CETrainConfig(lr=0.5, batch_size=64, max_epochs=20, seed=1), tmp_path,
                   log=lambda s: None)
    curve = json.loads((tmp_path / "log" / "train_curve.json").read_text())
    assert res.stop_reason == curve["stop_reason"] == "converged" and curve["max_epochs"] == 20
    assert curve["stopped_at_cap_while_improving"] is False and curve["halving_from_epoch"] is not None
    eps = curve["epochs"]
    assert len(eps) - 1 == curve["epochs_run"] < 20
    for e in eps[1:]:
        assert {"epoch", "lr", "train_loss", "train_frame_acc", "cv_frame_acc", "cv_loss", "accepted",
                "rel_impr", "seconds", "frames_per_s"} <= set(e)
        assert 0 < e["train_frame_acc"] <= 1
    lrs = [e["lr"] for e in eps[1:]]
    assert lrs[0] == 0.5 and lrs[-1] < 0.5 and all(b <= a for a, b in zip(lrs, lrs[1:]))
    best = min((e for e in eps if e["accepted"]), key=lambda e: e["cv_loss"])
    assert curve["best_epoch"] == best["epoch"]
    _, loss = frame_accuracy(load_model(tmp_path), cv, torch.device("cpu"))
    assert abs(loss - best["cv_loss"]) < 1e-5           # final.pt is the best accepted model


def test_loglike_job_is_picklable_and_matches_model(tmp_path):
    import functools
    import pickle

    import numpy as np

    from asr.features.compute import cmvn_stats
    from asr.nnet.io import _kaldi_io, loglike_job
    from asr.nnet.model import save_model

    kio = _kaldi_io()
    feats, _ = synth_corpus(3, 4, 3, seed=0)
    (tmp_path / "m").mkdir()
    scp, cm, u2s = [], [], []
    for u in sorted(feats):
        p = tmp_path / "m" / f"{u}.mat"
        with open(p, "wb") as f:
            kio.write_mat(f, feats[u].numpy().astype(np.float32))
        scp.append(f"{u} {p}\n")
        u2s.append(f"{u} {u}\n")
        q = tmp_path / "m" / f"c_{u}.mat"
        with open(q, "wb") as f:
            kio.write_mat(f, cmvn_stats(feats[u]).numpy())
        cm.append(f"{u} {q}\n")
    for name, lines in (("feats.scp", scp), ("cmvn.scp", cm), ("utt2spk", u2s)):
        (tmp_path / name).write_text("".join(lines))
    model = HybridDNN(NetConfig(input_dim=3, num_pdfs=4, hidden=(8,), left=1, right=1))
    model.log_priors.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    save_model(model, tmp_path / "final.pt")
    job = pickle.loads(pickle.dumps(functools.partial(loglike_job, str(tmp_path / "final.pt"), str(tmp_path))))
    out = dict(job(sorted(feats)))
    for u, x in feats.items():
        cmn = x - x.mean(0)                       # per-speaker (here per-utterance) mean normalisation
        torch.testing.assert_close(out[u], model.loglikes(cmn), atol=1e-4, rtol=1e-4)


def test_dbn_pretraining_initialises_hidden_layers():
    from asr.generative import DBN
    from asr.nnet.pretrain import PretrainConfig, dbn_linears, pretrain_dbn_on_frames

    feats, alis = synth_corpus(10, 4, 3, seed=0)
    fd = build_frame_data(feats, None, 1, 1)
    mean, var = fd.spliced_moments()
    cfg = PretrainConfig(hidden=(8, 6), epochs=2, batch_size=32, seed=1)
    dbn = pretrain_dbn_on_frames(fd, mean, var, cfg)
    assert isinstance(dbn, DBN) and dbn.sizes == [9, 8, 6] and dbn.rbms[0].visible == "gaussian"
    again = pretrain_dbn_on_frames(fd, mean, var, cfg)            # seeded: reproducible
    assert torch.equal(dbn.rbms[1].W, again.rbms[1].W)
    model = HybridDNN(NetConfig(input_dim=3, num_pdfs=4, hidden=(8, 6), left=1, right=1))
    model.init_from_linears(dbn_linears(dbn))
    torch.testing.assert_close(model.body[0].weight, dbn.rbms[0].W.t())
    torch.testing.assert_close(model.body[2].bias, dbn.rbms[1].c)
    with pytest.raises(ValueError, match="layers"):
        HybridDNN(NetConfig(input_dim=3, num_pdfs=4, hidden=(8,), left=1, right=1)).init_from_linears(dbn_linears(dbn))


def test_resume_refuses_checkpoints_of_another_config(tmp_path):
    m, train, cv = _setup()
    train_ce(m, train, cv, CETrainConfig(max_epochs=1, batch_size=64), tmp_path, log=lambda s: None)
    with pytest.raises(ValueError, match="another training config"):
        train_ce(m, train, cv, CETrainConfig(max_epochs=2, batch_size=32), tmp_path, log=lambda s: None)


def test_dbn_seed_reaches_initial_weights_and_upper_layers_reuse_lower_outputs(monkeypatch):
    from asr.generative import DBN
    from asr.nnet.pretrain import PretrainConfig, pretrain_dbn_on_frames

    feats, _ = synth_corpus(10, 4, 3, seed=0)
    fd = build_frame_data(feats, None, 1, 1)
    mean, var = fd.spliced_moments()

    def init(seed):   # lr 0: the weights stay at their initialisation
        cfg = PretrainConfig(hidden=(8, 6), batch_size=32, lr_gaussian=0.0, lr_bernoulli=0.0,
                             variance_guard=False, seed=seed)
        return pretrain_dbn_on_frames(fd, mean, var, cfg)

    a, b, a2 = init(1), init(2), init(1)
    assert not torch.equal(a.rbms[0].W, b.rbms[0].W) and not torch.equal(a.rbms[1].W, b.rbms[1].W)
    assert torch.equal(a.rbms[0].W, a2.rbms[0].W) and torch.equal(a.rbms[1].W, a2.rbms[1].W)
    assert abs(a.rbms[1].W.std().item() - 0.1) < 0.03           # Kaldi --param-stddev 0.1
    # the second RBM trains on the first one's outputs computed once, not per minibatch
    calls = []
    orig = DBN.up
    monkeypatch.setattr(DBN, "up", lambda self, v, layers=None: calls.append(len(v)) or orig(self, v, layers))
    cfg = PretrainConfig(hidden=(8, 6), epochs=2, batch_size=16, seed=1)
    pretrain_dbn_on_frames(fd, mean, var, cfg)
    assert calls == []


@pytest.mark.parametrize("cache_bytes", [2 ** 31, 1])      # inputs in memory / streamed
def test_dbn_pretraining_resumes_after_the_last_finished_rbm(tmp_path, cache_bytes):
    from asr.nnet.pretrain import PretrainConfig, pretrain_dbn_on_frames

    feats, _ = synth_corpus(10, 4, 3, seed=0)
    fd = build_frame_data(feats, None, 1, 1)
    mean, var = fd.spliced_moments()
    cfg = PretrainConfig(hidden=(8, 6, 5), epochs=2, batch_size=16, seed=3, cache_bytes=cache_bytes)
    full = pretrain_dbn_on_frames(fd, mean, var, cfg, ckpt_dir=tmp_path / "a", log=lambda s: None)

    class Killed(Exception):
        pass

    def kill(layer, epoch, m, rbm):
        if layer == 3:
            raise Killed

    with pytest.raises(Killed):
        pretrain_dbn_on_frames(fd, mean, var, cfg, callback=kill, ckpt_dir=tmp_path / "b", log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["rbm01.pt", "rbm02.pt"]
    msgs = []
    resumed = pretrain_dbn_on_frames(fd, mean, var, cfg, ckpt_dir=tmp_path / "b", log=msgs.append)
    assert any("resuming after RBM 2" in m for m in msgs)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another pretraining run"):
        pretrain_dbn_on_frames(fd, mean, var, PretrainConfig(hidden=(8, 6, 5), seed=4, cache_bytes=cache_bytes),
                               ckpt_dir=tmp_path / "b")


def test_write_matrices_leaves_nothing_when_the_source_fails(tmp_path):
    from asr.nnet.io import write_matrices

    def items():
        yield "u1", torch.zeros(2, 3)
        raise ValueError("model file broken")

    with pytest.raises(ValueError, match="broken"):
        write_matrices(items(), tmp_path / "out.ark")
    assert list(tmp_path.iterdir()) == []


def test_dropout_acts_only_in_training_is_seeded_and_resumes(tmp_path):
    """``CETrainConfig.dropout``: the masks change the training pass (a different model than
    without), evaluation is deterministic (no mask, hooks removed after training), the same seed
    gives the same model, and a run killed mid-epoch resumes to the uninterrupted result."""
    cfg = CETrainConfig(lr=0.3, batch_size=64, max_epochs=3, seed=9, start_halving_impr=-1.0, dropout=0.3)
    m0, train, cv = _setup(seed=4)
    train_ce(m0, train, cv, CETrainConfig(**{**cfg.__dict__, "dropout": 0.0}), tmp_path / "plain", log=lambda s: None)
    m1, train, cv = _setup(seed=4)
    train_ce(m1, train, cv, cfg, tmp_path / "full", log=lambda s: None)
    w0, w1 = m0.body[0].weight, m1.body[0].weight
    assert not torch.allclose(w0, w1)
    assert not m1.body[1]._forward_hooks                   # hooks gone: the returned model is the plain MLP
    x = torch.randn(9, train.spliced(torch.arange(1)).shape[1])
    m1.train()
    torch.testing.assert_close(m1(x), m1(x))                 # no mask outside train_ce
    m2, train, cv = _setup(seed=4)
    train_ce(m2, train, cv, cfg, tmp_path / "killed", log=lambda s: None,
             stop_after_steps=math.ceil(train.num_frames / 64) + 3)
    m3, train, cv = _setup(seed=4, init_seed=11)
    train_ce(m3, train, cv, cfg, tmp_path / "killed", log=lambda s: None)
    for (k, a), b in zip(m1.state_dict().items(), m3.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="dropout"):
        train_ce(_setup()[0], train, cv, CETrainConfig(dropout=1.0), tmp_path / "bad", log=lambda s: None)
