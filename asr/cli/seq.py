"""``asr seq train``: sequence-discriminative training (MPE / sMBR / MMI / bMMI) of a CE DNN (issue 6)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("seq", help="sequence training of the hybrid DNN: MPE, sMBR, MMI, boosted MMI")
    sub = p.add_subparsers(dest="seq_command", metavar="COMMAND")
    t = sub.add_parser("train", help="train from a CE model with a lattice-free denominator")
    t.add_argument("--criterion", choices=("mpe", "smbr", "mmi", "bmmi"), default="mpe")
    t.add_argument("--model", required=True, help="CE model dir (exp/dnn)")
    t.add_argument("--data", required=True, help="fbank training data dir")
    t.add_argument("--ali", required=True, help="GMM exp dir with ali_pdf.ark (numerator; pdf->phone map)")
    t.add_argument("--den", choices=("pdf-bigram", "hclg"), default="pdf-bigram",
                   help="denominator: pdf-bigram HMM from the alignments (default, fast) or the exact "
                        "epsilon-removed HCLG of --graph (small graphs only)")
    t.add_argument("--graph", default=None, help="graph dir with HCLG.fst: the denominator with --den hclg; with pdf-bigram "
                        "only checked against the model's pdf count")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--lr", type=float, default=0.02, help="SGD step on the per-frame objective")
    t.add_argument("--momentum", type=float, default=0.0)
    t.add_argument("--kappa", type=float, default=0.1, help="acoustic scale")
    t.add_argument("--boost", type=float, default=0.1, help="b of boosted MMI")
    t.add_argument("--ce-smoothing", type=float, default=0.1, help="H of CE frame smoothing (0 = off)")
    t.add_argument("--batch-utts", type=int, default=8)
    t.add_argument("--utts-per-epoch", type=int, default=None, help="random subset per epoch (default all)")
    t.add_argument("--exclude-silence", action="store_true", help="silence frames count 0 accuracy")
    t.add_argument("--seed", type=int, default=777)
    t.add_argument("--device", default="auto")
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _train(args: argparse.Namespace) -> int:
    from asr.cli.dnn import StageLog, vars_cfg
    from asr.jobs.stage import clear_done, mark_done
    from asr.nnet.train import resolve_device
    from asr.seqtrain.stage import run_seq_train
    from asr.seqtrain.train import SeqTrainConfig

    Path(args.out).mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    cfg = SeqTrainConfig(criterion=args.criterion, epochs=args.epochs, lr=args.lr, momentum=args.momentum,
                         kappa=args.kappa, boost=args.boost, ce_smoothing=args.ce_smoothing,
                         batch_utts=args.batch_utts, utts_per_epoch=args.utts_per_epoch,
                         exclude_silence=args.exclude_silence, seed=args.seed)
    run_seq_train(args.model, args.data, args.ali, args.graph, args.out, cfg, resolve_device(args.device),
                  StageLog(args.out, "train"), den=args.den)
    mark_done(args.out, {"cmd": "seq train", **vars_cfg(args)})
    return 0
