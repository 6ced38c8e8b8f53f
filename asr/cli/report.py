"""``asr report``: write EXP/report.md (one ``--exp``) or a side-by-side comparison (several),
and print the headline table; ``--write-run-info`` records a run's provenance (run.sh)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write EXP/report.md comparing every decoded system, or compare runs",
                       description="One --exp: write EXP/report.md and its figures. Several --exp: write a "
                                   "side-by-side comparison (to --out) with matched-pairs tests where the "
                                   "test sets agree.")
    p.add_argument("--exp", action="append", default=None,
                   help="experiment directory (repeat to compare runs; default: exp)")
    p.add_argument("--out", default=None,
                   help="comparison file for several --exp (default: report_compare.md in the current directory)")
    p.add_argument("--mode", choices=["phone", "word"], default="phone")
    p.add_argument("--seed", type=int, default=0, help="bootstrap / permutation seed")
    g = p.add_argument_group("provenance (called by recipes/timit/run.sh at the start of a run)")
    g.add_argument("--write-run-info", action="store_true",
                   help="only write EXP/run_info.json (commit, config text, seed, corpus, command, machine)")
    g.add_argument("--config", help="config file of the run (with --write-run-info)")
    g.add_argument("--run-seed", type=int, help="the run's seed (with --write-run-info)")
    g.add_argument("--corpus", help="corpus directory of the run (with --write-run-info)")
    g.add_argument("--command", default="", help="the run's command line (with --write-run-info)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asr.cli.main import UserError

    exps = args.exp or ["exp"]
    if args.write_run_info:
        from asr.report import write_run_info

        if len(exps) != 1 or args.config is None or args.run_seed is None:
            raise UserError("--write-run-info needs one --exp, --config and --run-seed")
        print(f"run info: {write_run_info(exps[0], args.config, args.run_seed, args.corpus or '', args.command)}")
        return 0
    if len(exps) == 1:
        if args.out is not None:
            raise UserError("--out is for comparing several --exp; one experiment's report is EXP/report.md")
        from asr.report import write_report

        path, table = write_report(exps[0], mode=args.mode, seed=args.seed)
    else:
        from asr.report import write_comparison

        path, table = write_comparison(exps, args.out or "report_compare.md", mode=args.mode, seed=args.seed)
    print(table)
    print(f"\nreport: {path}")
    return 0
