"""Plumbing shared by the sub-command modules (no algorithm lives in ``asr/cli``)."""
from __future__ import annotations

import argparse


def args_record(args: argparse.Namespace) -> dict:
    """The parsed options of a command as a plain dict (for its ``.done`` marker's config hash)."""
    return {k: v for k, v in vars(args).items() if k != "func"}
