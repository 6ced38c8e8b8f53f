"""``asr seq lattices`` / ``asr seq train``: sequence-discriminative training (MPE / MPFE / sMBR / MMI /
bMMI) of a CE DNN (issue 6)."""
from __future__ import annotations

import argparse
from pathlib import Path

from asr.cli.common import args_record
from asr.cli.decode import add_beam_args, beam_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("seq", help="sequence training: MPE / MPFE / sMBR / MMI / boosted MMI of the hybrid DNN, "
                                            "boosted MMI of a GMM system")
    sub = p.add_subparsers(dest="seq_command", metavar="COMMAND")
    lt = sub.add_parser("lattices", help="denominator lattices of the training data from the CE model")
    lt.add_argument("--model", required=True, help="CE model dir (exp/dnn)")
    lt.add_argument("--graph", required=True, help="graph dir with HCLG.fst (the weak phone-bigram LM)")
    lt.add_argument("--data", required=True, help="training data dir (the model's input features)")
    lt.add_argument("--ali", required=True, help="GMM exp dir with ali_pdf.ark and the tree")
    lt.add_argument("--out", required=True, help="lattice dir (lat.<k>.pt, stats.json)")
    lt.add_argument("--acwt", type=float, default=None,
                    help="acoustic scale of the search (default: 0.2 for a DNN, 0.1 for a GMM system, as Kaldi's TIMIT recipe)")
    lt.add_argument("--beam", type=float, default=13.0)
    lt.add_argument("--lattice-beam", type=float, default=6.0)
    lt.add_argument("--nj", type=int, default=1)
    lt.add_argument("--no-segments", action="store_true",
                    help="skip the segment expansion (smaller lattices; MMI / bMMI / frame criteria only)")
    lt.set_defaults(func=_lattices)
    gt = sub.add_parser("gmm-train", help="(boosted) MMI of a GMM system by extended Baum-Welch over its lattices")
    gt.add_argument("--criterion", choices=("bmmi", "mmi"), default="bmmi")
    gt.add_argument("--model", required=True, help="GMM system dir (exp/tri3)")
    gt.add_argument("--data", required=True, help="training data dir (MFCC)")
    gt.add_argument("--lattices", required=True, help="lattice dir from `asr seq lattices --model <this system>`")
    gt.add_argument("--out", required=True)
    # defaults live in GmmSeqConfig only (None here = its value: Kaldi train_mmi.sh's)
    gt.add_argument("--iters", type=int, default=None, help="EBW iterations (default: GmmSeqConfig)")
    gt.add_argument("--kappa", type=float, default=None, help="acoustic scale (default: GmmSeqConfig)")
    gt.add_argument("--boost", type=float, default=None, help="b of boosted MMI (bmmi only; default: GmmSeqConfig)")
    gt.add_argument("--E", type=float, default=None, help="EBW constant: D >= E x denominator occupancy")
    gt.add_argument("--tau", type=float, default=None, help="I-smoothing points towards the current model")
    gt.add_argument("--select-taus", default=None, metavar="T1,T2,...",
                    help="choose tau and the iteration on dev: train one system per tau, decode --dev after every "
                         "iteration (with --dev-transform-dir's fMLLR), keep the fewest dev errors, the input "
                         "system included (selection.json); needs --lang, --dev, --dev-transform-dir")
    gt.add_argument("--lang", default=None, help="lang dir for the dev decodes (--select-taus)")
    gt.add_argument("--dev", default=None, help="dev data dir (--select-taus)")
    gt.add_argument("--dev-transform-dir", default=None,
                    help="the input system's dev decode dir, whose trans.pt the candidates reuse (--select-taus)")
    gt.add_argument("--nj", type=int, default=1, help="parallel jobs of the dev decodes")
    add_beam_args(gt, " of the dev decodes (--select-taus; as the input system's decode_dev)")
    gt.set_defaults(func=_gmm_train)
    t = sub.add_parser("train", help="train from a CE model (lattice or lattice-free denominator)")
    t.add_argument("--criterion", choices=("mpe", "mpfe", "smbr", "mmi", "bmmi"), default="mpe",
                   help="mpe: Povey & Woodland approximate phone accuracy (needs --den lattice); mpfe: its "
                        "frame form; smbr: state accuracy; mmi / bmmi: (boosted) MMI")
    t.add_argument("--model", required=True, help="CE model dir (exp/dnn)")
    t.add_argument("--data", required=True, help="fbank training data dir")
    t.add_argument("--ali", required=True, help="GMM exp dir with ali_pdf.ark (numerator; pdf->phone map)")
    t.add_argument("--den", choices=("lattice", "pdf-bigram", "hclg"), default=None,
                   help="denominator: lattices of --lattices (the default when --lattices is given), a pdf-bigram "
                        "HMM from the alignments (lattice-free, fast; the default otherwise) or the exact "
                        "epsilon-removed HCLG of --graph (small graphs only)")
    t.add_argument("--lattices", default=None, help="lattice dir from `asr seq lattices` (with --den lattice)")
    t.add_argument("--graph", default=None, help="graph dir with HCLG.fst: the denominator with --den hclg; with pdf-bigram "
                        "only checked against the model's pdf count")
    t.add_argument("--out", required=True)
    t.add_argument("--extra-data", action="append", default=[], metavar="DIR",
                   help="speed-perturbed copies of the training data (`asr data perturb`, adapted features) that "
                        "join the training side (copies of CV utterances are left out); repeatable")
    t.add_argument("--extra-ali", action="append", default=[], metavar="DIR",
                   help="the alignment dir of each --extra-data, in the same order")
    t.add_argument("--extra-lattices", action="append", default=[], metavar="DIR",
                   help="the denominator lattice dir of each --extra-data (`asr seq lattices` on it; --den lattice)")
    # defaults live in SeqTrainConfig only (None here = its value)
    t.add_argument("--epochs", type=int, default=None, help="passes over the data (default: SeqTrainConfig)")
    t.add_argument("--lr", type=float, default=None, help="SGD step on the per-frame objective (default: SeqTrainConfig)")
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--kappa", type=float, default=None, help="acoustic scale (default: SeqTrainConfig)")
    t.add_argument("--boost", type=float, default=None, help="b of boosted MMI (bmmi only; default: SeqTrainConfig)")
    t.add_argument("--ce-smoothing", type=float, default=None, help="H of CE frame smoothing, 0 = off (default: SeqTrainConfig)")
    t.add_argument("--batch-utts", type=int, default=None)
    t.add_argument("--utts-per-epoch", type=int, default=None, help="random subset per epoch (default all)")
    t.add_argument("--exclude-silence", action="store_true",
                   help="reference silence frames count 0 accuracy (mpfe, smbr, bmmi's boosting; refused for "
                        "mmi and arc-level mpe, which it would not change)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--select-on-dev", default=None, metavar="DEV",
                   help="decode dev data dir DEV with every epoch's model and keep the one with the fewest dev "
                        "errors, the CE model (its MODEL/decode_dev) included; needs --dev-graph")
    t.add_argument("--dev-graph", default=None, help="decoding graph dir of --select-on-dev (exp/tri3/graph)")
    t.add_argument("--nj", type=int, default=1, help="parallel jobs of the dev decodes")
    add_beam_args(t, " of the dev decodes (--select-on-dev; as the CE model's decode_dev)")
    t.add_argument("--mode", choices=("phone", "word"), default="phone", help="scoring of the dev decodes")
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The options of ``names`` the user gave (not None): the rest take their config class's defaults."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _boost(args: argparse.Namespace) -> None:
    """``--boost`` belongs to boosted MMI; given with another criterion it would be ignored."""
    if args.boost is not None and args.criterion != "bmmi":
        raise ValueError(f"--boost applies to --criterion bmmi only, not {args.criterion}")


