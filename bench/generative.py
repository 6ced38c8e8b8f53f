"""Throughput of the generative core on speech-sized problems, on the CPU and, where CUDA is
present, on the GPU, against a float32 matmul measured in the same run on the same device
(``bench/reference.py``): rates as fractions of its FLOP rate, times in its units.

    .venv/bin/python bench/generative.py [--device cpu|cuda] [--threads N] [--frames 20000]

Reports frames/s of Gaussian-Bernoulli RBM CD-1 training (440 -> 1024, the first layer of a
DBN on 11 spliced frames of 40-dim fbank), Bernoulli RBM CD-1 (1024 -> 1024), the
streaming (callable) path, AIS cost, and DCGAN steps/s on 40x16 log-mel patches.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from asr.generative import (DBN, GAN, RBM, GANTrainConfig, RBMTrainConfig, ais_log_z, pretrain_dbn,
                            train_rbm, train_gan)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import Reference, devices  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench_device(dev: torch.device, frames: int) -> dict:
    """The measurements on one device; rates also as fractions of the reference matmul rate
    (CD-1 costs about 10·V·H FLOP per frame: three products with W and two outer products) and
    times in reference units."""
    ref = Reference(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    res: dict[str, float | str] = {}
    x = torch.randn(frames, 440, generator=g, device=dev)
    rbm = RBM(440, 1024, "gaussian").to(dev)
    # white-noise input is the hardest case for a Gaussian RBM: lr 0.01 can diverge on it
    cfg = RBMTrainConfig(epochs=1, batch_size=256, lr=0.005)
    _sync(dev); t = time.perf_counter()
    train_rbm(rbm, x, cfg, g)
    _sync(dev); res["grbm_440x1024_cd1_frames_per_s"] = frames / (time.perf_counter() - t)
    xb = torch.rand(frames, 1024, generator=g, device=dev)
    rbm2 = RBM(1024, 1024).to(dev)
    _sync(dev); t = time.perf_counter()
    train_rbm(rbm2, xb, RBMTrainConfig(epochs=1, batch_size=256), g)
    _sync(dev); res["brbm_1024x1024_cd1_frames_per_s"] = frames / (time.perf_counter() - t)
    batches = list(x.split(256))
    _sync(dev); t = time.perf_counter()
    train_rbm(rbm, lambda: iter(batches), cfg, g)
    _sync(dev); res["grbm_streaming_frames_per_s"] = frames / (time.perf_counter() - t)
    dbn = DBN([440, 1024, 1024], "gaussian").to(dev)
    _sync(dev); t = time.perf_counter()
    pretrain_dbn(dbn, x, [cfg, RBMTrainConfig(epochs=1, batch_size=256)], g)
    _sync(dev); res["dbn_2layer_pretrain_units"] = time.perf_counter() - t
    small = RBM(256, 100).to(dev)
    _sync(dev); t = time.perf_counter()
    ais_log_z(small, None, n_chains=100, betas=3000, generator=g)
    _sync(dev); res["ais_256x100_100chains_3000betas_units"] = time.perf_counter() - t
    gan = GAN((40, 16), "dcgan", channels=32).to(dev)
    imgs = torch.rand(2048, 40, 16, generator=g, device=dev)
    _sync(dev); t = time.perf_counter()
    train_gan(gan, imgs, None, GANTrainConfig(epochs=1, batch_size=64), g)
    _sync(dev); res["dcgan_40x16_units_per_step"] = (time.perf_counter() - t) / (2048 // 64)
    ref.finish()
    for k, (v, h) in {"grbm_440x1024_cd1": (440, 1024), "brbm_1024x1024_cd1": (1024, 1024),
                      "grbm_streaming": (440, 1024)}.items():
        res[f"{k}_fraction_of_matmul_rate"] = ref.fraction(10.0 * v * h * res[f"{k}_frames_per_s"])
    for k in [k for k in res if k.endswith("_units") or k.endswith("_units_per_step")]:
        res[k] = ref.units(res[k])
    res["reference"] = ref.as_dict()
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default=None, help="default: cpu, and cuda where present")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=20000)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = {"threads": a.threads}
    for name in devices(a.device):
        r = bench_device(torch.device(name), a.frames)
        out[name] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
