"""``asr report --exp DIR``: write DIR/report.md and print the comparison table."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write EXP/report.md comparing every decoded system")
    p.add_argument("--exp", default="exp", help="experiment directory (default: exp)")
    p.add_argument("--mode", choices=["phone", "word"], default="phone")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asr.report import write_report

    path, table = write_report(args.exp, mode=args.mode, seed=args.seed)
    print(table)
    print(f"\nreport: {path}")
    return 0
