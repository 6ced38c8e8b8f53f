"""Train / sample runners behind ``asr gen``: image data in, a model directory out.

``run_training(kind, data, out_dir, opts)`` trains one of ``rbm``, ``dbn``, ``gan``, ``cgan``,
``dcgan`` on :class:`~asr.generative.data.ImageData`, and writes ``out_dir/model.pt``
(checkpoint, :func:`asr.generative.load`), ``history.json`` and ``samples.png``.
``sample_model(model_dir, n, label, seed)`` draws images ``(n, H, W)`` in [0, 1].
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from asr.generative.checkpoint import load_checkpoint, save
from asr.generative.data import ImageData
from asr.generative.dbn import DBN, pretrain_dbn
from asr.generative.gan import GAN, GANTrainConfig, train_gan
from asr.generative.plots import save_grid
from asr.generative.rbm import (RBM, RBMTrainConfig, ais_log_z, base_rate_bias, log_likelihood,
                                train_rbm)

KINDS = ("rbm", "dbn", "gan", "cgan", "dcgan")


@dataclass
class TrainOptions:
    """Options of ``asr gen train`` (``None`` = the per-model default in brackets).

    Attributes:
        epochs: training epochs [rbm 30, dbn 20 per layer, gan/cgan 100, dcgan 40].
        seed: seed of every generator (init, shuffling, sampling).
        batch_size: minibatch size [rbm/dbn 20, gan 32].
        lr: learning rate [rbm/dbn 0.05 (Bernoulli), gan 1e-3, dcgan 5e-4].
        hidden: RBM hidden units / GAN MLP width [rbm 100, gan 256].
        sizes: DBN hidden layer sizes [500, 500] (the input size comes from the data).
        z_dim: GAN noise dimension.
        channels: DCGAN feature maps at full resolution.
        k: CD-k steps (rbm/dbn) or discriminator steps per generator step (gans).
        persistent: PCD instead of CD (rbm/dbn).
        loss: GAN generator loss, ``nonsaturating`` or ``minimax``.
        digit: keep only images of this class (needs labels).
        test_fraction: held-out share (deterministic split with ``seed``).
        ais_every: RBM only: AIS held-out log-likelihood every N epochs (0 = only before/after).
        ais_chains, ais_betas: AIS settings.
        gibbs_steps: Gibbs sweeps when sampling RBM/DBN.
    """

    epochs: int | None = None
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    hidden: int | None = None
    sizes: list[int] = field(default_factory=lambda: [500, 500])
    z_dim: int = 32
    channels: int = 32
    k: int = 1
    persistent: bool = False
    loss: str = "nonsaturating"
    digit: int | None = None
    test_fraction: float = 0.2
    ais_every: int = 0
    ais_chains: int = 100
    ais_betas: int = 3000
    gibbs_steps: int = 1000


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def prepare_data(data: ImageData, opts: TrainOptions) -> tuple[ImageData, ImageData]:
    """Filter to ``opts.digit`` (if set) and split deterministically into (train, test)."""
    if opts.digit is not None:
        if data.labels is None:
            raise ValueError(f"--digit needs labelled data; {data.meta.get('source')} has no labels")
        keep = (data.labels == opts.digit).nonzero().flatten()
        if keep.numel() == 0:
            raise ValueError(f"no images of class {opts.digit} in {data.meta.get('source')}")
        data = data.subset(keep)
    return data.split(opts.test_fraction, opts.seed)


def ais_heldout_ll(rbm: RBM, train_x: Tensor, test_x: Tensor, opts: TrainOptions) -> dict[str, float]:
    """Mean held-out log-likelihood (nats/image) by AIS with a base-rate model from ``train_x``."""
    g = torch.Generator().manual_seed(opts.seed + 1)
    res = ais_log_z(rbm, base_rate_bias(train_x, rbm.visible), opts.ais_chains, opts.ais_betas, g)
    ll = log_likelihood(rbm, test_x, res.log_z).mean().item()
    return {"heldout_ll": ll, "log_z": res.log_z,
            "heldout_ll_low": log_likelihood(rbm, test_x, res.log_z_high).mean().item(),
            "heldout_ll_high": log_likelihood(rbm, test_x, res.log_z_low).mean().item()}


def run_training(kind: str, data: ImageData, out_dir: str | Path, opts: TrainOptions
                 ) -> dict[str, Any]:
    """Train a ``kind`` model on ``data`` and write ``out_dir/{model.pt,history.json,samples.png}``.

    Returns the summary dict stored as the checkpoint's ``meta`` (CPU seconds, history, data
    description, held-out figures).
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = prepare_data(data, opts)
    h, w = train.shape
    g = torch.Generator().manual_seed(opts.seed)
    meta: dict[str, Any] = {"kind": kind, "image_shape": [h, w], "data": data.meta,
                            "options": asdict(opts), "n_train": int(train.images.shape[0]),
                            "n_test": int(test.images.shape[0])}
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    x_tr, x_te = train.images.flatten(1), test.images.flatten(1)
    if kind == "rbm":
        model: torch.nn.Module = RBM(h * w, opts.hidden or 100, "bernoulli", generator=g)
        cfg = RBMTrainConfig(epochs=opts.epochs or 30, batch_size=opts.batch_size or 20,
                             lr=opts.lr or 0.05, k=opts.k, persistent=opts.persistent)
        ais_hist = [{"epoch": 0, **ais_heldout_ll(model, x_tr, x_te, opts)}]

        def cb(epoch: int, m: dict[str, float], rbm: RBM) -> None:
            if (opts.ais_every and epoch % opts.ais_every == 0) or epoch == cfg.epochs:
                ais_hist.append({"epoch": epoch, **ais_heldout_ll(rbm, x_tr, x_te, opts)})
        history: Any = train_rbm(model, x_tr, cfg, g, cb)
        meta["ais"] = ais_hist
        samples = model.sample(64, opts.gibbs_steps, g).view(-1, h, w)
    elif kind == "dbn":
        model = DBN([h * w, *opts.sizes], first_visible="bernoulli", generator=g)
        cfg = RBMTrainConfig(epochs=opts.epochs or 20, batch_size=opts.batch_size or 20,
                             lr=opts.lr or 0.05, k=opts.k, persistent=opts.persistent)
        history = pretrain_dbn(model, x_tr, cfg, g)
        samples = model.generate(64, opts.gibbs_steps, g).view(-1, h, w)
    else:
        cond = kind == "cgan"
        if cond and train.labels is None:
            raise ValueError(f"cgan needs labelled data; {data.meta.get('source')} has no labels")
        arch = "dcgan" if kind == "dcgan" else "mlp"
        model = GAN((h, w), arch, z_dim=opts.z_dim,
                    n_classes=int(data.labels.max()) + 1 if cond else 0,
                    hidden=opts.hidden or 256, channels=opts.channels, generator=g)
        default_lr = 5e-4 if arch == "dcgan" else 1e-3
        cfg = GANTrainConfig(epochs=opts.epochs or (40 if arch == "dcgan" else 100),
                             batch_size=opts.batch_size or 32, lr_g=opts.lr or default_lr,
                             lr_d=opts.lr or default_lr, k=opts.k, loss=opts.loss)
        history = train_gan(model, train.images, train.labels if cond else None, cfg, g)
        labels = torch.arange(model.n_classes).repeat_interleave(8) if cond else None
        samples = model.sample(64 if labels is None else labels.numel(), labels, g)
    meta["cpu_seconds"] = time.process_time() - t_cpu
    meta["wall_seconds"] = time.perf_counter() - t_wall
    meta["train_config"] = cfg.to_dict()
    meta["history"] = history
    save(model, out / "model.pt", meta)
    _write_json(meta, out / "history.json")
    save_grid(samples, out / "samples.png", nrow=8,
              title=f"{kind} samples" + (" (one row per class)" if kind == "cgan" else ""))
    return meta


