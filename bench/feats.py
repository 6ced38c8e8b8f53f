#!/usr/bin/env python
"""Feature extraction speed (x real-time) of ``asr.features.make_feats`` with nj=1 and nj=2.

Usage: ``python bench/feats.py [DATA_DIR] [--type mfcc|fbank] [--minutes M]``. Without DATA_DIR a
synthetic data directory (16 kHz, 16-bit WAV, 8 speakers, 3 s utterances, ``--minutes`` of audio
in total) is written to a temporary directory. The data dir is copied per run so the input is
never modified. x real-time = seconds of audio / wall-clock seconds (higher is faster); also the
cost of one audio second in units of the reference matmul measured in the same run
(``bench/reference.py``, with the same thread count as the job: one).
"""
from __future__ import annotations

import argparse
import os
import sys
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr.features import compute_features, make_feats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import Reference  # noqa: E402


def synth_data_dir(root: Path, minutes: float, seed: int = 0) -> float:
    """Write a synthetic data dir (wav.scp, utt2spk, WAVs); returns total audio seconds."""
    rng = np.random.default_rng(seed)
    n_utt = max(8, int(minutes * 60 / 3.0))
    (root / "wav").mkdir(parents=True)
    wav, u2s, total = [], [], 0.0
    for k in range(n_utt):
        spk = f"spk{k % 8}"
        utt = f"{spk}_u{k:04d}"
        n = int(16000 * rng.uniform(2.0, 4.0))
        t = np.arange(n) / 16000
        x = 4000 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + rng.normal(0, 500, n)
        path = root / "wav" / f"{utt}.wav"
        sf.write(str(path), np.clip(x, -32768, 32767).astype(np.int16), 16000, subtype="PCM_16")
        wav.append(f"{utt} {path}\n")
        u2s.append(f"{utt} {spk}\n")
        total += n / 16000
    (root / "wav.scp").write_text("".join(sorted(wav)))
    (root / "utt2spk").write_text("".join(sorted(u2s)))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", nargs="?", help="existing data dir (default: synthetic)")
    ap.add_argument("--type", dest="feat_type", default="mfcc", choices=["mfcc", "fbank"])
    ap.add_argument("--minutes", type=float, default=10.0, help="synthetic audio length")
    ap.add_argument("--nj", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        if args.data_dir:
            src.mkdir()
            for name in ("wav.scp", "utt2spk"):
                shutil.copy(Path(args.data_dir) / name, src / name)
            seconds = None
        else:
            seconds = synth_data_dir(src, args.minutes)
        print(f"cores: {os.cpu_count()}  type: {args.feat_type}")
        compute_features(torch.zeros(16000), 16000, args.feat_type)  # warm-up (lazy init)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        ref = Reference("cpu")
        torch.set_num_threads(threads)
        for nj in args.nj:
            d = Path(tmp) / f"nj{nj}"
            shutil.copytree(src, d)
            t0 = time.perf_counter()
            meta = make_feats(d, args.feat_type, nj=nj, progress=False)
            wall = time.perf_counter() - t0
            audio = seconds if seconds is not None else meta["hours"] * 3600
            print(f"nj={nj}: {meta['num_utts']} utts, {audio / 60:.1f} min audio in {wall:.2f} s "
                  f"-> {audio / wall:.0f}x real-time = {ref.units(wall) * nj / audio:.2f} reference units "
                  f"per audio second per job")
        torch.set_num_threads(1)
        print(ref.finish().line())


if __name__ == "__main__":
    main()
