"""The executor: local processes and the Dask path give the same ordered results."""
import hashlib
import json
import subprocess
import sys

import pytest

from asr.jobs import map_jobs, split_by_speaker
from asr.jobs.stage import clear_done, finished, is_done, mark_done, recipe_mark, set_recipe_mark
from asr.recipe.markers import main as markers_main


def _square_sum(job):
    lo, hi = job
    return sum(i * i for i in range(lo, hi))


def _fail_on_three(x):
    if x == 3:
        raise ValueError("bad job three")
    return x


def _chatty(x):
    import sys
    import warnings

    print(f"job input {x}")
    print(f"to stderr {x}", file=sys.stderr)
    if x == 2:
        warnings.warn(f"odd utterance in job {x}")
    if x == 3:
        raise ValueError("bad job three")
    return x * 10


JOBS = [(i * 10, i * 10 + 7) for i in range(6)]
EXPECTED = [sum(i * i for i in range(a, b)) for a, b in JOBS]


def test_local_serial_and_processes_agree():
    assert map_jobs(_square_sum, JOBS, nj=1) == EXPECTED
    assert map_jobs(_square_sum, JOBS, nj=2) == EXPECTED


def test_dask_local_cluster_agrees():
    pytest.importorskip("distributed")
    assert map_jobs(_square_sum, JOBS, nj=2, backend="dask") == EXPECTED


def test_failure_names_the_job():
    with pytest.raises(RuntimeError, match="job 4/5"):
        map_jobs(_fail_on_three, list(range(5)), nj=2)


@pytest.mark.parametrize("nj", [1, 2])
def test_per_job_logs(tmp_path, nj, capsys):
    """Each job's prints and warnings land in log_dir/<task>.<id>.log (Kaldi log/<task>.JOB.log);
    a failure names the job and its log, which holds the traceback."""
    from asr.jobs import JobFailed

    assert map_jobs(_chatty, [0, 1, 2], nj=nj, log_dir=tmp_path / "log", task="align.1") == [0, 10, 20]
    for k, x in enumerate([0, 1, 2], 1):
        text = (tmp_path / "log" / f"align.1.{k}.log").read_text()
        assert f"job input {x}" in text and f"to stderr {x}" in text and "finished in" in text
    assert "odd utterance in job 2" in (tmp_path / "log" / "align.1.3.log").read_text()
    assert "job input" not in capsys.readouterr().out
    with pytest.raises(JobFailed, match=r"job 2/2 failed: bad job three \(log: .*lattices\.7\.log\)"):
        map_jobs(_chatty, [1, 3], nj=nj, log_dir=tmp_path / "log", task="lattices", job_ids=[4, 7])
    failed = (tmp_path / "log" / "lattices.7.log").read_text()
    assert "Traceback" in failed and "ValueError: bad job three" in failed and "failed after" in failed


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        map_jobs(_square_sum, JOBS, nj=1, backend="slurm-magic")


def test_split_by_speaker_keeps_speakers_whole():
    utt2spk = {f"s{s}_u{u}": f"s{s}" for s in range(5) for u in range(s + 1)}
    parts = split_by_speaker(utt2spk, 3)
    assert len(parts) == 3
    assert sorted(u for p in parts for u in p) == sorted(utt2spk)
    for p in parts:
        for q in parts:
            if p is not q:
                assert not {utt2spk[u] for u in p} & {utt2spk[u] for u in q}
    assert split_by_speaker(utt2spk, 3) == parts  # deterministic


def test_stage_marker(tmp_path):
    cfg = {"gauss": 1000, "seed": 1}
    assert not is_done(tmp_path, cfg)
    mark_done(tmp_path, cfg)
    assert is_done(tmp_path, cfg)
    assert not is_done(tmp_path, {"gauss": 2000, "seed": 1})
    clear_done(tmp_path)
    assert not is_done(tmp_path, cfg)


