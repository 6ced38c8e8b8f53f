"""recipes/timit/run.sh refuses a bad command line before doing anything (issue 14, item 4):
`--stage abc` used to print a shell error and start the whole run from stage 1, `--stage 99`
silently rewrote the report."""
import os
import signal
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[1]
RUN = TOP / "recipes" / "timit" / "run.sh"


def _run(cmd: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout (a recipe that started working instead of
    refusing its arguments) the whole group is killed, so no stage keeps running."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"{cmd} still running after {timeout} s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.mark.parametrize("args,message", [
    (["--stage", "abc"], "--stage must be an integer, got 'abc'"),
    (["--stage", "99"], "--stage must be in 0..15, got 99"),
    (["--stop-stage", "-1"], "--stop-stage must be an integer"),
    (["--nj", "0"], "--nj must be at least 1, got 0"),
    (["--nj", "2x"], "--nj must be an integer"),
    (["--stage", "6", "--stop-stage", "5"], "--stage 6 is after --stop-stage 5"),
    (["--stage"], "--stage needs a value"),
    (["--mode", "words"], "--mode must be phone or word"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_bad_arguments_exit_2_with_usage_before_doing_anything(tmp_path, args, message):
    exp = tmp_path / "exp"
    r = _run(["bash", str(RUN), "--exp", str(exp), *args], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Usage: recipes/timit/run.sh" in r.stderr
    assert not exp.exists() and list(tmp_path.iterdir()) == []


def test_help_lists_every_option():
    r = _run(["bash", str(RUN), "--help"], cwd=TOP)
    assert r.returncode == 0
    for opt in ("--corpus", "--exp", "--config", "--set", "--nj", "--skip-bad", "--stage", "--stop-stage", "--mode",
                "--init-dbn"):
        assert opt in r.stdout, opt


@pytest.mark.parametrize("args,message", [
    (["--set", "seq.lr=fast"], "seq.lr: expected float"),
    (["--set", "gmm.leaves=10"], "gmm.leaves: unknown setting"),
])
def test_bad_config_settings_exit_2_naming_the_key_before_doing_anything(tmp_path, args, message):
    exp = tmp_path / "exp"
    r = _run(["bash", str(RUN), "--exp", str(exp), "--stage", "1", *args], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "bad config" in r.stderr
    assert not exp.exists()
