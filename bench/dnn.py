"""Benchmark of the hybrid DNN: DBN pretraining (CD-1 per RBM) and CE training throughput per layer
size, each as a share of the float32 matmul rate measured in the same run at the same shapes (so a
shared or throttled machine still gives comparable ratios), plus the real-time factor of scoring
(and of decoding when a model, graph and data dir are given).

    .venv/bin/python bench/dnn.py [--frames 20000 --units 512,1024 --layers 3 --pdfs 1500 --threads 2
        --flush-denormals 1 --precision float32]
        [--model exp/dnn --graph exp/tri3/graph --data data/dev_fbank]   # + decoding RTF
Prints one JSON object. FLOPs counted: CD-1 = 5 GEMMs of 2·B·D·H per minibatch (positive hidden
probabilities, reconstruction, negative hidden probabilities, two weight statistics); CE = forward
2·W, weight gradients 2·W and input gradients 2·W of every layer but the first, per frame.
With ``--precision bfloat16`` (or ``auto``: bfloat16 where the hardware has it) the products run in
bfloat16 with float32 parameters (asr.jobs.device); the reference stays the float32 matmul, so a
share above 1 is the mixed-precision speed-up over float32 GEMM.
The matmul reference of a layer is measured just before and just after it runs, at (batch x D) @ (D x H)
(CE: at (batch x units) @ (units x units)), and their mean is used.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from asr.jobs.device import PRECISIONS, choose_precision, flush_denormals
from asr.nnet import CETrainConfig, HybridDNN, NetConfig, build_frame_data, train_ce
from asr.nnet.pretrain import PretrainConfig, pretrain_dbn_on_frames
from asr.nnet.synthetic import synth_corpus


def matmul_flops(m: int, k: int, n: int, device: torch.device, seconds: float = 1.0) -> tuple[float, float]:
    """Measured float32 GEMM rate of an (m x k) @ (k x n) product: (FLOP per wall second, FLOP per
    process CPU second). On a shared CPU the second is the steadier one: it does not count time
    the process waited for a core (but it does count OpenMP spin-waiting with > 1 thread)."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    reps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        if device.type == "cuda" and reps % 50 == 0:
            torch.cuda.synchronize()
    if device.type == "cuda":
        torch.cuda.synchronize()
    flops = 2.0 * m * k * n * reps
    return flops / (time.perf_counter() - t0), flops / max(time.process_time() - c0, 1e-9)


def _rates(flops: float, secs: float, cpu_secs: float, before: tuple[float, float],
           after: tuple[float, float]) -> dict:
    """Achieved rate and its share of the matmul reference (the mean of the references measured
    just before and just after the work: a shared machine's speed drifts)."""
    ref = ((before[0] + after[0]) / 2, (before[1] + after[1]) / 2)
    return {"gflops": round(flops / secs / 1e9, 2), "matmul_gflops": round(ref[0] / 1e9, 2),
            "matmul_gflops_before_after": [round(before[0] / 1e9, 2), round(after[0] / 1e9, 2)],
            "share_of_matmul": round(flops / secs / ref[0], 3),
            "share_of_matmul_cpu_time": round(flops / cpu_secs / ref[1], 3)}


def bench_dbn(train, units: int, layers: int, batch: int, dev: torch.device, ref_s: float,
              precision: str = "float32") -> list[dict]:
    """Pretrain a ``layers`` x ``units`` DBN for one epoch per RBM; one record per RBM."""
    cfg = PretrainConfig(hidden=(units,) * layers, epochs=1, gaussian_epoch_factor=1, batch_size=batch, seed=1,
                         precision=precision)
    mean, var = train.spliced_moments()
    dims = [train.index.shape[1] * train.feats.shape[1], *cfg.hidden]
    rows: list[dict] = []
    marks = [time.perf_counter()]
    before = [matmul_flops(batch, dims[0], dims[1], dev, ref_s)]

    def cb(layer: int, epoch: int, m: dict, rbm) -> None:
        end = time.perf_counter()
        d, h = rbm.n_visible, rbm.n_hidden
        after = matmul_flops(batch, d, h, dev, ref_s)
        rows.append({"layer": layer, "shape": f"{d}x{h}", "frames": m["frames"],
                     "seconds": round(m["seconds"], 2), "cpu_seconds": round(m["cpu_seconds"], 2),
                     "setup_seconds": round(end - marks[-1] - m["seconds"], 2),   # input lifting, bias init
                     "frames_per_s": round(m["frames"] / m["seconds"], 1),
                     **_rates(10.0 * d * h * m["frames"], m["seconds"], m["cpu_seconds"], before[-1], after),
                     "guard": m["guard"]})
        if layer < len(dims) - 1:
            before.append(matmul_flops(batch, dims[layer], dims[layer + 1], dev, ref_s))
        marks.append(time.perf_counter())

    pretrain_dbn_on_frames(train, mean, var, cfg, dev, callback=cb)
    return rows


