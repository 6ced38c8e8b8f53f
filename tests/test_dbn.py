"""DBN: greedy stacking, inference, generation, conversion to nn.Sequential, checkpoints."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

from asr.generative import DBN, RBM, RBMTrainConfig, load, pretrain_dbn, save


def _data(n=300, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = torch.bernoulli(torch.full((3, d), 0.5), generator=g)
    x = protos[torch.randint(0, 3, (n,), generator=g)]
    return (x + torch.bernoulli(torch.full_like(x, 0.05), generator=g)) % 2


def test_pretrain_stacks_on_hidden_probabilities():
    x = _data()
    dbn = DBN([12, 10, 6], first_visible="bernoulli")
    seen = []
    hist = pretrain_dbn(dbn, x, RBMTrainConfig(epochs=5, batch_size=30), torch.Generator().manual_seed(0),
                        callback=lambda layer, epoch, m, rbm: seen.append((layer, epoch)))
    assert len(hist) == 2 and len(hist[0]) == 5
    assert seen[0] == (1, 1) and seen[-1] == (2, 5)
    assert hist[0][-1]["recon_error"] < hist[0][0]["recon_error"]
    # layer 2 equals an RBM trained separately on layer-1 probabilities with the same RNG stream
    dbn2 = DBN([12, 10, 6], first_visible="bernoulli")
    g = torch.Generator().manual_seed(0)
    from asr.generative import train_rbm
    train_rbm(dbn2.rbms[0], x, RBMTrainConfig(epochs=5, batch_size=30), g)
    train_rbm(dbn2.rbms[1], dbn2.rbms[0].hidden_probs(x).detach(), RBMTrainConfig(epochs=5, batch_size=30), g)
    assert torch.allclose(dbn2.rbms[1].W, dbn.rbms[1].W, atol=1e-6)


def test_streaming_callable_matches_shapes_and_trains():
    x = _data()
    dbn = DBN([12, 8, 4], first_visible="bernoulli")
    hist = pretrain_dbn(dbn, lambda: iter(x.split(50)),
                        [RBMTrainConfig(epochs=3), RBMTrainConfig(epochs=2, k=2)])
    assert [len(h) for h in hist] == [3, 2] and hist[1][0]["batches"] == 6


def test_to_sequential_matches_bottom_up_pass():
    dbn = DBN([12, 10, 6], first_visible="gaussian", init_std=0.3)
    x = torch.randn(7, 12)
    net = dbn.to_sequential()
    assert torch.allclose(net(x), dbn.up(x), atol=1e-6)
    assert torch.allclose(dbn.features(x, layer=1), dbn.rbms[0].hidden_probs(x).detach())
    net2 = dbn.to_sequential(n_out=5, softmax=True)
    out = net2(x)
    assert out.shape == (7, 5) and torch.allclose(out.exp().sum(1), torch.ones(7), atol=1e-5)
    assert isinstance(net2[-1], torch.nn.LogSoftmax)
    # parameters are copies: training the net does not change the DBN
    with torch.no_grad():
        net2[0].weight.add_(1.0)
    assert not torch.allclose(net2[0].weight, dbn.rbms[0].W.t())
    logits = dbn.to_sequential(n_out=3)
    assert isinstance(logits[-1], torch.nn.Linear)


def test_generate_and_dims():
    dbn = DBN([12, 10, 6], first_visible="bernoulli")
    g = torch.Generator().manual_seed(0)
    s = dbn.generate(9, gibbs_steps=20, generator=g)
    assert s.shape == (9, 12) and s.min() >= 0 and s.max() <= 1
    s2 = dbn.generate(4, gibbs_steps=5, generator=g, init=_data(4))
    assert s2.shape == (4, 12)
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        pretrain_dbn(dbn, torch.rand(10, 11))
    with pytest.raises(ValueError, match="configs"):
        pretrain_dbn(dbn, torch.rand(10, 12), [RBMTrainConfig()])
    with pytest.raises(ValueError):
        DBN([12])


def test_dbn_checkpoint_roundtrip(tmp_path):
    dbn = DBN([12, 10, 6], first_visible="gaussian", init_std=0.2)
    save(dbn, tmp_path / "dbn.pt")
    d2 = load(tmp_path / "dbn.pt", expect=DBN)
    x = torch.randn(3, 12)
    assert torch.equal(d2.up(x), dbn.up(x)) and d2.rbms[0].visible == "gaussian"
    with pytest.raises(ValueError, match="holds a DBN"):
        load(tmp_path / "dbn.pt", expect=RBM)


def test_from_rbms_checks_dimensions():
    a, b = RBM(12, 10, "gaussian", init_std=0.2), RBM(10, 4, init_std=0.2)
    dbn = DBN.from_rbms([a, b])
    x = torch.randn(5, 12)
    assert dbn.sizes == [12, 10, 4] and torch.allclose(dbn.up(x), b.hidden_probs(a.hidden_probs(x)))
    with pytest.raises(ValueError, match="cannot stack RBM 2"):
        DBN.from_rbms([a, RBM(9, 4)])
    with pytest.raises(ValueError, match="Bernoulli"):
        DBN.from_rbms([a, RBM(10, 4, "gaussian")])
