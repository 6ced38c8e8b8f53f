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
    except ImportError:  # pragma: no cover
        pass


def _run_one(fn: Callable[[T], R], job: T) -> R:
    return fn(job)


def map_jobs(
    fn: Callable[[T], R],
    jobs: Sequence[T],
    nj: int = 1,
    desc: str | None = None,
    backend: str | None = None,
    progress: bool = True,
) -> list[R]:
    """Run ``fn(job)`` for each job, ``nj`` at a time; results in job order.

    backend: ``"local"`` (processes; ``nj == 1`` runs in-process), ``"dask"`` (a
    ``distributed.Client``: the scheduler address in ``ASR_DASK_SCHEDULER``, or an in-process
    local cluster of ``nj`` workers when unset). Default: env ``ASR_BACKEND`` or local.
    """
    backend = backend or os.environ.get("ASR_BACKEND", "local")
    jobs = list(jobs)
    bar = None
    if progress and desc is not None:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="job", dynamic_ncols=True, mininterval=1.0)
    try:
        if backend == "dask":
            return _map_dask(fn, jobs, nj, bar)
        if backend != "local":
            raise ValueError(f"unknown executor backend {backend!r} (local|dask)")
        if nj <= 1 or len(jobs) <= 1:
            out = []
            for j in jobs:
                out.append(fn(j))
                if bar:
                    bar.update(1)
            return out
        ctx = mp.get_context("fork")
        results: list[Any] = [None] * len(jobs)
        with ProcessPoolExecutor(max_workers=min(nj, len(jobs)), mp_context=ctx,
                                 initializer=_init_worker) as ex:
            futs = {ex.submit(_run_one, fn, j): i for i, j in enumerate(jobs)}
            from concurrent.futures import as_completed

            for f in as_completed(futs):
                i = futs[f]
                try:
                    results[i] = f.result()
                except Exception as e:
                    for g in futs:
                        g.cancel()
                    raise RuntimeError(f"job {i + 1}/{len(jobs)} failed: {e}") from e
                if bar:
                    bar.update(1)
        return results
    finally:
        if bar:
            bar.close()


def _map_dask(fn: Callable[[T], R], jobs: list[T], nj: int, bar: Any) -> list[R]:
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
        futs = client.map(fn, jobs, pure=False)
        index = {f.key: i for i, f in enumerate(futs)}
        results: list[Any] = [None] * len(jobs)
        for f in as_completed(futs):
            i = index[f.key]
            try:
                results[i] = f.result()
            except Exception as e:
                raise RuntimeError(f"job {i + 1}/{len(jobs)} failed: {e}") from e
            if bar:
                bar.update(1)
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def split_by_speaker(utt2spk: dict[str, str], nj: int) -> list[list[str]]:
    """Split utterances into at most ``nj`` lists, never splitting a speaker (Kaldi's
    ``split_data.sh``); speakers are dealt round-robin in sorted order so splits are balanced
    and deterministic."""
    spk2utts: dict[str, list[str]] = {}
    for u in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[u], []).append(u)
    n = max(1, min(nj, len(spk2utts)))
    parts: list[list[str]] = [[] for _ in range(n)]
    sizes = [0] * n
    for spk in sorted(spk2utts, key=lambda s: (-len(spk2utts[s]), s)):
        k = min(range(n), key=lambda i: (sizes[i], i))
        parts[k].extend(spk2utts[spk])
        sizes[k] += len(spk2utts[spk])
    return [sorted(p) for p in parts if p]
