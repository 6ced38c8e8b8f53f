"""Generative adversarial nets: MLP GAN, conditional GAN and DCGAN in one module.

* GAN: Goodfellow et al., "Generative adversarial nets", NIPS 2014 (Algorithm 1: k
  discriminator steps per generator step; minimax loss log(1 - D(G(z))) or the
  non-saturating -log D(G(z)) for the generator).
* Conditional GAN: Mirza & Osindero 2014 — the one-hot label is concatenated to the noise
  for G and to the (flattened) image for D; for the DCGAN variant it is fed to D as
  constant label planes.
* DCGAN: Radford, Metz & Chintala 2015 — strided convolutions in D, fractionally-strided
  convolutions in G, batch norm in both (not on G's output nor D's input layer), ReLU in G
  with Tanh output, LeakyReLU(0.2) in D, no fully connected hidden layers; weights
  N(0, 0.02); Adam lr 2e-4, beta1 0.5.

Images are ``(N, H, W)`` tensors with values in [0, 1]; internally G outputs Tanh values
in [-1, 1] and D sees ``2 x - 1``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from asr.generative.checkpoint import register_module
from asr.generative.rbm import TrainingDiverged

ARCHS = ("mlp", "dcgan")
LOSSES = ("nonsaturating", "minimax")


def _one_hot(labels: Tensor | None, n_classes: int, n: int, device: torch.device) -> Tensor | None:
    if n_classes == 0:
        if labels is not None:
            raise ValueError("labels given to an unconditional GAN")
        return None
    if labels is None:
        raise ValueError(f"a conditional GAN needs labels in 0..{n_classes - 1}")
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    if labels.numel() == 1 and n > 1:
        labels = labels.expand(n)
    if labels.shape[0] != n:
        raise ValueError(f"got {labels.shape[0]} labels for {n} samples")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be in 0..{n_classes - 1}, got "
                         f"{labels.min().item()}..{labels.max().item()}")
    return F.one_hot(labels, n_classes).float()


def _dcgan_base(h: int, w: int, stages: int) -> tuple[int, int]:
    f = 2 ** stages
    if h % f or w % f:
        raise ValueError(f"DCGAN with {stages} stride-2 stages needs H and W divisible by {f}, "
                         f"got {h}x{w}")
    return h // f, w // f


class _MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, n_classes: int, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim + n_classes, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, out), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        return self.net(z if y is None else torch.cat([z, y], 1))


class _MLPDiscriminator(nn.Module):
    def __init__(self, n_in: int, n_classes: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in + n_classes, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.2),
            nn.Linear(hidden // 2, 1))

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        x = x.flatten(1)
        return self.net(x if y is None else torch.cat([x, y], 1)).squeeze(1)


class _DCGenerator(nn.Module):
    """z -> ConvT(k = base size) to (C 2^(s-1), h0, w0) -> s x [ConvT(4, 2, 1), BN, ReLU] -> Tanh."""

    def __init__(self, z_dim: int, n_classes: int, ch: int, h: int, w: int, stages: int):
        super().__init__()
        h0, w0 = _dcgan_base(h, w, stages)
        c = ch * 2 ** (stages - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim + n_classes, c, (h0, w0), bias=False),
                                   nn.BatchNorm2d(c), nn.ReLU(True)]
        for s in range(stages - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
                       nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        zz = z if y is None else torch.cat([z, y], 1)
        return self.net(zz[:, :, None, None]).squeeze(1)  # (B, H, W)


class _DCDiscriminator(nn.Module):
    """(1 + K, H, W) -> s x [Conv(4, 2, 1), (BN), LeakyReLU] -> Conv(k = base size) -> logit."""

    def __init__(self, n_classes: int, ch: int, h: int, w: int, stages: int):
        super().__init__()
        h0, w0 = _dcgan_base(h, w, stages)
        layers: list[nn.Module] = [nn.Conv2d(1 + n_classes, ch, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, True)]
        c = ch
        for s in range(stages - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2),
                       nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, (h0, w0), bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        x = x[:, None]
        if y is not None:
            x = torch.cat([x, y[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        return self.net(x).flatten()


@register_module
class GAN(nn.Module):
    """Generator + discriminator pair for ``(H, W)`` images in [0, 1].

    Args:
        image_shape: ``(H, W)``.
        arch: ``"mlp"`` (two hidden layers of ``hidden`` units in G; ``hidden``,
            ``hidden // 2`` in D) or ``"dcgan"`` (``stages`` stride-2 (de)convolutions with
            ``channels`` feature maps at full resolution, doubling per stage; H and W must be
            divisible by 2^stages, e.g. 16x16, 40x16, 32x32 with 2 stages).
        z_dim: noise dimension (z ~ N(0, I)).
        n_classes: 0 for an unconditional GAN, K for a conditional GAN on labels 0..K-1.
        generator: generator for the initial weights (default seeded 0).
    """

    def __init__(self, image_shape: Sequence[int] = (16, 16), arch: str = "mlp", z_dim: int = 32,
                 n_classes: int = 0, hidden: int = 256, channels: int = 32, stages: int = 2,
                 generator: torch.Generator | None = None):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        h, w = (int(s) for s in image_shape)
        self.image_shape = (h, w)
        self.arch, self.z_dim, self.n_classes = arch, int(z_dim), int(n_classes)
        self.hidden, self.channels, self.stages = int(hidden), int(channels), int(stages)
        if arch == "mlp":
            self.G: nn.Module = _MLPGenerator(z_dim, n_classes, hidden, h * w)
            self.D: nn.Module = _MLPDiscriminator(h * w, n_classes, hidden)
        else:
            self.G = _DCGenerator(z_dim, n_classes, channels, h, w, stages)
            self.D = _DCDiscriminator(n_classes, channels, h, w, stages)
        self.reset_parameters(generator if generator is not None
                              else torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """DCGAN ``weights_init``: conv weights N(0, 0.02), BN gamma N(1, 0.02), beta 0;
        MLP linear weights N(0, 1/fan_in), zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=generator) * 0.02)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator)
                               / math.sqrt(m.in_features))
                m.bias.zero_()

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments needed to rebuild this module."""
        return {"image_shape": list(self.image_shape), "arch": self.arch, "z_dim": self.z_dim,
                "n_classes": self.n_classes, "hidden": self.hidden, "channels": self.channels,
                "stages": self.stages}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), ``(n, z_dim)`` on the model's device."""
        return torch.randn(n, self.z_dim, generator=generator, device=self.device)

    def generate(self, z: Tensor, labels: Tensor | int | None = None) -> Tensor:
        """Images G(z | label) in [0, 1], ``(n, H, W)``; differentiable (call under no_grad to sample)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (n, {self.z_dim}), got {tuple(z.shape)}")
        y = _one_hot(labels, self.n_classes, z.shape[0], z.device)
        x = self.G(z, y)
        return ((x.view(-1, *self.image_shape) + 1) / 2)

    def discriminate(self, x: Tensor, labels: Tensor | int | None = None) -> Tensor:
        """Discriminator logits for images ``(n, H, W)`` in [0, 1], shape ``(n,)``."""
        if x.dim() != 3 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"images must have shape (n, {self.image_shape[0]}, "
                             f"{self.image_shape[1]}), got {tuple(x.shape)}")
        y = _one_hot(labels, self.n_classes, x.shape[0], x.device)
        return self.D(2 * x - 1, y)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``(n, H, W)`` in [0, 1] (G in eval mode: batch-norm running stats)."""
        was = self.training
        self.eval()
        try:
            return self.generate(self.sample_latent(n, generator), labels)
        finally:
            self.train(was)