def _train(args: argparse.Namespace) -> int:
    from asr.jobs.stage import StageLog, clear_done, mark_done
    from asr.nnet.train import resolve_device
    from asr.seqtrain.stage import run_seq_train
    from asr.seqtrain.train import SeqTrainConfig

    Path(args.out).mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    _boost(args)
    given = _given(args, ("epochs", "lr", "momentum", "kappa", "boost", "ce_smoothing", "batch_utts",
                          "utts_per_epoch", "seed"))
    cfg = SeqTrainConfig(criterion=args.criterion, exclude_silence=args.exclude_silence, **given)
    if (args.select_on_dev is None) != (args.dev_graph is None):
        raise ValueError("--select-on-dev and --dev-graph go together")
    den = args.den or ("lattice" if args.lattices else "pdf-bigram")
    n_lat = len(args.extra_data) if den == "lattice" else 0
    if len(args.extra_ali) != len(args.extra_data) or len(args.extra_lattices) != n_lat:
        raise ValueError(f"--extra-data given {len(args.extra_data)} time(s), --extra-ali {len(args.extra_ali)}, "
                         f"--extra-lattices {len(args.extra_lattices)}: give one alignment dir per extra data dir, "
                         "and one lattice dir each with --den lattice (none otherwise)")
    lats = args.extra_lattices if den == "lattice" else [None] * len(args.extra_data)
    extra = list(zip(args.extra_data, args.extra_ali, lats))
    if args.select_on_dev is not None:
        from asr.decode.pipeline import read_scoring_errors

        read_scoring_errors(Path(args.model) / "decode_dev")     # the CE model's dev figure, checked before training
    run_seq_train(args.model, args.data, args.ali, args.graph, args.out, cfg, resolve_device(args.device),
                  StageLog(args.out, "train"), den=den, lattice_dir=args.lattices, extra=extra)
    if args.select_on_dev is not None:
        from asr.seqtrain.select import select_seq_epoch

        select_seq_epoch(args.model, args.out, args.dev_graph, args.select_on_dev, nj=args.nj, mode=args.mode,
                         log=StageLog(args.out, "train"), **beam_kwargs(args))
    mark_done(args.out, {"cmd": "seq train", **args_record(args)})
    return 0


