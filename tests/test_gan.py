"""GAN / cGAN / DCGAN modules, losses, training loop and latent tools."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asr.generative import (GAN, GANTrainConfig, TrainingDiverged, discriminator_loss,
                            generator_loss, group_arithmetic, lerp, load, save, slerp, train_gan)

torch.set_num_threads(1)


@pytest.mark.parametrize("arch,shape", [("mlp", (16, 16)), ("dcgan", (16, 16)),
                                        ("dcgan", (40, 16)), ("dcgan", (32, 32))])
@pytest.mark.parametrize("n_classes", [0, 10])
def test_shapes_and_ranges(arch, shape, n_classes):
    gan = GAN(shape, arch, z_dim=8, n_classes=n_classes, hidden=32, channels=8)
    labels = torch.arange(6) % 10 if n_classes else None
    x = gan.sample(6, labels, torch.Generator().manual_seed(0))
    assert x.shape == (6, *shape) and x.min() >= 0 and x.max() <= 1
    assert gan.discriminate(x, labels).shape == (6,)


def test_dcgan_architecture_follows_radford():
    gan = GAN((16, 16), "dcgan", channels=8)
    kinds = [type(m) for m in gan.modules()]
    assert nn.Linear not in kinds                       # no fully connected hidden layers
    g_layers = list(gan.G.net)
    d_layers = list(gan.D.net)
    assert isinstance(g_layers[-1], nn.Tanh)
    assert any(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in g_layers)
    assert any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in d_layers)
    assert any(isinstance(m, nn.BatchNorm2d) for m in g_layers)
    assert any(isinstance(m, nn.BatchNorm2d) for m in d_layers)
    assert not isinstance(d_layers[1], nn.BatchNorm2d)  # none on D's input layer
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert any(isinstance(m, nn.ReLU) for m in g_layers)
    w = torch.cat([m.weight.flatten() for m in gan.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.004           # N(0, 0.02) init
    with pytest.raises(ValueError, match="divisible"):
        GAN((18, 16), "dcgan")


def test_losses_match_closed_forms():
    lr = torch.tensor([2.0, -1.0, 0.3])
    lf = torch.tensor([-0.5, 1.5, 0.0], requires_grad=True)
    d_real, d_fake = torch.sigmoid(lr), torch.sigmoid(lf)
    ref = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    assert torch.allclose(discriminator_loss(lr, lf), ref, atol=1e-6)
    ns = generator_loss(lf, "nonsaturating")
    mm = generator_loss(lf, "minimax")
    assert torch.allclose(ns, -torch.log(d_fake).mean(), atol=1e-6)
    assert torch.allclose(mm, torch.log(1 - d_fake).mean(), atol=1e-6)
    # the non-saturating loss has the stronger gradient where D rejects the fakes (D(G(z)) small)
    g_ns, = torch.autograd.grad(ns, lf)
    g_mm, = torch.autograd.grad(mm, lf)
    assert g_ns[0].abs() > g_mm[0].abs()
    with pytest.raises(ValueError):
        generator_loss(lf, "wasserstein")


def _toy_images(n=256, seed=0):
    """Two 4x4 prototypes (left bar / right bar), class = prototype."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.zeros(n, 4, 4)
    x[y == 0, :, :2] = 1.0
    x[y == 1, :, 2:] = 1.0
    return (x * 0.9 + 0.05 * torch.rand(n, 4, 4, generator=g)), y


def test_cgan_learns_the_conditional_and_is_deterministic():
    x, y = _toy_images()
    outs = []
    for _ in range(2):
        gan = GAN((4, 4), "mlp", z_dim=4, n_classes=2, hidden=32)
        hist = train_gan(gan, x, y, GANTrainConfig(epochs=40, batch_size=32, lr_g=2e-3, lr_d=2e-3),
                         torch.Generator().manual_seed(0))
        outs.append(gan.sample(200, torch.arange(200) % 2, torch.Generator().manual_seed(1)))
    assert torch.equal(outs[0], outs[1])
    s = outs[0]
    left, right = s[:, :, :2].mean((1, 2)), s[:, :, 2:].mean((1, 2))
    pred = (right > left).long()
    assert (pred == torch.arange(200) % 2).double().mean() > 0.9
    assert len(hist) == 40 and {"d_loss", "g_loss", "d_real", "d_fake"} <= set(hist[0])


