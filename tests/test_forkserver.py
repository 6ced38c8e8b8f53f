"""The ``asr`` fork server (asr/jobs/forkserver.py): a command run through it behaves as the
same command run as its own process — arguments, working directory, environment, streams, exit
status, signals — and a caller killed with ``kill -9`` takes its command with it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[1]

TARGET = textwrap.dedent('''
    import os, sys, time
    def main(argv):
        if argv[0] == "echo":
            print("cwd", os.getcwd())
            print("foo", os.environ.get("FOO"))
            print("argv", argv[1:])
            print("pid", os.getpid(), os.getppid())
            print("to stderr", file=sys.stderr)
            return int(argv[1])
        if argv[0] == "sleep":
            with open(argv[1] + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(argv[1] + ".tmp", argv[1])
            time.sleep(60)
            return 0
        if argv[0] == "raise":
            raise RuntimeError("boom")
        return 9
''')

CLIENT = ("import sys; from asr.jobs.forkserver import call, exit_with; "
          "code = call(sys.argv[1], sys.argv[2:]); print('NOSERVER') if code is None else exit_with(code)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def server(tmp_path: Path):
    """A server (no preload) whose children run TARGET's ``main``; yields (socket, process)."""
    (tmp_path / "fs_target.py").write_text(TARGET)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(TOP)]))
    sock = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "asr.jobs.forkserver", "--socket", str(sock),
                             "--target", "fs_target:main", "--no-preload"], env=env)
    assert _wait(sock.exists), "server did not listen"
    yield sock, proc
    proc.terminate()
    proc.wait(10)


def _client(sock: Path, args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(TOP), FOO="bar")
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(sock), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_command_gets_the_callers_arguments_directory_environment_streams_and_status(server, tmp_path):
    sock, proc = server
    cwd = tmp_path / "work dir"
    cwd.mkdir()
    c = _client(sock, ["echo", "3", "a b"], cwd)
    out, err = c.communicate(timeout=30)
    assert c.returncode == 3, (out, err)
    assert "NOSERVER" not in out
    assert f"cwd {cwd}" in out
    assert "foo bar" in out
    assert "argv ['3', 'a b']" in out
    assert "to stderr" in err
    pid, ppid = map(int, out.split("pid ")[1].split()[:2])
    assert ppid == proc.pid and pid != c.pid       # it ran in a child of the server


def test_an_exception_in_the_command_gives_a_traceback_and_status_1(server, tmp_path):
    sock, _ = server
    c = _client(sock, ["raise"], tmp_path)
    out, err = c.communicate(timeout=30)
    assert c.returncode == 1
    assert "RuntimeError: boom" in err


def _sleeping_command(sock: Path, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """A caller whose command sleeps: (the caller, the command's pid once it runs)."""
    pidfile = tmp_path / "pid"
    c = _client(sock, ["sleep", str(pidfile)], tmp_path)
    assert _wait(pidfile.exists)
    return c, int(pidfile.read_text())


def test_killing_the_caller_kills_its_command(server, tmp_path):
    c, child = _sleeping_command(server[0], tmp_path)
    assert _alive(child)
    c.kill()
    c.wait(10)
    assert _wait(lambda: not _alive(child)), "the command outlived its killed caller"


def test_a_signal_to_the_caller_reaches_the_command_and_its_status_is_the_signal(server, tmp_path):
    c, child = _sleeping_command(server[0], tmp_path)
    c.send_signal(signal.SIGTERM)
    c.wait(10)
    assert c.returncode == -signal.SIGTERM       # as if the command itself had been killed
    assert _wait(lambda: not _alive(child))


def test_no_server_means_the_caller_runs_the_command_itself(tmp_path):
    c = _client(tmp_path / "no-such-socket", ["echo", "0"], tmp_path)
    out, _ = c.communicate(timeout=30)
    assert out.strip() == "NOSERVER"


def test_the_server_stops_when_its_parent_is_gone(tmp_path):
    sock = tmp_path / "s"
    sh = subprocess.Popen(["bash", "-c", f'{sys.executable} -m asr.jobs.forkserver --socket {sock} '
                           f'--target os:getpid --no-preload --parent $$ & echo $!; sleep 60'],
                          env=dict(os.environ, PYTHONPATH=str(TOP)), stdout=subprocess.PIPE, text=True)
    srv = int(sh.stdout.readline())
    assert _wait(sock.exists)
    assert _alive(srv)
    sh.kill()                                       # the recipe's shell, killed alone
    sh.wait()
    assert _wait(lambda: not _alive(srv)), "the server outlived its parent"
    assert not sock.exists()


def test_the_real_cli_through_the_server_gives_the_same_output(tmp_path):
    """``asr score`` via a preloaded server and as its own process: the same bytes and status."""
    ref = tmp_path / "ref"
    hyp = tmp_path / "hyp"
    ref.write_text("u1 a b c d\nu2 e f g\n")
    hyp.write_text("u1 a x c\nu2 e f g g\n")
    # what the installed ``asr`` console script runs
    asr = [sys.executable, "-c", "import sys; sys.argv[0] = 'asr'; from asr.cli.main import run; run()"]
    sock = tmp_path / "s"
    env = dict(os.environ)
    env.pop("ASR_FORKSERVER", None)
    srv = subprocess.Popen([sys.executable, "-m", "asr.jobs.forkserver", "--socket", str(sock)], env=env)
    try:
        assert _wait(sock.exists)
        alone = subprocess.run([*asr, "score", str(ref), str(hyp)], env=env, capture_output=True, text=True)
        served = subprocess.run([*asr, "score", str(ref), str(hyp)], env=dict(env, ASR_FORKSERVER=str(sock)),
                                capture_output=True, text=True)
        bad = subprocess.run([*asr, "score", str(ref)], env=dict(env, ASR_FORKSERVER=str(sock)),
                             capture_output=True, text=True)
    finally:
        srv.terminate()
        srv.wait(10)
    assert alone.returncode == 0 and served.returncode == 0
    assert served.stdout == alone.stdout and "%WER" in served.stdout
    assert bad.returncode == 2 and "required" in bad.stderr