@dataclass
class GANTrainConfig:
    """Hyper-parameters of :func:`train_gan`.

    Attributes:
        epochs: passes over the data.
        batch_size: minibatch size m.
        lr_g, lr_d: Adam learning rates (Radford et al.: 2e-4).
        beta1: Adam beta1 (Radford et al.: 0.5).
        k: discriminator steps per generator step (Goodfellow et al. Algorithm 1).
        loss: generator loss: ``"nonsaturating"`` (-log D(G(z))) or ``"minimax"``
            (log(1 - D(G(z)))).
        label_smoothing: target for real images in D's loss (1.0 = none).
    """

    epochs: int = 50
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    k: int = 1
    loss: str = "nonsaturating"
    label_smoothing: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
    """-[t log D(x) + (1 - t) log(1 - D(x))] - log(1 - D(G(z))), averaged; D = sigmoid(logit)."""
    pos = real_target * F.softplus(-real_logits) + (1 - real_target) * F.softplus(real_logits)
    return pos.mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, loss: str = "nonsaturating") -> Tensor:
    """Non-saturating ``-log D(G(z))`` or minimax ``log(1 - D(G(z)))`` (to be minimised)."""
    if loss == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if loss == "minimax":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def train_gan(gan: GAN, images: Tensor, labels: Tensor | None = None,
              cfg: GANTrainConfig | None = None, generator: torch.Generator | None = None,
              callback: Callable[[int, dict[str, float], GAN], None] | None = None
              ) -> list[dict[str, float]]:
    """Adversarial training (Goodfellow et al. 2014, Algorithm 1) with Adam.

    Args:
        images: ``(N, H, W)`` in [0, 1] (moved to the model's device once); each epoch
            uses ``N // batch_size`` full minibatches of a fresh permutation.
        labels: ``(N,)`` class ids, required iff ``gan.n_classes > 0`` (the fake minibatch
            uses the labels of the real one, so G learns every class at its data frequency).
        generator: all randomness (shuffling, noise). Default seeded 0.
        callback: ``callback(epoch, metrics, gan)`` after every epoch.
    Returns:
        One dict per epoch: ``d_loss``, ``g_loss``, ``d_real`` (mean D(x)), ``d_fake``
        (mean D(G(z))), ``seconds``.
    Raises:
        ValueError: bad shapes, values outside [0, 1], missing/unexpected labels.
        TrainingDiverged: a non-finite loss; the weights of the last good step are restored.
    """
    cfg = cfg or GANTrainConfig()
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
    dev = gan.device
    if generator is None:
        generator = torch.Generator(device=dev).manual_seed(0)
    if images.dim() != 3 or tuple(images.shape[1:]) != gan.image_shape:
        raise ValueError(f"images must have shape (N, {gan.image_shape[0]}, {gan.image_shape[1]}), "
                         f"got {tuple(images.shape)}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be finite with values in [0, 1]")
    if (labels is None) != (gan.n_classes == 0):
        raise ValueError("labels are required for a conditional GAN and not allowed otherwise")
    x_all = images.to(dev, torch.float32)
    y_all = None if labels is None else labels.to(dev).long()
    opt_d = torch.optim.Adam(gan.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
    opt_g = torch.optim.Adam(gan.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
    gan.train()
    history: list[dict[str, float]] = []
    step = 0
    n = x_all.shape[0]
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        nd = ng = 0
        perm = torch.randperm(n, generator=generator, device=generator.device).to(dev)
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            step += 1
            good = {k: v.detach().clone() for k, v in gan.state_dict().items()}
            idx = perm[i:i + cfg.batch_size]
            x = x_all[idx]
            y = None if y_all is None else y_all[idx]
            z = gan.sample_latent(x.shape[0], generator)
            with torch.no_grad():
                fake = gan.generate(z, y)
            lr_, lf = gan.discriminate(x, y), gan.discriminate(fake, y)
            d_loss = discriminator_loss(lr_, lf, cfg.label_smoothing)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            sums["d_loss"] += d_loss.item()
            sums["d_real"] += torch.sigmoid(lr_).mean().item()
            sums["d_fake"] += torch.sigmoid(lf).mean().item()
            nd += 1
            g_val = 0.0
            if nd % cfg.k == 0:
                z = gan.sample_latent(x.shape[0], generator)
                g_loss = generator_loss(gan.discriminate(gan.generate(z, y), y), cfg.loss)
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                g_val = g_loss.item()
                sums["g_loss"] += g_val
                ng += 1
            if not (math.isfinite(d_loss.item()) and math.isfinite(g_val)) or not all(
                    torch.isfinite(p).all() for p in gan.parameters()):
                gan.load_state_dict(good)
                raise TrainingDiverged(
                    f"GAN training diverged at step {step} (epoch {epoch}): non-finite loss or "
                    f"weights; last good state restored", step=step, epoch=epoch,
                    state_dict=good, history=history)
        if nd == 0:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the data ({n} images)")
        m = {"epoch": epoch, "d_loss": sums["d_loss"] / nd, "g_loss": sums["g_loss"] / max(ng, 1),
             "d_real": sums["d_real"] / nd, "d_fake": sums["d_fake"] / nd,
             "seconds": time.perf_counter() - t0}
        history.append(m)
        if callback is not None:
            callback(epoch, m, gan)
    gan.eval()
    return history
