"""``asr lang {phones,words,graph}``: lang directories (L.fst, G.fst, ARPA LM) and HCLG graphs."""
from __future__ import annotations

import argparse
import warnings

from asr.cli.common import args_record


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lang", help="lang directories and decoding graphs",
                              description="Build lang directories (lexicon, ARPA n-gram, L.fst, "
                                          "G.fst) and HCLG decoding graphs.")
    sub = p.add_subparsers(dest="lang_command", metavar="SUBCOMMAND", required=True)

    ph = sub.add_parser("phones", help="phone-recognition lang dir (words = the 48 phones)")
    ph.add_argument("--text", required=True, help="48-phone transcripts (e.g. data/train/text)")
    ph.add_argument("--out", required=True, help="lang dir to write")
    ph.add_argument("--order", type=int, default=2, help="n-gram order (default 2: phone bigram)")
    ph.set_defaults(func=_phones)

    wd = sub.add_parser("words", help="word-recognition lang dir (<unk> for OOVs)")
    wd.add_argument("--lexicon", required=True, help="lexicon (word ph ph ...; 48-set phones)")
    wd.add_argument("--text", required=True, help="word transcripts (e.g. data/train/text.wrd)")
    wd.add_argument("--out", required=True, help="lang dir to write")
    wd.add_argument("--order", type=int, default=2, help="n-gram order (default 2)")
    wd.add_argument("--sil-prob", type=float, default=0.5,
                    help="optional-silence probability between words (default 0.5)")
    wd.set_defaults(func=_words)

    gr = sub.add_parser("graph", help="build HCLG.fst for a model (Kaldi mkgraph.sh)")
    gr.add_argument("--lang", required=True, help="lang dir")
    gr.add_argument("--model", required=True,
                    help="model file holding 'topo', 'ctx', 'trans' dicts (e.g. exp/mono/final.pt)")
    gr.add_argument("--out", required=True, help="graph dir to write (HCLG.fst, words.txt)")
    gr.add_argument("--self-loop-scale", type=float, default=0.1, help="default 0.1")
    gr.add_argument("--transition-scale", type=float, default=1.0, help="default 1.0")
    gr.set_defaults(func=_graph)


def _phones(args: argparse.Namespace) -> int:
    from asr.jobs.stage import clear_done, mark_done
    from asr.lang.langdir import make_phone_lang

    clear_done(args.out)
    out = make_phone_lang(args.text, args.out, order=args.order)
    mark_done(args.out, {"cmd": "lang phones", **args_record(args)})
    print(f"asr lang phones: wrote {out}")
    return 0


def _words(args: argparse.Namespace) -> int:
    from asr.jobs.stage import clear_done, mark_done
    from asr.lang.langdir import make_word_lang

    clear_done(args.out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = make_word_lang(args.lexicon, args.text, args.out, order=args.order,
                             sil_prob=args.sil_prob)
    mark_done(args.out, {"cmd": "lang words", **args_record(args)})
    for w in caught:
        print(f"asr lang words: warning: {w.message}")
    print(f"asr lang words: wrote {out}")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr.hmm import ContextDependency, Topology, TransitionModel
    from asr.jobs.safeio import load_data
    from asr.jobs.stage import clear_done, mark_done
    from asr.lang.graph import make_hclg

    path = Path(args.model)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist (train the system first)")
    d = load_data(path, what="model")
    if not isinstance(d, dict):
        raise ValueError(f"model {path} is not an HMM system file (a dict with topo, ctx, trans)")
    missing = [k for k in ("topo", "ctx", "trans") if k not in d]
    if missing:
        raise ValueError(f"model {path} lacks {missing}: not an HMM system file")
    clear_done(args.out)
    hclg = make_hclg(args.lang, ContextDependency.from_dict(d["ctx"]), Topology.from_dict(d["topo"]),
                     TransitionModel.from_dict(d["trans"]), args.out,
                     self_loop_scale=args.self_loop_scale, transition_scale=args.transition_scale)
    mark_done(args.out, {"cmd": "lang graph", **args_record(args)})
    print(f"asr lang graph: wrote {hclg}")
    return 0
