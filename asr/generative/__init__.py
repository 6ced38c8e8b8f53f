"""Reusable generative models: RBM, DBN, GAN / conditional GAN / DCGAN, latent-space tools.

Standalone: imports nothing from the speech side of ``asr`` (only torch, numpy,
matplotlib, scikit-learn). Every module saves to one checkpoint format
(:func:`save` / :func:`load`).

Quick reference::

    rbm = RBM(n_visible, n_hidden, visible="bernoulli" | "gaussian")
    hist = train_rbm(rbm, data, RBMTrainConfig(...), generator)      # CD-k / PCD
    dbn = DBN([D, h1, h2], first_visible="gaussian")
    pretrain_dbn(dbn, data, cfgs, generator)
    net = dbn.to_sequential(n_out=K)                                   # Linear+Sigmoid stack
    gan = GAN((16, 16), arch="mlp" | "dcgan", n_classes=0 | 10); train_gan(gan, images, labels, cfg)
    save(module, "model.pt"); module = load("model.pt")

Gaussian-Bernoulli RBMs assume unit-variance visible units: normalise every input dimension to
zero mean and unit variance first (per-speaker CMVN + global normalisation for speech). Their
default learning rate is 0.01 (Hinton 2010, section 13.2); on uncorrelated inputs with many
hidden units this can still diverge, which raises :class:`TrainingDiverged` (step, last good
state restored): retry with ``lr=0.005``, or enable Kaldi's guard
(``RBMTrainConfig(variance_guard=True)``), which shrinks the weights whenever the reconstruction's
spread exceeds twice the data's. ``RBMTrainConfig(schedule="kaldi")`` reproduces nnet1's
``rbm-train-cd1-frmshuff`` learning-rate/momentum schedule.
"""
from asr.generative.checkpoint import load, load_checkpoint, register_module, save
from asr.generative.dbn import DBN, pretrain_dbn
from asr.generative.gan import (GAN, GANTrainConfig, discriminator_loss, generator_loss,
                                train_gan)
from asr.generative.latent import group_arithmetic, lerp, slerp
from asr.generative.rbm import (RBM, AISResult, RBMTrainConfig, TrainingDiverged, ais_log_z,
                                base_rate_bias, cd_gradient, exact_log_z, log_likelihood,
                                train_rbm)

__all__ = [
    "RBM", "RBMTrainConfig", "train_rbm", "TrainingDiverged", "cd_gradient", "exact_log_z",
    "ais_log_z", "AISResult", "base_rate_bias", "log_likelihood",
    "DBN", "pretrain_dbn",
    "GAN", "GANTrainConfig", "train_gan", "discriminator_loss", "generator_loss",
    "lerp", "slerp", "group_arithmetic",
    "save", "load", "load_checkpoint", "register_module",
]
