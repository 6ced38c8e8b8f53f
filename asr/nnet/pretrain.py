"""DBN pretraining of the acoustic DNN's hidden layers (Hinton et al. 2006; Mohamed, Dahl & Hinton 2012).

Uses ``asr.generative`` (no second RBM implementation): a Gaussian–Bernoulli RBM on the
globally normalised spliced features (unit variance, as the GB-RBM assumes), then
Bernoulli–Bernoulli RBMs, each trained with CD-1 + momentum on shuffled minibatches streamed from
the frame table (the spliced matrix is never materialised).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from asr.nnet.frames import FrameData


@dataclass
class PretrainConfig:
    """DBN sizes and CD-1 settings (Kaldi ``pretrain_dbn.sh``: GB lr 0.01, BB lr 0.4, momentum 0.9)."""

    hidden: tuple[int, ...] = (512, 512, 512)
    epochs: int = 1                     # passes over ``frames_per_epoch`` frames per RBM
    batch_size: int = 128
    lr_gaussian: float = 0.01
    lr_bernoulli: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    frames_per_epoch: int | None = None
    seed: int = 777


def normalised_batches(data: FrameData, mean: Tensor, istd: Tensor, batch_size: int, seed: int,
                       limit: int | None = None, device: torch.device | str = "cpu") -> Callable[[], Iterator[Tensor]]:
    """A callable returning a fresh iterator of shuffled, normalised spliced minibatches (B, K·D);
    each call reshuffles with the next seed of a private generator (deterministic overall)."""
    g = torch.Generator().manual_seed(seed)
    mean, istd = mean.to(device), istd.to(device)

    def batches() -> Iterator[Tensor]:
        perm = torch.randperm(data.num_frames, generator=g)
        if limit:
            perm = perm[:limit]
        for s in range(0, len(perm), batch_size):
            yield (data.spliced(perm[s:s + batch_size]).to(device) - mean) * istd

    return batches


def pretrain_dbn_on_frames(data: FrameData, mean: Tensor, var: Tensor, cfg: PretrainConfig,
                           device: torch.device | str = "cpu", callback=None) -> nn.Module:
    """Greedy layer-wise DBN pretraining on normalised spliced frames; returns the
    ``asr.generative.DBN`` (save it with ``asr.generative.save``)."""
    from asr.generative import DBN, RBMTrainConfig, pretrain_dbn

    dim = data.index.shape[1] * data.feats.shape[1]
    dbn = DBN([dim, *cfg.hidden], first_visible="gaussian").to(device)
    cfgs = [RBMTrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size,
                           lr=cfg.lr_gaussian if i == 0 else cfg.lr_bernoulli,
                           momentum=cfg.momentum, initial_momentum=0.5,
                           momentum_epochs=1 if cfg.epochs > 1 else 0, weight_decay=cfg.weight_decay)
            for i in range(len(cfg.hidden))]
    istd = var.clamp_min(1e-4).rsqrt()
    batches = normalised_batches(data, mean, istd, cfg.batch_size, cfg.seed, cfg.frames_per_epoch, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    pretrain_dbn(dbn, batches, cfgs, gen, callback=callback)
    return dbn


def dbn_linears(dbn: nn.Module) -> list[nn.Linear]:
    """The pretrained hidden Linear layers of a DBN (via its ``to_sequential``)."""
    seq = dbn.to_sequential(None)
    return [m for m in seq if isinstance(m, nn.Linear)]
