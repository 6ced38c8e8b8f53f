"""Throughput of the generative core on speech-sized problems (CPU by default).

    .venv/bin/python bench/generative.py [--device cpu|cuda] [--threads N] [--frames 20000]

Reports frames/s of Gaussian-Bernoulli RBM CD-1 training (440 -> 1024, the first layer of a
DBN on 11 spliced frames of 40-dim fbank), Bernoulli RBM CD-1 (1024 -> 1024), the
streaming (callable) path, AIS cost, and DCGAN steps/s on 40x16 log-mel patches.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from asr.generative import (DBN, GAN, RBM, GANTrainConfig, RBMTrainConfig, ais_log_z, pretrain_dbn,
                            train_rbm, train_gan)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=20000)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    g = torch.Generator(device=dev).manual_seed(0)
    res: dict[str, float | str] = {"device": str(dev), "threads": a.threads}
    x = torch.randn(a.frames, 440, generator=g, device=dev)
    rbm = RBM(440, 1024, "gaussian").to(dev)
    # white-noise input is the hardest case for a Gaussian RBM: lr 0.01 can diverge on it
    cfg = RBMTrainConfig(epochs=1, batch_size=256, lr=0.005)
    _sync(dev); t = time.perf_counter()
    train_rbm(rbm, x, cfg, g)
    _sync(dev); res["grbm_440x1024_cd1_frames_per_s"] = a.frames / (time.perf_counter() - t)
    xb = torch.rand(a.frames, 1024, generator=g, device=dev)
    rbm2 = RBM(1024, 1024).to(dev)
    _sync(dev); t = time.perf_counter()
    train_rbm(rbm2, xb, RBMTrainConfig(epochs=1, batch_size=256), g)
    _sync(dev); res["brbm_1024x1024_cd1_frames_per_s"] = a.frames / (time.perf_counter() - t)
    batches = list(x.split(256))
    _sync(dev); t = time.perf_counter()
    train_rbm(rbm, lambda: iter(batches), cfg, g)
    _sync(dev); res["grbm_streaming_frames_per_s"] = a.frames / (time.perf_counter() - t)
    dbn = DBN([440, 1024, 1024], "gaussian").to(dev)
    _sync(dev); t = time.perf_counter()
    pretrain_dbn(dbn, x, [cfg, RBMTrainConfig(epochs=1, batch_size=256)], g)
    _sync(dev); res["dbn_2layer_pretrain_s"] = time.perf_counter() - t
    small = RBM(256, 100).to(dev)
    _sync(dev); t = time.perf_counter()
    ais_log_z(small, None, n_chains=100, betas=3000, generator=g)
    _sync(dev); res["ais_256x100_100chains_3000betas_s"] = time.perf_counter() - t
    gan = GAN((40, 16), "dcgan", channels=32).to(dev)
    imgs = torch.rand(2048, 40, 16, generator=g, device=dev)
    _sync(dev); t = time.perf_counter()
    train_gan(gan, imgs, None, GANTrainConfig(epochs=1, batch_size=64), g)
    _sync(dev); res["dcgan_40x16_steps_per_s"] = (2048 // 64) / (time.perf_counter() - t)
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
