"""A fork server for the ``asr`` command: the recipe's ~40 calls pay torch's import once.

Each ``asr`` process spends 2–3 s importing torch, torchaudio, the decoders and the command
modules before it does any work; on the tiny corpus that is most of the recipe's time. With
``ASR_FORKSERVER=PATH`` in the environment, the ``asr`` console script
(:func:`asr.cli.main.run`) imports nothing heavy: :func:`call` connects to the Unix socket
``PATH``, hands over its arguments, working directory, environment and its stdin, stdout and
stderr (``SCM_RIGHTS``), and waits for the exit status. The server
(``python -m asr.jobs.forkserver --socket PATH --parent PID``), which imported everything once,
forks one child per call; the child takes the caller's file descriptors, working directory
and environment, reseeds Python's and NumPy's global generators from the OS (as a fresh
interpreter would), and runs :func:`asr.cli.main.main` on the arguments. The server itself
never runs a torch operation, so no OpenMP pool, CUDA context or generator state is inherited
that a fresh process would not have. (The interpreter-level settings, e.g. ``PYTHONHASHSEED``,
are the server's: ``recipes/timit/run.sh`` starts it with the environment its calls have.)

Failure semantics are a normal child's:

- the children stay in the server's process group (the recipe's): ``kill -9`` of the recipe's
  group ends them with it;
- a caller that dies (``kill -9``) closes its connection, and the server kills its child;
  INT, TERM and HUP received by the caller are forwarded to the child;
- the caller exits with the child's status, or by the child's signal;
- if the server cannot be reached, or ends before it started the command, the caller runs the
  command itself (the normal path), so the server is an optimisation, never a dependency.

The server stops accepting when its parent (``--parent``) is gone or on SIGTERM, and exits
once its running children have ended. Only the standard library is imported at module level:
the client side must start in milliseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import struct
import sys
from typing import Any, Callable

_LEN = struct.Struct("!Q")          # request length, sent with the three file descriptors
_PID = struct.Struct("!cq")         # b"P", child pid: the command has started
_RC = struct.Struct("!ci")          # b"R", exit code (negative: killed by that signal)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Modules the commands import, some of them lazily inside functions; imported by the server
# once (each optional: a missing one is imported, or fails, in the child as it would alone).
PRELOAD = ("numpy", "torch", "torchaudio", "soundfile", "kaldi_io", "kaldiio", "kaldifst",
           "kaldi_decoder", "kaldilm", "kaldialign", "yaml", "tqdm")


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ----------------------------------------------------------------------------- client side
def call(path: str, argv: list[str]) -> int | None:
    """Run ``asr ARGV`` in a child of the server at ``path``; its exit code (negative: the
    signal that ended it), or None when the server did not start the command (unreachable,
    refused or gone before forking): the caller then runs it itself."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        req = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(sock, [_LEN.pack(len(req))], [0, 1, 2])
        sock.sendall(req)
        head = _recv_exact(sock, _PID.size)
    except OSError:
        sock.close()
        return None
    if head is None:
        sock.close()
        return None
    _, pid = _PID.unpack(head)

    def forward(sig: int, _frame: Any) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:       # a forwarded signal does not interrupt the wait (PEP 475: recv is retried)
        tail = _recv_exact(sock, _RC.size)
    except OSError:
        tail = None
    finally:
        sock.close()
    if tail is None:
        print(f"asr: the fork server ({path}) ended before the command (pid {pid}) did",
              file=sys.stderr)
        return 1
    return _RC.unpack(tail)[1]


def exit_with(code: int) -> None:
    """Leave this process as the child left: with its exit code, or by its signal."""
    from asr.cli.main import flush_std_streams

    flush_std_streams()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


# ----------------------------------------------------------------------------- server side
def preload() -> None:
    """Import what the commands need (no torch operation is run: nothing to inherit). Import
    banners (kaldi_io prints one to stderr when KALDI_ROOT is unset) are silenced: a command
    that fails on a missing module meets the error in its own child."""
    import contextlib
    import importlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - optional: the child meets the same error alone
                pass
        from asr.cli import main as cli_main

        cli_main.build_parser()


def _resolve(target: str) -> Callable[[list[str]], int | None]:
    """``"module:function"`` -> the function (a command's ``main(argv) -> exit code``)."""
    import importlib

    mod, _, fn = target.partition(":")
    return getattr(importlib.import_module(mod), fn)


