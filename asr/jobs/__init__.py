"""One executor for per-utterance work (features, alignment, accumulation, decoding).

``map_jobs(fn, jobs, nj=...)`` runs ``fn(job)`` for every job and returns the results in
job order, like Kaldi's ``run.pl``/``queue.pl`` pair: the same call runs on local processes
(default) or on a Dask cluster (``backend="dask"``, or env ``ASR_BACKEND=dask`` with
``ASR_DASK_SCHEDULER=host:port``). ``fn`` must be a module-level (picklable) function.
Any failing job fails the whole call, naming the job.
"""
from asr.jobs.executor import map_jobs, split_by_speaker

__all__ = ["map_jobs", "split_by_speaker"]
