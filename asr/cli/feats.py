"""``asr feats DATA_DIR --type {mfcc,fbank} [--nj N]``: features + per-speaker CMVN stats."""
from __future__ import annotations

import argparse

from asr.features.compute import FEAT_TYPES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "feats", help="compute Kaldi-compatible MFCC/fbank features and CMVN stats",
        description="Writes DATA_DIR/feats.scp, cmvn.scp, feats.json and DATA_DIR/data/*.ark.")
    p.add_argument("data_dir", help="Kaldi-style data directory with wav.scp and utt2spk")
    p.add_argument("--type", dest="feat_type", choices=FEAT_TYPES, default="mfcc",
                   help="feature type (default mfcc: 13 cepstra with energy; fbank: 40 log-mel)")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs, split by speaker (default 1)")
    p.add_argument("--sample-rate", type=int, default=16000,
                   help="required sample rate in Hz; 0 accepts any (default 16000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asr.features.io import make_feats

    meta = make_feats(args.data_dir, args.feat_type, nj=args.nj,
                      sample_rate=args.sample_rate or None, progress=True)
    print(f"asr feats: {args.data_dir}: {meta['num_utts']} utterances, {meta['num_speakers']} speakers, "
          f"{meta['num_frames']} frames of {meta['type']} (dim {meta['dim']})")
    return 0