def test_one_marker_file_holds_the_command_and_the_recipe_entries(tmp_path):
    """Issue 15 item 2: the command's hash and the recipe's stage and step hashes live in the one
    OUT/.done; a command rewriting or clearing its entry keeps the recipe's (so the steps of a
    stage that share a directory do not erase each other), and dropping the recipe's entry keeps
    the command's."""
    out = tmp_path / "tri1"
    set_recipe_mark(out, "aaaa", "lattices")              # a step before the command's first run
    assert recipe_mark(out, "lattices") == "aaaa" and not finished(out)
    mark_done(out, {"leaves": 10})
    clear_done(out)                                       # the next command starts
    assert recipe_mark(out, "lattices") == "aaaa" and not finished(out)
    mark_done(out, {"leaves": 10})
    set_recipe_mark(out, "aaaa", "train")
    set_recipe_mark(out, "aaaa")
    assert finished(out) and is_done(out, {"leaves": 10})
    assert recipe_mark(out) == "aaaa" and recipe_mark(out, "train") == "aaaa"
    assert [p.name for p in out.iterdir()] == [".done"]
    set_recipe_mark(out, None)
    assert recipe_mark(out) is None and recipe_mark(out, "train") == "aaaa" and finished(out)
    set_recipe_mark(out, None, "train")
    set_recipe_mark(out, None, "lattices")
    assert "recipe" not in json.loads((out / ".done").read_text()) and finished(out)
    clear_done(out)
    assert not (out / ".done").exists()


def test_markers_of_older_runs_are_read_and_replaced(tmp_path):
    (tmp_path / ".recipe_done").write_text("bbbb\n")
    (tmp_path / ".step_decode_dev").write_text("bbbb\n")
    assert recipe_mark(tmp_path) == "bbbb" and recipe_mark(tmp_path, "decode_dev") == "bbbb"
    set_recipe_mark(tmp_path, "cccc")
    set_recipe_mark(tmp_path, None, "decode_dev")
    assert recipe_mark(tmp_path) == "cccc" and recipe_mark(tmp_path, "decode_dev") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".done"]


def test_recipe_marker_cli_hashes_deps_then_the_stage_text(tmp_path, capsys):
    """run.sh's stage hash: SHA-1 of one line per dependency (its stage hash, or 'DIR: not
    done') followed by the command text; `step` says skip only for the recorded hash and drops
    a stale one."""
    dep, missing, out = tmp_path / "mono", tmp_path / "nothing", tmp_path / "tri1"
    set_recipe_mark(dep, "1234")
    text = b"gmm_stage tri1 --leaves 10 "
    r = subprocess.run([sys.executable, "-m", "asr.recipe.markers", "begin", str(out), str(dep), str(missing)],
                       input=text, capture_output=True, check=True)
    want = hashlib.sha1(f"1234\n{missing}: not done\n".encode() + text).hexdigest()[:16]
    assert r.stdout.decode().split() == [want]             # no marker in OUT yet
    set_recipe_mark(out, want, "train")
    assert markers_main(["step", str(out), "train", want]) == 0 and capsys.readouterr().out == "skip\n"
    assert markers_main(["step", str(out), "train", "other"]) == 0 and capsys.readouterr().out == "run\n"
    assert recipe_mark(out, "train") is None
    assert markers_main(["set", str(out), want]) == 0
    assert markers_main(["get", str(out)]) == 0 and capsys.readouterr().out == want + "\n"
    assert markers_main(["bogus"]) == 2


def test_one_device_decision():
    """GMM and DNN code share one device choice; asking for CUDA without it is an error."""
    import torch

    from asr.gmm.model import pick_device
    from asr.jobs.device import choose_device
    from asr.nnet.train import resolve_device

    assert pick_device is choose_device and resolve_device is choose_device
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device(None).type == want and choose_device("auto").type == want
    assert choose_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
            choose_device("cuda")


_DENORMAL_PROBE = r"""
import sys, threading
import torch
from asr.jobs.device import flush_denormals
on = flush_denormals()
x = torch.full((4,), 1e-39)                     # subnormal in float32
out = {}
t = threading.Thread(target=lambda: out.update(thread=float((x * 1.0)[0])))
t.start(); t.join()
print(on, float((x * 1.0)[0]), out["thread"], float(torch.sigmoid(torch.tensor(-88.0))))
"""


