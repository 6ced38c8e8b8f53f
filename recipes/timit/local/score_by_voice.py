#!/usr/bin/env python3
"""Compare two systems of an experiment per level of one speaker factor (default: whether the
test speaker's TTS voice occurs among the training speakers), on dev and test: PER of each,
the relative error reduction and the matched-pairs p per level.

    .venv/bin/python recipes/timit/local/score_by_voice.py --exp exp --a dnn --b dnn_mpe [--factor voice]

A thin face of ``asr.report.conditions`` (``asr report`` writes the same numbers for every
factor and system into ``report.md``). Factors: those of ``DOC/SPEAKERS.TSV`` of a generated
corpus (``voice``, ``TTS engine``, ``noise type``, ``SNR``, ``reverberation``,
``telephone band``, ``channel``, ``gender``), or ``gender`` / ``dialect region`` for real TIMIT.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from asr.report.conditions import condition_rows, relative_error_reduction
from asr.report.provenance import read_run_info
from asr.report.speakers import speaker_table
from asr.report.systems import read_utt2spk_of, score_decode_dir
from asr.score import matched_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exp", type=Path, default=Path("exp"))
    ap.add_argument("--a", default="dnn", help="baseline system dir name")
    ap.add_argument("--b", default="dnn_mpe", help="compared system dir name")
    ap.add_argument("--factor", default="voice", help="speaker factor to split by (default: voice)")
    args = ap.parse_args()
    info = read_run_info(args.exp) or {}
    table = speaker_table(args.exp, info.get("corpus"))
    if table is None:
        raise SystemExit(f"{args.exp}: no speaker description (no corpus/DOC/SPEAKERS.TSV, no data dirs)")
    if args.factor not in table.factors:
        raise SystemExit(f"unknown factor {args.factor!r}; this corpus has: {', '.join(table.factors)}")
    for s in ("dev", "test"):
        ref = args.exp / "data" / s / "text.39"
        a = score_decode_dir(args.exp / args.a / f"decode_{s}", ref, n_boot=200)
        b = score_decode_dir(args.exp / args.b / f"decode_{s}", ref, n_boot=200)
        if a is None or b is None:
            raise SystemExit(f"{s}: {args.a} or {args.b} has no scored decode dir")
        rows = condition_rows({args.a: a.result, args.b: b.result}, read_utt2spk_of(args.exp, s), table, n_boot=200)
        for r in [rows[0]] + [r for r in rows if r.factor == args.factor]:
            ra, rb = r.results[args.a], r.results[args.b]
            rer = relative_error_reduction(ra.wer, rb.wer)
            print(f"{s} {r.level} ({r.speakers} speakers, {len(r.utts)} utts): {args.a} {ra.wer:.2f} -> "
                  f"{args.b} {rb.wer:.2f} ({rer:+.1f} % rel.), p = {matched_pairs(ra, rb).p_value:.3g}")


if __name__ == "__main__":
    main()
