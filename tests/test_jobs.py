"""The executor: local processes and the Dask path give the same ordered results."""
import pytest

from asr.jobs import map_jobs, split_by_speaker
from asr.jobs.stage import clear_done, is_done, mark_done


def _square_sum(job):
    lo, hi = job
    return sum(i * i for i in range(lo, hi))


def _fail_on_three(x):
    if x == 3:
        raise ValueError("bad job three")
    return x


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