@pytest.mark.parametrize("env", ["1", "0"])
def test_flush_denormals_reaches_new_threads_and_can_be_turned_off(env):
    """Subnormal floats are flushed to zero in the calling thread and in threads started after it
    (torch's OpenMP pool), unless ASR_FLUSH_DENORMALS=0. Run in a fresh interpreter: the mode is
    process state that must not leak into the other tests."""
    import os

    res = subprocess.run([sys.executable, "-c", _DENORMAL_PROBE], capture_output=True, text=True,
                         env={**os.environ, "ASR_FLUSH_DENORMALS": env}, check=True)
    on, here, thread, sig = res.stdout.split()
    if env == "0":
        assert on == "False" and float(here) > 0 and float(thread) > 0 and float(sig) > 0
    elif on == "True":                                  # a CPU with FTZ/DAZ (every x86-64 one)
        assert float(here) == 0.0 and float(thread) == 0.0 and float(sig) == 0.0


def _subnormal_times_one(_: int) -> tuple[float, bool]:
    """A subnormal float times one as the job finds it, and whether this CPU has flush-to-zero
    (asked afterwards: asking sets the mode)."""
    import torch

    value = float((torch.full((4,), 1e-39) * 1.0)[0])
    return value, bool(torch.set_flush_denormal(True))


def test_dask_worker_jobs_flush_denormals(monkeypatch):
    """A job on a Dask worker (a process the local executor's initialiser never reaches) runs with
    subnormal floats flushed to zero, as every asr process and local job worker does."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        monkeypatch.setenv("ASR_DASK_SCHEDULER", cluster.scheduler_address)
        out = map_jobs(_subnormal_times_one, [0, 1], nj=2, backend="dask")
    for value, supported in out:
        assert (value == 0.0) if supported else (value > 0.0)


def test_per_job_logs_on_dask_worker_processes(tmp_path, monkeypatch):
    """On a real cluster (worker processes of one thread) a job's output goes to its log too."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        monkeypatch.setenv("ASR_DASK_SCHEDULER", cluster.scheduler_address)
        out = map_jobs(_chatty, [0, 2], nj=2, backend="dask", log_dir=tmp_path, task="decode")
    assert out == [0, 20]
    text = (tmp_path / "decode.2.log").read_text()
    assert "job input 2" in text and "odd utterance in job 2" in text and "finished in" in text


def test_decode_parts_balance_speakers_by_duration_heaviest_first(tmp_path):
    """A decoding's parts: whole speakers, nj x DECODE_PARTS_PER_JOB of them balanced by
    ``utt2dur`` (not by utterance counts), heaviest first; one part for nj = 1; without
    ``utt2dur`` the utterance-count split of ``split_by_speaker``."""
    from asr.jobs import decode_parts, split_by_speaker
    from asr.jobs.executor import DECODE_PARTS_PER_JOB

    utt2spk = {f"s{k}_u{j}": f"s{k}" for k in range(12) for j in range(3)}
    dur = {u: (10.0 if u.startswith("s0_") else 1.0 + 0.1 * int(u[1:].split("_")[0])) for u in utt2spk}
    (tmp_path / "utt2dur").write_text("".join(f"{u} {d}\n" for u, d in sorted(dur.items())))
    parts = decode_parts(utt2spk, 2, tmp_path)
    assert len(parts) == 2 * DECODE_PARTS_PER_JOB
    assert sorted(u for p in parts for u in p) == sorted(utt2spk)
    spk_of = [{utt2spk[u] for u in p} for p in parts]
    assert all(len(a & b) == 0 for i, a in enumerate(spk_of) for b in spk_of[i + 1:])   # speakers whole
    sizes = [sum(dur[u] for u in p) for p in parts]
    assert sizes == sorted(sizes, reverse=True) and spk_of[0] == {"s0"}     # the 30 s speaker alone, first
    assert decode_parts(utt2spk, 1, tmp_path) == [sorted(utt2spk)]
    assert sorted(decode_parts(utt2spk, 2, tmp_path / "none")) == sorted(split_by_speaker(utt2spk, 6))
    # weights move the split: by counts s0 is a speaker like any other
    assert split_by_speaker(utt2spk, 2, weights=dur) != split_by_speaker(utt2spk, 2)
