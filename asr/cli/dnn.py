"""``asr dnn {pretrain,train,decode,export,align}``: the hybrid DBN-DNN-HMM stages (issue 5).

Training runs under ``torchrun`` too (``torchrun --nproc_per_node N -m asr.cli.main dnn train ...``):
DistributedDataParallel with gloo on CPU / nccl on GPU, rank 0 writes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr.cli.common import args_record
from asr.cli.decode import add_beam_args, add_scoring_args, beam_kwargs, scoring_kwargs
from asr.jobs.device import PRECISIONS, choose_precision
from asr.jobs.stage import StageLog
from asr.nnet.sizing import resolve_units, units_arg
from asr.nnet.pretrain import PretrainConfig
from asr.nnet.stages import DNN_ACWT, DnnTrainConfig
from asr.nnet.train import CETrainConfig

# the flags' defaults are the dataclasses' (the one place each default lives)
CE_DEFAULTS = CETrainConfig()
PT_DEFAULTS = PretrainConfig()
TRAIN_DEFAULTS = DnnTrainConfig()


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dnn", help="hybrid DNN-HMM: DBN pretraining, CE training, decoding, export")
    sub = p.add_subparsers(dest="dnn_command", metavar="COMMAND")

    a = sub.add_parser("pretrain", help="DBN pretraining as Kaldi pretrain_dbn.sh (GB-RBM then BB-RBMs, CD-1)")
    a.add_argument("--data", required=True, help="feature data dir (feats.scp, cmvn.scp)")
    a.add_argument("--out", required=True, help="output dir (writes dbn.pt)")
    a.add_argument("--layers", type=int, default=len(PT_DEFAULTS.hidden),
                   help="number of hidden layers (default %(default)s)")
    a.add_argument("--units", type=units_arg, default=PT_DEFAULTS.hidden[0],
                   help="units per hidden layer, or auto (by training hours: asr.nnet.sizing; default %(default)s)")
    a.add_argument("--epochs", type=int, default=PT_DEFAULTS.epochs,
                   help="CD-1 epochs per Bernoulli RBM; the Gaussian RBM gets "
                        f"{PT_DEFAULTS.gaussian_epoch_factor}x as many (Kaldi --rbm-iter, default %(default)s)")
    a.add_argument("--frames-per-epoch", type=int, default=None, help="subsample frames per epoch")
    a.add_argument("--batch-size", type=int, default=PT_DEFAULTS.batch_size)
    a.add_argument("--lr-gaussian", type=float, default=PT_DEFAULTS.lr_gaussian,
                   help="Gaussian RBM learning rate (default %(default)s)")
    a.add_argument("--lr-bernoulli", type=float, default=PT_DEFAULTS.lr_bernoulli,
                   help="Bernoulli RBM learning rate (default %(default)s)")
    a.add_argument("--l2-penalty", type=float, default=PT_DEFAULTS.weight_decay,
                   help="L2 penalty on RBM weights (default %(default)s)")
    a.add_argument("--context", type=int, default=TRAIN_DEFAULTS.left, help="splice ±N frames (default %(default)s)")
    a.add_argument("--seed", type=int, default=PT_DEFAULTS.seed,
                   help="initial weights, shuffling and sampling (default %(default)s)")
    a.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    a.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="matrix products of CD-1: float32 (default) | bfloat16 (mixed precision, float32 "
                        "parameters) | auto (bfloat16 where the CPU/GPU has it in hardware)")
    a.set_defaults(func=_pretrain)

    ce = CE_DEFAULTS
    t = sub.add_parser("train", help="frame cross-entropy fine-tuning with newbob (Kaldi train.sh)")
    t.add_argument("--data", required=True, help="feature training data dir")
    t.add_argument("--ali", required=True, help="GMM exp dir with ali_pdf.ark (e.g. exp/tri3) or a Kaldi pdf ark")
    t.add_argument("--out", required=True)
    init = t.add_mutually_exclusive_group()
    init.add_argument("--dbn", default=None, help="pretrained DBN dir/checkpoint (exp/dbn)")
    init.add_argument("--init-dbn", dest="dbn", default=None, help="alias of --dbn (a DBN from another run)")
    init.add_argument("--random-init", action="store_true",
                      help="no pretraining: Kaldi make_nnet_proto.py initialisation (ablation dnn_rand)")
    t.add_argument("--layers", type=int, default=None,
                   help="hidden layers (default 6; with --dbn must match the DBN, which defines it)")
    t.add_argument("--units", type=units_arg, default=None,
                   help="units per layer, or auto (by training hours: asr.nnet.sizing; default 1024; checked against --dbn)")
    t.add_argument("--context", type=int, default=None, help="splice ±N frames (default 5; checked against --dbn)")
    t.add_argument("--epochs", "--max-epochs", dest="epochs", type=int, default=ce.max_epochs,
                   help=f"max epochs; newbob usually stops earlier (default {ce.max_epochs})")
    t.add_argument("--min-epochs", type=int, default=ce.min_epochs,
                   help="epochs accepted whatever their CV loss, before newbob may stop (default 0)")
    t.add_argument("--keep-lr-epochs", type=int, default=ce.keep_lr_epochs,
                   help="initial epochs at a fixed learning rate, never rejected (default 0)")
    t.add_argument("--lr", type=float, default=ce.lr,
                   help=f"SGD step on the minibatch-mean loss (default {ce.lr:g} = Kaldi's 0.008 per frame x 256)")
    t.add_argument("--momentum", type=float, default=ce.momentum)
    t.add_argument("--start-halving-impr", type=float, default=ce.start_halving_impr,
                   help="relative CV-loss improvement below which the lr starts halving (default 0.01)")
    t.add_argument("--end-halving-impr", type=float, default=ce.end_halving_impr,
                   help="relative CV-loss improvement below which training stops while halving (default 0.001)")
    t.add_argument("--halving-factor", type=float, default=ce.halving_factor)
    t.add_argument("--batch-size", type=int, default=ce.batch_size)
    t.add_argument("--frames-per-epoch", type=int, default=None)
    t.add_argument("--dropout", type=float, default=CE_DEFAULTS.dropout,
                   help="hidden-unit dropout probability while fine-tuning (default %(default)s = off, as Kaldi nnet1)")
    t.add_argument("--extra-data", action="append", default=[], metavar="DIR",
                   help="perturbed copies of --data (`asr data perturb`, features made) joined to the training "
                   "side; copies of cross-validation utterances are left out (repeatable)")
    t.add_argument("--extra-ali", action="append", default=[], metavar="DIR",
                   help="the alignment dir of each --extra-data, in the same order (e.g. `asr gmm align` of tri3)")
    t.add_argument("--cv-fraction", type=float, default=TRAIN_DEFAULTS.cv_fraction)
    t.add_argument("--seed", type=int, default=TRAIN_DEFAULTS.seed)
    t.add_argument("--device", default="auto")
    t.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="training products: float32 (default) | bfloat16 (autocast; float32 parameters and CV "
                        "loss) | auto (bfloat16 where the CPU/GPU has it in hardware)")
    t.set_defaults(func=_train)

    d = sub.add_parser("decode", help="hybrid decoding + scoring")
    d.add_argument("--model", required=True, help="DNN exp dir (final.pt)")
    d.add_argument("--graph", required=True, help="graph dir with HCLG.fst (e.g. exp/tri3/graph)")
    d.add_argument("--data", required=True, help="fbank data dir to decode")
    d.add_argument("--out", required=True)
    d.add_argument("--lmwt-from", default=None, help="dev decode dir whose best_lmwt to use (test sets)")
    d.add_argument("--acwt", type=float, default=DNN_ACWT,
                   help="acoustic scale of the search (default %(default)s, Kaldi's TIMIT nnet1 decoding); the LM "
                        "weight is still chosen at scoring time")
    d.add_argument("--mode", choices=("phone", "word"), default="phone")
    d.add_argument("--nj", type=int, default=1)
    add_beam_args(d)
    add_scoring_args(d)
    d.set_defaults(func=_decode)

    e = sub.add_parser("export", help="write log-likelihoods / log-posteriors as a Kaldi ark")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True, help="output .ark")
    kind = e.add_mutually_exclusive_group()
    kind.add_argument("--loglikes", action="store_true", help="log p(s|x) - log p(s) (default)")
    kind.add_argument("--logposts", action="store_true", help="log p(s|x)")
    e.set_defaults(func=_export)

    g = sub.add_parser("align", help="realign training data with the DNN (writes OUT/ali_pdf.ark)")
    g.add_argument("--model", required=True)
    g.add_argument("--data", required=True)
    g.add_argument("--ali", required=True, help="GMM exp dir whose alignment gives the state chains")
    g.add_argument("--out", required=True)
    g.set_defaults(func=_align)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _pretrain(args: argparse.Namespace) -> int:
    from asr.generative import TrainingDiverged
    from asr.jobs.stage import clear_done, mark_done
    from asr.nnet.pretrain import PretrainConfig
    from asr.nnet.stages import run_pretrain
    from asr.nnet.train import resolve_device

    Path(args.out).mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    args.units = resolve_units(args.units, args.data)
    cfg = PretrainConfig(hidden=(args.units,) * args.layers, epochs=args.epochs, batch_size=args.batch_size,
                         lr_gaussian=args.lr_gaussian, lr_bernoulli=args.lr_bernoulli,
                         weight_decay=args.l2_penalty, frames_per_epoch=args.frames_per_epoch, seed=args.seed)
    device = resolve_device(args.device)
    cfg.precision = choose_precision(args.precision, device)
    log = StageLog(args.out, "pretrain")
    log(f"precision of the CD-1 products: {cfg.precision}")
    try:
        run_pretrain(args.data, args.out, cfg, args.context, args.context, device, log)
    except TrainingDiverged as e:
        log(f"asr dnn pretrain: {e}")
        print(f"asr dnn pretrain: error: {e}", file=sys.stderr)
        return 1
    mark_done(args.out, {"cmd": "dnn pretrain", **args_record(args)})
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from asr.jobs.stage import clear_done, mark_done
    from asr.nnet.distributed import init_distributed
    from asr.nnet.stages import DnnTrainConfig, check_against_dbn, run_train
    from asr.nnet.train import CETrainingError

    if not args.random_init and args.dbn is None:
        raise ValueError("give --dbn DIR (pretrained) or --random-init")
    if len(args.extra_data) != len(args.extra_ali):
        raise ValueError(f"--extra-data given {len(args.extra_data)} time(s), --extra-ali {len(args.extra_ali)}: "
                         "give one alignment dir per extra data dir")
    device, rank = init_distributed(args.device)
    if rank == 0:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        clear_done(args.out)
    args.units = resolve_units(args.units, args.data)
    if args.dbn is not None:
        check_against_dbn(args.dbn, args.layers, args.units, args.context)
    ce = CETrainConfig(lr=args.lr, momentum=args.momentum, batch_size=args.batch_size, max_epochs=args.epochs,
                       min_epochs=args.min_epochs, keep_lr_epochs=args.keep_lr_epochs,
                       start_halving_impr=args.start_halving_impr, end_halving_impr=args.end_halving_impr,
                       halving_factor=args.halving_factor, seed=args.seed, frames_per_epoch=args.frames_per_epoch,
                       dropout=args.dropout, precision=choose_precision(args.precision, device))
    layers = args.layers or len(TRAIN_DEFAULTS.hidden)
    units = args.units or TRAIN_DEFAULTS.hidden[0]
    context = TRAIN_DEFAULTS.left if args.context is None else args.context
    cfg = DnnTrainConfig(hidden=(units,) * layers, left=context, right=context,
                         cv_fraction=args.cv_fraction, seed=args.seed, ce=ce)
    log = StageLog(args.out, "train", rank == 0)
    try:
        run_train(args.data, args.ali, args.out, cfg, dbn=None if args.random_init else args.dbn,
                  device=device, log=log, extra=list(zip(args.extra_data, args.extra_ali)))
    except CETrainingError as e:
        if rank == 0:
            msg = f"asr dnn train: error: {e} (see {args.out}/log/train_curve.json; no .done written)"
            log(msg)
            print(msg, file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        mark_done(args.out, {"cmd": "dnn train", **args_record(args)})
    return 0


def _decode(args: argparse.Namespace) -> int:
    from asr.decode.pipeline import read_best_lmwt
    from asr.jobs.stage import clear_done, mark_done
    from asr.nnet.stages import run_decode

    lmwt = read_best_lmwt(args.lmwt_from)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    res = run_decode(args.model, args.graph, args.data, args.out, nj=args.nj, lmwt=lmwt, acwt=args.acwt,
                     mode=args.mode, **beam_kwargs(args), **scoring_kwargs(args))
    print((Path(args.out) / "scoring").read_text().strip() if (Path(args.out) / "scoring").is_file() else res)
    mark_done(args.out, {"cmd": "dnn decode", **args_record(args)})
    return 0


def _export(args: argparse.Namespace) -> int:
    from asr.nnet.stages import run_export

    n = run_export(args.model, args.data, args.out, logposts=args.logposts)
    print(f"asr dnn export: {n} utterances -> {args.out}")
    return 0


def _align(args: argparse.Namespace) -> int:
    from asr.jobs.stage import clear_done, mark_done
    from asr.nnet.stages import run_align

    Path(args.out).mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    r = run_align(args.model, args.data, args.ali, args.out, StageLog(args.out, "align"))
    print(f"asr dnn align: {r['aligned']} aligned, {r['failed']} failed -> {args.out}/ali_pdf.ark")
    mark_done(args.out, {"cmd": "dnn align", **args_record(args)})
    return 0
