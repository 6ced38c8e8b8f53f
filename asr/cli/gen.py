"""``asr gen``: train and sample the generative models of :mod:`asr.generative`.

    asr gen train {rbm,dbn,gan,cgan,dcgan} --data SOURCE --out DIR [--epochs N --seed S ...]
    asr gen sample DIR --n N [--label L] --out FILE.{png,npy}

SOURCE is ``digits`` (scikit-learn's digits upscaled to 16x16), ``mnist:PATH`` (IDX files) or
``speech:DATA_DIR`` (log-mel patches from ``DATA_DIR/feats.scp``).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from asr.generative.data import load_source
from asr.generative.plots import save_array, save_grid
from asr.generative.runner import KINDS, TrainOptions, run_training, sample_model
from asr.jobs.stage import clear_done, is_done, mark_done


def _sizes(s: str) -> list[int]:
    try:
        sizes = [int(x) for x in s.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes must be comma-separated integers, got {s!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes must list positive integers, got {s!r}")
    return sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gen", help="generative models: RBM, DBN, GAN, cGAN, DCGAN")
    sub = p.add_subparsers(dest="gen_command", metavar="{train,sample}")
    sub.required = True

    t = sub.add_parser("train", help="train a generative model on images")
    t.add_argument("model", choices=KINDS)
    t.add_argument("--data", required=True, help="digits | mnist:PATH | speech:DATA_DIR")
    t.add_argument("--out", required=True, type=Path, help="model directory (model.pt, history.json)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--hidden", type=int, help="RBM hidden units / GAN MLP width")
    t.add_argument("--sizes", type=_sizes, default=[500, 500], help="DBN hidden sizes, e.g. 500,500")
    t.add_argument("--z-dim", type=int, default=32)
    t.add_argument("--channels", type=int, default=32, help="DCGAN feature maps")
    t.add_argument("--k", type=int, default=1, help="CD-k steps (rbm/dbn) or D steps per G step (gans)")
    t.add_argument("--persistent", action="store_true", help="persistent CD (rbm/dbn)")
    t.add_argument("--loss", choices=("nonsaturating", "minimax"), default="nonsaturating")
    t.add_argument("--digit", type=int, help="train on this class only (labelled data)")
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--ais-every", type=int, default=0, help="RBM: AIS held-out LL every N epochs")
    t.add_argument("--gibbs-steps", type=int, default=1000)
    t.add_argument("--patch-width", type=int, default=16, help="speech: frames per patch")
    t.add_argument("--max-patches", type=int, default=20000, help="speech: patches kept")
    t.add_argument("--force", action="store_true",
                   help="retrain even when OUT/.done records the same configuration")
    t.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (small models run fastest on 1)")
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="draw samples from a trained model directory")
    s.add_argument("model_dir", type=Path)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--label", type=int, help="class for a conditional GAN")
    s.add_argument("--out", required=True, type=Path, help=".png grid or .npy (N, H, W) in [0, 1]")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--gibbs-steps", type=int, default=1000)
    s.add_argument("--nrow", type=int, help="tiles per row in a .png grid")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    s.set_defaults(func=_sample)


def _train(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    opts = TrainOptions(epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                        hidden=args.hidden, sizes=args.sizes, z_dim=args.z_dim,
                        channels=args.channels, k=args.k, persistent=args.persistent,
                        loss=args.loss, digit=args.digit, test_fraction=args.test_fraction,
                        ais_every=args.ais_every, gibbs_steps=args.gibbs_steps)
    stage_cfg = {"model": args.model, "data": args.data, "patch_width": args.patch_width,
                 "max_patches": args.max_patches, **asdict(opts)}
    if not args.force and is_done(args.out, stage_cfg):
        print(f"asr gen train {args.model}: {args.out} is up to date (use --force to retrain)")
        return 0
    kw = ({"width": args.patch_width, "max_patches": args.max_patches, "seed": args.seed}
          if args.data.startswith("speech:") else {})
    data = load_source(args.data, **kw)
    args.out.mkdir(parents=True, exist_ok=True)
    clear_done(args.out)
    meta = run_training(args.model, data, args.out, opts)
    print(f"asr gen train {args.model}: {meta['n_train']} images {tuple(meta['image_shape'])}, "
          f"{meta['cpu_seconds']:.1f} s CPU -> {args.out / 'model.pt'}")
    if "ais" in meta:
        a = meta["ais"]
        print(f"  AIS held-out log-likelihood: {a[0]['heldout_ll']:.2f} -> {a[-1]['heldout_ll']:.2f} nats")
    mark_done(args.out, stage_cfg)
    return 0


def _sample(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    suffix = args.out.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise ValueError(f"--out must end in .png or .npy, got {args.out}")
    x = sample_model(args.model_dir, args.n, args.label, args.seed, args.gibbs_steps)
    if suffix == ".npy":
        save_array(x, args.out)
    else:
        save_grid(x, args.out, nrow=args.nrow or min(args.n, 10))
    print(json.dumps({"out": str(args.out), "shape": list(x.shape)}))
    return 0
