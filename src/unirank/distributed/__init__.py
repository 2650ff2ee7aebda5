"""Resumable batch re-ranking of run files: a local multi-process engine (default) and the same job on Ray.

>>> from unirank.distributed import RerankJob, run_job  # doctest: +SKIP
>>> job = RerankJob.from_files("in.trec", "corpus.jsonl", "queries.jsonl", "ce:my/model")  # doctest: +SKIP
>>> run_job(job, "out.trec", workers=4, resume=True)  # doctest: +SKIP
"""

from __future__ import annotations

from .job import Checkpoint, JobInputError, RerankJob, ValidationReport, WorkerLostError
from .runner import JobResult, run_job

__all__ = [
    "Checkpoint",
    "JobInputError",
    "JobResult",
    "RerankJob",
    "ValidationReport",
    "WorkerLostError",
    "run_job",
]
