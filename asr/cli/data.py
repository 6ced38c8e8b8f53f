"""``asr data timit CORPUS_DIR OUT_DIR [--skip-bad]``, ``asr data validate DATA_DIR`` and
``asr data perturb SRC DST --speed F``."""
from __future__ import annotations

import argparse
import logging

from asr.cli.common import args_record


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="prepare / validate Kaldi-style data directories")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    t = sub.add_parser("timit", help="LDC TIMIT layout -> OUT_DIR/{train,dev,test}",
                       description="Read TRAIN|TEST/DR*/<SPK>/<UTT>.{WAV,PHN,WRD,TXT} (any case), "
                       "exclude SA sentences, split train / dev (50 speakers) / core test "
                       "(24 speakers) and write Kaldi data directories.")
    t.add_argument("corpus_dir", metavar="CORPUS_DIR")
    t.add_argument("out_dir", metavar="OUT_DIR")
    t.add_argument("--skip-bad", action="store_true",
                   help="skip unusable utterances with a warning instead of failing")
    t.set_defaults(func=_timit)
    v = sub.add_parser("validate", help="check a data directory (sorting, consistency, phones)")
    v.add_argument("data_dir", metavar="DATA_DIR")
    v.add_argument("--no-wav-check", action="store_true", help="do not check that wavs exist")
    v.set_defaults(func=_validate)
    s = sub.add_parser("perturb", help="speed-perturbed copy of a data directory (Kaldi perturb_data_dir_speed.sh)",
                       description="Write DST: SRC's audio played F times faster (tempo and pitch; "
                       "duration / F) as 16-bit WAV files, utterances and speakers renamed sp<F>-..., "
                       "with utt2orig naming each copy's source utterance.")
    s.add_argument("src", metavar="SRC")
    s.add_argument("dst", metavar="DST")
    s.add_argument("--speed", type=float, required=True, help="speed factor, e.g. 0.9 or 1.1")
    s.set_defaults(func=_perturb)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _timit(args: argparse.Namespace) -> int:
    from asr.corpus.timit import prepare_timit
    from asr.jobs.stage import clear_done, mark_done

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    clear_done(args.out_dir)
    dirs = prepare_timit(args.corpus_dir, args.out_dir, skip_bad=args.skip_bad)
    mark_done(args.out_dir, {"cmd": "data timit", **args_record(args)})
    for name, dd in dirs.items():
        hours = sum(dd.utt2dur.values()) / 3600
        print(f"{args.out_dir}/{name}: {len(dd.utt2spk)} utterances, {len(dd.spk2gender)} "
              f"speakers, {sum(len(t) for t in dd.text.values())} phones, {hours:.2f} h")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from asr.datadir import validate_data_dir

    dd = validate_data_dir(args.data_dir, check_wavs=not args.no_wav_check)
    print(f"{args.data_dir}: OK ({len(dd.utt2spk)} utterances, {len(dd.spk2utt)} speakers)")
    return 0


def _perturb(args: argparse.Namespace) -> int:
    from asr.datadir.perturb import perturb_data_dir

    dd = perturb_data_dir(args.src, args.dst, args.speed)
    print(f"{args.dst}: {len(dd.utt2spk)} utterances at speed {args.speed:g}, "
          f"{sum(dd.utt2dur.values()) / 3600:.2f} h")
    return 0