def _child(conn: socket.socket, fds: list[int], req: dict[str, Any], close: list[Any],
           target: str) -> None:
    """In the forked child: become the caller's process and run the command; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for obj in close:
            obj.close()
        conn.close()
        for std, fd in enumerate(fds):
            os.dup2(fd, std)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = ["asr", *req["argv"]]
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
        sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        try:   # (Python's own generator reseeds itself in a forked child)
            import numpy as np

            np.random.seed()
        except ImportError:
            pass
        from asr.cli.main import finish_process

        try:
            code = int(_resolve(target)(req["argv"]) or 0)
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, status 1
            import traceback

            traceback.print_exc()
            code = 1
        finish_process(code, force_exit=True)
    finally:
        os._exit(code)


def serve(path: str, parent: int | None = None, target: str = "asr.cli.main:main",
          load: bool = True) -> int:
    """Listen at ``path`` and fork a child per request that runs ``target`` (``module:function``
    taking the argument list, returning the exit code); returns when ``parent`` is gone (or on
    SIGTERM) and every child has ended. ``load``: :func:`preload` first."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    lsock.bind(path)          # callers queue in the backlog while the imports run
    lsock.listen(64)
    if load:
        preload()
    _resolve(target)

    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    stopping = [False]

    def on_term(*_: Any) -> None:
        stopping[0] = True

    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.set_wakeup_fd(wfd)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, "listen")
    sel.register(rfd, selectors.EVENT_READ, "wakeup")
    running: dict[int, socket.socket] = {}     # child pid -> its caller's connection
    by_conn: dict[socket.socket, int] = {}

    def reap() -> None:
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = running.pop(pid, None)
            if conn is None:
                continue
            by_conn.pop(conn, None)
            try:
                sel.unregister(conn)
            except KeyError:        # already unregistered: its caller died
                pass
            try:
                conn.sendall(_RC.pack(b"R", os.waitstatus_to_exitcode(status)))
            except OSError:
                pass
            conn.close()

    def accept() -> None:
        conn, _ = lsock.accept()
        fds: list[int] = []
        try:
            conn.settimeout(30)
            msg, fds, _flags, _addr = socket.recv_fds(conn, _LEN.size, 3)
            if len(msg) != _LEN.size or len(fds) != 3:
                raise OSError("bad request")
            body = _recv_exact(conn, _LEN.unpack(msg)[0])
            if body is None:
                raise OSError("caller gone")
            req = json.loads(body)
            conn.settimeout(None)
        except (OSError, ValueError):
            for fd in fds:             # a refused request leaves no descriptor open here
                os.close(fd)
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            _child(conn, fds, req, [sel, lsock, *by_conn, _Fd(rfd), _Fd(wfd)], target)
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(_PID.pack(b"P", pid))
        except OSError:
            os.kill(pid, signal.SIGKILL)
        running[pid] = conn
        by_conn[conn] = pid
        sel.register(conn, selectors.EVENT_READ, "caller")

    while True:
        if parent is not None and os.getppid() != parent:
            stopping[0] = True
        if stopping[0] and lsock.fileno() >= 0:
            sel.unregister(lsock)
            lsock.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if stopping[0] and not running:
            return 0
        for key, _ in sel.select(timeout=1.0):
            if key.data == "listen" and not stopping[0]:
                accept()
            elif key.data == "wakeup":
                try:
                    while os.read(rfd, 512):
                        pass
                except BlockingIOError:
                    pass
            elif key.data == "caller":
                conn = key.fileobj
                try:
                    gone = conn.recv(1) == b""
                except OSError:
                    gone = True
                if gone:                         # the caller died: so does its command
                    sel.unregister(conn)
                    if conn in by_conn:
                        try:
                            os.kill(by_conn[conn], signal.SIGKILL)
                        except ProcessLookupError:
                            pass
        reap()


class _Fd:
    """A raw file descriptor with ``close()`` (for the child's clean-up list)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True, help="Unix socket path to listen at")
    ap.add_argument("--parent", type=int, default=None,
                    help="stop accepting once this process is gone (the recipe's shell)")
    ap.add_argument("--target", default="asr.cli.main:main",
                    help="module:function run in each child on the caller's arguments")
    ap.add_argument("--no-preload", action="store_true", help="skip importing torch and the commands")
    a = ap.parse_args(argv)
    return serve(a.socket, a.parent, a.target, not a.no_preload)


if __name__ == "__main__":
    raise SystemExit(main())
