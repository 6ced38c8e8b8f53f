"""End to end: the TIMIT recipe on the tiny generated corpus, and kill -9 / resume.

Slow (minutes): run by `.ci/run` via `recipes/test.sh -m slow`.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[1]
RUN = TOP / "recipes" / "timit" / "run.sh"
TINY = TOP / "recipes" / "timit" / "conf" / "tiny.sh"


def _run(exp: Path, *extra: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN), "--config", str(TINY), "--exp", str(exp), "--stage", "1", *extra],
                          cwd=TOP, capture_output=True, text=True, timeout=timeout)


def _results(exp: Path) -> list[str]:
    text = (exp / "RESULTS").read_text()
    return [line.replace(str(exp), "EXP") for line in text.splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("exp_full")
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-4000:]
    return exp


@pytest.mark.slow
def test_tiny_recipe_end_to_end(full_run: Path):
    lines = _results(full_run)
    systems = {line.split()[-1].split("/")[-2] for line in lines}
    assert {"mono", "tri1", "tri2", "tri3", "dnn", "dnn_rand"} <= systems, lines
    for line in lines:
        assert line.startswith("%WER "), line
        per = float(line.split()[1])
        assert 0.0 <= per < 100.0
    report = (full_run / "report.md").read_text()
    assert "| system | test PER | rel. accuracy gain vs GMM |" in report


@pytest.mark.slow
def test_kill_and_resume_gives_identical_results(full_run: Path, tmp_path: Path):
    exp = tmp_path / "exp_killed"
    corpus = full_run / "corpus"
    args = ["bash", str(RUN), "--config", str(TINY), "--exp", str(exp), "--corpus", str(corpus), "--stage", "1"]
    proc = subprocess.Popen(args, cwd=TOP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # Kill the whole process group in the middle of the tri1 stage (after mono finished).
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if (exp / "mono" / ".recipe_done").exists() and (exp / "tri1").exists():
            time.sleep(2.0)
            break
        time.sleep(0.5)
    assert proc.poll() is None, "recipe ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (exp / "tri1" / ".recipe_done").exists()
    r = subprocess.run(args, cwd=TOP, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "stage 5 (mono): done already, skipping" in r.stderr
    assert _results(exp) == _results(full_run)