def test_k_steps_and_minimax():
    x, _ = _toy_images(64)
    gan = GAN((4, 4), "mlp", z_dim=4, hidden=16)
    hist = train_gan(gan, x, None, GANTrainConfig(epochs=2, batch_size=16, k=2, loss="minimax"))
    assert all(math.isfinite(h["g_loss"]) for h in hist)
    # the two generator objectives against their formulas on logits with known D = sigmoid(logit)
    from asr.generative.gan import discriminator_loss, generator_loss

    logits = torch.tensor([-3.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    d = torch.sigmoid(logits)
    assert generator_loss(logits, "minimax").item() == pytest.approx(torch.log1p(-d).mean().item(), rel=1e-12)
    assert generator_loss(logits, "nonsaturating").item() == pytest.approx(-torch.log(d).mean().item(), rel=1e-12)
    real = torch.tensor([1.5, -1.0], dtype=torch.float64)
    want = -torch.log(torch.sigmoid(real)).mean() - torch.log1p(-d).mean()
    assert discriminator_loss(real, logits).item() == pytest.approx(want.item(), rel=1e-12)
    smooth = -(0.9 * torch.log(torch.sigmoid(real)) + 0.1 * torch.log1p(-torch.sigmoid(real))).mean()
    assert discriminator_loss(real, logits, 0.9).item() == pytest.approx((smooth - torch.log1p(-d).mean()).item(),
                                                                       rel=1e-12)
    # minimax: the generator minimises log(1 - D(G(z))); at equal D its value differs from the
    # non-saturating one, so the two settings cannot be the same code path
    assert generator_loss(logits, "minimax").item() != pytest.approx(generator_loss(logits, "nonsaturating").item())
    with pytest.raises(ValueError, match="loss must be one of"):
        generator_loss(logits, "wasserstein")


def test_bad_input_and_divergence():
    x, y = _toy_images(64)
    gan = GAN((4, 4), "mlp", z_dim=4, n_classes=2, hidden=16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_gan(gan, x * 3, y)
    with pytest.raises(ValueError, match="labels"):
        train_gan(gan, x, None)
    with pytest.raises(ValueError, match="labels must be in"):
        gan.sample(3, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="shape"):
        train_gan(gan, x[:, :3], y)
    with pytest.raises(TrainingDiverged) as ei:
        train_gan(gan, x, y, GANTrainConfig(epochs=3, batch_size=16, lr_d=float("inf"),
                                            lr_g=float("inf")))
    assert ei.value.step == 1
    assert all(torch.isfinite(p).all() for p in gan.parameters())


def test_gan_checkpoint_roundtrip(tmp_path):
    gan = GAN((40, 16), "dcgan", z_dim=6, channels=8, generator=torch.Generator().manual_seed(3))
    save(gan, tmp_path / "g.pt", meta={"image_shape": [40, 16]})
    g2 = load(tmp_path / "g.pt", expect=GAN)
    a = gan.sample(4, None, torch.Generator().manual_seed(0))
    b = g2.sample(4, None, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_lerp_slerp_and_group_arithmetic():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    L = lerp(a, b, 5)
    assert torch.allclose(L[0], a) and torch.allclose(L[-1], b) and torch.allclose(L[2], (a + b) / 2)
    S = slerp(a, b, 7)
    assert torch.allclose(S[0], a, atol=1e-5) and torch.allclose(S[-1], b, atol=1e-5)
    u, v = a / a.norm(), b / b.norm()
    Su = slerp(u, v, 9)
    assert torch.allclose(Su.norm(dim=1), torch.ones(9), atol=1e-5)   # stays on the sphere
    ang = torch.arccos((Su[:-1] * Su[1:]).sum(1).clamp(-1, 1))
    assert torch.allclose(ang, ang[0].expand_as(ang), atol=1e-4)      # constant angular speed
    assert torch.allclose(slerp(a, 2 * a, 3)[1], 1.5 * a, atol=1e-5)  # parallel: lerp fallback
    p, m, c = torch.ones(3, 2, 2), torch.zeros(4, 2, 2), torch.full((2, 2, 2), 0.5)
    assert torch.allclose(group_arithmetic(p, m, c), torch.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="empty"):
        group_arithmetic(p, m[:0], c)
