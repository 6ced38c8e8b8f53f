"""``asr score REF HYP``: Kaldi's %WER line with sclite-compatible counts, per-speaker table,
bootstrap confidence interval and (``--compare``) matched-pairs significance."""
from __future__ import annotations

import argparse
import sys
import warnings

from asr.score import bootstrap_ci, fold39, foreign_tokens, matched_pairs, read_text, read_utt2spk, score


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score", help="score a hypothesis text against a reference text (%%WER / PER)",
        description="Align HYP to REF utterance by utterance (NIST sclite weights by default) "
                    "and print Kaldi's %%WER line.")
    p.add_argument("ref", help="reference text (utt-id tok tok ...)")
    p.add_argument("hyp", help="hypothesis text (utt-id tok tok ...)")
    p.add_argument("--map39", action="store_true", help="fold both sides 48 -> 39 phones first")
    p.add_argument("--plain", action="store_true",
                   help="plain Levenshtein counts (Kaldi compute-wer) instead of sclite's")
    p.add_argument("--compare", metavar="HYP2", help="second system: matched-pairs significance")
    p.add_argument("--utt2spk", metavar="FILE", help="print a per-speaker table")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap replicates for the 95%% interval (0: none; default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=run)


def _load(path: str, map39: bool) -> dict[str, list[str]]:
    text = read_text(path)
    if map39:
        from asr.lang.phones import load_phone_map

        pm = load_phone_map()
        out = {}
        for u, toks in text.items():
            try:
                out[u] = fold39(toks, pm)
            except ValueError as e:
                raise ValueError(f"{path}: utterance {u!r}: {e}") from None
        return out
    return text


def _hint(ref: dict[str, list[str]], foreign: dict[str, int], args: argparse.Namespace) -> str:
    """Name the likely cause when 48-set phones meet a 39-phone reference."""
    if args.map39:
        return ""
    from asr.lang.phones import load_phone_map

    pm = load_phone_map()
    only48 = set(pm.phones48) - set(pm.phones39)
    ref39 = all(t in pm.phones39 for toks in ref.values() for t in toks)
    if ref39 and any(t in only48 for t in foreign):
        return "; the hypothesis holds 48-set phones and the reference is 39-set: add --map39"
    return ""


def run(args: argparse.Namespace) -> int:
    method = "levenshtein" if args.plain else "sclite"
    ref = _load(args.ref, args.map39)
    systems = [args.hyp] + ([args.compare] if args.compare else [])
    results = []
    for path in systems:
        hyp = _load(path, args.map39)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = score(ref, hyp, method=method)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        for w in caught:
            print(f"asr score: warning: {path}: {w.message}", file=sys.stderr)
        foreign = foreign_tokens(ref, hyp)
        if foreign:
            print(f"asr score: warning: {path}: {sum(foreign.values())} hypothesis token(s) of {len(foreign)} "
                  f"type(s) never occur in the reference {args.ref} (each counts as an error): "
                  f"{', '.join(list(foreign)[:8])}{' ...' if len(foreign) > 8 else ''}{_hint(ref, foreign, args)}",
                  file=sys.stderr)
        results.append(res)
        print(res.wer_line(path))
        if args.bootstrap > 0:
            lo, hi = bootstrap_ci(res, n=args.bootstrap, seed=args.seed)
            print(f"  95% bootstrap interval ({args.bootstrap} replicates): [{lo:.2f}, {hi:.2f}]")
    if args.utt2spk:
        utt2spk = read_utt2spk(args.utt2spk)
        for path, res in zip(systems, results):
            print(f"\nper speaker: {path}")
            print(f"{'speaker':<12} {'#ref':>6} {'corr':>6} {'sub':>6} {'del':>6} {'ins':>6} {'err%':>7}")
            for spk, c in res.per_speaker(utt2spk).items():
                pct = 100.0 * c.errors / c.nref if c.nref else 0.0
                print(f"{spk:<12} {c.nref:>6} {c.corr:>6} {c.sub:>6} {c.dels:>6} {c.ins:>6} {pct:>7.2f}")
    if args.compare:
        mp = matched_pairs(results[0], results[1], n_boot=max(args.bootstrap, 1), seed=args.seed)
        better = args.compare if mp.mean_diff > 0 else args.hyp if mp.mean_diff < 0 else "neither"
        print(f"\nmatched pairs (utterance segments, n={mp.n}): mean error difference "
              f"{mp.mean_diff:+.3f} per utterance, Z={mp.z:.3f}, p={mp.p_value:.4g}; "
              f"better: {better}; P(improvement of {args.compare}) = {mp.prob_improvement:.3f}")
    return 0
