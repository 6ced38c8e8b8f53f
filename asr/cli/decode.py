"""``asr decode loglikes``: decode Kaldi matrices of log-likelihoods over an HCLG graph, choose
(or apply) the LM weight and score (Kaldi ``decode.sh`` + ``score.sh``).

There is no ``--max-active``: the lattice decoder (kaldi-decoder's ``LatticeSimpleDecoder``) has
no cap on active states, and an option it would ignore is not offered."""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path


def _grid(text: str) -> tuple[float, ...]:
    """``"1:20"`` (integers lo..hi) or ``"4,8,12.5"``."""
    if ":" in text:
        lo, hi = (int(x) for x in text.split(":"))
        return tuple(float(x) for x in range(lo, hi + 1))
    return tuple(float(x) for x in text.split(","))


def add_scoring_args(p: argparse.ArgumentParser) -> None:
    """``--mbr`` / ``--no-mbr`` / ``--mbr-beam``: how lattices are turned into hypotheses
    (``DecodeConfig``)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mbr", dest="mbr", action="store_true", default=False,
                   help="score each lattice's minimum-Bayes-risk hypothesis, as Kaldi's TIMIT score.sh "
                        "(about 8x the scoring time; no gain measured on phone recognition)")
    g.add_argument("--no-mbr", dest="mbr", action="store_false",
                   help="score each lattice's best path (the default)")
    p.add_argument("--mbr-beam", type=float, default=None,
                   help="beam of the word lattice MBR decodes (default: the lattice beam, as Kaldi)")


def add_beam_args(p: argparse.ArgumentParser, what: str = "") -> None:
    """``--beam`` / ``--lattice-beam`` of the lattice search (``DecodeConfig``; unset: its
    defaults, 13 and 6 as Kaldi's ``decode.sh``). ``what`` names the decodes they apply to."""
    p.add_argument("--beam", type=float, default=None,
                   help=f"search beam{what} (default 13, Kaldi's decode.sh)")
    p.add_argument("--lattice-beam", type=float, default=None,
                   help=f"lattice beam{what} (default 6, Kaldi's decode.sh)")


def beam_kwargs(args: argparse.Namespace) -> dict:
    """``DecodeConfig`` fields from ``add_beam_args``'s options that were given."""
    return {k: v for k in ("beam", "lattice_beam") if (v := getattr(args, k, None)) is not None}


def scoring_kwargs(args: argparse.Namespace) -> dict:
    """``DecodeConfig`` fields from ``add_scoring_args``'s options."""
    return {"mbr": args.mbr, "mbr_beam": args.mbr_beam}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("decode", help="WFST decoding of log-likelihood matrices",
                              description="Decode per-utterance log-likelihood matrices with "
                                          "kaldi-decoder over HCLG and score the result.")
    sub = p.add_subparsers(dest="decode_command", metavar="SUBCOMMAND", required=True)
    d = sub.add_parser("loglikes", help="decode a Kaldi ark/scp of (T, num_pdfs) log-likelihoods")
    d.add_argument("--graph", required=True, help="graph dir (HCLG.fst, words.txt, graph.json)")
    d.add_argument("--data", required=True, help="data dir (utt2spk, text.39 or text.wrd)")
    d.add_argument("--loglikes", required=True, help="Kaldi matrix .ark or .scp")
    d.add_argument("--out", required=True, help="decode dir to write")
    d.add_argument("--mode", choices=["phone", "word"], default=None,
                   help="scoring mode (default: the graph's lang mode)")
    d.add_argument("--acwt", type=float, default=0.1, help="acoustic scale (default 0.1)")
    d.add_argument("--beam", type=float, default=13.0, help="search beam (default 13)")
    d.add_argument("--lattice-beam", type=float, default=6.0, help="lattice beam (default 6)")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--lmwt", type=float, default=None,
                   help="LM weight to apply (test sets: the dev set's best_lmwt)")
    g.add_argument("--lmwt-grid", type=_grid, default=None,
                   help="LM weights to try and choose from, e.g. 1:20 (dev sets; default 1:20)")
    d.add_argument("--nj", type=int, default=1, help="parallel jobs (split by speaker)")
    add_scoring_args(d)
    d.set_defaults(func=_loglikes)


def _loglikes(args: argparse.Namespace) -> int:
    from asr.decode import DecodeConfig, decode_and_score
    from asr.decode.pipeline import loglikes_from_kaldi

    if not Path(args.loglikes).is_file():
        raise FileNotFoundError(f"log-likelihood file {args.loglikes} does not exist")
    mode = args.mode
    if mode is None:
        meta = Path(args.graph) / "graph.json"
        mode = json.loads(meta.read_text())["mode"] if meta.is_file() else "phone"
    kw = {"lmwt_grid": args.lmwt_grid} if args.lmwt_grid else {}
    cfg = DecodeConfig(acwt=args.acwt, beam=args.beam, lattice_beam=args.lattice_beam, **kw, **scoring_kwargs(args))
    job = functools.partial(loglikes_from_kaldi, args.loglikes)
    res = decode_and_score(args.graph, args.data, args.out, job, cfg, nj=args.nj, lmwt=args.lmwt,
                           mode=mode)
    print(res.wer_line(args.out))
    return 0
