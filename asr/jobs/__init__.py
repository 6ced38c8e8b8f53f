"""One executor for per-utterance work (features, alignment, accumulation, decoding).

``map_jobs(fn, jobs, nj=...)`` runs ``fn(job)`` for every job and returns the results in
job order, like Kaldi's ``run.pl``/``queue.pl`` pair: the same call runs on local processes
(default) or on a Dask cluster (``backend="dask"``, or env ``ASR_BACKEND=dask`` with
``ASR_DASK_SCHEDULER=host:port``). ``fn`` must be a module-level (picklable) function.
Any failing job fails the whole call (``JobFailed``), naming the job; with ``log_dir`` and
``task`` each job writes ``log_dir/<task>.<job>.log`` (Kaldi ``log/align.JOB.log``).
"""
from asr.jobs.executor import JobFailed, map_jobs, split_by_speaker

__all__ = ["JobFailed", "map_jobs", "split_by_speaker"]
