"""Benchmark of the GMM acoustic model (issue 3).

1. E-step throughput: frames x Gaussians per second of ``DiagGmmSet.loglikes`` (one matmul of
   ``[x^2, x, 1]`` with the padded parameters + per-pdf logsumexp) next to ONE plain matmul of the
   same shape ``(T, 2D+1) x (2D+1, P*M)``; the ratio is the figure (1.0 = as fast as BLAS).
   Also the aligned-pdf E-step used in Viterbi training (``gauss_posteriors`` + accumulation).
2. Decoding real-time factor (optional): ``--model EXP --lang LANG --data DATA`` decodes the data
   dir with the system and reports decode seconds / audio seconds (10 ms frames), also in units
   of the reference matmul (``bench/reference.py``) per audio second.
Runs on the CPU and, where CUDA is present, on the GPU (``--device`` for one of them); each
device's figures come with its own reference measured in the same run.

    python bench/gmm.py [--frames 20000 --pdfs 1500 --gauss 8000 --dim 40] [--model exp/tri1 ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import Reference, devices  # noqa: E402


def _timeit(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def bench_estep(frames: int, pdfs: int, gauss: int, dim: int, reps: int, device: str) -> dict:
    from asr.gmm.model import DiagGmmSet, GmmAccs

    g = torch.Generator().manual_seed(0)
    # Kaldi-like mixture sizes: proportional to a random occupancy^0.2.
    share = torch.rand(pdfs, generator=g) ** 0.2 * 0.8 + 0.2
    n = torch.clamp((share / share.sum() * gauss).round().long(), min=1)
    g2p = torch.repeat_interleave(torch.arange(pdfs), n)
    G = g2p.numel()
    m = DiagGmmSet(torch.randn(G, dim, generator=g), torch.rand(G, dim, generator=g) + 0.5,
                   torch.full((G,), -2.0), g2p, pdfs).to(device)
    x = torch.randn(frames, dim, generator=g).to(device)
    aug = torch.randn(frames, 2 * dim + 1, generator=g).to(device)
    w = torch.randn(2 * dim + 1, pdfs * m.max_comp, generator=g).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def full():
        m.loglikes(x)
        sync()

    def plain():
        aug @ w
        sync()

    pdf_ali = torch.randint(0, pdfs, (frames,), generator=g).to(device)

    def viterbi_estep():
        accs = GmmAccs.zeros(m.num_gauss, dim, device)
        m.accumulate(accs, x, pdf_ali)
        sync()

    t_full, t_plain, t_ali = _timeit(full, reps), _timeit(plain, reps), _timeit(viterbi_estep, reps)
    return {"frames": frames, "pdfs": pdfs, "gauss": G, "max_comp": m.max_comp, "dim": dim,
            "loglikes_s": t_full, "matmul_s": t_plain,
            "loglikes_frame_gauss_per_s": frames * G / t_full,
            "matmul_frame_gauss_per_s": frames * G / t_plain,
            "matmul_padded_cols": pdfs * m.max_comp,
            "ratio_loglikes_over_matmul": t_full / t_plain,
            "aligned_estep_s": t_ali, "aligned_estep_frames_per_s": frames / t_ali}


def bench_decode(model: str, lang: str, data: str, out: str, nj: int) -> dict:
    from asr.gmm.decode import decode_system
    from asr.gmm.system import load_system

    sys_ = load_system(model)
    feats = sys_.features(data)
    frames = sum(int(f.shape[0]) for f in feats.values())
    t = time.perf_counter()
    res = decode_system(model, lang, data, out, nj=nj)
    dt = time.perf_counter() - t
    return {"decode_s": dt, "audio_s": frames / 100.0, "rtf": dt / (frames / 100.0), "wer_line": res.wer_line(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--pdfs", type=int, default=1500)
    ap.add_argument("--gauss", type=int, default=8000)
    ap.add_argument("--dim", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None, help="default: cpu, and cuda where present")
    ap.add_argument("--model")
    ap.add_argument("--lang")
    ap.add_argument("--data")
    ap.add_argument("--out", default=None, help="decode dir (default MODEL/decode_bench)")
    ap.add_argument("--nj", type=int, default=1)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    for dev in devices(a.device):
        ref = Reference(dev)
        r = bench_estep(a.frames, a.pdfs, a.gauss, a.dim, a.reps, dev)
        print(f"E-step on {dev} ({torch.get_num_threads()} threads): T={r['frames']} frames, "
              f"{r['gauss']} Gaussians in {r['pdfs']} pdfs (max {r['max_comp']} per pdf), D={r['dim']}")
        print(f"  loglikes (matmul + per-pdf logsumexp): {r['loglikes_s']:.3f} s = "
              f"{r['loglikes_frame_gauss_per_s']:.3e} frame*Gaussian/s")
        print(f"  plain matmul ({r['frames']}x{2 * r['dim'] + 1}) @ ({2 * r['dim'] + 1}x{r['matmul_padded_cols']}): "
              f"{r['matmul_s']:.3f} s = {r['matmul_frame_gauss_per_s']:.3e} frame*Gaussian/s")
        print(f"  ratio loglikes / matmul time: {r['ratio_loglikes_over_matmul']:.2f}")
        print(f"  aligned-pdf E-step (Viterbi training: posteriors + accumulation): {r['aligned_estep_s']:.3f} s "
              f"= {ref.units(r['aligned_estep_s']) / r['frames'] * 1e3:.2f} reference units per 1000 frames")
        if a.model and dev == "cpu":
            if not (a.lang and a.data):
                ap.error("--model needs --lang and --data")
            d = bench_decode(a.model, a.lang, a.data, a.out or f"{a.model}/decode_bench", a.nj)
            print(f"decode: {d['decode_s']:.1f} s for {d['audio_s']:.1f} s of audio: RTF {d['rtf']:.3f} = "
                  f"{ref.units(d['decode_s']) / d['audio_s']:.1f} reference units per audio second  ({d['wer_line']})")
        print("  " + ref.finish().line())


if __name__ == "__main__":
    main()
