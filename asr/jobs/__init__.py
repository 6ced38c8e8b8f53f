"""One executor for per-utterance work (features, alignment, accumulation, decoding).

``map_jobs(fn, jobs, nj=...)`` runs ``fn(job)`` for every job and returns the results in
job order, like Kaldi's ``run.pl``/``queue.pl`` pair: the same call runs on local processes
(default) or on a Dask cluster (``backend="dask"``, or env ``ASR_BACKEND=dask`` with
``ASR_DASK_SCHEDULER=host:port``). ``fn`` must be a module-level (picklable) function.
Any failing job fails the whole call (``JobFailed``), naming the job; with ``log_dir`` and
``task`` each job writes ``log_dir/<task>.<job>.log`` (Kaldi ``log/align.JOB.log``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["JobFailed", "decode_parts", "map_jobs", "split_by_speaker"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that the light helpers of this package (``asr.jobs.stage``,
    # ``asr.jobs.atomic``: the recipe calls them once per stage) do not pay for
    # multiprocessing and Dask's imports.
    if name in __all__:
        from asr.jobs import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