def _lattices(args: argparse.Namespace) -> int:
    from asr.jobs.stage import StageFailed, StageLog, clear_done, mark_done, write_counts
    from asr.seqtrain.denlats import DenLatConfig, make_den_lattices

    Path(args.out).mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    cfg = DenLatConfig(acwt=args.acwt, beam=args.beam, lattice_beam=args.lattice_beam, segments=not args.no_segments)
    stats = make_den_lattices(args.model, args.graph, args.data, args.ali, args.out, cfg, nj=args.nj,
                              log=StageLog(args.out, "lattices"))
    counts = {"no_lattice": sorted(u for job in stats["jobs"] for u in job["failed"])}
    for kind in ("retry_beam", "partial_lattice"):     # when the lattice jobs report them
        if any(kind in job for job in stats["jobs"]):
            counts[kind] = sorted(u for job in stats["jobs"] for u in job.get(kind, []))
    write_counts(args.out, counts)
    if not stats["utterances"]:
        raise StageFailed(f"no denominator lattice was made (see {Path(args.out) / 'log' / 'lattices.log'})")
    mark_done(args.out, {"cmd": "seq lattices", **args_record(args)})
    return 0


def _gmm_train(args: argparse.Namespace) -> int:
    from asr.jobs.stage import StageLog, clear_done, mark_done
    from asr.seqtrain.gmm_stage import GmmSeqConfig, run_gmm_seq_train

    Path(args.out).mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    _boost(args)
    cfg = GmmSeqConfig(criterion=args.criterion, **_given(args, ("iters", "kappa", "boost", "E", "tau")))
    if args.select_taus:
        from asr.decode import DecodeConfig
        from asr.seqtrain.gmm_select import select_gmm_seq

        missing = [o for o in ("lang", "dev", "dev_transform_dir") if getattr(args, o) is None]
        if missing:
            raise ValueError("--select-taus needs " + ", ".join("--" + m.replace("_", "-") for m in missing))
        try:
            taus = tuple(float(t) for t in args.select_taus.split(","))
        except ValueError:
            raise ValueError(f"--select-taus {args.select_taus!r}: expected comma-separated numbers") from None
        select_gmm_seq(args.model, args.data, args.lattices, args.out, args.lang, args.dev, args.dev_transform_dir,
                       taus, cfg, nj=args.nj, log=StageLog(args.out, "train"),
                       decode_cfg=DecodeConfig(**beam_kwargs(args)))
    else:
        run_gmm_seq_train(args.model, args.data, args.lattices, args.out, cfg, StageLog(args.out, "train"))
    mark_done(args.out, {"cmd": "seq gmm-train", **args_record(args)})
    return 0
