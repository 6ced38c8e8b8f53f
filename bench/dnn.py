"""Benchmark of the hybrid DNN: CE training throughput (frames/s), the fraction of the measured
matmul FLOP rate it reaches, and the real-time factor of scoring (and of decoding when a model,
graph and data dir are given).

    .venv/bin/python bench/dnn.py [--frames 40000 --layers 3 --units 512 --pdfs 1500 --threads 2]
        [--model exp/dnn --graph exp/tri3/graph --data data/dev_fbank]   # + decoding RTF
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from asr.nnet import CETrainConfig, HybridDNN, NetConfig, build_frame_data, train_ce
from asr.nnet.synthetic import synth_corpus


def matmul_flops(m: int, k: int, n: int, device: torch.device, seconds: float = 2.0) -> float:
    """Measured float32 GEMM rate (FLOP/s) at the network's layer shapes."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=40000)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--pdfs", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None)
    ap.add_argument("--graph", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--nj", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    n_utts = max(2, args.frames // 300)
    feats, alis = synth_corpus(n_utts, args.pdfs, 40, seed=0, seg_frames=(5, 15), segs=(20, 40))
    utts = sorted(feats)
    train = build_frame_data(feats, alis, 5, 5, args.pdfs, utts=utts[: max(1, int(0.9 * len(utts)))])
    cv = build_frame_data(feats, alis, 5, 5, args.pdfs, utts=utts[int(0.9 * len(utts)):])
    model = HybridDNN(NetConfig(40, args.pdfs, (args.units,) * args.layers, 5, 5))
    model.set_normalisation(*train.spliced_moments())
    params = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    with tempfile.TemporaryDirectory() as d:
        res = train_ce(model, train, cv, CETrainConfig(max_epochs=1, batch_size=args.batch_size), d, dev,
                       log=lambda s: None)
        wall = res.history[-1]["seconds"]            # the training loop (no CV passes)
    flops = 6.0 * params * train.num_frames         # forward 2·W, backward 4·W per frame
    peak = matmul_flops(args.batch_size, args.units, args.units, dev)
    model.eval()
    x = feats[utts[0]]
    t0 = time.perf_counter()
    reps = 0
    while time.perf_counter() - t0 < 1.0:
        model.loglikes(x)
        reps += 1
    score_rtf = (time.perf_counter() - t0) / (reps * x.shape[0] * 0.01)
    out = {"device": str(dev), "threads": args.threads, "net": f"440-{'-'.join([str(args.units)] * args.layers)}-{args.pdfs}",
           "train_frames": train.num_frames, "train_seconds": round(wall, 2),
           "train_frames_per_s": round(train.num_frames / wall, 1),
           "achieved_gflops": round(flops / wall / 1e9, 2), "matmul_gflops": round(peak / 1e9, 2),
           "fraction_of_matmul_rate": round(flops / wall / peak, 3), "scoring_rtf": round(score_rtf, 5)}
    if args.model and args.graph and args.data:
        from asr.nnet.stages import run_decode

        with tempfile.TemporaryDirectory() as d:
            from asr.nnet.io import load_features

            audio_s = sum(v.shape[0] for v in load_features(args.data).values()) * 0.01
            t0 = time.perf_counter()
            run_decode(args.model, args.graph, args.data, d, nj=args.nj, lmwt=10.0)
            out["decode_rtf"] = round((time.perf_counter() - t0) / audio_s, 4)
            out["decode_audio_s"] = round(audio_s, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
