"""Sample-quality metrics: a reference digit classifier, Fréchet distance, Parzen log-likelihood.

* Fréchet distance between Gaussians fitted to features (Heusel et al. 2017, "FID"), here in
  the hidden layer of a small classifier trained on real digits instead of Inception.
* Parzen-window log-likelihood of held-out data under a Gaussian kernel density of
  samples (Breuleux et al. 2011; as reported by Goodfellow et al. 2014), sigma chosen on a
  validation set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass
class DigitClassifier:
    """A scikit-learn MLP (one ReLU hidden layer) on flattened images in [0, 1]."""

    model: object  # sklearn.neural_network.MLPClassifier

    @classmethod
    def fit(cls, images: Tensor, labels: Tensor, hidden: int = 128, seed: int = 0,
            max_iter: int = 300) -> "DigitClassifier":
        """Train on ``images (N, H, W)`` in [0, 1] with labels ``(N,)``."""
        from sklearn.neural_network import MLPClassifier
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=max_iter, random_state=seed,
                            alpha=1e-3)
        clf.fit(images.flatten(1).numpy(), labels.numpy())
        return cls(clf)

    def predict(self, images: Tensor) -> Tensor:
        """Class ids ``(N,)``."""
        return torch.from_numpy(self.model.predict(images.flatten(1).double().numpy())).long()

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        return float((self.predict(images) == labels.long()).double().mean())

    def features(self, images: Tensor) -> Tensor:
        """Hidden-layer activations ``(N, hidden)`` (float64) for the Fréchet distance."""
        W, b = self.model.coefs_[0], self.model.intercepts_[0]
        x = images.flatten(1).double().numpy()
        return torch.from_numpy(np.maximum(x @ W + b, 0.0))


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) between Gaussians fitted to the
    rows of ``a (N, d)`` and ``b (M, d)`` (float64; the trace of the matrix square root is
    computed from the eigenvalues of S_a^{1/2} S_b S_a^{1/2}, which is symmetric PSD)."""
    a, b = a.double(), b.double()
    if a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need >= 2 rows of equal dims, got {tuple(a.shape)}, {tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.t()), torch.cov(b.t())
    ea, va = torch.linalg.eigh(sa)
    ra = (va * ea.clamp_min(0).sqrt()) @ va.t()
    m = ra @ sb @ ra
    tr_sqrt = torch.linalg.eigvalsh((m + m.t()) / 2).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(sa) + torch.trace(sb) - 2 * tr_sqrt)


def parzen_log_likelihood(samples: Tensor, data: Tensor, sigma: float,
                          chunk: int = 512) -> Tensor:
    """log p(x) under an isotropic Gaussian Parzen window on ``samples (M, d)``, for each row
    of ``data (N, d)``: ``logsumexp_m(-||x - s_m||^2 / 2 sigma^2) - log M - d/2 log(2 pi sigma^2)``.
    Returns ``(N,)`` float64 (nats)."""
    s, x = samples.flatten(1).double(), data.flatten(1).double()
    d = s.shape[1]
    out = []
    for i in range(0, x.shape[0], chunk):
        d2 = torch.cdist(x[i:i + chunk], s).pow(2)
        out.append(torch.logsumexp(-d2 / (2 * sigma ** 2), 1))
    const = math.log(s.shape[0]) + 0.5 * d * math.log(2 * math.pi * sigma ** 2)
    return torch.cat(out) - const


def select_parzen_sigma(samples: Tensor, valid: Tensor,
                        sigmas: Sequence[float] = tuple(np.logspace(-1.5, 0, 16))) -> float:
    """The sigma maximising the mean Parzen log-likelihood of ``valid``."""
    scores = [parzen_log_likelihood(samples, valid, s).mean().item() for s in sigmas]
    return float(sigmas[int(np.argmax(scores))])
