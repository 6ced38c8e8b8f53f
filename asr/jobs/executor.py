"""Local-process / Dask executor with one interface. See ``asr.jobs``."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import multiprocessing as mp

T = TypeVar("T")
R = TypeVar("R")


def _init_worker() -> None:
    # One BLAS/torch thread per process: nj processes share the machine's cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
        from asr.jobs.device import flush_denormals

        flush_denormals()
    except ImportError:  # pragma: no cover
        pass


def _run_one(fn: Callable[[T], R], job: T) -> R:
    return fn(job)


def _run_flushed(fn: Callable[[T], R], job: T) -> R:
    """``fn(job)`` on a Dask worker, whose threads ``_init_worker`` never reaches: subnormal floats
    flushed to zero first, as in every asr process and local job worker (idempotent)."""
    from asr.jobs.device import flush_denormals

    flush_denormals()
    return fn(job)


class JobFailed(RuntimeError):
    """A job of ``map_jobs`` raised: the message names the job (and its log file when there is one)."""


class _LoggedJob:
    """``fn(job)`` with everything the job prints or warns going to its own log file (Kaldi's
    ``log/<task>.JOB.log``): a header line, the job's output, and the traceback when it fails.
    Picklable when ``fn`` is, so it runs the same in a local process or on a Dask worker."""

    def __init__(self, fn: Callable[[T], R], path: str, label: str) -> None:
        self.fn, self.path, self.label = fn, path, label
        self.submit_pid = os.getpid()

    def _may_redirect(self) -> bool:
        """stdout and the warning filters are process-wide: redirect them only when no other job
        can run in this process at the same time (the main thread, or a Dask worker process of
        one thread; not the threads of an in-process cluster)."""
        import threading

        if threading.current_thread() is threading.main_thread():
            return True
        if os.getpid() == self.submit_pid:
            return False
        try:
            from distributed import get_worker

            w = get_worker()
            return int(getattr(getattr(w, "state", w), "nthreads", 0)) == 1
        except (ImportError, ValueError, AttributeError):
            return False

    def __call__(self, job: T) -> R:
        import contextlib
        import time
        import traceback
        import warnings

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as log:
            log.write(f"# {self.label} started {time.strftime('%Y-%m-%d %H:%M:%S')} ({_where()})\n")
            log.flush()
            t0 = time.time()
            try:
                if not self._may_redirect():    # only the header, traceback and footer are logged
                    out = self.fn(job)
                else:
                    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
                            warnings.catch_warnings():
                        warnings.simplefilter("always")
                        warnings.showwarning = (lambda m, c, f, n, file=None, line=None:
                                                log.write(warnings.formatwarning(m, c, f, n, line)))
                        out = self.fn(job)
            except Exception:
                log.write(traceback.format_exc())
                log.write(f"# {self.label} failed after {time.time() - t0:.1f} s\n")
                raise
            log.write(f"# {self.label} finished in {time.time() - t0:.1f} s\n")
        return out


def _where() -> str:
    """Where a job runs, for its log header: pid, host, and the Dask worker's address if any."""
    import socket
    import sys

    where = f"pid {os.getpid()} on {socket.gethostname()}"
    if "distributed" in sys.modules:   # a Dask worker process has it imported; a local job need not
        try:
            from distributed import get_worker

            where += f", dask worker {get_worker().address}"
        except ValueError:  # not inside a worker
            pass
    return where


def _job_error(i: int, n: int, e: BaseException, log_path: str | None) -> JobFailed:
    where = f" (log: {log_path})" if log_path else ""
    return JobFailed(f"job {i + 1}/{n} failed: {e}{where}")


