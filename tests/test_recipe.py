"""End to end: the TIMIT recipe on the tiny generated corpus, and kill -9 / resume.

Slow (minutes): run by `.ci/run` via `recipes/test.sh -m slow`.
"""
import json
import os
import re
import signal
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from asr.jobs.stage import recipe_mark, set_recipe_mark

TOP = Path(__file__).resolve().parents[1]
RUN = TOP / "recipes" / "timit" / "run.sh"
TINY = TOP / "recipes" / "timit" / "conf" / "tiny.yaml"


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


def _tiny_systems() -> list[str]:
    """Every system the tiny config trains and decodes (read from the config itself)."""
    from asr.recipe.config import load_config

    cfg, _ = load_config(TINY)
    return (["mono", "tri1", "tri2", "tri3", "dnn"] + (["dnn_rand"] if cfg.dnn.random_init_ablation else [])
            + [f"dnn_{cfg.seq.criterion}"] + (["tri3_bmmi"] if cfg.bmmi.enabled else []))


@pytest.mark.slow
def test_tiny_recipe_end_to_end(full_run: Path):
    """Every system the run trains is in RESULTS for dev and test, and makes fewer errors than
    an empty hypothesis would (errors < reference phones): a network that outputs nothing, or a
    decode that lost its hypotheses, fails here."""
    lines = _results(full_run)
    found = {}
    for line in lines:
        m = re.match(r"%WER (\S+) \[ (\d+) / (\d+), \d+ ins, \d+ del, \d+ sub \] EXP/(\w+)/decode_(dev|test)$", line)
        assert m, line
        found[(m.group(4), m.group(5))] = (int(m.group(2)), int(m.group(3)))
    for sys in _tiny_systems():
        for part in ("dev", "test"):
            assert (sys, part) in found, (sys, part, lines)
            errors, nref = found[(sys, part)]
            assert 0 < nref and errors < nref, (sys, part, errors, nref)
            counts = json.loads((full_run / sys / f"decode_{part}" / "log" / "counts.json").read_text())
            assert {"retry_beam", "partial_lattice", "not_decoded"} <= set(counts), (sys, part)
    # denominator lattices at the scale Kaldi's TIMIT nnet1 recipe uses for a DNN, bMMI's at a GMM's
    assert json.loads((full_run / "dnn_denlats" / "meta.json").read_text())["config"]["acwt"] == 0.2
    if (full_run / "tri3_denlats").is_dir():
        assert json.loads((full_run / "tri3_denlats" / "meta.json").read_text())["config"]["acwt"] == 0.1
    report = (full_run / "report.md").read_text()
    assert "## Headline" in report and "relative accuracy gain vs baseline" in report
    assert "**baseline: best ML triphone GMM" in report


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
        if recipe_mark(exp / "mono") and (exp / "tri1").exists():
            time.sleep(2.0)
            break
        time.sleep(0.5)
    assert proc.poll() is None, "recipe ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert recipe_mark(exp / "tri1") is None
    r = subprocess.run(args, cwd=TOP, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "stage 5 (mono): done already, skipping" in r.stderr
    assert _results(exp) == _results(full_run)


@pytest.mark.slow
def test_stage_killed_while_decoding_resumes_with_the_decoding(full_run: Path):
    """Issue 14, item 6: a stage whose training finished but whose test decoding was killed
    resumes with that decoding; training is not run again. Simulated on the finished run by
    removing what the killed decoding would not have written. Runs last: it rewrites mono's
    test decoding in place (with identical results)."""
    mono = full_run / "mono"
    before = (mono / "decode_test" / "scoring").read_text()
    model_mtime = (mono / "final.pt").stat().st_mtime_ns
    dev_mtime = (mono / "decode_dev" / "scoring").stat().st_mtime_ns
    set_recipe_mark(mono, None)
    set_recipe_mark(mono, None, "decode_test")
    shutil.rmtree(mono / "decode_test")
    r = _run(full_run, "--stop-stage", "5")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "stage 5 (mono): step train done already, skipping" in r.stderr
    assert "stage 5 (mono): step decode_dev done already, skipping" in r.stderr
    assert (mono / "final.pt").stat().st_mtime_ns == model_mtime
    assert (mono / "decode_dev" / "scoring").stat().st_mtime_ns == dev_mtime
    assert (mono / "decode_test" / "scoring").read_text() == before
    assert recipe_mark(mono) and not list(mono.glob(".recipe_done*")) and not list(mono.glob(".step_*"))


@pytest.mark.slow
def test_tiny_recipe_on_a_real_dask_cluster_gives_the_local_results(full_run: Path, tmp_path: Path):
    """Issue 15: ``ASR_BACKEND=dask ASR_DASK_SCHEDULER=...`` sends every per-utterance job of every
    stage (features, GMM accumulation and alignment, decoding, lattices) to the workers of a real
    scheduler (two worker processes on localhost); RESULTS equal the local run's. Run with
    ``ASR_FORKSERVER=off``, it also checks that the fork server changes no result."""
    distributed = pytest.importorskip("distributed")
    exp = tmp_path / "exp_dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        # and without the fork server (each asr call its own process): the same RESULTS as the
        # served local run, so neither the backend nor the server changes a result
        env = {**os.environ, "ASR_BACKEND": "dask", "ASR_DASK_SCHEDULER": cluster.scheduler_address,
               "ASR_FORKSERVER": "off"}
        r = subprocess.run(["bash", str(RUN), "--config", str(TINY), "--exp", str(exp), "--stage", "1",
                            "--corpus", str(full_run / "corpus")], cwd=TOP, capture_output=True, text=True,
                           timeout=1500, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert _results(exp) == _results(full_run)
    # the jobs ran on the cluster: per-job logs name a Dask worker
    logs = list((exp / "mono").rglob("*.log"))
    assert logs and any("dask worker tcp://" in p.read_text() for p in logs), [str(p) for p in logs][:10]