def bench_ce(train, cv, units: int, layers: int, pdfs: int, batch: int, dev: torch.device, ref_s: float,
             precision: str = "float32") -> dict:
    """One CE epoch of a ``layers`` x ``units`` sigmoid DNN."""
    model = HybridDNN(NetConfig(40, pdfs, (units,) * layers, 5, 5))
    model.set_normalisation(*train.spliced_moments())
    ws = [m.weight.numel() for m in model.body if isinstance(m, torch.nn.Linear)]
    before = matmul_flops(batch, units, units, dev, ref_s)
    with tempfile.TemporaryDirectory() as d:
        res = train_ce(model, train, cv, CETrainConfig(max_epochs=1, min_epochs=1, batch_size=batch,
                                                                precision=precision), d, dev,
                       log=lambda s: None)
    after = matmul_flops(batch, units, units, dev, ref_s)
    rec = res.history[-1]                              # the training pass (no CV passes)
    flops = (4.0 * sum(ws) + 2.0 * sum(ws[1:])) * train.num_frames
    return {"net": f"440-{'-'.join([str(units)] * layers)}-{pdfs}", "frames": train.num_frames,
            "seconds": round(rec["seconds"], 2), "cpu_seconds": round(rec["cpu_seconds"], 2),
            "frames_per_s": round(train.num_frames / rec["seconds"], 1),
            **_rates(flops, rec["seconds"], rec["cpu_seconds"], before, after)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--units", default="512,1024", help="comma-separated layer sizes to measure")
    ap.add_argument("--pdfs", type=int, default=1500)
    ap.add_argument("--rbm-batch-size", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ref-seconds", type=float, default=1.0, help="duration of each matmul reference")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: dbn,ce,score")
    ap.add_argument("--model", default=None)
    ap.add_argument("--graph", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--nj", type=int, default=1)
    ap.add_argument("--flush-denormals", type=int, choices=(0, 1), default=1,
                    help="1: as every asr command (asr.jobs.device.flush_denormals); 0: the CPU's default")
    ap.add_argument("--precision", choices=PRECISIONS, default="float32",
                    help="products of DBN and CE training (auto: bfloat16 where the hardware has it)")
    args = ap.parse_args()
    if args.flush_denormals:
        flush_denormals()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    precision = choose_precision(args.precision, dev)
    skip = set(filter(None, args.skip.split(",")))
    n_utts = max(2, args.frames // 300)
    feats, alis = synth_corpus(n_utts, args.pdfs, 40, seed=0, seg_frames=(5, 15), segs=(20, 40))
    utts = sorted(feats)
    train = build_frame_data(feats, alis, 5, 5, args.pdfs, utts=utts[: max(1, int(0.9 * len(utts)))])
    cv = build_frame_data(feats, alis, 5, 5, args.pdfs, utts=utts[int(0.9 * len(utts)):])
    out: dict = {"device": str(dev), "threads": args.threads, "flush_denormals": args.flush_denormals,
                 "precision": precision,
                 "train_frames": train.num_frames,
                 "torch": torch.__version__}
    for units in (int(u) for u in args.units.split(",")):
        if "dbn" not in skip:
            out[f"dbn_{units}"] = bench_dbn(train, units, args.layers, args.rbm_batch_size, dev, args.ref_seconds,
                                         precision)
        if "ce" not in skip:
            out[f"ce_{units}"] = bench_ce(train, cv, units, args.layers, args.pdfs, args.batch_size, dev,
                                          args.ref_seconds, precision)
    if "score" not in skip:
        model = HybridDNN(NetConfig(40, args.pdfs, (512,) * args.layers, 5, 5)).eval()
        x = feats[utts[0]]
        t0, reps = time.perf_counter(), 0
        while time.perf_counter() - t0 < 1.0:
            model.loglikes(x)
            reps += 1
        out["scoring_rtf"] = round((time.perf_counter() - t0) / (reps * x.shape[0] * 0.01), 5)
    if args.model and args.graph and args.data:
        from asr.nnet.io import load_features
        from asr.nnet.stages import run_decode

        with tempfile.TemporaryDirectory() as d:
            audio_s = sum(v.shape[0] for v in load_features(args.data).values()) * 0.01
            t0 = time.perf_counter()
            run_decode(args.model, args.graph, args.data, d, nj=args.nj, lmwt=10.0)
            out["decode_rtf"] = round((time.perf_counter() - t0) / audio_s, 4)
            out["decode_audio_s"] = round(audio_s, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