def map_jobs(
    fn: Callable[[T], R],
    jobs: Sequence[T],
    nj: int = 1,
    desc: str | None = None,
    backend: str | None = None,
    progress: bool = True,
    log_dir: str | os.PathLike | None = None,
    task: str | None = None,
    job_ids: Sequence[int | str] | None = None,
) -> list[R]:
    """Run ``fn(job)`` for each job, ``nj`` at a time; results in job order.

    backend: ``"local"`` (processes; ``nj == 1`` runs in-process), ``"dask"`` (a
    ``distributed.Client``: the scheduler address in ``ASR_DASK_SCHEDULER``, or an in-process
    local cluster of ``nj`` workers when unset). Default: env ``ASR_BACKEND`` or local.
    ``log_dir`` + ``task``: job ``k`` writes what it prints and warns, and its traceback when it
    fails, to ``log_dir/<task>.<k>.log`` (``k``: ``job_ids[i]``, default 1..N; a resumed run passes
    the ids of the jobs it still has to do). A failed job raises ``JobFailed`` naming the job and
    its log.
    """
    backend = backend or os.environ.get("ASR_BACKEND", "local")
    jobs = list(jobs)
    logs: list[str | None] = [None] * len(jobs)
    if log_dir is not None:
        name = task or getattr(fn, "__name__", "job").lstrip("_")
        ids = list(job_ids) if job_ids is not None else list(range(1, len(jobs) + 1))
        if len(ids) != len(jobs):
            raise ValueError(f"{len(ids)} job ids for {len(jobs)} jobs")
        logs = [os.path.join(os.fspath(log_dir), f"{name}.{k}.log") for k in ids]
        fns = [_LoggedJob(fn, logs[i], f"{name} job {ids[i]}") for i in range(len(jobs))]
    else:
        fns = [fn] * len(jobs)
    bar = None
    if progress and desc is not None:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="job", dynamic_ncols=True, mininterval=1.0)
    try:
        if backend == "dask":
            return _map_dask(fns, jobs, nj, bar, logs)
        if backend != "local":
            raise ValueError(f"unknown executor backend {backend!r} (local|dask)")
        if nj <= 1 or len(jobs) <= 1:
            out = []
            for i, j in enumerate(jobs):
                try:
                    out.append(fns[i](j))
                except Exception as e:
                    raise _job_error(i, len(jobs), e, logs[i]) from e
                if bar:
                    bar.update(1)
            return out
        ctx = mp.get_context("fork")
        results: list[Any] = [None] * len(jobs)
        with ProcessPoolExecutor(max_workers=min(nj, len(jobs)), mp_context=ctx,
                                 initializer=_init_worker) as ex:
            futs = {ex.submit(_run_one, fns[i], j): i for i, j in enumerate(jobs)}
            from concurrent.futures import as_completed

            for f in as_completed(futs):
                i = futs[f]
                try:
                    results[i] = f.result()
                except Exception as e:
                    for g in futs:
                        g.cancel()
                    raise _job_error(i, len(jobs), e, logs[i]) from e
                if bar:
                    bar.update(1)
        return results
    finally:
        if bar:
            bar.close()


def _map_dask(fns: list[Callable[[T], R]], jobs: list[T], nj: int, bar: Any, logs: list[str | None]) -> list[R]:
    from distributed import Client, LocalCluster, as_completed

    addr = os.environ.get("ASR_DASK_SCHEDULER")
    cluster = None
    if addr:
        client = Client(addr)
    else:
        cluster = LocalCluster(n_workers=max(1, nj), threads_per_worker=1, processes=False,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futs = [client.submit(_run_flushed, f, j, pure=False) for f, j in zip(fns, jobs)]
        index = {f.key: i for i, f in enumerate(futs)}
        results: list[Any] = [None] * len(jobs)
        for f in as_completed(futs):
            i = index[f.key]
            try:
                results[i] = f.result()
            except Exception as e:
                raise _job_error(i, len(jobs), e, logs[i]) from e
            if bar:
                bar.update(1)
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def split_by_speaker(utt2spk: dict[str, str], nj: int, weights: dict[str, float] | None = None
                     ) -> list[list[str]]:
    """Split utterances into at most ``nj`` lists, never splitting a speaker (Kaldi's
    ``split_data.sh``): the heaviest speaker first goes to the lightest list, so splits are
    balanced and deterministic. A speaker weighs its number of utterances, or the sum of their
    ``weights`` (e.g. durations; an utterance missing from it weighs the mean of the others)."""
    spk2utts: dict[str, list[str]] = {}
    for u in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[u], []).append(u)
    if weights:
        mean = sum(weights.values()) / len(weights)
        spk_w = {s: sum(float(weights.get(u, mean)) for u in us) for s, us in spk2utts.items()}
    else:
        spk_w = {s: float(len(us)) for s, us in spk2utts.items()}
    n = max(1, min(nj, len(spk2utts)))
    parts: list[list[str]] = [[] for _ in range(n)]
    sizes = [0.0] * n
    for spk in sorted(spk2utts, key=lambda s: (-spk_w[s], s)):
        k = min(range(n), key=lambda i: (sizes[i], i))
        parts[k].extend(spk2utts[spk])
        sizes[k] += spk_w[spk]
    return [sorted(p) for p in parts if p]


DECODE_PARTS_PER_JOB = 3
"""A decoding is split into ``nj`` times this many parts (whole speakers, balanced by duration),
heaviest first, for ``nj`` processes to take in turn: one part per process left one process idle
for a quarter of a test-set decoding while the other finished (per-utterance decoding does not
depend on the split)."""


def decode_parts(utt2spk: dict[str, str], nj: int, data_dir: str | os.PathLike | None = None) -> list[list[str]]:
    """The parts of a decoding with ``nj`` processes (:data:`DECODE_PARTS_PER_JOB` per process),
    balanced by ``data_dir/utt2dur`` when there is one, heaviest first (a pool taking them in order
    ends with the small ones); one part when ``nj`` is 1."""
    from pathlib import Path

    from asr.datadir.table import read_table

    path = None if data_dir is None else Path(data_dir) / "utt2dur"
    dur = ({u: float(d) for u, d in read_table(path, what="utterance", columns=2).items()}
           if path is not None and path.is_file() else {})
    n = 1 if nj <= 1 else nj * DECODE_PARTS_PER_JOB
    parts = split_by_speaker(utt2spk, n, weights=dur or None)
    size = (lambda p: sum(dur.get(u, 0.0) for u in p)) if dur else len
    return sorted(parts, key=lambda p: (-size(p), p[0]))
