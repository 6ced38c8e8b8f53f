"""``asr gmm {mono,tri1,tri2,tri3,align,decode}``: GMM-HMM training stages, alignment, decoding."""
from __future__ import annotations

import argparse
import dataclasses
import time

from asr.cli.decode import add_beam_args, add_scoring_args, beam_kwargs, scoring_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gmm", help="GMM-HMM stages: mono, tri1 (deltas), tri2 (LDA+MLLT), tri3 (SAT)")
    sub = p.add_subparsers(dest="gmm_command", metavar="STAGE")
    for stage, helptext in (("mono", "monophones, flat start (train_mono.sh)"),
                            ("tri1", "tree-tied triphones on deltas (train_deltas.sh)"),
                            ("tri2", "LDA+MLLT triphones (train_lda_mllt.sh)"),
                            ("tri3", "SAT with per-speaker fMLLR (train_sat.sh)")):
        s = sub.add_parser(stage, help=helptext)
        s.add_argument("--data", required=True, help="training data dir (with feats.scp, cmvn.scp)")
        s.add_argument("--lang", required=True, help="lang dir (phone set check; decoding)")
        if stage != "mono":
            s.add_argument("--ali", required=True, help="finished previous stage (its alignments and model)")
        s.add_argument("--out", required=True, help="experiment dir to write")
        s.add_argument("--nj", type=int, default=1, help="parallel jobs (split by speaker)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--iters", type=int, default=None, help="EM iterations")
        s.add_argument("--gauss", type=int, default=None, help="target total number of Gaussians")
        if stage != "mono":
            s.add_argument("--leaves", type=int, default=None, help="target number of tree leaves (pdfs)")
        s.add_argument("--device", choices=("cpu", "cuda"), default=None,
                       help="default: cuda when available, else cpu")
        if stage == "tri3":
            s.add_argument("--align-fmllr", action="store_true",
                           help="re-estimate the training speakers' fMLLR for the final model from an alignment "
                                "model pass and realign on it (Kaldi align_fmllr.sh after train_sat.sh)")
        s.set_defaults(func=_train, stage=stage)
    a = sub.add_parser("align", help="force-align a data dir's transcripts with a trained system")
    a.add_argument("--model", required=True)
    a.add_argument("--data", required=True)
    a.add_argument("--out", required=True)
    a.set_defaults(func=_align)
    d = sub.add_parser("decode", help="decode and score a data dir (two passes for SAT)")
    d.add_argument("--model", required=True)
    d.add_argument("--lang", required=True)
    d.add_argument("--data", required=True)
    d.add_argument("--out", required=True, help="e.g. EXP/decode_test")
    d.add_argument("--lmwt-from", default=None, help="dev decode dir whose best_lmwt to apply (test sets)")
    d.add_argument("--nj", type=int, default=1)
    add_beam_args(d, " of the final pass (SAT: of the adapted pass whose lattices are rescored; the first pass "
                     "keeps decode_fmllr.sh's 10 / 4)")
    d.add_argument("--acwt", type=float, default=None,
                   help="acoustic scale of a speaker-independent system's search (default 0.1; Kaldi's decode.sh "
                        "1/12); SAT systems keep decode_fmllr.sh's 1/12 in every pass")
    d.add_argument("--mode", choices=("phone", "word"), default=None, help="default: from the lang dir")
    d.add_argument("--transform-dir", default=None,
                   help="SAT systems: use this decode dir's trans.pt (per-speaker fMLLR) instead of "
                        "estimating transforms in two adaptation passes (Kaldi --transform-dir)")
    d.add_argument("--final-search", action="store_true",
                   help="SAT systems: decode the adapted features once more for the final hypotheses instead of "
                        "rescoring the adapted pass's lattices with the final transforms (Kaldi decode_fmllr.sh)")
    add_scoring_args(d)
    d.set_defaults(func=_decode)
    f = sub.add_parser("fmllr-feats", help="write a SAT system's LDA+MLLT+fMLLR features as a data dir (DNN input)")
    f.add_argument("--model", required=True, help="SAT exp dir (e.g. exp/tri3)")
    f.add_argument("--data", required=True, help="MFCC data dir")
    f.add_argument("--out", required=True, help="data dir to write")
    f.add_argument("--trans", default=None,
                   help="per-speaker transforms (e.g. exp/tri3/decode_dev/trans.pt); default: the training ones")
    f.set_defaults(func=_fmllr_feats)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _fmllr_feats(args: argparse.Namespace) -> int:
    from asr.gmm.fmllr_feats import write_fmllr_feats

    meta = write_fmllr_feats(args.model, args.data, args.out, args.trans)
    print(f"asr gmm fmllr-feats: {meta['num_utts']} utterances, {meta['num_frames']} frames "
          f"of {meta['dim']}-dim fMLLR features -> {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from asr.gmm.stages import RUNNERS, STAGE_CONFIGS

    cfg = STAGE_CONFIGS[args.stage]()
    over = {"total_gauss": args.gauss, "num_leaves": getattr(args, "leaves", None),
            "align_fmllr": True if getattr(args, "align_fmllr", False) else None}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in over.items() if v is not None})
    if args.iters is not None:
        cfg = cfg.with_iters(args.iters)
    if args.nj < 1:
        raise ValueError("--nj must be >= 1")
    t0 = time.time()
    kw = dict(cfg=cfg, nj=args.nj, seed=args.seed, device=args.device)
    if args.stage == "mono":
        sys_ = RUNNERS["mono"](args.data, args.lang, args.out, **kw)
    else:
        sys_ = RUNNERS[args.stage](args.data, args.lang, args.ali, args.out, **kw)
    print(f"asr gmm {args.stage}: {sys_.num_pdfs} pdfs, {sys_.gmm.num_gauss} Gaussians, "
          f"{time.time() - t0:.1f} s -> {args.out}")
    return 0


def _align(args: argparse.Namespace) -> int:
    from asr.gmm.decode import align_system

    align_system(args.model, args.data, args.out)
    return 0


def _decode(args: argparse.Namespace) -> int:
    from asr.decode import DecodeConfig
    from asr.gmm.decode import decode_system
    from asr.gmm.fmllr_decode import FmllrDecodeConfig

    acwt = {} if args.acwt is None else {"acwt": args.acwt}
    cfg = DecodeConfig(**beam_kwargs(args), **acwt, **scoring_kwargs(args))
    t0 = time.time()
    res = decode_system(args.model, args.lang, args.data, args.out, nj=args.nj, lmwt_from=args.lmwt_from,
                        cfg=cfg, mode=args.mode, transform_dir=args.transform_dir,
                        fmllr_cfg=FmllrDecodeConfig(rescore=not args.final_search))
    print(res.wer_line(args.out), f"({time.time() - t0:.1f} s)")
    return 0
