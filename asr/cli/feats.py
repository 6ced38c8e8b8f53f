"""``asr feats DATA_DIR [DATA_DIR ...] --type {mfcc,fbank} [--nj N]``: features + per-speaker CMVN stats.

Several data dirs in one call share one process start (a recipe's train/dev/test)."""
from __future__ import annotations

import argparse

from asr.features.compute import FEAT_TYPES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "feats", help="compute Kaldi-compatible MFCC/fbank features and CMVN stats",
        description="Writes DATA_DIR/feats.scp, cmvn.scp, feats.json and DATA_DIR/data/*.ark "
                    "for each DATA_DIR, in the order given.")
    p.add_argument("data_dirs", nargs="+", metavar="DATA_DIR",
                   help="Kaldi-style data directory with wav.scp and utt2spk (one or more)")
    p.add_argument("--type", dest="feat_type", choices=FEAT_TYPES, default="mfcc",
                   help="feature type (default mfcc: 13 cepstra with energy; fbank: 40 log-mel)")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs, split by speaker (default 1)")
    p.add_argument("--sample-rate", type=int, default=16000,
                   help="required sample rate in Hz; 0 accepts any (default 16000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr.features.io import make_feats
    from asr.jobs.stage import clear_done, mark_done

    for data_dir in args.data_dirs:
        out = Path(data_dir) / "data"
        clear_done(out)
        meta = make_feats(data_dir, args.feat_type, nj=args.nj,
                          sample_rate=args.sample_rate or None, progress=True)
        mark_done(out, {"cmd": "feats", "data_dir": str(data_dir), "type": args.feat_type,
                        "sample_rate": args.sample_rate})
        print(f"asr feats: {data_dir}: {meta['num_utts']} utterances, {meta['num_speakers']} speakers, "
              f"{meta['num_frames']} frames of {meta['type']} (dim {meta['dim']})")
    return 0
