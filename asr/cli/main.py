"""Entry point of the ``asr`` console script.

Every module listed in ``COMMAND_MODULES`` defines ``register(subparsers)`` that adds
one sub-command (with its own sub-sub-commands where needed) and sets ``func`` on the
parsed namespace. Handlers return an exit status (0 = success).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "asr.cli.corpus",   # asr corpus synth
    "asr.cli.data",     # asr data timit
    "asr.cli.feats",    # asr feats
    "asr.cli.lang",     # asr lang ...
    "asr.cli.gmm",      # asr gmm {mono,tri1,tri2,tri3,align,decode}
    "asr.cli.decode",   # asr decode ...
    "asr.cli.score",    # asr score
    "asr.cli.gen",      # asr gen {train,sample}
    "asr.cli.dnn",      # asr dnn {pretrain,train,decode,...}
    "asr.cli.seq",      # asr seq {train}
    "asr.cli.report",   # asr report
]


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback, exit 1 (as are
    FileNotFoundError, ValueError and ``asr.jobs.stage.StageFailed``: a stage that did not do
    what it was asked)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr", description="Hybrid DNN-HMM speech recognition toolkit."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command not built yet
            if e.name == name:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from asr.jobs.stage import StageFailed

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from asr.jobs.device import flush_denormals

    flush_denormals()   # before the command's first torch operation starts the thread pool
    try:
        rc = args.func(args)
    except (UserError, FileNotFoundError, ValueError, StageFailed) as e:
        print(f"asr {args.command}: error: {e}", file=sys.stderr)
        return 1
    return int(rc or 0)


def flush_std_streams() -> None:
    """Flush stdout and stderr, ignoring streams that are closed or gone."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def finish_process(rc: int, force_exit: bool = False) -> None:
    """End the process after a command: flush output, close log handlers, then ``os._exit``
    unless a child process or non-daemon thread is still alive (then the normal ``sys.exit``
    path waits for it; ``force_exit``: join them here, then ``os._exit``).

    Interpreter teardown after ``import torch`` (freeing thousands of modules) costs about
    1.3 s per process, which a recipe pays ~45 times on the tiny corpus.
    """
    import logging
    import multiprocessing
    import os
    import threading

    flush_std_streams()
    logging.shutdown()
    busy_threads = [t for t in threading.enumerate()
                    if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    children = multiprocessing.active_children()
    if busy_threads or children:
        if not force_exit:
            sys.exit(rc)
        for t in busy_threads:
            t.join()
        for p in children:
            p.join()
        flush_std_streams()
    os._exit(rc)


def run() -> None:
    """Console-script entry: ``main`` then :func:`finish_process`.

    With ``ASR_FORKSERVER`` set (``recipes/timit/run.sh`` sets it), the command runs in a child
    of the fork server named there, which imported torch and the command modules once
    (``asr.jobs.forkserver``); where the server cannot be reached, it runs here.
    """
    import os

    path = os.environ.get("ASR_FORKSERVER")
    if path:
        from asr.jobs import forkserver

        code = forkserver.call(path, sys.argv[1:])
        if code is not None:
            forkserver.exit_with(code)
    finish_process(main())


if __name__ == "__main__":
    run()