def sample_model(model_dir: str | Path, n: int, label: int | None = None, seed: int = 0,
                 gibbs_steps: int = 1000) -> Tensor:
    """Draw ``n`` images ``(n, H, W)`` in [0, 1] from the checkpoint in ``model_dir``.

    A conditional GAN without ``label`` cycles through the classes (0, 1, ..., K-1, 0, ...).
    """
    model, meta = load_checkpoint(model_dir)
    if n < 1:
        raise ValueError(f"--n must be positive, got {n}")
    shape = meta.get("image_shape")
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, GAN):
        if model.n_classes:
            labels = (torch.full((n,), label) if label is not None
                      else torch.arange(n) % model.n_classes)
        elif label is not None:
            raise ValueError(f"{model_dir}: --label given but the model is not conditional")
        else:
            labels = None
        return model.sample(n, labels, g)
    if label is not None:
        raise ValueError(f"{model_dir}: --label needs a conditional GAN")
    if shape is None:
        side = int(math.isqrt(model.get_config().get("n_visible", model.get_config().get("sizes", [0])[0])))
        shape = [side, side]
    if isinstance(model, RBM):
        x = model.sample(n, gibbs_steps, g)
    elif isinstance(model, DBN):
        x = model.generate(n, gibbs_steps, g)
    else:
        raise ValueError(f"{model_dir}: cannot sample from a {type(model).__name__}")
    x = x.clamp(0, 1) if not (isinstance(model, RBM) and model.visible == "gaussian") else x
    return x.view(n, *shape)
