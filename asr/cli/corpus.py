"""``asr corpus synth OUT_DIR --size {tiny,small,default,full} --seed N [--nj N]``."""
from __future__ import annotations

import argparse
import json
import time

from asr.cli.common import args_record


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("corpus", help="generate corpora")
    sub = p.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND")
    s = sub.add_parser("synth", help="generate a TIMIT-layout corpus with offline TTS engines",
                       description="Write OUT_DIR/{TRAIN,TEST}/DR*/<SPK>/<UTT>.{WAV,PHN,WRD,TXT} "
                       "(NIST SPHERE 16 kHz 16-bit) with espeak-ng, flite and festival voices under noise, "
                       "reverberation and telephone band-limiting. Same size+seed -> identical files.")
    s.add_argument("out_dir", metavar="OUT_DIR")
    from asr.corpus.synth.config import SIZES

    s.add_argument("--size", choices=list(SIZES), default="default",
                   help="speakers train/dev/test: " + ", ".join(
                       f"{k}={v.train}/{v.dev}/{v.test}" for k, v in SIZES.items()))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--speakers", metavar="TRAIN/DEV/TEST", default=None,
                   help="speaker counts overriding --size, e.g. 60/12/24 (dev <= 50, test <= 24)")
    s.add_argument("--engines", default=None,
                   help="comma-separated TTS engines to draw voices from (espeak,flite,festival); default all")
    s.add_argument("--nj", type=int, default=2, help="parallel jobs (processes)")
    s.set_defaults(func=_synth)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _synth(args: argparse.Namespace) -> int:
    from asr.corpus.synth import SynthConfig, generate_corpus
    from asr.jobs.stage import clear_done, mark_done

    if args.nj < 1:
        raise ValueError("--nj must be >= 1")
    t0 = time.time()
    from asr.corpus.synth.config import CorpusSize

    speakers = None
    if args.speakers:
        try:
            speakers = CorpusSize(*(int(n) for n in args.speakers.split("/")))
        except (TypeError, ValueError):
            raise ValueError(f"--speakers {args.speakers!r}: expected TRAIN/DEV/TEST, e.g. 60/12/24") from None
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip()) if args.engines else None
    cfg = SynthConfig(size=args.size, seed=args.seed, speakers=speakers, engines=engines)
    clear_done(args.out_dir)
    facts = generate_corpus(args.out_dir, cfg, nj=args.nj)
    mark_done(args.out_dir, {"cmd": "corpus synth", **args_record(args)})
    facts["wall_seconds"] = round(time.time() - t0, 1)
    facts["hours"] = round(float(facts["seconds"]) / 3600, 3)  # type: ignore[arg-type]
    print(json.dumps(facts, indent=1))
    return 0
